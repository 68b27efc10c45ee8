//! What the broker hands the workers through the `acquisition` queue: device messages as they
//! arrived — who sent each, on which topic, when, and its payload untouched — in a compact
//! binary form (the payload is carried as is, whatever it holds).
//!
//! Messages accepted at about the same time travel together: a queue item is one message, or a
//! group of the messages that arrived while the previous item was being pushed. Under load a
//! group holds dozens of messages, and the queue's per-item costs (on JetStream: the publish,
//! its acknowledgement, the delivery, the consumer's acknowledgement, a stored record) are paid
//! once per group instead of once per message; a lone message goes alone, without waiting.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::sync::oneshot;

use crate::queue::{QueueError, WorkQueue};

/// The queue of device messages on their way to the workers.
pub const ACQUISITION_QUEUE: &str = "acquisition";

/// The format version of one message's envelope (the first byte).
const VERSION: u8 = 1;
/// The first byte of a group: a count, then each message's envelope after its length.
const GROUP: u8 = 2;
/// Most messages in one group.
const GROUP_MESSAGES: usize = 256;
/// Most envelope bytes in one group (well below NATS's default 1 MiB message limit); a larger
/// message goes alone.
const GROUP_BYTES: usize = 256 * 1024;
/// Groups being pushed at once: the next one fills while these wait for the queue.
const GROUPS_IN_FLIGHT: usize = 2;

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

/// The messages of a queue item: one envelope, or a group of them.
pub fn unpack(mut item: Bytes) -> Result<Vec<Acquired>, EnvelopeError> {
    if item.first() != Some(&GROUP) {
        return Acquired::decode(item).map(|message| vec![message]);
    }
    item.advance(1);
    if item.remaining() < 2 {
        return Err(EnvelopeError("truncated"));
    }
    let count = usize::from(item.get_u16());
    let mut messages = Vec::with_capacity(count);
    for _ in 0..count {
        if item.remaining() < 4 {
            return Err(EnvelopeError("truncated"));
        }
        let len = usize::try_from(item.get_u32()).unwrap_or(usize::MAX);
        if item.remaining() < len {
            return Err(EnvelopeError("truncated"));
        }
        messages.push(Acquired::decode(item.split_to(len))?);
    }
    if item.has_remaining() {
        return Err(EnvelopeError("bytes after the last message of a group"));
    }
    Ok(messages)
}

/// How many messages a queue item carries, read from its first bytes (1 unless it is a group).
pub fn messages_in(item: &[u8]) -> usize {
    match item {
        [GROUP, high, low, ..] => usize::from(u16::from_be_bytes([*high, *low])),
        _ => 1,
    }
}

/// One queue item for `envelopes`: a lone envelope as it is, several as a group (at most
/// 65,535).
pub fn pack(mut envelopes: Vec<Bytes>) -> Bytes {
    if envelopes.len() == 1 {
        return envelopes.pop().unwrap_or_default();
    }
    let bytes: usize = envelopes.iter().map(|e| 4 + e.len()).sum();
    let mut out = BytesMut::with_capacity(3 + bytes);
    out.put_u8(GROUP);
    // The caller keeps a group within GROUP_MESSAGES.
    out.put_u16(u16::try_from(envelopes.len()).unwrap_or(u16::MAX));
    for envelope in &envelopes {
        out.put_u32(u32::try_from(envelope.len()).unwrap_or(u32::MAX));
        out.put_slice(envelope);
    }
    out.freeze()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Hands device messages to the workers: each gets a key no other message of the cluster has
/// and is pushed to the acquisition queue, durably, before `acquire` returns — only then may
/// the device be told it was accepted. Messages acquired while earlier ones are being pushed
/// wait and are pushed together, as one group.
pub struct Acquirer {
    queue: Arc<dyn WorkQueue>,
    /// `{node id}-{source}-{start time}-`: with a counter, unique in the cluster.
    key_prefix: String,
    next: AtomicU64,
    waiting: Arc<Mutex<Waiting>>,
}

/// The outcome a caller of `acquire` waits for.
type Pushed = oneshot::Sender<Result<(), QueueError>>;

/// Messages waiting to be pushed, shared by the callers and the tasks pushing groups.
#[derive(Default)]
struct Waiting {
    envelopes: Vec<Bytes>,
    callers: Vec<Pushed>,
    /// Tasks pushing groups now.
    pushing: usize,
}

impl Waiting {
    /// Takes the next group from the front: at most GROUP_MESSAGES envelopes and GROUP_BYTES
    /// bytes, and at least one envelope.
    fn next_group(&mut self) -> (Vec<Bytes>, Vec<Pushed>) {
        let mut bytes = 0;
        let taken = self
            .envelopes
            .iter()
            .take(GROUP_MESSAGES)
            .take_while(|envelope| {
                bytes += envelope.len();
                bytes <= GROUP_BYTES
            })
            .count()
            .max(1)
            .min(self.envelopes.len());
        (
            self.envelopes.drain(..taken).collect(),
            self.callers.drain(..taken).collect(),
        )
    }
}

/// Pushes groups until no message waits.
async fn push_groups(queue: Arc<dyn WorkQueue>, waiting: Arc<Mutex<Waiting>>) {
    let mut pusher = Pusher {
        waiting,
        counted: true,
    };
    loop {
        let (envelopes, callers) = {
            let mut waiting = pusher.lock();
            if waiting.envelopes.is_empty() {
                // Under the same lock as the check: a message that arrives next starts a pusher.
                waiting.pushing -= 1;
                drop(waiting);
                pusher.counted = false;
                return;
            }
            waiting.next_group()
        };
        let pushed = queue
            .push(ACQUISITION_QUEUE, pack(envelopes))
            .await
            .map(|_| ());
        for caller in callers {
            // A caller gone (its connection closed) needs no answer.
            let _ = caller.send(pushed.clone());
        }
    }
}

/// A task pushing groups, counted in `Waiting::pushing` until it ends — also when its runtime
/// drops it mid-push (its callers then get `Closed`; the next message starts another pusher).
struct Pusher {
    waiting: Arc<Mutex<Waiting>>,
    counted: bool,
}

impl Pusher {
    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Pusher {
    fn drop(&mut self) {
        if self.counted {
            self.lock().pushing -= 1;
        }
    }
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
            waiting: Arc::default(),
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
        let (pushed, outcome) = oneshot::channel();
        let start_pushing = {
            let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
            waiting.envelopes.push(envelope.encode());
            waiting.callers.push(pushed);
            let start = waiting.pushing < GROUPS_IN_FLIGHT;
            if start {
                waiting.pushing += 1;
            }
            start
        };
        if start_pushing {
            // A task of its own: a caller that goes away must not strand the others' messages.
            tokio::spawn(push_groups(self.queue.clone(), self.waiting.clone()));
        }
        outcome.await.unwrap_or(Err(QueueError::Closed))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::metrics::Metrics;
    use crate::queue::disk::{DiskQueue, DiskQueueConfig};

    fn message(n: usize) -> Acquired {
        Acquired {
            key: format!("n1-5f-{n}"),
            tenant: 7,
            device: "dev-1".into(),
            topic: "aos/dev-1/telemetry".into(),
            qos: 1,
            received_at_ms: 1_764_000_000_000,
            payload: Bytes::from(format!("{{\"t\":{n}}}")),
        }
    }

    #[test]
    fn envelopes_round_trip_and_garbage_is_refused() {
        let message = message(1);
        assert_eq!(Acquired::decode(message.encode()), Ok(message.clone()));
        let encoded = message.encode();
        assert!(Acquired::decode(encoded.slice(..20)).is_err());
        assert!(Acquired::decode(Bytes::from_static(b"\x09garbage-garbage-garbage")).is_err());
    }

    #[test]
    fn groups_round_trip_and_broken_groups_are_refused() {
        let messages: Vec<Acquired> = (0..3).map(message).collect();
        let item = pack(messages.iter().map(Acquired::encode).collect());
        assert_eq!(messages_in(&item), 3);
        assert_eq!(unpack(item.clone()), Ok(messages.clone()));
        // A lone message is an envelope as it is: what consumers of one-message items read.
        let lone = pack(vec![messages[0].encode()]);
        assert_eq!(
            (messages_in(&lone), lone.clone()),
            (1, messages[0].encode())
        );
        assert_eq!(unpack(lone), Ok(vec![messages[0].clone()]));
        assert!(unpack(item.slice(..item.len() - 1)).is_err());
        let mut longer = BytesMut::from(&item[..]);
        longer.put_u8(0);
        assert!(unpack(longer.freeze()).is_err());
        assert!(unpack(Bytes::from_static(b"\x02\x00\x02\x00\x00\x00\x01x")).is_err());
    }

    /// Messages acquired together travel as fewer queue items, each exactly once.
    #[tokio::test]
    async fn messages_acquired_together_are_pushed_as_groups() {
        let dir = tempfile::tempdir().expect("tempdir");
        let queue: Arc<dyn WorkQueue> = Arc::new(
            DiskQueue::open(DiskQueueConfig::new(dir.path()), &Metrics::default()).expect("queue"),
        );
        queue
            .declare(ACQUISITION_QUEUE, Default::default())
            .await
            .expect("declare");
        let acquirer = Arc::new(Acquirer::new(queue.clone(), "n1", "mqtt"));
        let calls = (0..500).map(|n| {
            let acquirer = acquirer.clone();
            tokio::spawn(async move {
                acquirer
                    .acquire(DeviceMessage {
                        tenant: 7,
                        device: "dev-1",
                        topic: "aos/dev-1/telemetry",
                        qos: 1,
                        payload: Bytes::from(n.to_string()),
                    })
                    .await
            })
        });
        for call in calls.collect::<Vec<_>>() {
            call.await.expect("task").expect("acquired");
        }
        let items = queue
            .pull(ACQUISITION_QUEUE, 1000, Duration::from_millis(100))
            .await
            .expect("pull");
        let mut payloads: Vec<String> = items
            .iter()
            .flat_map(|item| unpack(item.payload.clone()).expect("readable"))
            .map(|m| String::from_utf8(m.payload.to_vec()).expect("text"))
            .collect();
        payloads.sort_by_key(|p| p.parse::<u32>().unwrap_or(u32::MAX));
        let sent: Vec<String> = (0..500).map(|n: u32| n.to_string()).collect();
        assert_eq!(payloads, sent, "every message once");
        assert!(items.len() < 500, "{} items for 500 messages", items.len());
    }
}
