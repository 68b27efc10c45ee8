//! `aos`: the AOS binary. One process, the roles its configuration gives it.

mod broker_view;
mod logging;
mod manage;
mod roles;
mod run;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use aos_core::config::{ConfigSources, LogFormat};
use aos_core::{RoleKind, Settings};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

// Many small allocations per message (MQTT packets, queue items, rows): mimalloc serves them
// markedly faster than the system allocator (the ingest pipeline stores ~25% more per second).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status for a problem the operator must fix before starting (configuration, usage).
pub const EXIT_CONFIG: u8 = 2;
/// Exit status for a failure while starting or running.
pub const EXIT_FAILURE: u8 = 1;

#[derive(Parser, Debug)]
#[command(
    name = "aos",
    about = "AOS, the Application Object Server: an open IoT platform server"
)]
struct Cli {
    /// Configuration file (TOML). Default: $AOS_CONFIG, else built-in defaults only.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormatArg>,
    /// Log level or filter (`info`, `aos_broker=debug,info`); RUST_LOG wins when set.
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start a node.
    Run {
        /// Roles to run, comma-separated (broker, worker, web). Default: every compiled-in role.
        #[arg(long, value_delimiter = ',', value_name = "ROLES")]
        roles: Option<Vec<String>>,
        /// Directory for the node's files (SQLite database, queues, node id).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Print the effective configuration (secrets redacted) and exit.
    Config,
    /// Apply pending database migrations and exit.
    Migrate,
    /// List the nodes of the deployment: live or not, running roles, health, last seen.
    Status,
    /// The broker view, through a running node's REST API: MQTT clients, retained messages,
    /// traffic; disconnect a client, delete a retained message.
    Broker(broker_view::BrokerView),
    #[command(flatten)]
    Manage(manage::Manage),
}

fn compiled_role_names() -> String {
    let roles: Vec<&str> = roles::compiled_kinds().iter().map(|k| k.as_str()).collect();
    if roles.is_empty() {
        "none".to_string()
    } else {
        roles.join(", ")
    }
}

fn version_text() -> String {
    format!("{} (roles: {})", aos_core::VERSION, compiled_role_names())
}

fn main() -> ExitCode {
    let matches = Cli::command().version(version_text()).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    let mut sources = ConfigSources {
        file: cli.config.clone(),
        overrides: Vec::new(),
    };
    if let Some(format) = cli.log_format {
        let name = match format {
            LogFormatArg::Text => "text",
            LogFormatArg::Json => "json",
        };
        sources = sources.with_override("log.format", name);
    }
    if let Some(level) = &cli.log_level {
        sources = sources.with_override("log.level", level.as_str());
    }
    if let Command::Run { roles, data_dir } = &cli.command {
        if let Some(roles) = roles {
            sources = sources.with_override("node.roles", roles.join(","));
        }
        if let Some(dir) = data_dir {
            sources = sources.with_override("node.data_dir", dir.display().to_string());
        }
    }
    let settings = match Settings::load(&sources) {
        Ok(settings) => settings,
        Err(err) => return fail(EXIT_CONFIG, err),
    };
    match cli.command {
        Command::Config => print_config(&settings),
        Command::Migrate => with_logging(&settings, run::migrate),
        Command::Status => status::status(&settings),
        Command::Broker(view) => broker_view::run(&settings, view),
        Command::Run { .. } => with_logging(&settings, run::run),
        Command::Manage(manage) => manage::run(&settings, manage),
    }
}

pub(crate) fn fail(code: u8, err: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {err}");
    ExitCode::from(code)
}

fn with_logging(settings: &Settings, f: fn(&Settings) -> ExitCode) -> ExitCode {
    if let Err(err) = logging::init(&settings.core().log) {
        return fail(EXIT_CONFIG, err);
    }
    if settings.core().log.format == LogFormat::Json {
        tracing::debug!("logging as JSON");
    }
    f(settings)
}

/// The roles this node runs: configured ones (each must be compiled in), else every compiled one.
fn enabled_roles(settings: &Settings) -> Result<Vec<RoleKind>, String> {
    let compiled = roles::compiled_kinds();
    let switchable = &settings.core().node.switchable_roles;
    if switchable.contains(&RoleKind::Web) {
        return Err(
            "node.switchable_roles cannot hold `web`: the web role serves the switch itself".into(),
        );
    }
    if let Some(missing) = switchable.iter().find(|k| !compiled.contains(k)) {
        return Err(format!(
            "node.switchable_roles: role `{missing}` is not compiled into this binary (compiled roles: {})",
            compiled_role_names()
        ));
    }
    let wanted = &settings.core().node.roles;
    if wanted.is_empty() {
        return Ok(compiled);
    }
    if let Some(missing) = wanted.iter().find(|k| !compiled.contains(k)) {
        return Err(format!(
            "role `{missing}` is not compiled into this binary (compiled roles: {}); rebuild with `cargo build -p aos --features {}`, or remove it from `node.roles` / --roles",
            compiled_role_names(),
            missing.feature()
        ));
    }
    Ok(RoleKind::ALL
        .into_iter()
        .filter(|k| wanted.contains(k))
        .collect())
}

/// Every section with its defaults filled in; also validates the role sections.
fn effective_config(settings: &Settings) -> Result<toml::Table, aos_core::config::ConfigError> {
    let mut table = match toml::Value::try_from(settings.core()) {
        Ok(toml::Value::Table(table)) => table,
        _ => toml::Table::new(),
    };
    let mut storage: aos_storage::StorageConfig = settings.section("storage")?;
    storage.url = storage.resolved_url(&settings.core().node.data_dir);
    if let Ok(value) = toml::Value::try_from(storage) {
        table.insert("storage".into(), value);
    }
    let auth: aos_auth::AuthSettings = settings.section("auth")?;
    if let Ok(value) = toml::Value::try_from(auth) {
        table.insert("auth".into(), value);
    }
    for role in roles::compiled() {
        table.insert(
            role.kind.as_str().into(),
            (role.effective_config)(settings)?,
        );
    }
    Ok(table)
}

fn print_config(settings: &Settings) -> ExitCode {
    let table = match effective_config(settings) {
        Ok(table) => table,
        Err(err) => return fail(EXIT_CONFIG, err),
    };
    let mut value = toml::Value::Table(table);
    aos_core::config::redact(&mut value);
    let source = settings
        .file()
        .map_or("built-in defaults and environment".to_string(), |p| {
            format!("{} + defaults and environment", p.display())
        });
    println!("# Effective AOS configuration ({source}); secrets redacted.");
    match toml::to_string_pretty(&value) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(err) => fail(EXIT_FAILURE, err),
    }
}
