//! What the broker keeps in the node's state store ([`StateStore`]) so that a restart or a crash
//! loses nothing it promised: retained messages, persistent sessions (who owns them, their
//! expiry, subscriptions and queued QoS 1/2 messages) and the inbound QoS 2 exchanges waiting for
//! PUBREL.
//!
//! Changes are staged while the broker's own locks are held (so the store sees them in the order
//! the broker made them) and the acknowledgements that promise them — PUBACK, PUBREC, SUBACK —
//! wait until they are durable ([`Persistence::durable`]).
//!
//! Keys: `broker.r.<topic>` is a retained message. A session's records share the prefix
//! `broker.s.<n>:<client id>.` (`n`: the client id's length in bytes, so that no session's prefix
//! starts another's): `meta`, `q.<seq>` a queued message, `p.<seq>` the packet id a QoS 1/2 one
//! was sent with, `i.<packet id>` an inbound QoS 2 message received and not yet released, and in
//! a cluster `x.<node>.<seq>` / `y.<node>.<seq>` the same as `q` / `p` for a message the node it
//! was published through stored before acknowledging it.
//!
//! In a shared store, `broker.m.<client id>` (the client id as one level) repeats a session's
//! `meta`: every node follows these records to know the persistent sessions other nodes hold;
//! `broker.w.<node incarnation>.<client id>` is the will of a client's connection to that node,
//! and `broker.n.<node incarnation>` says that the node may have left wills (so that a surviving
//! node reads the wills of dead nodes only, never everyone's).

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::num::{NonZeroU16, NonZeroU32};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aos_core::access::Identity;
use aos_core::state::{StateChange, StateError, StateStore, StateUpdate};
use ntex::util::{ByteString, Bytes};
use ntex_mqtt::QoS;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::delivery::{Outgoing, Record, RetainHandling, SubOptions};
use crate::message::{Message, Properties};

const RETAINED: &str = "broker.r.";
const SESSIONS: &str = "broker.s.";
const ROUTES: &str = "broker.m.";
const WILLS: &str = "broker.w.";
const HOLDERS: &str = "broker.n.";

/// The broker's view of the state store.
pub struct Persistence {
    state: Arc<dyn StateStore>,
    /// The broker's incarnation, recorded as the holder of the sessions it stores.
    holder: String,
}

/// A persistent session's place in the store (kept in its state while it is persistent).
pub struct StoredSession {
    persistence: Arc<Persistence>,
    prefix: String,
    /// Its `broker.m.` record, in a shared store.
    route: Option<String>,
    next_seq: u64,
    /// The version of its meta saved last (see [`SessionMeta::version`]).
    version: AtomicU64,
    subscribed: Mutex<Subscribed>,
}

/// Since which version of its meta a stored session's subscriptions are as they are, a hash of
/// them (to tell when they change), and whether the other nodes were seen to know them.
#[derive(Clone, Copy)]
struct Subscribed {
    version: u64,
    hash: u64,
    seen_everywhere: bool,
}

/// A subscription as stored (its ACL answer is worked out again when it is restored).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct StoredSubscription {
    pub filter: String,
    pub qos: u8,
    #[serde(default)]
    pub no_local: bool,
    #[serde(default)]
    pub retain_as_published: bool,
    /// 0: always, 1: if new, 2: never.
    #[serde(default)]
    pub retain_handling: u8,
    #[serde(default)]
    pub id: Option<u32>,
}

impl StoredSubscription {
    pub fn new(filter: &str, opts: &SubOptions) -> StoredSubscription {
        StoredSubscription {
            filter: filter.to_string(),
            qos: opts.qos as u8,
            no_local: opts.no_local,
            retain_as_published: opts.retain_as_published,
            retain_handling: match opts.retain_handling {
                RetainHandling::Always => 0,
                RetainHandling::IfNew => 1,
                RetainHandling::Never => 2,
            },
            id: opts.id.map(NonZeroU32::get),
        }
    }

    /// Its options, with `read` the ACL's answer now.
    pub fn options(&self, read: crate::auth::ReadCheck) -> SubOptions {
        SubOptions {
            qos: qos(self.qos),
            no_local: self.no_local,
            retain_as_published: self.retain_as_published,
            retain_handling: match self.retain_handling {
                0 => RetainHandling::Always,
                1 => RetainHandling::IfNew,
                _ => RetainHandling::Never,
            },
            id: self.id.and_then(NonZeroU32::new),
            read,
        }
    }
}

/// Who owns a session, how long it outlives its connection, and what it subscribed to.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionMeta {
    pub identity: Option<Identity>,
    pub username: Option<String>,
    /// `None`: kept forever.
    pub expiry_secs: Option<u64>,
    /// When its connection ended (ms since the Unix epoch); `None`: it was connected.
    pub disconnected_at_ms: Option<i64>,
    pub subscriptions: Vec<StoredSubscription>,
    /// The incarnation of the broker that holds it (in a shared store, the node another must
    /// ask to let go of it before taking it over).
    #[serde(default)]
    pub holder: Option<String>,
    /// Grows with every change, whichever node holds it (microseconds since the Unix epoch at
    /// least): a node that follows the records can tell that it saw a change.
    #[serde(default)]
    pub version: u64,
}

impl SessionMeta {
    /// A hash of its subscriptions (to tell when they change).
    fn subscriptions_hash(&self) -> u64 {
        let mut hasher = std::hash::DefaultHasher::new();
        self.subscriptions.hash(&mut hasher);
        hasher.finish()
    }

    /// When its connection ended (`None` in it: at `now`, the restart).
    pub fn disconnected_at(&self, now: Instant, wall: i64) -> Instant {
        self.disconnected_at_ms
            .map_or(now, |ms| wall_to_instant(ms, now, wall).min(now))
    }
}

/// A session read back from the store.
pub struct RestoredSession {
    pub client_id: ByteString,
    pub meta: SessionMeta,
    /// Queued and in-flight messages in their original order (in-flight ones carry their
    /// packet id, and go out again flagged DUP).
    pub queued: Vec<Outgoing>,
    pub qos2_received: Vec<NonZeroU16>,
    pub stored: StoredSession,
}

/// The will of a client connected to a node, as a shared store keeps it.
pub struct StoredWill {
    pub client_id: String,
    /// The incarnation of the broker it is connected to.
    pub holder: String,
    pub delay: Duration,
    pub message: Message,
}

/// Everything read back at start.
pub struct Restored {
    pub retained: Vec<Message>,
    pub sessions: Vec<RestoredSession>,
}

impl Persistence {
    /// `holder`: the broker's incarnation.
    pub fn new(state: Arc<dyn StateStore>, holder: &str) -> Arc<Persistence> {
        Arc::new(Persistence {
            state,
            holder: holder.to_string(),
        })
    }

    /// Whether other broker nodes share the store: a session is then taken over from it by
    /// whichever node its client connects to, and retained messages are everyone's.
    pub fn shared(&self) -> bool {
        self.state.shared()
    }

    /// The retained messages other nodes store from now on (`None`: the store is this node's
    /// own).
    pub async fn watch_retained(&self) -> Result<Option<mpsc::Receiver<StateUpdate>>, StateError> {
        self.state.watch(RETAINED).await
    }

    /// The persistent sessions of the cluster as stored now (`broker.m.` records), and their
    /// changes from then on (`None`: the store is this node's own).
    pub async fn follow_sessions(
        &self,
    ) -> Result<Option<(Vec<StateUpdate>, mpsc::Receiver<StateUpdate>)>, StateError> {
        let Some(changes) = self.state.watch(ROUTES).await? else {
            return Ok(None);
        };
        let now = self
            .state
            .load(ROUTES)
            .await?
            .into_iter()
            .map(|(key, value)| StateUpdate {
                key,
                value: Some(value),
            })
            .collect();
        Ok(Some((now, changes)))
    }

    /// Ends the session of `client_id` in the store (its node is gone): everything it stored
    /// goes.
    pub fn end_session(&self, client_id: &str) {
        self.state.stage(vec![
            StateChange::delete_prefix(session_prefix(client_id)),
            StateChange::delete(route_key(client_id)),
        ]);
    }

    /// A session as another node stored it (`broker.m.` record): its client id, and its meta
    /// (`None`: the session ended).
    pub fn session_update(update: &StateUpdate) -> Option<(String, Option<SessionMeta>)> {
        let client_id = unescape_level(update.key.strip_prefix(ROUTES)?)?;
        let meta = match &update.value {
            Some(value) => Some(serde_json::from_slice(value).ok()?),
            None => None,
        };
        Some((client_id, meta))
    }

    /// Keeps the will of `client_id`'s connection to this node (`None`: it has none) — in a
    /// shared store only, where another node finds it if this one dies.
    pub fn keep_will(&self, client_id: &str, will: Option<(&Message, Duration)>) {
        if !self.shared() {
            return;
        }
        let key = will_key(&self.holder, client_id);
        let change = match will {
            Some((message, delay)) => {
                let mut buf = Vec::new();
                buf.extend_from_slice(&delay.as_secs().to_le_bytes());
                encode_message(&mut buf, message);
                StateChange::put(key, buf)
            }
            None => StateChange::delete(key),
        };
        self.state.stage(vec![change]);
    }

    /// Records that this node may leave wills (a shared store only; again from time to time,
    /// in case a surviving node took it for dead and forgot it).
    pub fn mark_holder(&self) {
        if self.shared() {
            let key = format!("{HOLDERS}{}", escape_level(&self.holder));
            self.state.stage(vec![StateChange::put(
                key,
                self.holder.clone().into_bytes(),
            )]);
        }
    }

    /// The broker incarnations that may have left wills.
    pub async fn holders(&self) -> Result<Vec<String>, StateError> {
        Ok(self
            .state
            .load(HOLDERS)
            .await?
            .into_iter()
            .filter_map(|(key, _)| unescape_level(key.strip_prefix(HOLDERS)?))
            .collect())
    }

    /// `holder` is gone and left nothing: it is no longer looked at.
    pub fn forget_holder(&self, holder: &str) {
        let key = format!("{HOLDERS}{}", escape_level(holder));
        self.state.stage(vec![StateChange::delete(key)]);
    }

    /// The wills of the clients connected to broker `holder`; what does not decode is dropped.
    pub async fn wills_of(&self, holder: &str) -> Result<Vec<StoredWill>, StateError> {
        let (now, wall) = (Instant::now(), wall_ms());
        let prefix = will_key(holder, "");
        let mut wills = Vec::new();
        for (key, value) in self.state.load(&prefix).await? {
            let read = || {
                let client_id = unescape_level(key.strip_prefix(&prefix)?)?;
                let mut r = Reader::new(&value);
                let delay = Duration::from_secs(u64::from_le_bytes(r.take(8)?.try_into().ok()?));
                let message = r.message(now, wall)?;
                r.is_empty().then_some(StoredWill {
                    client_id,
                    holder: holder.to_string(),
                    delay,
                    message,
                })
            };
            match read() {
                Some(will) => wills.push(will),
                None => {
                    tracing::warn!(%key, "a stored will does not decode; dropped");
                    self.state.stage(vec![StateChange::delete(key)]);
                }
            }
        }
        Ok(wills)
    }

    /// A will another node kept is done with (published, or its session went on elsewhere).
    pub fn will_done(&self, will: &StoredWill) {
        let key = will_key(&will.holder, &will.client_id);
        self.state.stage(vec![StateChange::delete(key)]);
    }

    /// Stores `out` in the queue of the session of `client_id`, which another node holds, as
    /// message `seq` of this node (`sender`).
    pub fn store_routed(&self, client_id: &str, sender: &str, seq: u64, out: &Outgoing) {
        let mut buf = Vec::new();
        encode_outgoing(&mut buf, out);
        let record = Record::Routed(Arc::from(sender), seq);
        let key = format!("{}{}", session_prefix(client_id), message_record(&record));
        self.state.stage(vec![StateChange::put(key, buf)]);
    }

    /// A retained message as another node stored it: its topic, and the message (`None`:
    /// deleted, or expired).
    pub fn retained_update(update: &StateUpdate) -> Option<(ByteString, Option<Message>)> {
        let topic = update.key.strip_prefix(RETAINED)?;
        let now = Instant::now();
        let message = match &update.value {
            Some(value) => {
                Some(decode_message(value, now, wall_ms())?).filter(|m| !m.is_expired(now))
            }
            None => None,
        };
        Some((ByteString::from(topic), message))
    }

    /// Stores (or, with an empty payload, deletes) the retained message of its topic.
    pub fn retain(&self, message: &Message) {
        let key = format!("{RETAINED}{}", message.topic);
        let change = if message.payload.is_empty() {
            StateChange::delete(key)
        } else {
            let mut buf = Vec::new();
            encode_message(&mut buf, message);
            StateChange::put(key, buf)
        };
        self.state.stage(vec![change]);
    }

    /// A place in the store for the session of `client_id` (from now on persistent).
    pub fn session(self: &Arc<Self>, client_id: &str) -> StoredSession {
        StoredSession {
            persistence: self.clone(),
            prefix: session_prefix(client_id),
            route: self.shared().then(|| route_key(client_id)),
            next_seq: 0,
            version: AtomicU64::new(0),
            subscribed: Mutex::new(Subscribed {
                version: 0,
                hash: 0,
                seen_everywhere: true,
            }),
        }
    }

    /// Waits until everything staged so far is durable.
    pub async fn durable(&self) -> Result<(), StateError> {
        self.state.durable(self.state.position()).await
    }

    /// The position of what was staged last (see [`Persistence::durable_at`]).
    pub fn position(&self) -> u64 {
        self.state.position()
    }

    /// Waits until everything staged up to `position` is durable.
    pub async fn durable_at(&self, position: u64) -> Result<(), StateError> {
        self.state.durable(position).await
    }

    /// Reads back everything the broker stored; drops what no longer decodes (with a warning).
    /// From a shared store, only the retained messages: a session is taken over when its
    /// client connects ([`Persistence::load_session`]).
    pub async fn load(self: &Arc<Self>) -> Result<Restored, StateError> {
        let now = Instant::now();
        let wall = wall_ms();
        let mut retained = Vec::new();
        // Records that are gone for good (expired, or no longer readable), deleted from the store.
        let mut broken = Vec::new();
        for (key, value) in self.state.load(RETAINED).await? {
            match decode_message(&value, now, wall) {
                Some(message) if !message.is_expired(now) => retained.push(message),
                Some(_) => broken.push(StateChange::delete(key)),
                None => {
                    tracing::warn!(%key, "a stored retained message does not decode; dropped");
                    broken.push(StateChange::delete(key));
                }
            }
        }
        let sessions = if self.shared() {
            Vec::new()
        } else {
            let records = self.state.load(SESSIONS).await?;
            self.sessions(records, now, wall, &mut broken)
        };
        if !broken.is_empty() {
            self.state.stage(broken);
        }
        Ok(Restored { retained, sessions })
    }

    /// The session of `client_id` as the store holds it (a shared store: as another node left it).
    pub async fn load_session(
        self: &Arc<Self>,
        client_id: &str,
    ) -> Result<Option<RestoredSession>, StateError> {
        // A shared store's read follows the records as they change rather than taking a
        // snapshot: a meta rewritten meanwhile (by the node holding the session) can be missed.
        // Records without their meta are read again before they are taken for what an ended
        // session left behind, and deleted.
        let headless = |records: &[(String, bytes::Bytes)]| {
            !records.is_empty()
                && !records
                    .iter()
                    .any(|(key, _)| split_session_key(key).is_some_and(|(_, r)| r == "meta"))
        };
        let mut records = self.state.load(&session_prefix(client_id)).await?;
        for _ in 1..HEADLESS_READS {
            if !headless(&records) {
                break;
            }
            records = self.state.load(&session_prefix(client_id)).await?;
        }
        let mut broken = Vec::new();
        let sessions = self.sessions(records, Instant::now(), wall_ms(), &mut broken);
        if !broken.is_empty() {
            self.state.stage(broken);
        }
        Ok(sessions.into_iter().next())
    }

    /// The sessions in `records`; what is broken goes to `broken`, to be deleted.
    fn sessions(
        self: &Arc<Self>,
        records: Vec<(String, bytes::Bytes)>,
        now: Instant,
        wall: i64,
        broken: &mut Vec<StateChange>,
    ) -> Vec<RestoredSession> {
        // A session's records are adjacent (they share its prefix); gather them by client id.
        let mut groups: BTreeMap<String, Group> = BTreeMap::new();
        for (key, value) in records {
            let Some((client_id, record)) = split_session_key(&key) else {
                broken.push(StateChange::delete(key));
                continue;
            };
            let group = groups.entry(client_id.to_string()).or_default();
            let seq = |r: &str| r.parse::<u64>().ok();
            let routed = |r: &str| {
                let (sender, n) = r.rsplit_once('.')?;
                Some(Record::Routed(Arc::from(sender), n.parse().ok()?))
            };
            let packet_id = |value: &[u8]| {
                <[u8; 2]>::try_from(value)
                    .ok()
                    .and_then(|b| NonZeroU16::new(u16::from_le_bytes(b)))
            };
            let read = match record.split_once('.') {
                None if record == "meta" => serde_json::from_slice(&value)
                    .ok()
                    .map(|meta| group.meta = Some(meta)),
                Some(("q", n)) => seq(n)
                    .map(Record::Own)
                    .zip(decode_outgoing(&value, now, wall))
                    .map(|(r, out)| {
                        group.queued.insert(r, out);
                    }),
                Some(("x", r)) => {
                    routed(r)
                        .zip(decode_outgoing(&value, now, wall))
                        .map(|(r, out)| {
                            group.queued.insert(r, out);
                        })
                }
                Some(("p", n)) => seq(n)
                    .map(Record::Own)
                    .zip(packet_id(&value))
                    .map(|(r, id)| {
                        group.sent.insert(r, id);
                    }),
                Some(("y", r)) => routed(r).zip(packet_id(&value)).map(|(r, id)| {
                    group.sent.insert(r, id);
                }),
                Some(("i", id)) => id
                    .parse()
                    .ok()
                    .and_then(NonZeroU16::new)
                    .map(|id| group.qos2_received.push(id)),
                _ => None,
            };
            if read.is_none() {
                tracing::warn!(%key, "a stored session record does not decode; dropped");
                broken.push(StateChange::delete(key));
            }
        }
        let mut sessions = Vec::new();
        for (client_id, group) in groups {
            let Some(meta) = group.meta else {
                // Records without their session (it ended as they were written): dropped.
                broken.push(StateChange::delete_prefix(session_prefix(&client_id)));
                continue;
            };
            let mut stored = self.session(&client_id);
            stored.version = AtomicU64::new(meta.version);
            stored.subscribed = Mutex::new(Subscribed {
                version: meta.version,
                hash: meta.subscriptions_hash(),
                seen_everywhere: true,
            });
            stored.next_seq = group
                .queued
                .keys()
                .filter_map(|r| match r {
                    Record::Own(n) => Some(n + 1),
                    Record::Routed(..) => None,
                })
                .max()
                .unwrap_or(0);
            let queued = group
                .queued
                .into_iter()
                .map(|(r, mut out)| {
                    out.packet_id = group.sent.get(&r).copied();
                    out.record = Some(r);
                    out
                })
                .collect();
            sessions.push(RestoredSession {
                client_id: client_id.into(),
                meta,
                queued,
                qos2_received: group.qos2_received,
                stored,
            });
        }
        sessions
    }
}

/// The records of one session, as they are read back.
#[derive(Default)]
struct Group {
    meta: Option<SessionMeta>,
    queued: BTreeMap<Record, Outgoing>,
    sent: HashMap<Record, NonZeroU16>,
    qos2_received: Vec<NonZeroU16>,
}

impl StoredSession {
    fn key(&self, record: &str) -> String {
        format!("{}{record}", self.prefix)
    }

    fn stage(&self, changes: Vec<StateChange>) {
        self.persistence.state.stage(changes);
    }

    /// Stores a message queued for the session, numbering it — unless the node it was
    /// published through stored it already.
    pub fn queued(&mut self, out: &mut Outgoing) {
        if let Some(Record::Routed(..)) = out.record {
            return;
        }
        let record = Record::Own(self.next_seq);
        self.next_seq += 1;
        let mut buf = Vec::new();
        encode_outgoing(&mut buf, out);
        self.stage(vec![StateChange::put(
            self.key(&message_record(&record)),
            buf,
        )]);
        out.record = Some(record);
    }

    /// QoS 1/2 message `record` went out with packet id `id`.
    pub fn sent(&self, record: &Record, id: NonZeroU16) {
        self.stage(vec![StateChange::put(
            self.key(&sent_record(record)),
            id.get().to_le_bytes().to_vec(),
        )]);
    }

    /// Message `record` is done with (acknowledged, expired or dropped).
    pub fn done(&self, record: &Record) {
        self.stage(vec![
            StateChange::delete(self.key(&message_record(record))),
            StateChange::delete(self.key(&sent_record(record))),
        ]);
    }

    /// An inbound QoS 2 message with packet id `id` was taken; PUBREL has not come yet.
    pub fn qos2_received(&self, id: NonZeroU16) {
        self.stage(vec![StateChange::put(
            self.key(&format!("i.{:05}", id.get())),
            Vec::new(),
        )]);
    }

    pub fn qos2_released(&self, id: NonZeroU16) {
        self.stage(vec![StateChange::delete(
            self.key(&format!("i.{:05}", id.get())),
        )]);
    }

    /// Stores who owns the session (this broker holding it), its expiry and subscriptions.
    pub fn save(&self, mut meta: SessionMeta) {
        meta.holder = Some(self.persistence.holder.clone());
        let floor = u64::try_from(wall_ms()).unwrap_or_default() * 1000;
        let before = self.version.load(Ordering::Relaxed);
        meta.version = floor.max(before + 1);
        self.version.store(meta.version, Ordering::Relaxed);
        let hash = meta.subscriptions_hash();
        {
            let mut subscribed = self.subscribed.lock().unwrap_or_else(|e| e.into_inner());
            if subscribed.hash != hash {
                *subscribed = Subscribed {
                    version: meta.version,
                    hash,
                    seen_everywhere: false,
                };
            }
        }
        let body = match serde_json::to_vec(&meta) {
            Ok(body) => body,
            Err(err) => {
                tracing::error!(%err, "a session could not be stored");
                return;
            }
        };
        let mut changes = vec![StateChange::put(self.key("meta"), body.clone())];
        if let Some(route) = &self.route {
            changes.push(StateChange::put(route.clone(), body));
        }
        self.stage(changes);
    }

    /// The version of its meta saved last.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }

    /// The version of its meta since which its subscriptions are as they are (what a node
    /// following the records must have seen to route to them), unless the other nodes were
    /// seen to know it.
    pub fn subscribed_at(&self) -> Option<u64> {
        let subscribed = self.subscribed.lock().unwrap_or_else(|e| e.into_inner());
        (!subscribed.seen_everywhere).then_some(subscribed.version)
    }

    /// The other nodes know the subscriptions of version `version`.
    pub fn seen_everywhere(&self, version: u64) {
        let mut subscribed = self.subscribed.lock().unwrap_or_else(|e| e.into_inner());
        if subscribed.version == version {
            subscribed.seen_everywhere = true;
        }
    }

    /// The session has ended: everything it stored goes.
    pub fn end(&self) {
        let mut changes = vec![StateChange::delete_prefix(self.prefix.clone())];
        if let Some(route) = &self.route {
            changes.push(StateChange::delete(route.clone()));
        }
        self.stage(changes);
    }
}

/// How many times a session's records without their meta are read before they are deleted.
const HEADLESS_READS: usize = 3;

fn session_prefix(client_id: &str) -> String {
    format!("{SESSIONS}{}:{client_id}.", client_id.len())
}

/// `broker.s.<n>:<client id>.<record>` → (client id, record).
fn split_session_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(SESSIONS)?;
    let (len, rest) = rest.split_once(':')?;
    let len: usize = len.parse().ok()?;
    let client_id = rest.get(..len)?;
    let record = rest.get(len..)?.strip_prefix('.')?;
    Some((client_id, record))
}

/// A queued message's record: `q.<seq>`, or `x.<node>.<seq>` (zero-padded, so that key order
/// is queue order).
fn message_record(record: &Record) -> String {
    match record {
        Record::Own(seq) => format!("q.{seq:020}"),
        Record::Routed(sender, seq) => format!("x.{sender}.{seq:020}"),
    }
}

/// The record of the packet id a queued message was sent with: `p.…` / `y.…`.
fn sent_record(record: &Record) -> String {
    match record {
        Record::Own(seq) => format!("p.{seq:020}"),
        Record::Routed(sender, seq) => format!("y.{sender}.{seq:020}"),
    }
}

fn route_key(client_id: &str) -> String {
    format!("{ROUTES}{}", escape_level(client_id))
}

/// `broker.w.<holder>.<client id>` (with an empty client id: the prefix of a holder's wills).
fn will_key(holder: &str, client_id: &str) -> String {
    format!(
        "{WILLS}{}.{}",
        escape_level(holder),
        escape_level(client_id)
    )
}

/// `text` as one level of a key: `%` and `.` written `%25` and `%2E`.
fn escape_level(text: &str) -> String {
    text.replace('%', "%25").replace('.', "%2E")
}

fn unescape_level(level: &str) -> Option<String> {
    let mut out = String::with_capacity(level.len());
    let mut rest = level;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        match rest.get(at..at + 3)? {
            "%25" => out.push('%'),
            "%2E" => out.push('.'),
            _ => return None,
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Some(out)
}

fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// Now, in milliseconds since the Unix epoch.
pub fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `instant` as milliseconds since the Unix epoch.
fn instant_to_wall(instant: Instant, now: Instant, wall: i64) -> i64 {
    match instant.checked_duration_since(now) {
        Some(ahead) => wall.saturating_add(ahead.as_millis() as i64),
        None => wall.saturating_sub(now.duration_since(instant).as_millis() as i64),
    }
}

/// Milliseconds since the Unix epoch as an `Instant` (clamped to what `Instant` can hold).
fn wall_to_instant(ms: i64, now: Instant, wall: i64) -> Instant {
    let delta = Duration::from_millis(ms.abs_diff(wall));
    if ms >= wall {
        now.checked_add(delta).unwrap_or(now)
    } else {
        now.checked_sub(delta).unwrap_or(now)
    }
}

pub fn instant_as_wall_ms(instant: Instant) -> i64 {
    instant_to_wall(instant, Instant::now(), wall_ms())
}

// The record bodies: fields one after another, byte strings prefixed by their u32 LE length.

pub(crate) fn put(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    buf.extend_from_slice(bytes);
}

fn put_opt(buf: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(b) => {
            buf.push(1);
            put(buf, b);
        }
        None => buf.push(0),
    }
}

fn put_opt_i64(buf: &mut Vec<u8>, value: Option<i64>) {
    match value {
        Some(v) => {
            buf.push(1);
            buf.extend_from_slice(&v.to_le_bytes());
        }
        None => buf.push(0),
    }
}

pub(crate) struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn new(body: &'a [u8]) -> Self {
        Reader(body)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A message written by [`encode_message`].
    pub(crate) fn message(&mut self, now: Instant, wall: i64) -> Option<Message> {
        read_message(self, now, wall)
    }

    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let bytes = self.0.get(..n)?;
        self.0 = &self.0[n..];
        Some(bytes)
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    pub(crate) fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    pub(crate) fn text(&mut self) -> Option<ByteString> {
        std::str::from_utf8(self.bytes()?)
            .ok()
            .map(ByteString::from)
    }

    fn opt<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        match self.u8()? {
            0 => Some(None),
            1 => read(self).map(Some),
            _ => None,
        }
    }
}

pub(crate) fn encode_message(buf: &mut Vec<u8>, m: &Message) {
    put(buf, m.topic.as_bytes());
    put(buf, &m.payload);
    buf.push(m.qos as u8);
    buf.push(u8::from(m.retain));
    put_opt_i64(buf, m.tenant);
    put_opt_i64(buf, m.expires_at.map(instant_as_wall_ms));
    match &m.properties {
        None => buf.push(0),
        Some(p) => {
            buf.push(1);
            buf.push(u8::from(p.payload_is_utf8));
            put_opt(buf, p.content_type.as_ref().map(|s| &s.as_bytes()[..]));
            put_opt(buf, p.response_topic.as_ref().map(|s| &s.as_bytes()[..]));
            put_opt(buf, p.correlation_data.as_deref());
            buf.extend_from_slice(&(p.user_properties.len() as u32).to_le_bytes());
            for (k, v) in &p.user_properties {
                put(buf, k.as_bytes());
                put(buf, v.as_bytes());
            }
        }
    }
}

fn decode_message(body: &[u8], now: Instant, wall: i64) -> Option<Message> {
    let mut r = Reader(body);
    let message = read_message(&mut r, now, wall)?;
    r.0.is_empty().then_some(message)
}

fn read_message(r: &mut Reader<'_>, now: Instant, wall: i64) -> Option<Message> {
    let topic = r.text()?;
    let payload = Bytes::copy_from_slice(r.bytes()?);
    let level = r.u8()?;
    let retain = r.u8()? == 1;
    let tenant = r.opt(Reader::i64)?;
    let expires = r.opt(Reader::i64)?;
    let properties = r.opt(|r| {
        let payload_is_utf8 = r.u8()? == 1;
        let content_type = r.opt(Reader::text)?;
        let response_topic = r.opt(Reader::text)?;
        let correlation_data = r.opt(|r| r.bytes().map(Bytes::copy_from_slice))?;
        let count = r.u32()?;
        let mut user_properties = Vec::new();
        for _ in 0..count {
            user_properties.push((r.text()?, r.text()?));
        }
        Some(Box::new(Properties {
            payload_is_utf8,
            content_type,
            response_topic,
            correlation_data,
            user_properties,
        }))
    })?;
    let mut message = Message::new(topic, payload, qos(level), retain);
    message.tenant = tenant;
    message.expires_at = expires.map(|ms| wall_to_instant(ms, now, wall));
    message.properties = properties;
    Some(message)
}

fn encode_outgoing(buf: &mut Vec<u8>, out: &Outgoing) {
    buf.push(out.qos as u8);
    buf.push(u8::from(out.retain));
    buf.extend_from_slice(&(out.sub_ids.len() as u32).to_le_bytes());
    for id in &out.sub_ids {
        buf.extend_from_slice(&id.get().to_le_bytes());
    }
    encode_message(buf, &out.message);
}

fn decode_outgoing(body: &[u8], now: Instant, wall: i64) -> Option<Outgoing> {
    let mut r = Reader(body);
    let level = r.u8()?;
    let retain = r.u8()? == 1;
    let count = r.u32()?;
    let mut sub_ids = Vec::new();
    for _ in 0..count {
        sub_ids.push(NonZeroU32::new(r.u32()?)?);
    }
    let message = read_message(&mut r, now, wall)?;
    r.0.is_empty()
        .then(|| Outgoing::new(Arc::new(message), qos(level), retain, sub_ids))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_prefixes_never_start_one_another() {
        let a = session_prefix("a");
        let ab = session_prefix("a.b");
        assert!(!ab.starts_with(&a) && !a.starts_with(&ab));
        assert_eq!(
            split_session_key(&format!("{ab}q.00000000000000000003")),
            Some(("a.b", "q.00000000000000000003"))
        );
        assert_eq!(split_session_key("broker.s.9:short.meta"), None);
    }

    #[test]
    fn client_ids_are_one_level_of_a_route_key() {
        for client_id in ["app", "a.b", "%2E", "a%.b.", ""] {
            let level = escape_level(client_id);
            assert!(!level.contains('.'), "{level}");
            assert_eq!(unescape_level(&level).as_deref(), Some(client_id));
        }
        assert_eq!(unescape_level("a%2"), None);
        assert_eq!(
            message_record(&Record::Routed(Arc::from("n1-19a"), 7)),
            "x.n1-19a.00000000000000000007"
        );
    }

    #[test]
    fn a_queued_message_reads_back_as_it_was_stored() {
        let now = Instant::now();
        let mut message = Message::new(
            "t/ü",
            Bytes::from_static(b"\x00payload"),
            QoS::ExactlyOnce,
            true,
        )
        .with_expiry(NonZeroU32::new(60));
        message.tenant = Some(4);
        message.properties = Some(Box::new(Properties {
            payload_is_utf8: true,
            content_type: Some("text/plain".into()),
            response_topic: Some("reply".into()),
            correlation_data: Some(Bytes::from_static(b"\x01\x02")),
            user_properties: vec![("k".into(), "v".into())],
        }));
        let out = Outgoing::new(
            Arc::new(message.clone()),
            QoS::AtLeastOnce,
            true,
            vec![NonZeroU32::new(7).expect("id")],
        );
        let mut buf = Vec::new();
        encode_outgoing(&mut buf, &out);
        let back = decode_outgoing(&buf, now, wall_ms()).expect("decodes");
        assert_eq!(
            (back.qos, back.retain, back.sub_ids.clone()),
            (out.qos, true, out.sub_ids)
        );
        let m = &back.message;
        assert_eq!(
            (&m.topic, &m.payload, m.qos, m.retain),
            (&message.topic, &message.payload, QoS::ExactlyOnce, true)
        );
        assert_eq!((m.tenant, &m.properties), (Some(4), &message.properties));
        let left = m.remaining_expiry(now).map(NonZeroU32::get);
        assert!(matches!(left, Some(59..=60)), "expiry kept: {left:?}");
        // A truncated record does not decode.
        assert!(decode_outgoing(&buf[..buf.len() - 1], now, wall_ms()).is_none());
    }
}
