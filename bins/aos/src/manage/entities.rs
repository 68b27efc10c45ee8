//! `aos entity`: the internal units and customers of a tenant.

use aos_storage::Storage;
use aos_storage::repo::entities::{self, EntityKind};
use clap::Subcommand;

use super::scope;

#[derive(Subcommand, Debug)]
pub enum EntityCommand {
    /// Create an entity of a tenant: an internal unit, or with --customer a customer (whose
    /// users see only its own devices and data).
    Add {
        name: String,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        customer: bool,
        /// The entity this one belongs to.
        #[arg(long)]
        parent: Option<String>,
    },
    /// List the entities of a tenant.
    List {
        #[arg(long)]
        tenant: String,
    },
}

pub async fn entities(storage: &Storage, command: EntityCommand) -> anyhow::Result<()> {
    match command {
        EntityCommand::Add {
            name,
            tenant,
            customer,
            parent,
        } => {
            let scope = scope(storage, &tenant).await?;
            let kind = if customer {
                EntityKind::Customer
            } else {
                EntityKind::Unit
            };
            let entity = entities::create(storage, scope, &name, kind, parent.as_deref()).await?;
            println!("{} `{}` created in `{tenant}`", entity.kind, entity.name);
        }
        EntityCommand::List { tenant } => {
            println!("{:<32} kind", "name");
            for e in entities::list(storage, scope(storage, &tenant).await?).await? {
                println!("{:<32} {}", e.name, e.kind);
            }
        }
    }
    Ok(())
}
