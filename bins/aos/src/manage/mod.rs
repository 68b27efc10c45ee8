//! Command-line management for a newcomer before the web client exists: tenants, users, device
//! classes, devices and their credentials, roles and API keys, straight against the configured
//! database.

mod access;
mod commands;
mod formats;
mod interpreters;
mod workflows;

pub use access::{ApiKeyCommand, RoleCommand};
pub use commands::CommandCommand;
pub use formats::FormatCommand;
pub use interpreters::{EventCommand, InterpreterCommand};
pub use workflows::WorkflowCommand;

use std::io::BufRead;
use std::process::ExitCode;

use anyhow::{Context, bail};
use aos_auth::password::HashParams;
use aos_auth::{AuthSettings, password, secret};
use aos_core::Settings;
use aos_storage::repo::audit::{self, AuditEvent};
use aos_storage::repo::classes::{self, NewClass};
use aos_storage::repo::devices::{self, NewCredential, NewDevice};
use aos_storage::repo::entities::{self, EntityKind};
use aos_storage::repo::roles;
use aos_storage::repo::users::{self, NewUser};
use aos_storage::repo::{Scope, tenants};
use aos_storage::{Storage, StorageConfig};
use clap::Subcommand;

use crate::run::runtime;
use crate::{EXIT_CONFIG, EXIT_FAILURE, fail};

#[derive(Subcommand, Debug)]
pub enum TenantCommand {
    /// Create a tenant.
    Add { name: String },
    /// List tenants.
    List,
}

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

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user of a tenant (or, without --tenant, a system administrator). The password
    /// is read from the first line of standard input with --password-stdin; otherwise one is
    /// generated and printed once.
    Add {
        login: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        email: Option<String>,
        /// Entity (of the tenant) the user is bound to.
        #[arg(long)]
        entity: Option<String>,
        /// A role to give the user (repeatable): system administrator, tenant administrator,
        /// operator, viewer, customer, or a role of the tenant.
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        #[arg(long)]
        password_stdin: bool,
    },
    /// List the users of a tenant (or, without --tenant, the system administrators).
    List {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Set a user's password (from standard input with --password-stdin, else generated).
    Passwd {
        login: String,
        #[arg(long)]
        password_stdin: bool,
    },
}

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

/// What to manage.
#[derive(Debug)]
pub enum Manage {
    Tenant(TenantCommand),
    Entity(EntityCommand),
    User(UserCommand),
    Class(ClassCommand),
    Device(DeviceCommand),
    Role(RoleCommand),
    ApiKey(ApiKeyCommand),
    Format(FormatCommand),
    Interpreter(InterpreterCommand),
    Event(EventCommand),
    Command(CommandCommand),
    Workflow(WorkflowCommand),
}

/// Runs one management command against the configured database (applying pending migrations
/// first when `storage.migrate_on_start` is set, as a node would).
pub fn run(settings: &Settings, command: Manage) -> ExitCode {
    let config: StorageConfig = match settings.section("storage") {
        Ok(c) => c,
        Err(err) => return fail(EXIT_CONFIG, err),
    };
    let auth: AuthSettings = match settings.section("auth") {
        Ok(auth) => auth,
        Err(err) => return fail(EXIT_CONFIG, err),
    };
    if let Err(err) = auth.check() {
        return fail(EXIT_CONFIG, err);
    }
    let result = runtime()
        .context("cannot start the runtime")
        .and_then(|rt| {
            rt.block_on(async {
                let storage = Storage::connect(&config, &settings.core().node.data_dir).await?;
                if config.migrate_on_start {
                    storage.migrate().await?;
                } else if !storage.pending_migrations().await?.is_empty() {
                    bail!("the database needs migrations: run `aos migrate` first");
                }
                aos_auth::bootstrap::ensure_roles(&storage).await?;
                let result = execute(&storage, command, auth.sign_in.hash_params()).await;
                storage.close().await.ok();
                result
            })
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(EXIT_FAILURE, format!("{err:#}")),
    }
}

/// A password from standard input, or a generated one (printed once by the caller).
fn new_password(from_stdin: bool) -> anyhow::Result<(String, bool)> {
    if !from_stdin {
        return Ok((password::generate(), true));
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    if !password::long_enough(&password) {
        bail!(
            "the password must have at least {} characters",
            password::MIN_CHARS
        );
    }
    Ok((password, false))
}

fn cli_event(tenant: Option<i64>, action: &str, kind: &str, id: &str) -> AuditEvent {
    AuditEvent::done(tenant, "cli".into(), action, kind, id)
}

async fn scope(storage: &Storage, tenant: &str) -> anyhow::Result<Scope> {
    Ok(Scope::tenant(tenants::by_name(storage, tenant).await?.id))
}

/// Runs `command`; new passwords are hashed with `hashing`.
async fn execute(storage: &Storage, command: Manage, hashing: HashParams) -> anyhow::Result<()> {
    match command {
        Manage::Tenant(TenantCommand::Add { name }) => {
            let tenant = tenants::create(storage, &name).await?;
            audit::record(
                storage,
                cli_event(Some(tenant.id), "tenant.create", "tenant", &name),
            )
            .await?;
            println!("tenant `{}` created (id {})", tenant.name, tenant.id);
        }
        Manage::Tenant(TenantCommand::List) => {
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
        Manage::User(UserCommand::Add {
            login,
            name,
            tenant,
            email,
            entity,
            roles,
            password_stdin,
        }) => {
            let (password, generated) = new_password(password_stdin)?;
            let new = NewUser {
                name: name.unwrap_or_else(|| login.clone()),
                login: login.clone(),
                email,
                entity,
                roles,
                password_hash: password::hash_password(&password, hashing)?,
            };
            let (user, tenant_id) = match &tenant {
                Some(t) => {
                    let scope = scope(storage, t).await?;
                    (
                        users::create(storage, scope, new).await?,
                        Some(scope.tenant),
                    )
                }
                None => (users::create_platform(storage, new).await?, None),
            };
            audit::record(storage, cli_event(tenant_id, "user.create", "user", &login)).await?;
            println!("user `{}` created", user.login);
            if generated {
                println!("password: {password}  (shown once: keep it now)");
            }
        }
        Manage::Entity(EntityCommand::Add {
            name,
            tenant,
            customer,
            parent,
        }) => {
            let scope = scope(storage, &tenant).await?;
            let kind = if customer {
                EntityKind::Customer
            } else {
                EntityKind::Unit
            };
            let entity = entities::create(storage, scope, &name, kind, parent.as_deref()).await?;
            println!("{} `{}` created in `{tenant}`", entity.kind, entity.name);
        }
        Manage::Entity(EntityCommand::List { tenant }) => {
            println!("{:<32} kind", "name");
            for e in entities::list(storage, scope(storage, &tenant).await?).await? {
                println!("{:<32} {}", e.name, e.kind);
            }
        }
        Manage::User(UserCommand::List { tenant }) => {
            let list = match &tenant {
                Some(t) => users::list(storage, scope(storage, t).await?).await?,
                None => users::list_platform(storage).await?,
            };
            println!("{:<24} {:<32} {:<32} roles", "login", "name", "email");
            for u in list {
                let roles: Vec<String> = roles::of_user(storage, u.id)
                    .await?
                    .into_iter()
                    .map(|r| r.name)
                    .collect();
                println!(
                    "{:<24} {:<32} {:<32} {}",
                    u.login,
                    u.name,
                    u.email.unwrap_or_default(),
                    roles.join(", ")
                );
            }
        }
        Manage::User(UserCommand::Passwd {
            login,
            password_stdin,
        }) => {
            let (password, generated) = new_password(password_stdin)?;
            let hash = password::hash_password(&password, hashing)?;
            let user = users::by_login(storage, &login).await?;
            users::set_password(storage, None, &login, hash).await?;
            audit::record(
                storage,
                cli_event(user.tenant_id, "user.password", "user", &login),
            )
            .await?;
            println!("password of `{login}` changed");
            if generated {
                println!("password: {password}  (shown once: keep it now)");
            }
        }
        Manage::Class(ClassCommand::Add {
            name,
            tenant,
            description,
            gateway,
        }) => {
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
        Manage::Class(ClassCommand::List { tenant }) => {
            println!("{:<32} {:<8} description", "name", "gateway");
            for c in classes::list(storage, scope(storage, &tenant).await?).await? {
                println!("{:<32} {:<8} {}", c.name, c.is_gateway, c.description);
            }
        }
        Manage::Class(ClassCommand::Provisioning { name, tenant, off }) => {
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
        Manage::Device(DeviceCommand::Add {
            uid,
            tenant,
            class,
            name,
            entity,
            gateway,
            format,
        }) => {
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
        Manage::Device(DeviceCommand::List { tenant }) => {
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
        Manage::Device(DeviceCommand::Credentials {
            uid,
            tenant,
            username,
            password_stdin,
            certificate,
        }) => {
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
        Manage::Role(command) => access::roles(storage, command).await?,
        Manage::ApiKey(command) => access::api_keys(storage, command).await?,
        Manage::Format(command) => formats::formats(storage, command).await?,
        Manage::Interpreter(command) => interpreters::interpreters(storage, command).await?,
        Manage::Event(command) => interpreters::events(storage, command).await?,
        Manage::Class(ClassCommand::Children {
            name,
            tenant,
            class,
            off: _,
        }) => {
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
        Manage::Class(ClassCommand::Format {
            name,
            tenant,
            format,
            none: _,
            outbound,
        }) => formats::class_format(storage, &name, &tenant, format, outbound).await?,
        Manage::Command(command) => commands::commands(storage, command).await?,
        Manage::Workflow(command) => workflows::workflows(storage, command).await?,
    }
    Ok(())
}
