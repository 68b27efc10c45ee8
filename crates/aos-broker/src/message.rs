//! Application messages as the broker holds them: one shared copy per publish, whatever the
//! number of subscribers.

use std::num::NonZeroU32;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ntex::util::{ByteString, Bytes};
use ntex_mqtt::QoS;

/// MQTT 5.0 properties that travel with a message unchanged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Properties {
    pub payload_is_utf8: bool,
    pub content_type: Option<ByteString>,
    pub response_topic: Option<ByteString>,
    pub correlation_data: Option<Bytes>,
    pub user_properties: Vec<(ByteString, ByteString)>,
}

impl Properties {
    pub fn is_empty(&self) -> bool {
        *self == Properties::default()
    }
}

/// A published message.
#[derive(Clone, Debug)]
pub struct Message {
    pub topic: ByteString,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// 5.0 properties, if the publisher sent any.
    pub properties: Option<Box<Properties>>,
    /// When the message stops being deliverable (5.0 message expiry interval).
    pub expires_at: Option<Instant>,
    /// The publishing session (for no-local); 0 for messages the broker itself publishes.
    pub origin: u64,
    /// The publisher's tenant (a device or an application of it): only that tenant's clients
    /// receive the message. `None`: the platform's (configured users, the broker itself).
    pub tenant: Option<i64>,
    /// The 3.1.1 QoS 0 PUBLISH of it without the retain flag, as it goes on the wire: encoded
    /// by the first connection that sends it so, copied by all the others (a fan-out encodes
    /// a message once, not once per subscriber).
    pub(crate) wire_v3_at_most_once: OnceLock<Bytes>,
    /// The same for 5.0 subscribers that get it plainly: no retain flag, topic alias,
    /// subscription identifier or expiry interval.
    pub(crate) wire_v5_at_most_once: OnceLock<Bytes>,
}

impl Message {
    pub fn new(topic: impl Into<ByteString>, payload: Bytes, qos: QoS, retain: bool) -> Message {
        Message {
            topic: topic.into(),
            payload,
            qos,
            retain,
            properties: None,
            expires_at: None,
            origin: 0,
            tenant: None,
            wire_v3_at_most_once: OnceLock::new(),
            wire_v5_at_most_once: OnceLock::new(),
        }
    }

    pub fn with_expiry(mut self, interval: Option<NonZeroU32>) -> Message {
        self.expires_at =
            interval.map(|secs| Instant::now() + Duration::from_secs(secs.get().into()));
        self
    }

    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }

    /// The message expiry interval to forward: what is left of it, rounded up.
    pub fn remaining_expiry(&self, now: Instant) -> Option<NonZeroU32> {
        let left = self.expires_at?.checked_duration_since(now)?;
        let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        NonZeroU32::new(secs.min(u64::from(u32::MAX)) as u32)
    }

    /// Bytes this message costs in a queue.
    pub fn weight(&self) -> usize {
        self.topic.len() + self.payload.len()
    }
}

/// The lower of two QoS levels.
pub fn min_qos(a: QoS, b: QoS) -> QoS {
    if (a as u8) <= (b as u8) { a } else { b }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_forwarded_as_what_remains() {
        let msg = Message::new("t", Bytes::new(), QoS::AtMostOnce, false)
            .with_expiry(NonZeroU32::new(10));
        let now = Instant::now();
        assert_eq!(msg.remaining_expiry(now).map(|v| v.get()), Some(10));
        assert_eq!(
            msg.remaining_expiry(now + Duration::from_millis(4500))
                .map(|v| v.get()),
            Some(6)
        );
        assert!(msg.is_expired(now + Duration::from_secs(11)));
        assert_eq!(msg.remaining_expiry(now + Duration::from_secs(11)), None);
    }

    #[test]
    fn qos_downgrades_to_the_lower() {
        assert_eq!(
            min_qos(QoS::ExactlyOnce, QoS::AtLeastOnce),
            QoS::AtLeastOnce
        );
        assert_eq!(min_qos(QoS::AtMostOnce, QoS::ExactlyOnce), QoS::AtMostOnce);
    }
}
