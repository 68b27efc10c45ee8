//! `aos device`: devices and their credentials.

use anyhow::Context;
use aos_auth::password::{self, HashParams};
use aos_auth::secret;
use aos_storage::Storage;
use aos_storage::repo::audit;
use aos_storage::repo::devices::{self, NewCredential, NewDevice};
use clap::Subcommand;

use super::{cli_event, new_password, scope};

#[derive(Subcommand, Debug)]
pub enum DeviceCommand {
    /// Register a device in a tenant.
    Add {
        /// The device's id: its MQTT client id and topic segment.
        uid: String,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        class: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        entity: Option<String>,
        /// The gateway (its id) this device is a child node of.
        #[arg(long)]
        gateway: Option<String>,
        /// A message format of its own instead of its class's.
        #[arg(long)]
        format: Option<String>,
    },
    /// List the devices of a tenant.
    List {
        #[arg(long)]
        tenant: String,
    },
    /// Give a device new MQTT credentials (replacing those of the same kind). Default: an
    /// access token, generated and printed once. With --username: a username and a password
    /// (from standard input with --password-stdin, else generated and printed once). With
    /// --certificate: the device's client certificate (PEM), which then names the device on
    /// TLS listeners that verify client certificates.
    Credentials {
        uid: String,
        #[arg(long)]
        tenant: String,
        #[arg(long, conflicts_with = "certificate")]
        username: Option<String>,
        #[arg(long, requires = "username")]
        password_stdin: bool,
        #[arg(long, value_name = "PEM_FILE")]
        certificate: Option<std::path::PathBuf>,
    },
}

pub async fn devices(
    storage: &Storage,
    command: DeviceCommand,
    hashing: HashParams,
) -> anyhow::Result<()> {
    match command {
        DeviceCommand::Add {
            uid,
            tenant,
            class,
            name,
            entity,
            gateway,
            format,
        } => {
            let scope = scope(storage, &tenant).await?;
            let device = devices::create(
                storage,
                scope,
                NewDevice {
                    name: name.unwrap_or_else(|| uid.clone()),
                    uid: uid.clone(),
                    class,
                    entity,
                    gateway,
                    format,
                },
            )
            .await?;
            audit::record(
                storage,
                cli_event(Some(scope.tenant), "device.register", "device", &uid),
            )
            .await?;
            println!(
                "device `{}` registered in `{tenant}`; give it credentials with `aos device credentials {uid} --tenant {tenant}`",
                device.uid
            );
        }
        DeviceCommand::List { tenant } => {
            println!("{:<32} {:<32} {:<8} last seen", "id", "name", "status");
            for d in devices::list(storage, scope(storage, &tenant).await?).await? {
                let seen = d
                    .last_seen
                    .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string());
                println!(
                    "{:<32} {:<32} {:<8} {}",
                    d.uid,
                    d.name,
                    d.status,
                    seen.unwrap_or_else(|| "never".into())
                );
            }
        }
        DeviceCommand::Credentials {
            uid,
            tenant,
            username,
            password_stdin,
            certificate,
        } => {
            let scope = scope(storage, &tenant).await?;
            let (credential, shown) = match (username, certificate) {
                (_, Some(path)) => {
                    let pem = std::fs::read(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    let fingerprint = secret::certificate_fingerprint_pem(&pem)
                        .with_context(|| format!("{} holds no PEM certificate", path.display()))?;
                    let shown = format!("certificate SHA-256: {fingerprint}");
                    (NewCredential::Certificate { fingerprint }, Some(shown))
                }
                (Some(username), None) => {
                    let (password, generated) = new_password(password_stdin)?;
                    let hash = password::hash_password(&password, hashing)?;
                    let shown = generated.then(|| format!("password: {password}"));
                    (NewCredential::Password { username, hash }, shown)
                }
                (None, None) => {
                    let token = secret::generate();
                    let lookup = secret::lookup_hash(&token);
                    (
                        NewCredential::Token { lookup },
                        Some(format!("access token: {token}")),
                    )
                }
            };
            let row = devices::set_credential(storage, scope, &uid, credential).await?;
            let mut event = cli_event(Some(scope.tenant), "device.credential", "device", &uid);
            event.detail = serde_json::json!({ "kind": row.kind });
            audit::record(storage, event).await?;
            println!(
                "new {} credential for `{uid}` (earlier ones of that kind are revoked)",
                row.kind
            );
            match (row.kind.as_str(), shown) {
                ("certificate", Some(shown)) => println!("{shown}"),
                (_, Some(shown)) => println!("{shown}  (shown once: keep it now)"),
                (_, None) => {}
            }
        }
    }
    Ok(())
}
