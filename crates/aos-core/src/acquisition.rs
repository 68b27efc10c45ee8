//! What the broker hands the workers through the `acquisition` queue: one device message as it
//! arrived — who sent it, on which topic, when, and its payload untouched — in a compact binary
//! form (the payload is carried as is, whatever it holds).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::queue::{QueueError, WorkQueue};

/// The queue of device messages on their way to the workers.
pub const ACQUISITION_QUEUE: &str = "acquisition";

/// The envelope's format version (the first byte).
const VERSION: u8 = 1;

/// A device message as the broker accepted it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acquired {
    /// Names the message across redeliveries: processing it twice changes nothing.
    pub key: String,
    pub tenant: i64,
    /// The publishing device's id.
    pub device: String,
    pub topic: String,
    pub qos: u8,
    /// When the broker accepted it (milliseconds since the Unix epoch).
    pub received_at_ms: i64,
    pub payload: Bytes,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not an acquisition envelope: {0}")]
pub struct EnvelopeError(&'static str);

fn put_str(out: &mut BytesMut, value: &str) {
    out.put_u16(value.len().min(u16::MAX as usize) as u16);
    out.put_slice(&value.as_bytes()[..value.len().min(u16::MAX as usize)]);
}

fn get_str(input: &mut Bytes) -> Result<String, EnvelopeError> {
    if input.remaining() < 2 {
        return Err(EnvelopeError("truncated"));
    }
    let len = usize::from(input.get_u16());
    if input.remaining() < len {
        return Err(EnvelopeError("truncated"));
    }
    String::from_utf8(input.split_to(len).to_vec())
        .map_err(|_| EnvelopeError("a text is not UTF-8"))
}

impl Acquired {
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(
            1 + 8
                + 8
                + 1
                + 6
                + self.key.len()
                + self.device.len()
                + self.topic.len()
                + self.payload.len(),
        );
        out.put_u8(VERSION);
        out.put_i64(self.tenant);
        out.put_i64(self.received_at_ms);
        out.put_u8(self.qos);
        put_str(&mut out, &self.key);
        put_str(&mut out, &self.device);
        put_str(&mut out, &self.topic);
        out.put_slice(&self.payload);
        out.freeze()
    }

    pub fn decode(mut input: Bytes) -> Result<Acquired, EnvelopeError> {
        if input.remaining() < 18 {
            return Err(EnvelopeError("truncated"));
        }
        if input.get_u8() != VERSION {
            return Err(EnvelopeError("unknown version"));
        }
        let tenant = input.get_i64();
        let received_at_ms = input.get_i64();
        let qos = input.get_u8();
        let key = get_str(&mut input)?;
        let device = get_str(&mut input)?;
        let topic = get_str(&mut input)?;
        Ok(Acquired {
            key,
            tenant,
            device,
            topic,
            qos,
            received_at_ms,
            payload: input,
        })
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Hands device messages to the workers: each gets a key no other message of the cluster has
/// and is pushed to the acquisition queue, durably, before `acquire` returns — only then may
/// the device be told it was accepted.
pub struct Acquirer {
    queue: Arc<dyn WorkQueue>,
    /// `{node id}-{source}-{start time}-`: with a counter, unique in the cluster.
    key_prefix: String,
    next: AtomicU64,
}

/// A device message to hand over.
pub struct DeviceMessage<'a> {
    pub tenant: i64,
    pub device: &'a str,
    pub topic: &'a str,
    pub qos: u8,
    pub payload: Bytes,
}

impl Acquirer {
    /// `source` tells the node's entry points apart (`mqtt`, `http`).
    pub fn new(queue: Arc<dyn WorkQueue>, node_id: &str, source: &str) -> Acquirer {
        Acquirer {
            queue,
            key_prefix: format!("{node_id}-{source}-{:x}-", now_ms()),
            next: AtomicU64::new(1),
        }
    }

    pub async fn acquire(&self, message: DeviceMessage<'_>) -> Result<(), QueueError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let envelope = Acquired {
            // Zero-padded: keys of one source run sort in arrival order (appends to the index).
            key: format!("{}{n:016x}", self.key_prefix),
            tenant: message.tenant,
            device: message.device.to_string(),
            topic: message.topic.to_string(),
            qos: message.qos,
            received_at_ms: now_ms(),
            payload: message.payload,
        };
        self.queue
            .push(ACQUISITION_QUEUE, envelope.encode())
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_garbage_is_refused() {
        let message = Acquired {
            key: "n1-5f-1".into(),
            tenant: 7,
            device: "dev-1".into(),
            topic: "aos/dev-1/telemetry".into(),
            qos: 1,
            received_at_ms: 1_764_000_000_000,
            payload: Bytes::from_static(b"{\"t\":21.5}"),
        };
        assert_eq!(Acquired::decode(message.encode()), Ok(message.clone()));
        let encoded = message.encode();
        assert!(Acquired::decode(encoded.slice(..20)).is_err());
        assert!(Acquired::decode(Bytes::from_static(b"\x09garbage-garbage-garbage")).is_err());
    }
}
