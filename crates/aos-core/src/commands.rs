//! Commands on their way to devices, and devices' presence, between the workers (which keep
//! commands in storage) and the broker nodes (one of which holds a device's session). They
//! travel on the [`crate::Bus`]: a worker cannot know which node a device is connected to, so it
//! offers a command to every broker node and the one holding the session delivers it. The bus is
//! at-most-once; storage stays the truth (a command not confirmed `sent` is offered again).

use serde::{Deserialize, Serialize};

/// Commands offered to the broker nodes ([`CommandDelivery`]).
pub const DELIVER_SUBJECT: &str = "commands.deliver";
/// Commands just created for a device (its id as the payload): offer them now rather than at
/// the next look.
pub const CREATED_SUBJECT: &str = "commands.created";
/// Commands a broker node handed to the device's session ([`CommandSent`]).
pub const SENT_SUBJECT: &str = "commands.sent";
/// Devices connecting, subscribing and disconnecting ([`Presence`]).
pub const PRESENCE_PATTERN: &str = "devices.>";

/// A command for the node holding `session`'s MQTT session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandDelivery {
    pub id: i64,
    pub tenant: i64,
    /// The client id of the session to deliver to: the device, or the gateway it is reached
    /// through.
    pub session: String,
    pub topic: String,
    /// The command in the device's outbound format.
    pub payload: Vec<u8>,
}

/// A command handed to its device's session by `node`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandSent {
    pub id: i64,
    pub node: String,
}

/// What a device did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceChange {
    Connected,
    /// It subscribed (to its command topic, typically): commands waiting for it can go now.
    Subscribed,
    Disconnected,
}

/// A device connected to, subscribed on or disconnected from `node`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    pub device: String,
    pub tenant: i64,
    pub node: String,
    pub change: PresenceChange,
    /// When it happened (milliseconds since the Unix epoch).
    pub at_ms: i64,
    /// The connection within the broker (its generation).
    #[serde(default)]
    pub connection: u64,
    /// The broker session across the cluster, `<node>/<boot>/<connection>`: whose presence a
    /// report is about.
    #[serde(default)]
    pub session: String,
}

impl Presence {
    pub fn subject(&self) -> &'static str {
        match self.change {
            PresenceChange::Connected => "devices.connected",
            PresenceChange::Subscribed => "devices.subscribed",
            PresenceChange::Disconnected => "devices.disconnected",
        }
    }
}

/// The bus form of these messages.
pub fn encode<T: Serialize>(message: &T) -> bytes::Bytes {
    // Serialising these plain structs cannot fail.
    serde_json::to_vec(message).unwrap_or_default().into()
}

/// A message read back (a malformed one is an error for the caller to log).
pub fn decode<T: for<'de> Deserialize<'de>>(payload: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let delivery = CommandDelivery {
            id: 7,
            tenant: 2,
            session: "gw-1".into(),
            topic: "aos/gw-1/nodes/n1/commands".into(),
            payload: vec![0, 1, 255],
        };
        assert_eq!(
            decode::<CommandDelivery>(&encode(&delivery)).ok(),
            Some(delivery)
        );
        assert!(decode::<CommandSent>(b"{\"id\":\"x\"}").is_err());
    }
}
