//! Live updates for people watching: new values, events, device status and command status,
//! published by the workers on the bus once they are stored (`live.{tenant}`), streamed by the
//! web role to the signed-in users of that tenant who may see the device.

use serde::{Deserialize, Serialize};

/// The subjects live updates go to (one per tenant).
pub const PATTERN: &str = "live.>";

/// The subject of a tenant's live updates.
pub fn subject(tenant: i64) -> String {
    format!("live.{tenant}")
}

/// The key-value mark of a tenant someone watches live (workers publish only for those).
pub fn watch_key(tenant: i64) -> String {
    format!("live/{tenant}")
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
