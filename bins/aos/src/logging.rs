//! Logging: human-readable lines by default, JSON with `--log-format json`; the level comes from
//! `RUST_LOG` when set, else from `log.level`.

use std::io::IsTerminal;

use aos_core::config::{LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;

pub fn init(config: &LogConfig) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.is_empty() => EnvFilter::try_new(&value)
            .map_err(|e| format!("invalid RUST_LOG `{value}`: {e}"))?,
        _ => quiet_dependencies(EnvFilter::try_new(&config.level).map_err(|e| {
            format!(
                "invalid configuration key `log.level` (environment variable AOS_LOG__LEVEL): `{}` is not a log filter ({e}); use e.g. `info` or `aos_broker=debug,info`",
                config.level
            )
        })?, &config.level),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let result = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| format!("cannot install the logger: {e}"))
}

/// Libraries that narrate their start-up and shutdown at `info`; they log at `warn` unless the
/// configured filter names them.
const CHATTY: [&str; 6] = [
    "ntex_rt",
    "ntex_server",
    "ntex_service",
    "ntex_io",
    "ntex_mqtt",
    "sea_orm_migration",
];

fn quiet_dependencies(mut filter: EnvFilter, configured: &str) -> EnvFilter {
    for target in CHATTY.iter().filter(|t| !configured.contains(**t)) {
        if let Ok(directive) = format!("{target}=warn").parse() {
            filter = filter.add_directive(directive);
        }
    }
    filter
}
