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
            println!("{:<6} {:<32} created", "id", "name");
            for t in tenants::list(storage).await? {
                println!(
                    "{:<6} {:<32} {}",
                    t.id,
                    t.name,
                    t.created_at.format("%Y-%m-%dT%H:%M:%SZ")
                );
            }
        }
    }
    Ok(())
}
