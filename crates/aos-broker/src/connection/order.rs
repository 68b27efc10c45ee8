//! Keeps one client's publishes in arrival order (MQTT 3.1.1 §4.6, 5.0 §4.6: a server forwards a
//! client's messages on a topic in the order it received them), on 5.0 connections: 3.1.1 ones
//! have their own dispatcher (`v3`), which handles packets in arrival order.
//!
//! ntex-mqtt may process several packets of a connection concurrently, and a call that waits for
//! service readiness can be overtaken by a later one, so the publish handlers do not run in
//! arrival order. The connection guard sees packets in arrival order and hands out tickets; a
//! handler claims the ticket of its packet (found by a key computed from the packet, identical
//! packets being interchangeable) and routes through [`InboundOrder::complete`], which releases
//! messages strictly in ticket order.

use std::cell::{Cell, RefCell};
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::num::NonZeroU16;

use crate::message::Message;

/// ntex-mqtt streams payloads from this size on (its default `min_chunk_size`): the guard may see
/// only their beginning, so the key covers a prefix of them.
const STREAMED_FROM: u32 = 32 * 1024;
const STREAMED_PREFIX: usize = 1024;

/// The key of a PUBLISH: its topic (or, in 5.0, the topic alias it uses), its payload size and its
/// payload (or the beginning of a streamed one).
pub(crate) fn publish_key(
    topic: &str,
    alias: Option<NonZeroU16>,
    payload_size: u32,
    payload: &[u8],
) -> u64 {
    let mut h = DefaultHasher::new();
    match alias {
        Some(alias) => (1u8, alias.get()).hash(&mut h),
        None => (0u8, topic).hash(&mut h),
    }
    payload_size.hash(&mut h);
    let covered = if payload_size >= STREAMED_FROM {
        STREAMED_PREFIX.min(payload.len())
    } else {
        payload.len()
    };
    payload[..covered].hash(&mut h);
    h.finish()
}

#[derive(Default)]
pub(crate) struct InboundOrder {
    /// Arrivals not claimed yet: (key, ticket).
    arrivals: RefCell<VecDeque<(u64, u64)>>,
    next_ticket: Cell<u64>,
    next_release: Cell<u64>,
    /// Completed tickets waiting for earlier ones, with the message to route (if any).
    done: RefCell<BTreeMap<u64, Option<Message>>>,
    /// Woken whenever tickets are released.
    advanced: tokio::sync::Notify,
}

impl InboundOrder {
    /// A PUBLISH arrived (called in arrival order); returns its ticket.
    pub(crate) fn arrived(&self, key: u64) -> u64 {
        let ticket = self.next_ticket.get();
        self.next_ticket.set(ticket + 1);
        self.arrivals.borrow_mut().push_back((key, ticket));
        ticket
    }

    /// The ticket of the earliest unclaimed arrival with `key`.
    pub(crate) fn claim(&self, key: u64) -> Option<u64> {
        let mut arrivals = self.arrivals.borrow_mut();
        let position = arrivals.iter().position(|(k, _)| *k == key)?;
        arrivals.remove(position).map(|(_, ticket)| ticket)
    }

    /// Ticket `ticket` is finished (with a message to route, or none); returns the messages that
    /// may be routed now, in arrival order. Finishing a ticket twice keeps the first outcome.
    pub(crate) fn complete(&self, ticket: u64, message: Option<Message>) -> Vec<Message> {
        if ticket < self.next_release.get() {
            return Vec::new();
        }
        let mut done = self.done.borrow_mut();
        done.entry(ticket).or_insert(message);
        let mut released = Vec::new();
        let before = self.next_release.get();
        while let Some(message) = done.remove(&self.next_release.get()) {
            released.extend(message);
            self.next_release.set(self.next_release.get() + 1);
        }
        if self.next_release.get() != before {
            self.advanced.notify_waiters();
        }
        if done.is_empty() {
            // Nothing is waiting: unclaimed arrivals before the release point are settled too.
            let release = self.next_release.get();
            self.arrivals.borrow_mut().retain(|(_, t)| *t >= release);
        }
        released
    }
}

impl InboundOrder {
    /// Waits until ticket `ticket` has been released (its message, if any, routed).
    pub(crate) async fn released(&self, ticket: u64) {
        loop {
            // Created before the check: a release in between still wakes it.
            let advanced = self.advanced.notified();
            if ticket < self.next_release.get() {
                return;
            }
            advanced.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use ntex::util::Bytes;
    use ntex_mqtt::QoS;

    use super::*;

    fn msg(n: u8) -> Message {
        Message::new("t", Bytes::from(vec![n]), QoS::AtMostOnce, false)
    }

    fn payloads(v: Vec<Message>) -> Vec<u8> {
        v.iter().map(|m| m.payload[0]).collect()
    }

    #[test]
    fn messages_are_released_in_arrival_order() {
        let order = InboundOrder::default();
        let keys: Vec<u64> = (0..3).map(|n| publish_key("t", None, 1, &[n])).collect();
        for k in &keys {
            order.arrived(*k);
        }
        // Handlers finish out of order.
        let t2 = order.claim(keys[2]).expect("ticket");
        assert!(
            order.complete(t2, Some(msg(2))).is_empty(),
            "waits for 0 and 1"
        );
        let t0 = order.claim(keys[0]).expect("ticket");
        assert_eq!(payloads(order.complete(t0, Some(msg(0)))), vec![0]);
        let t1 = order.claim(keys[1]).expect("ticket");
        assert_eq!(payloads(order.complete(t1, Some(msg(1)))), vec![1, 2]);
        // The guard settling afterwards changes nothing.
        assert!(order.complete(t1, None).is_empty());
    }

    #[test]
    fn a_ticket_settled_without_a_message_releases_the_next() {
        let order = InboundOrder::default();
        let a = order.arrived(1);
        let b = order.arrived(2);
        let tb = order.claim(2).expect("ticket");
        assert_eq!(tb, b);
        assert!(order.complete(tb, Some(msg(9))).is_empty());
        // The first publish was refused (or answered without a handler): settled empty.
        assert_eq!(payloads(order.complete(a, None)), vec![9]);
    }

    #[test]
    fn keys_tell_topics_aliases_and_payloads_apart() {
        let alias = NonZeroU16::new(3);
        assert_ne!(
            publish_key("a", None, 1, b"x"),
            publish_key("b", None, 1, b"x")
        );
        assert_ne!(
            publish_key("a", None, 1, b"x"),
            publish_key("a", None, 1, b"y")
        );
        assert_eq!(
            publish_key("", alias, 1, b"x"),
            publish_key("resolved", alias, 1, b"x")
        );
        // A streamed payload is keyed by its beginning, which the guard already has.
        let big = vec![7u8; 40_000];
        assert_eq!(
            publish_key("a", None, 40_000, &big[..2048]),
            publish_key("a", None, 40_000, &big)
        );
    }
}
