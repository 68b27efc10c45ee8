//! Command-line management for a newcomer before the web client exists: tenants, users, device
//! classes, devices and their credentials, roles and API keys, straight against the configured
//! database.

mod access;
mod classes;
mod commands;
mod devices;
mod entities;
mod formats;
mod interpreters;
mod tenants;
mod users;
mod workflows;

use access::{ApiKeyCommand, RoleCommand};
use classes::ClassCommand;
use commands::CommandCommand;
use devices::DeviceCommand;
use entities::EntityCommand;
use formats::FormatCommand;
use interpreters::{EventCommand, InterpreterCommand};
use tenants::TenantCommand;
use users::UserCommand;
use workflows::WorkflowCommand;

use std::io::BufRead;
use std::process::ExitCode;

use anyhow::{Context, bail};
use aos_auth::password::HashParams;
use aos_auth::{AuthSettings, password};
use aos_core::Settings;
use aos_storage::repo::Scope;
use aos_storage::repo::audit::AuditEvent;
use aos_storage::{Storage, StorageConfig};
use clap::Subcommand;

use crate::run::runtime;
use crate::{EXIT_CONFIG, EXIT_FAILURE, fail};

/// What to manage: the management subcommands of `aos`.
#[derive(Subcommand, Debug)]
pub enum Manage {
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Manage entities (internal units and customers) of a tenant.
    #[command(subcommand)]
    Entity(EntityCommand),
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage device classes.
    #[command(subcommand)]
    Class(ClassCommand),
    /// Manage devices and their credentials.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Manage the roles of a tenant.
    #[command(subcommand)]
    Role(RoleCommand),
    /// Manage API keys (how applications sign in over MQTT).
    #[command(subcommand, name = "apikey")]
    ApiKey(ApiKeyCommand),
    /// Manage message formats (how devices' payloads are read).
    #[command(subcommand)]
    Format(FormatCommand),
    /// Manage interpreters (value maps, expressions and levels of attributes).
    #[command(subcommand)]
    Interpreter(InterpreterCommand),
    /// List, acknowledge and clear events (alarms).
    #[command(subcommand)]
    Event(EventCommand),
    /// Send commands to devices (one, or a batch for devices and classes) and follow them.
    #[command(subcommand)]
    Command(CommandCommand),
    /// Manage workflows (import, export, enable, disable, run) and see their runs.
    #[command(subcommand)]
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
                if result.is_ok()
                    && let Err(err) = aos_seams::announce_change(settings.core(), "cli").await
                {
                    eprintln!("warning: the running nodes were not told ({err}); they see the change within a minute");
                }
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
    Ok(Scope::tenant(
        aos_storage::repo::tenants::by_name(storage, tenant)
            .await?
            .id,
    ))
}

/// Runs `command`; new passwords are hashed with `hashing`.
async fn execute(storage: &Storage, command: Manage, hashing: HashParams) -> anyhow::Result<()> {
    match command {
        Manage::Tenant(command) => tenants::tenants(storage, command).await,
        Manage::Entity(command) => entities::entities(storage, command).await,
        Manage::User(command) => users::users(storage, command, hashing).await,
        Manage::Class(command) => classes::classes(storage, command).await,
        Manage::Device(command) => devices::devices(storage, command, hashing).await,
        Manage::Role(command) => access::roles(storage, command).await,
        Manage::ApiKey(command) => access::api_keys(storage, command).await,
        Manage::Format(command) => formats::formats(storage, command).await,
        Manage::Interpreter(command) => interpreters::interpreters(storage, command).await,
        Manage::Event(command) => interpreters::events(storage, command).await,
        Manage::Command(command) => commands::commands(storage, command).await,
        Manage::Workflow(command) => workflows::workflows(storage, command).await,
    }
}
