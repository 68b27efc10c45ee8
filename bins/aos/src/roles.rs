//! The roles linked into this binary, chosen by Cargo features.

use std::sync::Arc;

use aos_core::config::ConfigError;
use aos_core::node::ListenerInfo;
use aos_core::{Role, RoleKind, Settings};

/// A role compiled into this binary.
pub struct CompiledRole {
    pub kind: RoleKind,
    /// The role's configuration section, with defaults filled in (validates it too).
    pub effective_config: fn(&Settings) -> Result<toml::Value, ConfigError>,
    /// The listeners it opens, as the node reports them.
    pub listeners: fn(&Settings) -> Result<Vec<ListenerInfo>, ConfigError>,
    pub make: fn() -> Arc<dyn Role>,
}

fn section<T>(settings: &Settings, key: &str) -> Result<toml::Value, ConfigError>
where
    T: serde::Serialize + serde::de::DeserializeOwned + Default,
{
    let value: T = settings.section(key)?;
    Ok(toml::Value::try_from(value).unwrap_or_else(|e| toml::Value::String(e.to_string())))
}

/// Every compiled role, in start order.
pub fn compiled() -> Vec<CompiledRole> {
    let mut roles = vec![
        #[cfg(feature = "worker")]
        CompiledRole {
            kind: RoleKind::Worker,
            effective_config: |s| section::<aos_worker::WorkerConfig>(s, "worker"),
            listeners: |_| Ok(Vec::new()),
            make: || Arc::new(aos_worker::WorkerRole::new()),
        },
        #[cfg(feature = "web")]
        CompiledRole {
            kind: RoleKind::Web,
            effective_config: |s| section::<aos_web::WebConfig>(s, "web"),
            listeners: |s| Ok(s.section::<aos_web::WebConfig>("web")?.listener_infos()),
            make: || Arc::new(aos_web::WebRole::new()),
        },
        #[cfg(feature = "broker")]
        CompiledRole {
            kind: RoleKind::Broker,
            effective_config: |s| section::<aos_broker::BrokerConfig>(s, "broker"),
            listeners: |s| {
                Ok(s.section::<aos_broker::BrokerConfig>("broker")?
                    .listener_infos())
            },
            make: || Arc::new(aos_broker::BrokerRole::new()),
        },
    ];
    roles.sort_by_key(|r| RoleKind::ALL.iter().position(|k| *k == r.kind));
    roles
}

pub fn compiled_kinds() -> Vec<RoleKind> {
    compiled().iter().map(|r| r.kind).collect()
}
