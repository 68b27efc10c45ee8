//! Layered configuration: built-in defaults ← config file ← `AOS_*` environment ← command line.
//!
//! `aos-core` owns the sections every node has (`node`, `log`, `admin`, `queue`, `state`); each role crate
//! owns its own section (`broker`, `worker`, `web`, `storage`, `auth`) and extracts it through
//! [`Settings::section`], so a slim build still accepts — but does not interpret — the sections
//! of roles it does not contain.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::Value;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Deserializer, Serialize};

pub use crate::keys::{ENV_PREFIX, env_var_for};
use crate::kind::RoleKind;

/// The environment variable naming the config file when `--config` is not given.
pub const CONFIG_FILE_ENV: &str = "AOS_CONFIG";

/// A configuration problem, worded for the person who has to fix it: it names the key, where the
/// value came from and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "config file {path} does not exist (given by {given_by}); pass an existing file or omit it to use the defaults"
    )]
    MissingFile { path: PathBuf, given_by: String },
    #[error(
        "the configuration key `{old}` (environment variable {}) has moved: set `{new}` (environment variable {}) instead",
        env_var_for(old),
        env_var_for(new)
    )]
    Moved {
        old: &'static str,
        new: &'static str,
    },
    #[error(
        "invalid configuration key `{key}` (environment variable {}): {reason}",
        env_var_for(key)
    )]
    Value { key: &'static str, reason: String },
    #[error("{}", describe_figment_error(.error, .section.as_deref()))]
    Invalid {
        error: Box<figment::Error>,
        /// The section the error's key paths are relative to.
        section: Option<String>,
    },
}

impl From<figment::Error> for ConfigError {
    fn from(err: figment::Error) -> Self {
        ConfigError::Invalid {
            error: Box::new(err),
            section: None,
        }
    }
}

fn describe_figment_error(err: &figment::Error, section: Option<&str>) -> String {
    let mut out = Vec::new();
    for e in err.clone() {
        let source = match e.metadata.as_ref() {
            Some(meta) => match &meta.source {
                Some(figment::Source::File(path)) => format!("config file {}", path.display()),
                Some(other) => other.to_string(),
                None => meta.name.to_string(),
            },
            None => "built-in defaults".to_string(),
        };
        let path: Vec<&str> = section
            .into_iter()
            .chain(e.path.iter().map(String::as_str))
            .collect();
        if path.is_empty() {
            out.push(format!("{source} is invalid: {}", e.kind));
            continue;
        }
        let key = path.join(".");
        let source = if source.contains("environment") {
            format!("environment variable {}", env_var_for(&key))
        } else {
            source
        };
        out.push(format!(
            "invalid configuration key `{key}` (from {source}): {}",
            e.kind
        ));
    }
    out.join("; ")
}

/// Where configuration comes from, besides the built-in defaults and the environment.
#[derive(Debug, Default, Clone)]
pub struct ConfigSources {
    /// `--config PATH` on the command line.
    pub file: Option<PathBuf>,
    /// Command-line flags, as dotted keys and values; they win over everything else.
    pub overrides: Vec<(String, Value)>,
}

impl ConfigSources {
    pub fn with_override(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.overrides.push((key.to_string(), value.into()));
        self
    }
}

/// The loaded configuration: the merged sources plus the parsed core sections.
#[derive(Clone)]
pub struct Settings {
    figment: Figment,
    core: CoreConfig,
    file: Option<PathBuf>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("core", &self.core)
            .field("file", &self.file)
            .finish()
    }
}

impl Settings {
    /// Reads the layered configuration and validates the core sections.
    pub fn load(sources: &ConfigSources) -> Result<Settings, ConfigError> {
        let file = match &sources.file {
            Some(path) => Some((path.clone(), "--config".to_string())),
            None => std::env::var_os(CONFIG_FILE_ENV)
                .filter(|v| !v.is_empty())
                .map(|v| (PathBuf::from(v), CONFIG_FILE_ENV.to_string())),
        };
        let mut figment = Figment::new();
        if let Some((path, given_by)) = &file {
            if !path.is_file() {
                return Err(ConfigError::MissingFile {
                    path: path.clone(),
                    given_by: given_by.clone(),
                });
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(
            Env::prefixed(ENV_PREFIX)
                .filter(|key| key.as_str().contains("__"))
                .split("__"),
        );
        for (key, value) in &sources.overrides {
            figment = figment.merge(Serialized::default(key, value.clone()));
        }
        Settings::from_figment(figment, file.map(|(p, _)| p))
    }

    /// Builds settings from an explicit figment (embedding and tests).
    pub fn from_figment(figment: Figment, file: Option<PathBuf>) -> Result<Settings, ConfigError> {
        if let Some((old, new)) = moved_key(&figment) {
            return Err(ConfigError::Moved { old, new });
        }
        let mut core: CoreConfig = Figment::from(Serialized::defaults(CoreConfig::default()))
            .merge(figment.clone())
            .extract()?;
        core.node.check()?;
        core.cluster.check()?;
        core.choose_backends();
        Ok(Settings {
            figment,
            core,
            file,
        })
    }

    pub fn core(&self) -> &CoreConfig {
        &self.core
    }

    /// The config file in use, if any.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Extracts one role's section (`broker`, `storage`, …), starting from `T::default()`, with
    /// errors that name the full key and its source.
    pub fn section<T>(&self, key: &str) -> Result<T, ConfigError>
    where
        T: Serialize + DeserializeOwned + Default,
    {
        Figment::from(Serialized::defaults(T::default()))
            .merge(self.figment.focus(key))
            .extract()
            .map_err(|error| ConfigError::Invalid {
                error: Box::new(error),
                section: Some(key.to_string()),
            })
    }
}

/// The sections every node has. Role sections are validated by their role crates.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoreConfig {
    pub node: NodeConfig,
    pub log: LogConfig,
    pub admin: AdminConfig,
    pub cluster: ClusterConfig,
    pub bus: BusConfig,
    pub kv: KvConfig,
    pub queue: QueueConfig,
    pub state: StateConfig,
    #[serde(skip_serializing)]
    pub storage: IgnoredAny,
    #[serde(skip_serializing)]
    pub auth: IgnoredAny,
    #[serde(skip_serializing)]
    pub broker: IgnoredAny,
    #[serde(skip_serializing)]
    pub worker: IgnoredAny,
    #[serde(skip_serializing)]
    pub web: IgnoredAny,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// The node's identity in a cluster. Empty: generated on first start and kept in
    /// `<data_dir>/node-id`.
    pub id: String,
    /// Roles this node runs. Empty: every role compiled into the binary.
    #[serde(deserialize_with = "roles_from_list_or_string")]
    pub roles: Vec<RoleKind>,
    /// Roles a system administrator may switch on or off while the node runs (platform page,
    /// `PUT /api/nodes/{id}/roles/{role}`): `broker` and/or `worker`. Empty: none.
    #[serde(deserialize_with = "roles_from_list_or_string")]
    pub switchable_roles: Vec<RoleKind>,
    /// Where the node keeps its files: the SQLite database, the durable queues, its id.
    pub data_dir: PathBuf,
    /// How long a graceful shutdown may take before the node stops anyway.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// How often the node renews its registration (which expires after three misses) and its
    /// last-seen time in the database.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            id: String::new(),
            roles: Vec::new(),
            switchable_roles: Vec::new(),
            data_dir: PathBuf::from("./data"),
            shutdown_timeout: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(10),
        }
    }
}

impl NodeConfig {
    /// A node id names the node in keys and bus subjects (`nodes.<id>`): 1 to 64 characters of
    /// `A-Z a-z 0-9 - _`.
    fn check(&self) -> Result<(), ConfigError> {
        let id = &self.id;
        let fits = id.len() <= 64
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
        if fits {
            Ok(())
        } else {
            Err(ConfigError::Value {
                key: "node.id",
                reason: format!(
                    "`{id}` cannot name a node: use 1 to 64 characters of A-Z a-z 0-9 - _ (or leave it empty to have one generated)"
                ),
            })
        }
    }

    /// `dir` as configured, or `<data_dir>/<name>` when it is empty.
    pub fn dir_or_default(&self, dir: &Path, name: &str) -> PathBuf {
        if dir.as_os_str().is_empty() {
            self.data_dir.join(name)
        } else {
            dir.to_path_buf()
        }
    }

    /// The heartbeat period in use: the configured one, at least 100 ms.
    pub fn heartbeat(&self) -> Duration {
        self.heartbeat_interval.max(Duration::from_millis(100))
    }
}

/// Accepts `["broker", "web"]` as well as `"broker,web"` (handy in environment variables).
fn roles_from_list_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<RoleKind>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Roles {
        List(Vec<String>),
        Text(String),
    }
    let names: Vec<String> = match Roles::deserialize(d)? {
        Roles::List(list) => list,
        Roles::Text(text) => text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
    };
    names
        .iter()
        .map(|name| {
            RoleKind::parse(name).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "unknown role `{name}`, expected a list of: broker, worker, web"
                ))
            })
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter (`info`, `aos_broker=debug,info`, …); `RUST_LOG` wins when set.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of the admin listener (`/health`, `/ready`, `/metrics`, `/node`) every node runs.
    pub listen: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 9090)),
        }
    }
}

/// Whether a node is alone or one of several sharing PostgreSQL and NATS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One node, every seam embedded (`memory:`, `disk:`), SQLite or PostgreSQL.
    #[default]
    Standalone,
    /// One of several nodes: the bus, the work queues and the key-value store on NATS
    /// (`nats:` unless set otherwise), storage on PostgreSQL.
    Distributed,
}

/// `[cluster]`: how the nodes of a distributed deployment find their shared services.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    pub mode: Mode,
    /// NATS servers (several for a NATS cluster: a list, or one string with commas).
    #[serde(deserialize_with = "list_or_comma_string")]
    pub nats_url: Vec<String>,
    /// Names every subject, stream and bucket of this deployment (`<prefix>.…`, `<PREFIX>_…`),
    /// so several deployments can share one NATS: 1 to 32 characters of `A-Z a-z 0-9 - _`.
    pub prefix: String,
    /// JetStream replicas of the work queues and the key-value store: 1, or 3 on a NATS
    /// cluster of three or more servers (a write then survives the loss of one server).
    pub replicas: usize,
    /// NATS user and password, or token, or a credentials file (`.creds`), if the servers
    /// require them.
    pub nats_user: String,
    pub nats_password: String,
    pub nats_token: String,
    pub nats_credentials: PathBuf,
    /// A CA certificate (PEM) to verify the NATS servers with; set, TLS is required.
    pub nats_tls_ca: PathBuf,
    /// Start a standalone node even when its database shows another live node (which its
    /// embedded bus, queues and key-value store would not reach).
    pub ignore_other_nodes: bool,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            mode: Mode::Standalone,
            nats_url: Vec::new(),
            prefix: "aos".into(),
            replicas: 1,
            nats_user: String::new(),
            nats_password: String::new(),
            nats_token: String::new(),
            nats_credentials: PathBuf::new(),
            nats_tls_ca: PathBuf::new(),
            ignore_other_nodes: false,
        }
    }
}

impl ClusterConfig {
    fn check(&self) -> Result<(), ConfigError> {
        let prefix = &self.prefix;
        let fits = !prefix.is_empty()
            && prefix.len() <= 32
            && prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
        if !fits {
            return Err(ConfigError::Value {
                key: "cluster.prefix",
                reason: format!(
                    "`{prefix}` cannot name subjects and streams: use 1 to 32 characters of A-Z a-z 0-9 - _"
                ),
            });
        }
        if !matches!(self.replicas, 1 | 3 | 5) {
            return Err(ConfigError::Value {
                key: "cluster.replicas",
                reason: format!(
                    "{} is not a JetStream replica count: use 1, 3 or 5",
                    self.replicas
                ),
            });
        }
        Ok(())
    }
}

/// Accepts `["a", "b"]` as well as `"a,b"` (handy in environment variables).
fn list_or_comma_string<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Items {
        List(Vec<String>),
        Text(String),
    }
    Ok(match Items::deserialize(d)? {
        Items::List(list) => list,
        Items::Text(text) => text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
    })
}

/// The bus between the parts of a node and between nodes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    /// `memory:` (in-process) or `nats:` (NATS core subjects, `[cluster]`). Empty: the mode's
    /// (`memory:` standalone, `nats:` distributed).
    pub url: String,
}

/// The key-value store (registrations, leases, marks).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KvConfig {
    /// `memory:` (in-process) or `nats:` (a JetStream key-value bucket, `[cluster]`). Empty: the
    /// mode's (`memory:` standalone, `nats:` distributed).
    pub url: String,
}

/// The durable work queues: what every backend shares, and each backend's own section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// `disk:` (a log on local disk, `[queue.disk]`) or `nats:` (JetStream work-queue streams,
    /// `[cluster]`). Empty: the mode's (`disk:` standalone, `nats:` distributed).
    pub url: String,
    /// Default time a pulled item stays invisible before it is delivered again.
    #[serde(with = "humantime_serde")]
    pub visibility_timeout: Duration,
    /// Default number of deliveries after which an unacknowledged item goes to the dead letters.
    pub max_attempts: u32,
    /// Payload bytes all queues may hold together; beyond it pushes are refused (back-pressure).
    pub max_bytes: u64,
    pub disk: DiskQueueSection,
}

impl QueueConfig {
    /// The options queues are declared with (the defaults of `[queue]`).
    pub fn options(&self) -> crate::queue::QueueOptions {
        crate::queue::QueueOptions {
            visibility_timeout: self.visibility_timeout,
            max_attempts: self.max_attempts,
        }
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            url: String::new(),
            visibility_timeout: Duration::from_secs(30),
            max_attempts: 5,
            max_bytes: 1024 * 1024 * 1024,
            disk: DiskQueueSection::default(),
        }
    }
}

/// `[queue.disk]`: the embedded queue's log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiskQueueSection {
    /// Directory of the queue log. Empty: `<node.data_dir>/queue`.
    pub dir: PathBuf,
    /// Size at which the log rolls over to a new segment file, in bytes.
    pub segment_bytes: u64,
    /// How long the writer may wait for more pushes before one fsync covers them all. Zero still
    /// groups every push that arrives while the previous fsync runs.
    #[serde(with = "humantime_serde")]
    pub commit_delay: Duration,
}

impl Default for DiskQueueSection {
    fn default() -> Self {
        DiskQueueSection {
            dir: PathBuf::new(),
            segment_bytes: 64 * 1024 * 1024,
            commit_delay: Duration::ZERO,
        }
    }
}

/// The durable state store: what roles keep across restarts, such as the broker's retained
/// messages and persistent sessions.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// `disk:` (a log on local disk, `[state.disk]`), `memory:` (kept only while the process
    /// runs) or `nats:` (a JetStream bucket every node of the deployment shares, `[cluster]`).
    /// Empty: the mode's (`disk:` standalone, `nats:` distributed).
    pub url: String,
    pub disk: DiskStateSection,
}

/// `[state.disk]`: the embedded state store's log.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiskStateSection {
    /// Directory of the state log. Empty: `<node.data_dir>/state`.
    pub dir: PathBuf,
}

impl CoreConfig {
    /// Seams whose URL is left empty get the mode's backend.
    fn choose_backends(&mut self) {
        let (memory, disk) = match self.cluster.mode {
            Mode::Standalone => ("memory:", "disk:"),
            Mode::Distributed => ("nats:", "nats:"),
        };
        for (url, default) in [
            (&mut self.bus.url, memory),
            (&mut self.kv.url, memory),
            (&mut self.queue.url, disk),
            (&mut self.state.url, disk),
        ] {
            if url.is_empty() {
                *url = default.to_string();
            }
        }
    }
}

/// Keys that moved, and where to: set under the old name, they are refused with a message that
/// names the new one (silently ignoring them would change what the node does).
const MOVED_KEYS: &[(&str, &str)] = &[
    ("queue.dir", "queue.disk.dir"),
    ("queue.segment_bytes", "queue.disk.segment_bytes"),
    ("queue.commit_delay", "queue.disk.commit_delay"),
    ("state.dir", "state.disk.dir"),
];

/// The first moved key that `figment` sets, with its new name.
fn moved_key(figment: &Figment) -> Option<(&'static str, &'static str)> {
    MOVED_KEYS
        .iter()
        .copied()
        .find(|(old, _)| figment.find_value(old).is_ok())
}

/// Replaces secrets in a rendered configuration: values of keys that name a password, secret or
/// token, and the password inside URLs.
pub fn redact(value: &mut toml::Value) {
    match value {
        toml::Value::Table(table) => {
            for (key, v) in table.iter_mut() {
                let k = key.to_ascii_lowercase();
                if ["password", "secret", "token"]
                    .iter()
                    .any(|s| k.contains(s))
                {
                    if let toml::Value::String(s) = v
                        && !s.is_empty()
                    {
                        *s = "<redacted>".into();
                    }
                } else if k.ends_with("url") {
                    if let toml::Value::String(s) = v {
                        *s = redact_url(s);
                    }
                } else {
                    redact(v);
                }
            }
        }
        toml::Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// `postgres://user:pw@host/db` → `postgres://user:<redacted>@host/db`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}{}:<redacted>{}",
            &url[..scheme_end + 3],
            &authority[..colon],
            &rest[at..]
        ),
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_password_only() {
        assert_eq!(
            redact_url("postgres://aos:hunter2@db:5432/aos"),
            "postgres://aos:<redacted>@db:5432/aos"
        );
        assert_eq!(
            redact_url("sqlite://./data/aos.db"),
            "sqlite://./data/aos.db"
        );
        assert_eq!(redact_url("postgres://db/aos"), "postgres://db/aos");
    }

    #[test]
    fn env_var_names_follow_the_nesting_rule() {
        assert_eq!(env_var_for("broker.listen"), "AOS_BROKER__LISTEN");
    }

    #[test]
    fn roles_accept_a_comma_separated_string() {
        let settings = Settings::from_figment(
            Figment::from(Serialized::default("node.roles", "broker, web")),
            None,
        )
        .expect("valid roles");
        assert_eq!(
            settings.core().node.roles,
            vec![RoleKind::Broker, RoleKind::Web]
        );
    }

    #[test]
    fn moved_keys_are_refused_with_their_new_name() {
        let err = Settings::from_figment(
            Figment::from(Serialized::default("queue.commit_delay", "1ms")),
            None,
        )
        .expect_err("a moved key must fail");
        assert_eq!(
            err.to_string(),
            "the configuration key `queue.commit_delay` (environment variable AOS_QUEUE__COMMIT_DELAY) has moved: set `queue.disk.commit_delay` (environment variable AOS_QUEUE__DISK__COMMIT_DELAY) instead"
        );
    }

    #[test]
    fn unknown_keys_are_named_in_the_error() {
        let err = Settings::from_figment(
            Figment::from(Serialized::default("node.colour", "blue")),
            None,
        )
        .expect_err("unknown key must fail");
        let text = err.to_string();
        assert!(text.contains("node.colour"), "{text}");
    }
}
