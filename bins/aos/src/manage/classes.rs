//! `aos class`: device classes, their auto-registration and their formats.

use aos_auth::secret;
use aos_storage::Storage;
use aos_storage::repo::audit;
use aos_storage::repo::classes::{self, NewClass};
use clap::Subcommand;

use super::{cli_event, formats, scope};

#[derive(Subcommand, Debug)]
pub enum ClassCommand {
    /// Create a device class in a tenant.
    Add {
        name: String,
        #[arg(long)]
        tenant: String,
        #[arg(long, default_value = "")]
        description: String,
        /// Devices of this class are gateways for child nodes.
        #[arg(long)]
        gateway: bool,
    },
    /// List the device classes of a tenant.
    List {
        #[arg(long)]
        tenant: String,
    },
    /// Let unknown devices register themselves in a class: a new provisioning key, printed once
    /// (devices connect with the MQTT username `provision`, the key as password, and their id as
    /// client id). With --off, auto-registration is switched off again (the default).
    Provisioning {
        name: String,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        off: bool,
    },
    /// Let the gateways of a gateway class register unknown child nodes (in class --class) when
    /// they send data for them; --off: only registered children are accepted (the default).
    Children {
        name: String,
        #[arg(long)]
        tenant: String,
        #[arg(long, required_unless_present = "off")]
        class: Option<String>,
        #[arg(long, conflicts_with = "class")]
        off: bool,
    },
    /// Set the message format the class's devices send (see `aos format`), or with --outbound
    /// the one their commands are written in; --none: JSON (the default).
    Format {
        name: String,
        #[arg(long)]
        tenant: String,
        #[arg(long, required_unless_present = "none")]
        format: Option<String>,
        #[arg(long, conflicts_with = "format")]
        none: bool,
        #[arg(long)]
        outbound: bool,
    },
}

pub async fn classes(storage: &Storage, command: ClassCommand) -> anyhow::Result<()> {
    match command {
        ClassCommand::Add {
            name,
            tenant,
            description,
            gateway,
        } => {
            let scope = scope(storage, &tenant).await?;
            let class = classes::create(
                storage,
                scope,
                NewClass {
                    name,
                    description,
                    is_gateway: gateway,
                    auto_register_children: false,
                },
            )
            .await?;
            println!("device class `{}` created in `{tenant}`", class.name);
        }
        ClassCommand::List { tenant } => {
            println!("{:<32} {:<8} description", "name", "gateway");
            for c in classes::list(storage, scope(storage, &tenant).await?).await? {
                println!("{:<32} {:<8} {}", c.name, c.is_gateway, c.description);
            }
        }
        ClassCommand::Provisioning { name, tenant, off } => {
            let scope = scope(storage, &tenant).await?;
            let key = (!off).then(secret::generate);
            classes::set_provisioning_key(
                storage,
                scope,
                &name,
                key.as_deref().map(secret::lookup_hash),
            )
            .await?;
            let mut event = cli_event(Some(scope.tenant), "class.provisioning", "class", &name);
            event.detail = serde_json::json!({ "enabled": key.is_some() });
            audit::record(storage, event).await?;
            match key {
                Some(key) => println!(
                    "auto-registration on for `{name}` (earlier keys no longer work)\nprovisioning key: {key}  (shown once: keep it now)"
                ),
                None => println!("auto-registration off for `{name}`"),
            }
        }
        ClassCommand::Children {
            name,
            tenant,
            class,
            off: _,
        } => {
            let scope = scope(storage, &tenant).await?;
            classes::set_children(storage, scope, &name, class.as_deref()).await?;
            let mut event = cli_event(Some(scope.tenant), "class.children", "class", &name);
            event.detail = serde_json::json!({ "child_class": class });
            audit::record(storage, event).await?;
            match class {
                Some(class) => println!(
                    "gateways of `{name}` register unknown child nodes in `{class}` (within a minute on running workers)"
                ),
                None => println!("gateways of `{name}` send data for registered child nodes only"),
            }
        }
        ClassCommand::Format {
            name,
            tenant,
            format,
            none: _,
            outbound,
        } => formats::class_format(storage, &name, &tenant, format, outbound).await?,
    }
    Ok(())
}
