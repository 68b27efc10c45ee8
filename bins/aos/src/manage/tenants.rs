//! `aos tenant`: the tenants of the platform.

use aos_storage::Storage;
use aos_storage::repo::{audit, tenants};
use clap::Subcommand;

use super::cli_event;

#[derive(Subcommand, Debug)]
pub enum TenantCommand {
    /// Create a tenant.
    Add { name: String },
    /// List tenants.
    List,
    /// Disable a tenant: its users cannot sign in, its devices and applications cannot connect
    /// (their live sessions close on every node). Nothing is deleted.
    Disable { name: String },
    /// Enable a disabled tenant again.
    Enable { name: String },
}

pub async fn tenants(storage: &Storage, command: TenantCommand) -> anyhow::Result<()> {
    match command {
        TenantCommand::Add { name } => {
            let tenant = tenants::create(storage, &name).await?;
            audit::record(
                storage,
                cli_event(Some(tenant.id), "tenant.create", "tenant", &name),
            )
            .await?;
            println!("tenant `{}` created (id {})", tenant.name, tenant.id);
        }
        TenantCommand::List => {
            println!("{:<6} {:<32} {:<9} created", "id", "name", "state");
            for t in tenants::list(storage).await? {
                println!(
                    "{:<6} {:<32} {:<9} {}",
                    t.id,
                    t.name,
                    if t.disabled { "disabled" } else { "active" },
                    t.created_at.format("%Y-%m-%dT%H:%M:%SZ")
                );
            }
        }
        TenantCommand::Disable { name } => switch(storage, &name, true).await?,
        TenantCommand::Enable { name } => switch(storage, &name, false).await?,
    }
    Ok(())
}

async fn switch(storage: &Storage, name: &str, disabled: bool) -> anyhow::Result<()> {
    let tenant = tenants::set_disabled(storage, name, disabled).await?;
    let (action, done) = if disabled {
        ("tenant.disable", "disabled")
    } else {
        ("tenant.enable", "enabled")
    };
    audit::record(storage, cli_event(Some(tenant.id), action, "tenant", name)).await?;
    println!("tenant `{name}` {done}");
    Ok(())
}
