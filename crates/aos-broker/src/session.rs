//! Sessions: what the broker keeps for a client id — subscriptions, the queue of messages waiting
//! to be sent, the messages sent and not yet acknowledged, and the link to the live connection.
//!
//! A session outlives its connections when the client asks for it (clean session 0 in 3.1.1, a
//! session expiry interval in 5.0). Delivery never blocks a publisher: a message for a session is
//! appended to its queue (bounded by count and bytes; what does not fit is dropped and counted)
//! and the connection's writer task, woken through the link, sends it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use aos_core::access::Identity;
use ntex::util::ByteString;
use ntex_mqtt::QoS;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{Notify, oneshot};

use crate::auth::Reader;
use crate::delivery::{Outgoing, Record, SubOptions};
use crate::message::Message;
use crate::persist::{SessionMeta, StoredSession, StoredSubscription, instant_as_wall_ms};
use crate::topic::SubscriptionFilter;

/// Why a connection is closed by the broker rather than by its client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kick {
    /// Another connection took the session over (same client id).
    TakenOver,
    /// The broker is stopping.
    ShuttingDown,
    /// The client's credentials were changed or revoked.
    Revoked,
    /// An administrator closed the connection (the broker view, `aos broker disconnect`).
    Administrator,
}

/// Which MQTT version a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    V3,
    V5,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::V3 => "3.1.1",
            Protocol::V5 => "5.0",
        }
    }
}

/// Who is at the other end of a connection, as the broker view shows it.
#[derive(Clone, Debug)]
pub struct Peer {
    /// As the PROXY protocol header gave it, behind a load balancer.
    pub address: Option<SocketAddr>,
    pub protocol: Protocol,
    pub listener: Arc<str>,
    /// Seconds, as in force (5.0: the server's when it set one).
    pub keep_alive: u16,
}

/// The live connection of a session.
pub struct Link {
    pub generation: u64,
    /// When its CONNECT began to be authenticated (milliseconds since the Unix epoch): a
    /// credential change after it closes the connection, one before it does not.
    pub signed_in_at_ms: i64,
    /// Wakes the connection's writer task when there is something to send.
    pub wake: Arc<Notify>,
    /// Asks the connection to close.
    pub kick: Option<oneshot::Sender<Kick>>,
    pub peer: Peer,
}

/// A will message and when to publish it.
#[derive(Clone, Debug)]
pub struct Will {
    pub message: Message,
    pub delay: Duration,
}

/// Bounds of a session's queue.
#[derive(Clone, Copy, Debug)]
pub struct QueueLimits {
    pub max_messages: usize,
    pub max_bytes: usize,
}

/// What happened to a message offered to a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enqueued {
    Queued,
    /// QoS 0 for a session that is not connected: not kept (MQTT allows this).
    SkippedOffline,
    /// The session's queue is full; the message is dropped.
    Overflow,
    /// A copy another node stored for it, which the session holds already (read back from the
    /// store before its live copy came).
    Held,
}

#[derive(Default)]
pub struct SessionState {
    pub link: Option<Link>,
    pub queue: VecDeque<Outgoing>,
    queued_bytes: usize,
    /// Sent with QoS 1/2 and not acknowledged yet, in send order.
    pub inflight: VecDeque<Outgoing>,
    next_packet_id: u16,
    /// Subscriptions by their full filter (including any `$share/{group}/` prefix).
    pub subscriptions: Subscriptions,
    /// Inbound QoS 2 packet ids received and not yet released (PUBREL) — exactly-once.
    pub qos2_received: HashSet<NonZeroU16>,
    /// How long the session outlives its connection; `None`: forever.
    pub expiry: Option<Duration>,
    pub disconnected_at: Option<Instant>,
    /// Boxed: most sessions have none, and a message inline is most of a session's size.
    pub will: Option<Box<Will>>,
    /// Its place in the state store while it is persistent.
    /// Boxed: a session that is not persistent does not carry its size.
    pub stored: Option<Box<StoredSession>>,
    /// The copies other nodes stored that it read back from the store lately, and when: their
    /// live copy, if it comes after all, is not taken again (even once delivered).
    merged: HashMap<Record, Instant>,
}

/// A session's subscriptions by their full filter (including any `$share/{group}/` prefix): a
/// list while they are few (a device has one or a few, and the smallest table of a map is
/// several times their size), a map once they are many (an application may have thousands).
pub enum Subscriptions {
    Few(Vec<(String, Subscription)>),
    Many(HashMap<String, Subscription>),
}

/// A subscription: its filter, and the options it was granted.
pub type Subscription = (SubscriptionFilter, SubOptions);

/// Up to this many subscriptions are kept in a list.
const FEW_SUBSCRIPTIONS: usize = 8;

impl Default for Subscriptions {
    fn default() -> Self {
        Subscriptions::Few(Vec::new())
    }
}

impl Subscriptions {
    /// Sets the subscription to `full`; returns the one it replaces.
    pub fn insert(&mut self, full: String, subscription: Subscription) -> Option<Subscription> {
        let few = match self {
            Subscriptions::Many(map) => return map.insert(full, subscription),
            Subscriptions::Few(few) => few,
        };
        if let Some((_, held)) = few.iter_mut().find(|(f, _)| *f == full) {
            return Some(std::mem::replace(held, subscription));
        }
        if few.len() < FEW_SUBSCRIPTIONS {
            // A vector's first push makes room for four: a device's one subscription needs one.
            few.reserve_exact(1);
            few.push((full, subscription));
        } else {
            let mut map: HashMap<_, _> = few.drain(..).collect();
            map.insert(full, subscription);
            *self = Subscriptions::Many(map);
        }
        None
    }

    pub fn remove(&mut self, full: &str) -> Option<Subscription> {
        match self {
            Subscriptions::Few(few) => {
                let at = few.iter().position(|(f, _)| f == full)?;
                Some(few.swap_remove(at).1)
            }
            Subscriptions::Many(map) => map.remove(full),
        }
    }

    pub fn get(&self, full: &str) -> Option<&Subscription> {
        match self {
            Subscriptions::Few(few) => few.iter().find(|(f, _)| f == full).map(|(_, s)| s),
            Subscriptions::Many(map) => map.get(full),
        }
    }

    pub fn iter(&self) -> Box<dyn Iterator<Item = (&String, &Subscription)> + '_> {
        match self {
            Subscriptions::Few(few) => Box::new(few.iter().map(|(full, s)| (full, s))),
            Subscriptions::Many(map) => Box::new(map.iter()),
        }
    }

    /// Takes every subscription out.
    pub fn drain(&mut self) -> std::vec::IntoIter<(String, Subscription)> {
        match std::mem::take(self) {
            Subscriptions::Few(few) => few.into_iter(),
            Subscriptions::Many(map) => map.into_iter().collect::<Vec<_>>().into_iter(),
        }
    }
}

/// How long a copy read back from the store is remembered against its live copy (which the
/// bus delivers within moments, or never).
const MERGED_MEMORY: Duration = Duration::from_secs(60);

impl SessionState {
    /// Whether the copy another node stored as `record` is queued or in flight, or was read
    /// back from the store lately.
    fn holds(&self, record: &Record) -> bool {
        self.merged.contains_key(record)
            || self
                .queue
                .iter()
                .chain(&self.inflight)
                .any(|held| held.record.as_ref() == Some(record))
    }

    fn next_packet_id(&mut self) -> NonZeroU16 {
        loop {
            self.next_packet_id = self.next_packet_id.wrapping_add(1);
            if let Some(id) = NonZeroU16::new(self.next_packet_id)
                && !self.inflight.iter().any(|o| o.packet_id == Some(id))
            {
                return id;
            }
        }
    }

    /// Whether the session has expired at `now` (only when disconnected).
    pub fn expired(&self, now: Instant) -> bool {
        match (self.disconnected_at, self.expiry) {
            (Some(at), Some(expiry)) => now.duration_since(at) >= expiry,
            _ => false,
        }
    }
}

/// Broker-wide figures every session keeps current: messages waiting, in flight, and sent
/// again (flagged DUP) to a client that came back.
#[derive(Clone, Default)]
pub struct QueueGauges {
    pub queued: Gauge,
    pub inflight: Gauge,
    pub resent: Counter,
}

pub struct Session {
    /// Unique for the broker's lifetime (never reused), unlike client ids.
    pub id: u64,
    pub client_id: ByteString,
    /// Who opened the session (a device or application of a tenant, or a username of the
    /// broker's configuration); it is resumed only by the same identity and username.
    pub identity: Option<Identity>,
    pub username: Option<ByteString>,
    connected: AtomicBool,
    state: Mutex<SessionState>,
    gauges: QueueGauges,
}

impl Session {
    pub fn new(
        id: u64,
        client_id: ByteString,
        identity: Option<Identity>,
        username: Option<ByteString>,
        gauges: QueueGauges,
    ) -> Session {
        Session {
            id,
            client_id,
            identity,
            username,
            connected: AtomicBool::new(false),
            state: Mutex::new(SessionState::default()),
            gauges,
        }
    }

    /// Whether a message of `tenant` may reach this session: a tenant's clients receive only
    /// their tenant's messages and the platform's.
    pub fn receives(&self, tenant: Option<i64>) -> bool {
        match (&self.identity, tenant) {
            (Some(identity), Some(tenant)) => identity.tenant() == tenant,
            _ => true,
        }
    }

    /// Who the session belongs to, for the ACL.
    /// Whether the session is `tenant`'s (a device's or an application's of it); `None`: any
    /// session.
    pub fn of_tenant(&self, tenant: Option<i64>) -> bool {
        tenant.is_none_or(|t| self.identity.as_ref().is_some_and(|i| i.tenant() == t))
    }

    pub fn reader(&self) -> Reader<'_> {
        Reader {
            client_id: &self.client_id,
            username: self.username.as_deref(),
            identity: self.identity.as_ref(),
        }
    }

    /// Whether it was opened by this identity and username.
    pub fn belongs_to(&self, identity: Option<&Identity>, username: Option<&str>) -> bool {
        self.identity.as_ref() == identity && self.username.as_deref() == username
    }

    /// Removes the session from the store. Called as the session leaves the broker's map, under
    /// its lock: a new session of the same client id stores its records only after that.
    pub fn unstore(&self) {
        if let Some(stored) = self.lock().stored.take() {
            stored.end();
        }
    }

    /// Drops everything the session holds (it has ended).
    pub fn discard(&self) {
        let mut state = self.lock();
        self.gauges.queued.dec_by(state.queue.len() as i64);
        self.gauges.inflight.dec_by(state.inflight.len() as i64);
        state.queue.clear();
        state.inflight.clear();
        state.queued_bytes = 0;
    }

    pub fn lock(&self) -> MutexGuard<'_, SessionState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Attaches a new connection; returns the previous one, to be kicked.
    pub fn attach(&self, link: Link) -> Option<Link> {
        let mut state = self.lock();
        let previous = state.link.replace(link);
        state.disconnected_at = None;
        // Unacknowledged messages are sent again first, flagged DUP, with their packet ids.
        let resend: Vec<Outgoing> = state.inflight.drain(..).collect();
        self.gauges.inflight.dec_by(resend.len() as i64);
        self.gauges.resent.inc_by(resend.len() as u64);
        self.gauges.queued.inc_by(resend.len() as i64);
        for mut out in resend.into_iter().rev() {
            out.dup = true;
            state.queued_bytes += out.message.weight();
            state.queue.push_front(out);
        }
        self.connected.store(true, Ordering::Release);
        previous
    }

    /// Detaches connection `generation` (a later connection may have taken over already).
    /// Returns true if it was the session's current connection.
    pub fn detach(&self, generation: u64) -> bool {
        let mut state = self.lock();
        if state
            .link
            .as_ref()
            .is_some_and(|l| l.generation == generation)
        {
            state.link = None;
            state.disconnected_at = Some(Instant::now());
            self.connected.store(false, Ordering::Release);
            true
        } else {
            false
        }
    }

    /// Puts back the messages a previous run had queued (in order): those sent before wait
    /// as in flight, to go out again flagged DUP with their packet ids.
    pub fn restore_queue(&self, queued: Vec<Outgoing>) {
        let mut state = self.lock();
        for out in queued {
            if out.packet_id.is_some() {
                state.inflight.push_back(out);
                self.gauges.inflight.inc();
            } else {
                state.queued_bytes += out.message.weight();
                state.queue.push_back(out);
                self.gauges.queued.inc();
            }
        }
    }

    /// Adds the copies other nodes stored for it (read back from the store) that it does not
    /// hold yet: their live copy did not come (the session was being taken over, or the bus
    /// lost it). Returns how many.
    pub fn merge_stored(&self, stored: Vec<Outgoing>) -> usize {
        let missing: Vec<Outgoing> = {
            let mut state = self.lock();
            let now = Instant::now();
            state
                .merged
                .retain(|_, at| now.duration_since(*at) < MERGED_MEMORY);
            let missing: Vec<Outgoing> = stored
                .into_iter()
                .filter(|out| match &out.record {
                    Some(record @ Record::Routed(..)) => !state.holds(record),
                    _ => false,
                })
                .collect();
            for out in &missing {
                if let Some(record) = &out.record {
                    state.merged.insert(record.clone(), now);
                }
            }
            missing
        };
        let found = missing.len();
        if found > 0 {
            self.restore_queue(missing);
            if let Some(link) = &self.lock().link {
                link.wake.notify_one();
            }
        }
        found
    }

    /// Offers a message to the session.
    pub fn enqueue(&self, out: Outgoing, limits: QueueLimits) -> Enqueued {
        let result = self.offer(out, limits);
        if result == Enqueued::Queued {
            self.gauges.queued.inc();
        }
        result
    }

    /// Offers a message to the session, leaving it to the caller to count it in the queued
    /// gauge: a fan-out adds its copies there once, not once per subscriber from every thread.
    pub fn offer(&self, out: Outgoing, limits: QueueLimits) -> Enqueued {
        let mut state = self.lock();
        if state.link.is_none() && out.qos == QoS::AtMostOnce {
            return Enqueued::SkippedOffline;
        }
        if let Some(record @ Record::Routed(..)) = &out.record
            && state.holds(record)
        {
            return Enqueued::Held;
        }
        let weight = out.message.weight();
        if state.queue.len() >= limits.max_messages
            || state.queued_bytes + weight > limits.max_bytes
        {
            // A copy another node stored for it goes too.
            if let (Some(stored), Some(record)) = (&state.stored, &out.record) {
                stored.done(record);
            }
            return Enqueued::Overflow;
        }
        state.queued_bytes += weight;
        let mut out = out;
        if out.qos != QoS::AtMostOnce
            && let Some(stored) = state.stored.as_mut()
        {
            stored.queued(&mut out);
        }
        let was_empty = state.queue.is_empty();
        state.queue.push_back(out);
        // The writer waits only once it found the queue empty: one wake-up then is enough (a
        // wake-up per message is a tenth of a busy fan-out's time).
        if was_empty && let Some(link) = &state.link {
            link.wake.notify_one();
        }
        Enqueued::Queued
    }

    /// The next messages to send, at most `limit`, and how many expired ones were dropped on
    /// the way: a run of QoS 0 messages, or one QoS 1/2 message (each of those waits for the
    /// client's credit on its own). QoS 1/2 messages get a packet id and move to the in-flight
    /// list (until acknowledged, or sent again after a reconnect). Taking a run under one lock
    /// keeps a busy subscriber's queue from bouncing between publishers and its writer per
    /// message.
    pub fn take_to_send(&self, now: Instant, limit: usize) -> (Vec<Outgoing>, usize) {
        let mut state = self.lock();
        // Sized for what is taken: a run of QoS 0 messages, or the one QoS 1/2 message.
        let run = match state.queue.front() {
            Some(out) if out.qos == QoS::AtMostOnce => state.queue.len().min(limit),
            Some(_) => 1,
            None => 0,
        };
        let mut batch = Vec::with_capacity(run);
        let (mut taken, mut expired) = (0, 0);
        while batch.len() < limit
            && batch
                .last()
                .is_none_or(|o: &Outgoing| o.qos == QoS::AtMostOnce)
        {
            let Some(mut out) = state.queue.pop_front() else {
                break;
            };
            if out.qos != QoS::AtMostOnce && !batch.is_empty() {
                state.queue.push_front(out);
                break;
            }
            taken += 1;
            state.queued_bytes = state.queued_bytes.saturating_sub(out.message.weight());
            if out.message.is_expired(now) {
                expired += 1;
                if let (Some(stored), Some(record)) = (&state.stored, &out.record) {
                    stored.done(record);
                }
                continue;
            }
            if out.qos != QoS::AtMostOnce {
                if out.packet_id.is_none() {
                    let id = state.next_packet_id();
                    out.packet_id = Some(id);
                    // Stored, so that after a restart or on another node it goes out again as
                    // MQTT resends: flagged DUP, under its packet id (QoS 2: the client may be
                    // waiting for PUBREL under it).
                    if let (Some(stored), Some(record)) = (&state.stored, &out.record) {
                        stored.sent(record, id);
                    }
                }
                state.inflight.push_back(out.clone());
                self.gauges.inflight.inc();
            }
            batch.push(out);
        }
        self.gauges.queued.dec_by(taken);
        (batch, expired)
    }

    /// The client acknowledged packet `id` (PUBACK, or PUBCOMP for QoS 2); returns whether a
    /// message was in flight under it.
    pub fn acknowledged(&self, id: NonZeroU16) -> bool {
        let mut state = self.lock();
        let Some(out) = state
            .inflight
            .iter()
            .position(|o| o.packet_id == Some(id))
            .and_then(|pos| state.inflight.remove(pos))
        else {
            return false;
        };
        self.gauges.inflight.dec();
        if let (Some(stored), Some(record)) = (&state.stored, &out.record) {
            stored.done(record);
        }
        true
    }

    /// Makes the session persistent (kept in the state store) from now on, storing what it
    /// holds; `None`: no longer persistent, its stored records go.
    pub fn set_stored(&self, stored: Option<StoredSession>) {
        let mut state = self.lock();
        let state = &mut *state;
        if let Some(old) = state.stored.take() {
            old.end();
        }
        let Some(mut stored) = stored else { return };
        for out in state.inflight.iter_mut().chain(state.queue.iter_mut()) {
            if out.qos != QoS::AtMostOnce {
                stored.queued(out);
                if let (Some(id), Some(record)) = (out.packet_id, &out.record) {
                    stored.sent(record, id);
                }
            }
        }
        for id in &state.qos2_received {
            stored.qos2_received(*id);
        }
        state.stored = Some(Box::new(stored));
        self.save(state);
    }

    /// Stores who owns the session, its expiry and subscriptions (if it is persistent).
    pub fn save(&self, state: &SessionState) {
        if let Some(stored) = &state.stored {
            stored.save(self.meta(state));
        }
    }

    /// The session as its record in the store describes it (without holder and version).
    pub fn meta(&self, state: &SessionState) -> SessionMeta {
        let mut subscriptions: Vec<StoredSubscription> = state
            .subscriptions
            .iter()
            .map(|(filter, (_, opts))| StoredSubscription::new(filter, opts))
            .collect();
        subscriptions.sort_by(|a, b| a.filter.cmp(&b.filter));
        SessionMeta {
            identity: self.identity.clone(),
            username: self.username.as_ref().map(|u| u.to_string()),
            expiry_secs: state.expiry.map(|e| e.as_secs()),
            disconnected_at_ms: state.disconnected_at.map(instant_as_wall_ms),
            subscriptions,
            holder: None,
            version: 0,
        }
    }

    /// An inbound QoS 2 message with packet id `id` was taken: a resend of it is not taken again
    /// until PUBREL. Returns false if it was already waiting.
    pub fn qos2_taken(&self, id: NonZeroU16) -> bool {
        let mut state = self.lock();
        let fresh = state.qos2_received.insert(id);
        if fresh && let Some(stored) = &state.stored {
            stored.qos2_received(id);
        }
        fresh
    }

    /// PUBREL for packet id `id`; returns whether it was waiting.
    pub fn qos2_released(&self, id: NonZeroU16) -> bool {
        let mut state = self.lock();
        let known = state.qos2_received.remove(&id);
        if known && let Some(stored) = &state.stored {
            stored.qos2_released(id);
        }
        known
    }
}

#[cfg(test)]
mod tests {
    use ntex::util::Bytes;

    use super::*;
    use crate::auth::ReadCheck;

    #[test]
    fn a_subscription_to_the_same_filter_replaces_the_earlier_one() {
        let sub = |filter: &str, qos| {
            let parsed = SubscriptionFilter::parse(filter, true).expect("valid");
            (parsed, SubOptions::qos(qos, ReadCheck::Open))
        };
        let mut subscriptions = Subscriptions::default();
        assert!(
            subscriptions
                .insert("a/#".into(), sub("a/#", QoS::AtMostOnce))
                .is_none()
        );
        assert!(
            subscriptions
                .insert("$share/g/b".into(), sub("$share/g/b", QoS::AtLeastOnce))
                .is_none()
        );
        let replaced = subscriptions.insert("a/#".into(), sub("a/#", QoS::ExactlyOnce));
        assert_eq!(replaced.map(|(_, o)| o.qos), Some(QoS::AtMostOnce));
        assert_eq!(subscriptions.iter().count(), 2);
        assert_eq!(
            subscriptions.get("a/#").map(|(_, o)| o.qos),
            Some(QoS::ExactlyOnce)
        );
        assert_eq!(
            subscriptions.remove("$share/g/b").map(|(f, _)| f.group),
            Some(Some("g".to_string()))
        );
        assert!(subscriptions.remove("$share/g/b").is_none());
        let left: Vec<_> = subscriptions.drain().map(|(full, _)| full).collect();
        assert_eq!(left, ["a/#"]);
        assert!(subscriptions.get("a/#").is_none());
    }

    #[test]
    fn many_subscriptions_are_kept_in_a_map_and_found_alike() {
        let mut subscriptions = Subscriptions::default();
        for n in 0..100 {
            let full = format!("apps/{n}/#");
            let parsed = SubscriptionFilter::parse(&full, true).expect("valid");
            let sub = (parsed, SubOptions::qos(QoS::AtLeastOnce, ReadCheck::Open));
            assert!(subscriptions.insert(full, sub).is_none());
        }
        assert!(matches!(subscriptions, Subscriptions::Many(_)));
        assert_eq!(subscriptions.iter().count(), 100);
        assert!(subscriptions.get("apps/99/#").is_some());
        assert!(subscriptions.remove("apps/0/#").is_some());
        assert!(subscriptions.get("apps/0/#").is_none());
        assert_eq!(subscriptions.drain().len(), 99);
        assert_eq!(subscriptions.iter().count(), 0);
    }

    fn out(qos: QoS, payload: &'static str) -> Outgoing {
        Outgoing::new(
            Arc::new(Message::new(
                "t",
                Bytes::from_static(payload.as_bytes()),
                qos,
                false,
            )),
            qos,
            false,
            Vec::new(),
        )
    }

    /// The one message `take_to_send` gives.
    fn next(s: &Session, now: Instant) -> Outgoing {
        let (mut batch, _) = s.take_to_send(now, 64);
        assert_eq!(batch.len(), 1, "one message at a time");
        batch.remove(0)
    }

    const ROOMY: QueueLimits = QueueLimits {
        max_messages: 100,
        max_bytes: 1 << 20,
    };

    fn link(generation: u64) -> Link {
        Link {
            generation,
            signed_in_at_ms: 0,
            wake: Arc::new(Notify::new()),
            kick: None,
            peer: Peer {
                address: None,
                protocol: Protocol::V5,
                listener: "mqtt".into(),
                keep_alive: 0,
            },
        }
    }

    #[test]
    fn offline_sessions_keep_qos1_but_not_qos0() {
        let s = Session::new(1, "c".into(), None, None, QueueGauges::default());
        assert_eq!(
            s.enqueue(out(QoS::AtMostOnce, "a"), ROOMY),
            Enqueued::SkippedOffline
        );
        assert_eq!(
            s.enqueue(out(QoS::AtLeastOnce, "b"), ROOMY),
            Enqueued::Queued
        );
        let state = s.lock();
        assert_eq!((state.queue.len(), state.inflight.len()), (1, 0));
    }

    #[test]
    fn queues_are_bounded_by_count_and_bytes() {
        let s = Session::new(1, "c".into(), None, None, QueueGauges::default());
        s.attach(link(1));
        let two = QueueLimits {
            max_messages: 2,
            max_bytes: 1 << 20,
        };
        assert_eq!(s.enqueue(out(QoS::AtMostOnce, "a"), two), Enqueued::Queued);
        assert_eq!(s.enqueue(out(QoS::AtMostOnce, "b"), two), Enqueued::Queued);
        assert_eq!(
            s.enqueue(out(QoS::AtMostOnce, "c"), two),
            Enqueued::Overflow
        );
        let small = QueueLimits {
            max_messages: 100,
            max_bytes: 5,
        };
        let s = Session::new(2, "d".into(), None, None, QueueGauges::default());
        s.attach(link(1));
        assert_eq!(
            s.enqueue(out(QoS::AtMostOnce, "abc"), small),
            Enqueued::Queued
        );
        assert_eq!(
            s.enqueue(out(QoS::AtMostOnce, "abc"), small),
            Enqueued::Overflow
        );
    }

    #[test]
    fn unacknowledged_messages_are_resent_first_with_dup_and_their_ids() {
        let s = Session::new(1, "c".into(), None, None, QueueGauges::default());
        s.attach(link(1));
        s.enqueue(out(QoS::AtLeastOnce, "one"), ROOMY);
        s.enqueue(out(QoS::AtLeastOnce, "two"), ROOMY);
        let now = Instant::now();
        let first = next(&s, now);
        let second = next(&s, now);
        s.acknowledged(first.packet_id.expect("id"));
        assert!(s.detach(1));
        s.enqueue(out(QoS::AtLeastOnce, "three"), ROOMY);
        assert!(s.attach(link(2)).is_none());
        let again = next(&s, now);
        assert_eq!(again.packet_id, second.packet_id);
        assert!(again.dup);
        assert_eq!(&again.message.payload[..], b"two");
        let third = next(&s, now);
        assert!(!third.dup);
        assert_ne!(third.packet_id, second.packet_id);
    }

    #[test]
    fn qos0_messages_are_taken_in_runs_and_qos1_ones_alone() {
        let s = Session::new(1, "c".into(), None, None, QueueGauges::default());
        s.attach(link(1));
        for (qos, payload) in [
            (QoS::AtMostOnce, "a"),
            (QoS::AtMostOnce, "b"),
            (QoS::AtMostOnce, "c"),
            (QoS::AtLeastOnce, "d"),
            (QoS::AtLeastOnce, "e"),
            (QoS::AtMostOnce, "f"),
        ] {
            s.enqueue(out(qos, payload), ROOMY);
        }
        let now = Instant::now();
        let mut runs = Vec::new();
        loop {
            let (batch, _) = s.take_to_send(now, 2);
            if batch.is_empty() {
                break;
            }
            runs.push(
                batch
                    .iter()
                    .map(|o| std::str::from_utf8(&o.message.payload).unwrap_or("?"))
                    .collect::<String>(),
            );
        }
        assert_eq!(runs, ["ab", "c", "d", "e", "f"]);
        assert_eq!(s.lock().inflight.len(), 2);
    }

    #[test]
    fn a_stale_connection_cannot_detach_its_successor() {
        let s = Session::new(1, "c".into(), None, None, QueueGauges::default());
        s.attach(link(1));
        assert!(s.attach(link(2)).is_some());
        assert!(!s.detach(1));
        assert!(s.is_connected());
        assert!(s.detach(2));
        assert!(!s.is_connected());
    }
}
