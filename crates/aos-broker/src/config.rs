use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The `[broker]` configuration section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// Address of the MQTT (TCP) listener.
    pub listen: SocketAddr,
    /// Threads serving MQTT connections; 0: one per CPU core.
    pub workers: usize,
    /// How long open connections may take to finish when the node stops.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 1883)),
            workers: 0,
            drain_timeout: Duration::from_secs(5),
        }
    }
}
