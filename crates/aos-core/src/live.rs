//! Live updates for people watching: new values, events, device status and command status,
//! published by the workers on the bus once they are stored (`live.{tenant}`), streamed by the
//! web role to the signed-in users of that tenant who may see the device.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::{Bus, Kv};

/// The subjects live updates go to (one per tenant).
pub const PATTERN: &str = "live.>";

/// The subject of a tenant's live updates.
pub fn subject(tenant: i64) -> String {
    format!("live.{tenant}")
}

/// The key-value mark of a tenant someone watches live (workers publish only for those).
pub fn watch_key(tenant: i64) -> String {
    format!("live.{tenant}")
}

/// What changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LiveKind {
    /// A new value of an attribute: `{"attribute", "ts", "value", "level"}`.
    Value,
    /// An event raised by a level change: `{"attribute", "level", "raised_at"}`.
    Event,
    /// The device went online or offline: `{"status", "at"}`.
    Device,
    /// A command's status changed: `{"id", "status", "at"}`.
    Command,
}

impl LiveKind {
    pub fn name(self) -> &'static str {
        match self {
            LiveKind::Value => "value",
            LiveKind::Event => "event",
            LiveKind::Device => "device",
            LiveKind::Command => "command",
        }
    }
}

/// One change of one device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LiveUpdate {
    pub kind: LiveKind,
    /// The device's id.
    pub device: String,
    /// What the kind says, plus the device.
    pub data: serde_json::Value,
}

/// The updates of one tenant published together.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LiveBatch {
    pub tenant: i64,
    pub updates: Vec<LiveUpdate>,
}

/// How long a tenant's watch mark is trusted before it is read again: a new watcher's first
/// updates come within it.
const WATCH_LOOKUP_TTL: Duration = Duration::from_secs(2);

/// Publishes live updates once what they tell is stored — only for tenants someone watches, so
/// that nobody watching costs the writers (the workers' ingest) nothing.
pub struct LiveFeed {
    bus: Arc<dyn Bus>,
    kv: Arc<dyn Kv>,
    watched: Mutex<HashMap<i64, (bool, Instant)>>,
}

impl LiveFeed {
    pub fn new(bus: Arc<dyn Bus>, kv: Arc<dyn Kv>) -> LiveFeed {
        LiveFeed {
            bus,
            kv,
            watched: Mutex::new(HashMap::new()),
        }
    }

    /// Whether anyone watches `tenant` live.
    pub async fn watched(&self, tenant: i64) -> bool {
        let known = self
            .watched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&tenant)
            .filter(|(_, at)| at.elapsed() < WATCH_LOOKUP_TTL)
            .map(|(watched, _)| *watched);
        if let Some(watched) = known {
            return watched;
        }
        let watched = match self.kv.get(&watch_key(tenant)).await {
            Ok(found) => found.is_some(),
            Err(err) => {
                tracing::debug!(%err, "cannot read a live watch mark");
                false
            }
        };
        self.watched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(tenant, (watched, Instant::now()));
        watched
    }

    /// Publishes `updates` of `tenant` if someone watches it (best effort: a lost update is
    /// seen at the viewer's next refresh).
    pub async fn publish(&self, tenant: i64, updates: Vec<LiveUpdate>) {
        if updates.is_empty() || !self.watched(tenant).await {
            return;
        }
        let batch = LiveBatch { tenant, updates };
        if let Err(err) = self
            .bus
            .publish(&subject(tenant), crate::commands::encode(&batch))
            .await
        {
            tracing::debug!(%err, "cannot publish a live update");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_reads_back_as_written() {
        let batch = LiveBatch {
            tenant: 7,
            updates: vec![LiveUpdate {
                kind: LiveKind::Value,
                device: "sensor-1".into(),
                data: serde_json::json!({"attribute": "t", "value": 21.5}),
            }],
        };
        let encoded = crate::commands::encode(&batch);
        let decoded: LiveBatch = crate::commands::decode(&encoded).expect("decodes");
        assert_eq!(decoded, batch);
        assert_eq!(subject(7), "live.7");
        assert_eq!(LiveKind::Command.name(), "command");
    }
}
