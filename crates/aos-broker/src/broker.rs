//! The broker's shared state — sessions, the subscription tree, retained messages — and routing.
//!
//! Connections run on several ntex worker threads; everything here is `Send + Sync` and guarded
//! by short critical sections. Publishing never waits for a subscriber: it appends to each
//! matching session's bounded queue.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use aos_core::access::{Identity, Revocation};
use aos_core::commands::{Presence, PresenceChange};
use async_trait::async_trait;
use ntex::util::ByteString;
use ntex_mqtt::QoS;
use tokio::sync::{mpsc, oneshot};

use aos_core::state::{StateError, StateStore, StateUpdate};

use crate::auth::{Authenticator, Principal, ReadCheck, Refusal, SubscribeAccess, is_protected};
use crate::cluster::{
    ClusterRoutes, Connected, Handled, LocalBroker, Member, Origin, RELEASE_WAIT, node_of,
};
use crate::delivery::{Outgoing, Record, SubOptions};
use crate::message::{Message, min_qos};
use crate::metrics::BrokerMetrics;
use crate::persist::{Persistence, Restored, RestoredSession, SessionMeta, wall_ms};
use crate::session::{Enqueued, Kick, Link, QueueLimits, Session, Will};
use crate::topic::{MatchSink, SharedGroup, SubscriptionFilter, SubscriptionTree, matches};

/// A session as a key of the subscription tree (compared by its unique id).
#[derive(Clone)]
pub struct SessionKey(pub Arc<Session>);

impl PartialEq for SessionKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}

impl Eq for SessionKey {}

impl Hash for SessionKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.id.hash(state);
    }
}

/// Why the platform could not take a message.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The platform is saturated; the publisher should retry later (5.0: 0x97 quota exceeded).
    #[error("the platform cannot take more messages now: {0}")]
    Busy(String),
    #[error("the platform could not take the message: {0}")]
    Failed(String),
}

/// Hands accepted publishes to the platform (the acquisition path). For QoS 1 and 2 the broker
/// acknowledges the publisher only after `accept` returns `Ok`, which must mean "durably queued".
#[async_trait]
pub trait PublishHook: Send + Sync + 'static {
    async fn accept(&self, publisher: &Principal, message: &Message) -> Result<(), HookError>;
}

/// Shared broker settings the routing needs.
#[derive(Clone, Debug)]
pub struct BrokerLimits {
    pub queue: QueueLimits,
    /// Longest a disconnected session is kept (caps what clients ask for).
    pub max_session_expiry: Duration,
}

pub struct Broker {
    /// The node's id and start time: what the broker makes (assigned client ids, the sender of
    /// routed messages) is unique in the cluster and across restarts with it.
    pub(crate) incarnation: String,
    pub limits: BrokerLimits,
    pub auth: Arc<dyn Authenticator>,
    hook: RwLock<Option<Arc<dyn PublishHook>>>,
    pub metrics: BrokerMetrics,
    next_id: AtomicU64,
    sessions: Mutex<HashMap<ByteString, Arc<Session>>>,
    subscriptions: RwLock<SubscriptionTree<SessionKey, SubOptions>>,
    retained: RwLock<HashMap<ByteString, Arc<Message>>>,
    /// Where retained messages and persistent sessions are kept across restarts (if anywhere).
    persistence: Option<Arc<Persistence>>,
    /// Where devices connecting and disconnecting are reported (on the platform).
    pub(crate) presence: OnceLock<mpsc::UnboundedSender<Presence>>,
    /// The other broker nodes of a cluster (distributed mode).
    cluster: OnceLock<Arc<ClusterRoutes>>,
    /// The persistent sessions other nodes hold (with a shared store): what this node stores a
    /// message for before it acknowledges it.
    remote: RwLock<RemoteSessions>,
    /// The ids of the other nodes running the broker role (as the node registry said lately).
    peers: RwLock<Vec<String>>,
}

/// The persistent sessions other broker nodes hold, as their records in the shared store say:
/// stand-in sessions (never connected here) with the subscriptions the ACL grants them, and
/// every such session by its holder (what a dead node leaves behind is found without reading
/// the store).
#[derive(Default)]
struct RemoteSessions {
    tree: SubscriptionTree<SessionKey, SubOptions>,
    sessions: HashMap<String, (SessionKey, Vec<SubscriptionFilter>)>,
    /// Each session's meta (without its subscriptions), by client id.
    held: HashMap<String, SessionMeta>,
    /// The client ids of the sessions each broker incarnation holds.
    by_holder: HashMap<String, HashSet<String>>,
    /// Who waits to see a version of a session's record, by client id.
    waiting: HashMap<String, Vec<(u64, oneshot::Sender<()>)>>,
}

impl RemoteSessions {
    /// Forgets the session of `client_id`.
    fn remove(&mut self, client_id: &str) {
        if let Some((key, filters)) = self.sessions.remove(client_id) {
            for filter in &filters {
                self.tree.remove(filter, &key);
            }
        }
        let holder = self.held.remove(client_id).and_then(|meta| meta.holder);
        if let Some(holder) = holder
            && let Some(clients) = self.by_holder.get_mut(&holder)
        {
            clients.remove(client_id);
            if clients.is_empty() {
                self.by_holder.remove(&holder);
            }
        }
    }

    /// Tells those waiting for a version of the record of `client_id` up to `seen` (`None`:
    /// the session ended, every version was seen) that it was.
    fn seen(&mut self, client_id: &str, seen: Option<u64>) {
        let Some(waiting) = self.waiting.get_mut(client_id) else {
            return;
        };
        for (_, done) in waiting.extract_if(.., |(v, _)| seen.is_none_or(|s| *v <= s)) {
            let _ = done.send(());
        }
        waiting.retain(|(_, done)| !done.is_closed());
        if waiting.is_empty() {
            self.waiting.remove(client_id);
        }
    }

    /// Records that `holder` holds the session of `client_id`, with `meta`.
    fn hold(&mut self, client_id: &str, holder: String, mut meta: SessionMeta) {
        meta.subscriptions = Vec::new();
        self.by_holder
            .entry(holder)
            .or_default()
            .insert(client_id.to_string());
        self.held.insert(client_id.to_string(), meta);
    }
}

/// Hashes session ids (the broker's own numbers, never a client's input) quickly: a message to a
/// thousand subscribers hashes a thousand of them.
type BySession = foldhash::fast::FixedState;

/// Collects, per session, one delivery for all its matching subscriptions: the highest granted
/// QoS and every subscription identifier (MQTT 3.1.1 §3.3.5, 5.0 §3.3.4).
struct Deliveries<'a> {
    message: &'a Message,
    /// Whether it is a tenant's traffic ([`is_protected`]), worked out once for all subscribers.
    protected: bool,
    auth: &'a dyn Authenticator,
    /// The plain subscribers of each matching filter.
    filters: Vec<&'a HashMap<SessionKey, SubOptions>>,
    groups: Groups<'a>,
    /// The member picked in each group served.
    shared: Vec<(&'a SessionKey, &'a SubOptions)>,
    /// The groups found, with [`Groups::Find`].
    found: Vec<&'a SharedGroup<SessionKey, SubOptions>>,
}

/// What a routing does with the shared subscriptions a message matches.
#[derive(Clone, Copy)]
enum Groups<'a> {
    /// Serves them all (a node of its own).
    All,
    /// Serves those of these filters (in a cluster the bus picks a node for the others).
    Only(&'a [SubscriptionFilter]),
    /// Finds them without serving them (the stand-ins of other nodes' sessions).
    Find,
}

impl<'a> Deliveries<'a> {
    fn new(message: &'a Message, auth: &'a dyn Authenticator, groups: Groups<'a>) -> Self {
        Deliveries {
            message,
            protected: is_protected(&message.topic, message.tenant),
            auth,
            filters: Vec::new(),
            groups,
            shared: Vec::new(),
            found: Vec::new(),
        }
    }

    /// Whether the subscriber gets the message at all (no-local, the ACL's read check).
    fn reaches(&self, key: &SessionKey, opts: &SubOptions) -> bool {
        !(opts.no_local && key.0.id == self.message.origin)
            && may_read(self.auth, &key.0, opts, self.message, self.protected)
    }

    /// Calls `deliver` once per subscribed session with what it gets: the granted QoS, whether
    /// the retain flag is kept, the subscription identifiers. A topic matching one filter (a
    /// fan-out's usual case) needs no gathering per session: its subscribers are distinct.
    fn per_session(&self, mut deliver: impl FnMut(&'a SessionKey, QoS, bool, Vec<NonZeroU32>)) {
        if let [subscribers] = self.filters[..] {
            for (key, opts) in subscribers {
                if self.reaches(key, opts) {
                    deliver(
                        key,
                        opts.qos,
                        opts.retain_as_published,
                        opts.id.into_iter().collect(),
                    );
                }
            }
            return;
        }
        let mut sessions: HashMap<u64, (&SessionKey, QoS, bool, Vec<NonZeroU32>), BySession> =
            HashMap::default();
        for (key, opts) in self.filters.iter().copied().flatten() {
            if !self.reaches(key, opts) {
                continue;
            }
            let entry = sessions
                .entry(key.0.id)
                .or_insert((key, opts.qos, false, Vec::new()));
            entry.1 = max_qos(entry.1, opts.qos);
            entry.2 |= opts.retain_as_published;
            entry.3.extend(opts.id);
        }
        for (key, granted, retain_as_published, sub_ids) in sessions.into_values() {
            deliver(key, granted, retain_as_published, sub_ids);
        }
    }
}

impl<'a> MatchSink<'a, SessionKey, SubOptions> for Deliveries<'a> {
    fn subscribers(&mut self, subscribers: &'a HashMap<SessionKey, SubOptions>) {
        self.filters.push(subscribers);
    }

    fn group(&mut self, group: &'a SharedGroup<SessionKey, SubOptions>) {
        let serve = match self.groups {
            Groups::All => true,
            Groups::Only(filters) => filters.contains(&group.filter),
            Groups::Find => {
                self.found.push(group);
                false
            }
        };
        if serve && let Some(pick) = pick_member(group, self.auth, self.message, self.protected) {
            self.shared.push(pick);
        }
    }
}

/// Which member of a shared subscription a node chose for a message.
enum Choice<'a> {
    /// None of its members is a persistent session elsewhere: not chosen here.
    None,
    /// One of this node's own.
    Here,
    /// A persistent session elsewhere, and the broker holding it.
    There((&'a SessionKey, &'a SubOptions, String)),
}

/// The shared subscriptions a topic matches.
struct FoundGroups<'a>(Vec<&'a SharedGroup<SessionKey, SubOptions>>);

impl<'a> MatchSink<'a, SessionKey, SubOptions> for FoundGroups<'a> {
    fn subscribers(&mut self, _: &'a HashMap<SessionKey, SubOptions>) {}

    fn group(&mut self, group: &'a SharedGroup<SessionKey, SubOptions>) {
        self.0.push(group);
    }
}

/// The member of a shared subscription to give `message` to: a connected one in turn, else a
/// disconnected one (it still queues QoS 1/2 for later).
fn pick_member<'a>(
    group: &'a SharedGroup<SessionKey, SubOptions>,
    auth: &dyn Authenticator,
    message: &Message,
    protected: bool,
) -> Option<(&'a SessionKey, &'a SubOptions)> {
    let readable =
        |k: &SessionKey, opts: &SubOptions| may_read(auth, &k.0, opts, message, protected);
    group
        .pick(|k, opts| readable(k, opts) && k.0.is_connected())
        .or_else(|| group.pick(readable))
}

/// Whether `session` may receive `message` (`protected`: [`is_protected`]) through a
/// subscription granted with `opts`: its tenant's (or the platform's) message, which the ACL lets
/// it read.
fn may_read(
    auth: &dyn Authenticator,
    session: &Session,
    opts: &SubOptions,
    message: &Message,
    protected: bool,
) -> bool {
    session.receives(message.tenant)
        && match opts.read {
            ReadCheck::Open => true,
            ReadCheck::Unprotected => !protected,
            ReadCheck::Each => auth.may_read(session.reader(), &message.topic, message.tenant),
        }
}

pub(crate) fn max_qos(a: QoS, b: QoS) -> QoS {
    if (a as u8) >= (b as u8) { a } else { b }
}

impl Broker {
    /// `node_id`: the node's id, which client ids the broker assigns carry. `state`: where
    /// retained messages and persistent sessions are kept, if anywhere.
    pub fn new(
        node_id: &str,
        limits: BrokerLimits,
        auth: Arc<dyn Authenticator>,
        metrics: BrokerMetrics,
        state: Option<Arc<dyn StateStore>>,
    ) -> Broker {
        let incarnation = format!("{node_id}-{:x}", wall_ms());
        let persistence = state.map(|state| Persistence::new(state, &incarnation));
        Broker {
            incarnation,
            limits,
            auth,
            hook: RwLock::new(None),
            metrics,
            next_id: AtomicU64::new(1),
            sessions: Mutex::new(HashMap::new()),
            subscriptions: RwLock::new(SubscriptionTree::default()),
            retained: RwLock::new(HashMap::new()),
            persistence,
            presence: OnceLock::new(),
            cluster: OnceLock::new(),
            remote: RwLock::new(RemoteSessions::default()),
            peers: RwLock::new(Vec::new()),
        }
    }

    /// Whether the broker keeps its state in the state store.
    pub fn persists(&self) -> bool {
        self.persistence.is_some()
    }

    /// What the broker keeps in the state store, if anything.
    pub fn persistence(&self) -> Option<&Arc<Persistence>> {
        self.persistence.as_ref()
    }

    /// Waits until everything the broker stored so far is durable (at once without persistence).
    pub async fn durable(&self) -> Result<(), StateError> {
        match &self.persistence {
            Some(persistence) => persistence.durable().await,
            None => Ok(()),
        }
    }

    /// Takes back what a previous run stored: retained messages, and persistent sessions (as
    /// disconnected, their subscriptions granted again by the ACL in force now).
    pub fn restore(&self, restored: Restored) {
        {
            let mut retained = self.retained.write().unwrap_or_else(|e| e.into_inner());
            for message in restored.retained {
                retained.insert(message.topic.clone(), Arc::new(message));
            }
            self.metrics.retained.set(retained.len() as i64);
        }
        for record in restored.sessions {
            self.restore_session(record);
        }
    }

    /// Takes back a stored session, as disconnected (unless it has expired).
    fn restore_session(&self, record: RestoredSession) {
        let now = Instant::now();
        let wall = wall_ms();
        let meta = &record.meta;
        let session = Arc::new(Session::new(
            self.next_id(),
            record.client_id.clone(),
            meta.identity.clone(),
            meta.username.as_deref().map(ByteString::from),
            self.metrics.session_queues.clone(),
        ));
        let subscriptions = self.granted(&record.client_id, meta);
        {
            let mut state = session.lock();
            state.expiry = meta.expiry_secs.map(Duration::from_secs);
            state.disconnected_at = Some(meta.disconnected_at(now, wall));
            if state.expired(now) {
                record.stored.end();
                return;
            }
            for (full, filter, opts) in &subscriptions {
                state
                    .subscriptions
                    .insert(full.clone(), (filter.clone(), *opts));
            }
            state.qos2_received.extend(record.qos2_received);
            state.stored = Some(Box::new(record.stored));
        }
        session.restore_queue(record.queued);
        {
            let key = SessionKey(session.clone());
            let mut tree = self
                .subscriptions
                .write()
                .unwrap_or_else(|e| e.into_inner());
            for (_, filter, opts) in subscriptions {
                if tree.insert(&filter, key.clone(), opts).is_none() {
                    self.interest_added(&filter);
                }
            }
            self.metrics.subscriptions.set(tree.len() as i64);
        }
        {
            let mut sessions = self.sessions();
            sessions.insert(record.client_id, session.clone());
            self.metrics.sessions.set(sessions.len() as i64);
        }
        // Saved (what the ACL no longer grants gone from the store too) once it routes here:
        // the record names this node its holder, and the nodes following the records — this
        // one too — stop standing in for it when they read it.
        session.save(&session.lock());
    }

    /// The stored subscriptions of the session of `client_id` as the ACL in force now grants
    /// them to its owner.
    fn granted(
        &self,
        client_id: &str,
        meta: &SessionMeta,
    ) -> Vec<(String, SubscriptionFilter, SubOptions)> {
        let owner = Principal {
            client_id: client_id.to_string(),
            username: meta.username.clone(),
            identity: meta.identity.clone(),
            signed_in_at_ms: 0,
        };
        meta.subscriptions
            .iter()
            .filter_map(|sub| {
                let filter = SubscriptionFilter::parse(&sub.filter, true).ok()?;
                match self.auth.may_subscribe(&owner, &filter.filter) {
                    SubscribeAccess::Granted(read) => {
                        Some((sub.filter.clone(), filter, sub.options(read)))
                    }
                    SubscribeAccess::Refused => None,
                }
            })
            .collect()
    }

    /// A persistent session changed in the shared store (by any node): the stand-in of one
    /// another node holds is replaced, or goes.
    pub fn session_elsewhere(&self, update: &StateUpdate) {
        let Some((client_id, meta)) = Persistence::session_update(update) else {
            tracing::warn!(key = %update.key, "ignored a session record that does not decode");
            return;
        };
        let mut remote = self.remote.write().unwrap_or_else(|e| e.into_inner());
        remote.seen(&client_id, meta.as_ref().map(|m| m.version));
        let known = remote.held.get(&client_id).map(|m| m.version);
        if meta
            .as_ref()
            .zip(known)
            .is_some_and(|(m, known)| m.version < known)
        {
            // Older than the stand-in: this node's own record of a session it let go of, seen
            // late. The stand-in of the node that took it over stays.
            return;
        }
        let held_here = meta
            .as_ref()
            .is_some_and(|m| m.holder.as_deref() == Some(self.incarnation.as_str()));
        match meta.filter(|_| !held_here) {
            Some(meta) => self.stand_in(&mut remote, &client_id, meta),
            None => remote.remove(&client_id),
        }
        self.metrics
            .cluster_sessions
            .set(remote.sessions.len() as i64);
    }

    /// Makes `meta` (naming its holder) the stand-in of the session of `client_id` that another
    /// node holds, in place of the one before.
    fn stand_in(&self, remote: &mut RemoteSessions, client_id: &str, meta: SessionMeta) {
        remote.remove(client_id);
        if let Some(holder) = meta.holder.clone() {
            remote.hold(client_id, holder, meta.clone());
        }
        // Only QoS 1/2 subscriptions: QoS 0 is not kept.
        let subscriptions: Vec<_> = self
            .granted(client_id, &meta)
            .into_iter()
            .filter(|(_, _, opts)| opts.qos != QoS::AtMostOnce)
            .collect();
        if subscriptions.is_empty() {
            return;
        }
        let key = SessionKey(Arc::new(Session::new(
            self.next_id(),
            ByteString::from(client_id),
            meta.identity,
            meta.username.as_deref().map(ByteString::from),
            Default::default(),
        )));
        let mut filters = Vec::with_capacity(subscriptions.len());
        for (_, filter, opts) in subscriptions {
            remote.tree.insert(&filter, key.clone(), opts);
            filters.push(filter);
        }
        remote
            .sessions
            .insert(client_id.to_string(), (key, filters));
    }

    /// The broker incarnations other than this one that hold persistent sessions.
    pub fn holders_elsewhere(&self) -> Vec<String> {
        let remote = self.remote.read().unwrap_or_else(|e| e.into_inner());
        remote.by_holder.keys().cloned().collect()
    }

    /// The persistent sessions broker incarnation `holder` holds, with their meta (without
    /// subscriptions).
    pub fn sessions_held_by(&self, holder: &str) -> Vec<(String, SessionMeta)> {
        let remote = self.remote.read().unwrap_or_else(|e| e.into_inner());
        let Some(clients) = remote.by_holder.get(holder) else {
            return Vec::new();
        };
        clients
            .iter()
            .filter_map(|c| Some((c.clone(), remote.held.get(c)?.clone())))
            .collect()
    }

    /// Which broker incarnation holds the persistent session of `client_id`, if any (this
    /// node's own included).
    pub fn holder_of(&self, client_id: &str) -> Option<String> {
        if self
            .session(client_id)
            .is_some_and(|s| s.lock().stored.is_some())
        {
            return Some(self.incarnation.clone());
        }
        let remote = self.remote.read().unwrap_or_else(|e| e.into_inner());
        remote
            .held
            .get(client_id)
            .and_then(|meta| meta.holder.clone())
    }

    /// Stores a QoS 1/2 message, as message `seq` of this node, in the queue of every matching
    /// persistent session another node holds (before it is acknowledged: a node that dies, or
    /// the bus, cannot lose it), and chooses the member itself of each shared subscription
    /// with a persistent member (this node's, or one elsewhere, whom it stores it for). Returns
    /// what it did, and the shared subscriptions whose member is to be one of this node's.
    fn store_for_others(
        &self,
        remote: &RemoteSessions,
        message: &Message,
        seq: u64,
    ) -> (Handled, Vec<SubscriptionFilter>) {
        let Some(persistence) = &self.persistence else {
            return Default::default();
        };
        if message.qos == QoS::AtMostOnce {
            return Default::default();
        }
        // This node's own persistent members are stored for as it routes: through the bus they
        // would get the message only after it was acknowledged.
        let mut here = self.groups_with_persistent_members(&message.topic);
        let mut handled = Handled {
            served: here.clone(),
            ..Handled::default()
        };
        if remote.sessions.is_empty() {
            return (handled, here);
        }
        let mut deliveries = Deliveries::new(message, self.auth.as_ref(), Groups::Find);
        let protected = deliveries.protected;
        remote.tree.for_each_match(&message.topic, &mut deliveries);
        let message = Arc::new(message.clone());
        let mut store = |key: &SessionKey, out: Outgoing| {
            persistence.store_routed(&key.0.client_id, &self.incarnation, seq, &out);
            handled.stored_for.push(key.0.client_id.to_string());
        };
        deliveries.per_session(|key, granted, retain_as_published, sub_ids| {
            // Taken over by this node meanwhile: it is routed here.
            if self.session(&key.0.client_id).is_none() {
                let out = Outgoing::granted(&message, granted, retain_as_published, sub_ids);
                store(key, out);
            }
        });
        for group in deliveries.found {
            let chosen = match self.choose_member(group, remote, &message, protected, seq) {
                Choice::None => continue,
                Choice::Here => None,
                Choice::There(member) => Some(member),
            };
            if !handled.served.contains(&group.filter) {
                handled.served.push(group.filter.clone());
            }
            here.retain(|f| *f != group.filter);
            let Some((key, opts, holder)) = chosen else {
                here.push(group.filter.clone());
                continue;
            };
            let sub_ids = opts.id.into_iter().collect();
            store(
                key,
                Outgoing::granted(&message, opts.qos, opts.retain_as_published, sub_ids),
            );
            handled.members.push(Member {
                holder,
                client_id: key.0.client_id.to_string(),
                filter: format!(
                    "$share/{}/{}",
                    group.filter.group.as_deref().unwrap_or_default(),
                    group.filter.filter
                ),
            });
        }
        if !handled.stored_for.is_empty() {
            self.metrics
                .cluster_stored
                .inc_by(handled.stored_for.len() as u64);
        }
        (handled, here)
    }

    /// The shared subscriptions matching `topic` with a persistent session among their members
    /// on this node.
    fn groups_with_persistent_members(&self, topic: &str) -> Vec<SubscriptionFilter> {
        let local = self.subscriptions.read().unwrap_or_else(|e| e.into_inner());
        let mut found = FoundGroups(Vec::new());
        local.for_each_match(topic, &mut found);
        found
            .0
            .into_iter()
            .filter(|g| g.members.keys().any(|k| k.0.lock().stored.is_some()))
            .map(|g| g.filter.clone())
            .collect()
    }

    /// Chooses the member of shared subscription `group` (the stand-ins of its members
    /// elsewhere) to give message `seq` to: in turn by sequence number among this node's
    /// members and those elsewhere, connected ones first.
    fn choose_member<'a>(
        &self,
        group: &'a SharedGroup<SessionKey, SubOptions>,
        remote: &RemoteSessions,
        message: &Message,
        protected: bool,
        seq: u64,
    ) -> Choice<'a> {
        let readable = |k: &SessionKey, opts: &SubOptions| {
            may_read(self.auth.as_ref(), &k.0, opts, message, protected)
        };
        // Members elsewhere (not taken over by this node meanwhile): whether each is connected,
        // and its holder.
        let there: Vec<_> = group
            .members
            .iter()
            .filter(|(k, opts)| self.session(&k.0.client_id).is_none() && readable(k, opts))
            .filter_map(|(k, opts)| {
                let meta = remote.held.get(&*k.0.client_id)?;
                let connected = meta.disconnected_at_ms.is_none();
                Some((k, opts, connected, meta.holder.clone()?))
            })
            .collect();
        if there.is_empty() {
            return Choice::None;
        }
        let ours: Vec<bool> = {
            let local = self.subscriptions.read().unwrap_or_else(|e| e.into_inner());
            local.group(&group.filter).map_or_else(Vec::new, |g| {
                g.members
                    .iter()
                    .filter(|(k, opts)| readable(k, opts))
                    .map(|(k, _)| k.0.is_connected())
                    .collect()
            })
        };
        let any_connected = there.iter().any(|m| m.2) || ours.contains(&true);
        let eligible = |connected: bool| connected || !any_connected;
        let there: Vec<_> = there.into_iter().filter(|m| eligible(m.2)).collect();
        let candidates = there.len() + ours.iter().filter(|c| eligible(**c)).count();
        // Past the members elsewhere: one of this node's, which its own routing picks.
        match there.into_iter().nth((seq % candidates as u64) as usize) {
            Some((key, opts, _, holder)) => Choice::There((key, opts, holder)),
            None => Choice::Here,
        }
    }

    /// In a cluster sharing its state store: before a client connects here, the session of its
    /// client id is taken over from the store (once the node holding it has let go). Refuses
    /// the client when the session is a device's and it is not that device, and when the store
    /// cannot be read (the client tries again: a session must not be lost to a slow read).
    pub async fn take_over(
        &self,
        client_id: &str,
        identity: Option<&Identity>,
    ) -> Result<(), Refusal> {
        let (Some(persistence), Some(cluster)) = (&self.persistence, self.cluster.get()) else {
            return Ok(());
        };
        if !persistence.shared() {
            return Ok(());
        }
        let load = || async {
            persistence.load_session(client_id).await.map_err(|err| {
                tracing::warn!(%err, client_id, "cannot read a session from the shared store; the client is asked to come back");
                Refusal::Unavailable
            })
        };
        if let Some(session) = self.session(client_id) {
            // Held here already: copies other nodes stored whose live copy the bus lost (a
            // NATS server died, or the bus was overloaded) go out on this connection.
            if session.lock().stored.is_some() {
                session.merge_stored(load().await?.map(|r| r.queued).unwrap_or_default());
            }
            return Ok(());
        }
        let Some(mut record) = load().await? else {
            return Ok(());
        };
        if matches!(record.meta.identity, Some(Identity::Device { .. }))
            && record.meta.identity.as_ref() != identity
        {
            return Err(Refusal::NotAuthorized);
        }
        let released = match record.meta.holder.clone() {
            // Let go of by this node itself, whole.
            Some(holder) if holder == self.incarnation => true,
            Some(holder) if !self.same_node(&holder) => {
                let released = cluster.release(client_id, &holder).await;
                // What the holder stored until it let go is in the store now.
                match load().await? {
                    Some(again) => record = again,
                    None => return Ok(()),
                }
                released
            }
            // Held by this node before a restart: gone.
            Some(_) => false,
            None => true,
        };
        if !released {
            // A holder that died may have sent any of them, and not yet stored that it did.
            let resent = record
                .queued
                .iter_mut()
                .filter(|o| o.packet_id.is_none())
                .map(|o| o.dup = true)
                .count();
            self.metrics.session_queues.resent.inc_by(resent as u64);
        }
        if self.session(client_id).is_none() {
            self.restore_session(record);
            // Its subscriptions receive what other nodes route before the client is told its
            // session is present.
            self.subscriptions_routed().await;
            // Other nodes route a copy they stored only once it is durable: what was stored
            // before the subscriptions were routed here is in the store now, later copies arrive.
            if let Some(session) = self.session(client_id) {
                session.merge_stored(load().await?.map(|r| r.queued).unwrap_or_default());
            }
        }
        Ok(())
    }

    /// Whether `incarnation` is this node's (this run, or an earlier one, which is gone).
    fn same_node(&self, incarnation: &str) -> bool {
        node_of(incarnation) == node_of(&self.incarnation)
    }

    /// A retained message another node stored (or this one: the store tells every node).
    pub fn retained_elsewhere(&self, update: &StateUpdate) {
        let Some((topic, message)) = Persistence::retained_update(update) else {
            return;
        };
        let mut retained = self.retained.write().unwrap_or_else(|e| e.into_inner());
        match message {
            Some(message) => retained.insert(topic, Arc::new(message)),
            None => retained.remove(&topic),
        };
        self.metrics.retained.set(retained.len() as i64);
    }

    /// Keeps the session in the store while its expiry makes it persistent, and not otherwise.
    fn store_session(&self, session: &Session) {
        let Some(persistence) = &self.persistence else {
            return;
        };
        // A session let go of (another node took it over) is no longer this node's to store.
        if self
            .sessions()
            .get(&session.client_id)
            .is_none_or(|s| s.id != session.id)
        {
            return;
        }
        let (persistent, stored) = {
            let state = session.lock();
            (state.expiry != Some(Duration::ZERO), state.stored.is_some())
        };
        match (persistent, stored) {
            (true, false) => session.set_stored(Some(persistence.session(&session.client_id))),
            (false, true) => session.set_stored(None),
            (true, true) => session.save(&session.lock()),
            (false, false) => {}
        }
    }

    /// Installs the hook that receives every accepted publish.
    pub fn set_hook(&self, hook: Arc<dyn PublishHook>) {
        *self.hook.write().unwrap_or_else(|e| e.into_inner()) = Some(hook);
    }

    pub fn hook(&self) -> Option<Arc<dyn PublishHook>> {
        self.hook.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The session of `client_id`, if this node holds one.
    pub fn session(&self, client_id: &str) -> Option<Arc<Session>> {
        self.sessions().get(client_id).cloned()
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<ByteString, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens (or resumes) the session of `client_id` for a new connection. Returns the session
    /// and whether it was resumed ("session present").
    pub fn connect(
        &self,
        client_id: &ByteString,
        owner: &Principal,
        clean_start: bool,
        expiry: Option<Duration>,
        will: Option<Will>,
        link: Link,
    ) -> (Arc<Session>, bool) {
        let now = Instant::now();
        let identity = owner.identity.as_ref();
        let mut sessions = self.sessions();
        let existing = sessions.get(client_id).cloned();
        let (session, present) = match existing {
            // A session is resumed only by whoever opened it: another identity (another tenant's
            // device, say) or another user must not inherit its subscriptions and queued
            // messages.
            Some(old)
                if !clean_start
                    && !old.lock().expired(now)
                    && old.belongs_to(identity, owner.username.as_deref()) =>
            {
                (old, true)
            }
            Some(old) => {
                sessions.remove(client_id);
                old.unstore();
                drop(sessions);
                self.end_session(&old, Some(Kick::TakenOver));
                sessions = self.sessions();
                (self.new_session(&mut sessions, client_id, owner), false)
            }
            None => (self.new_session(&mut sessions, client_id, owner), false),
        };
        drop(sessions);
        let previous_will = {
            let mut state = session.lock();
            state.expiry = expiry.map(|e| e.min(self.limits.max_session_expiry));
            std::mem::replace(&mut state.will, will.map(Box::new))
        };
        self.presence_changed(identity, PresenceChange::Connected, link.generation);
        if let Some(cluster) = self.cluster.get() {
            cluster.connected(client_id, link.signed_in_at_ms, identity);
        }
        if let Some(previous) = session.attach(link) {
            self.metrics.takeovers.inc();
            if let Some(kick) = previous.kick {
                let _ = kick.send(Kick::TakenOver);
            }
        }
        self.store_session(&session);
        // The connection taken over ended without DISCONNECT: its will goes out, unless it asked
        // for a delay (the session lives on, so the delay never runs out).
        if let Some(will) = previous_will
            && will.delay.is_zero()
        {
            self.publish_will(client_id, will.message);
        }
        // Kept where a surviving node finds it should this node die — due when the delay or the
        // session's expiry runs out, whichever comes first.
        let will = {
            let state = session.lock();
            state.will.clone().map(|mut will| {
                will.delay = state.expiry.map_or(will.delay, |e| will.delay.min(e));
                will
            })
        };
        self.keep_will(client_id, will.as_deref());
        (session, present)
    }

    fn new_session(
        &self,
        sessions: &mut HashMap<ByteString, Arc<Session>>,
        client_id: &ByteString,
        owner: &Principal,
    ) -> Arc<Session> {
        let session = Arc::new(Session::new(
            self.next_id(),
            client_id.clone(),
            owner.identity.clone(),
            owner.username.as_deref().map(ByteString::from),
            self.metrics.session_queues.clone(),
        ));
        sessions.insert(client_id.clone(), session.clone());
        self.metrics.sessions.set(sessions.len() as i64);
        session
    }

    /// Connection `generation` of `session` has closed. `graceful`: the client sent DISCONNECT
    /// (5.0: with a reason other than 0x04), so its will is discarded. `expiry`: a new session
    /// expiry interval from a 5.0 DISCONNECT.
    pub fn disconnected(
        self: &Arc<Self>,
        session: &Arc<Session>,
        generation: u64,
        graceful: bool,
        expiry: Option<Option<Duration>>,
    ) {
        if !session.detach(generation) {
            return;
        }
        self.presence_changed(
            session.identity.as_ref(),
            PresenceChange::Disconnected,
            generation,
        );
        let (will, expiry, discarded) = {
            let mut state = session.lock();
            if let Some(expiry) = expiry {
                state.expiry = expiry.map(|e| e.min(self.limits.max_session_expiry));
            }
            let discarded = graceful && state.will.take().is_some();
            (state.will.clone(), state.expiry, discarded)
        };
        if discarded {
            self.keep_will(&session.client_id, None);
        }
        self.store_session(session);
        if expiry == Some(Duration::ZERO) {
            let removed = {
                let mut sessions = self.sessions();
                let current = sessions
                    .get(&session.client_id)
                    .is_some_and(|s| s.id == session.id);
                if current {
                    sessions.remove(&session.client_id);
                    session.unstore();
                }
                self.metrics.sessions.set(sessions.len() as i64);
                current
            };
            if removed {
                self.end_session(session, None);
            }
            return;
        }
        let Some(will) = will else { return };
        let delay = expiry.map_or(will.delay, |e| will.delay.min(e));
        if delay.is_zero() {
            session.lock().will = None;
            self.publish_will(&session.client_id, will.message);
            return;
        }
        let broker = self.clone();
        let session = session.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let will = {
                let mut state = session.lock();
                // A reconnect in the meantime cancels the delayed will.
                if state.link.is_some() {
                    return;
                }
                state.will.take()
            };
            if let Some(will) = will {
                broker.publish_will(&session.client_id, will.message);
            }
        });
    }

    /// Publishes the will of `client_id`'s connection (its node did: no other will).
    fn publish_will(&self, client_id: &str, message: Message) {
        self.keep_will(client_id, None);
        self.publish(message);
    }

    /// Keeps the will of `client_id`'s connection here in the shared store (`None`: there is
    /// none), for a surviving node to publish if this one dies.
    fn keep_will(&self, client_id: &str, will: Option<&Will>) {
        if let Some(persistence) = &self.persistence {
            persistence.keep_will(client_id, will.map(|w| (&w.message, w.delay)));
        }
    }

    /// Ends a session: its subscriptions go, its pending will is published, its connection (if
    /// any) is closed.
    fn end_session(&self, session: &Arc<Session>, kick: Option<Kick>) {
        let (subscriptions, will, link) = {
            let mut state = session.lock();
            let subs: Vec<SubscriptionFilter> =
                state.subscriptions.drain().map(|(_, (f, _))| f).collect();
            (subs, state.will.take(), state.link.take())
        };
        self.remove_subscriptions(session, &subscriptions);
        session.discard();
        if let (Some(link), Some(kick)) = (link, kick)
            && let Some(tx) = link.kick
        {
            let _ = tx.send(kick);
        }
        if let Some(will) = will {
            self.publish_will(&session.client_id, will.message);
        }
    }

    fn remove_subscriptions(&self, session: &Arc<Session>, filters: &[SubscriptionFilter]) {
        if filters.is_empty() {
            return;
        }
        let key = SessionKey(session.clone());
        let mut tree = self
            .subscriptions
            .write()
            .unwrap_or_else(|e| e.into_inner());
        for filter in filters {
            if tree.remove(filter, &key).is_some()
                && let Some(cluster) = self.cluster.get()
            {
                cluster.interest_removed(filter);
            }
        }
        self.metrics.subscriptions.set(tree.len() as i64);
    }

    /// Removes sessions whose expiry has passed; returns how many.
    pub fn expire_sessions(&self) -> usize {
        let now = Instant::now();
        let expired: Vec<Arc<Session>> = {
            let mut sessions = self.sessions();
            let expired: Vec<Arc<Session>> = sessions
                .values()
                .filter(|s| s.lock().expired(now))
                .cloned()
                .collect();
            for s in &expired {
                sessions.remove(&s.client_id);
                s.unstore();
            }
            self.metrics.sessions.set(sessions.len() as i64);
            expired
        };
        for session in &expired {
            self.end_session(session, None);
        }
        expired.len()
    }

    /// Closes every connection (node shutdown).
    /// Closes the clients' connections as the node stops (5.0: DISCONNECT 0x8B), `per_second`
    /// at a time (0: all at once), so that they reconnect to other nodes without a thundering
    /// herd; what is still connected after `within` is closed at once.
    pub async fn drain(&self, per_second: u32, within: Duration) {
        const STEP: Duration = Duration::from_millis(100);
        let per_step = usize::try_from(per_second.div_ceil(10)).unwrap_or(usize::MAX);
        let deadline = Instant::now() + within;
        while per_second > 0 && Instant::now() + STEP < deadline {
            // Those kicked already may still be closing: only connections not yet told count.
            let next: Vec<Arc<Session>> = self
                .sessions()
                .values()
                .filter(|s| s.lock().link.as_ref().is_some_and(|l| l.kick.is_some()))
                .take(per_step)
                .cloned()
                .collect();
            if next.is_empty() {
                return;
            }
            for session in &next {
                kick_session(session, Kick::ShuttingDown);
            }
            tokio::time::sleep(STEP).await;
        }
        self.kick_all(Kick::ShuttingDown);
    }

    pub fn kick_all(&self, kick: Kick) {
        let sessions: Vec<Arc<Session>> = self.sessions().values().cloned().collect();
        for session in sessions {
            kick_session(&session, kick);
        }
    }

    /// Every session this node holds now.
    pub fn sessions_now(&self) -> Vec<Arc<Session>> {
        self.sessions().values().cloned().collect()
    }

    /// How many sessions this node holds, and how many of them are connected.
    pub fn session_counts(&self) -> (usize, usize) {
        let sessions = self.sessions();
        let connected = sessions.values().filter(|s| s.is_connected()).count();
        (sessions.len(), connected)
    }

    /// Every retained message this node knows now.
    pub fn retained_now(&self) -> Vec<Arc<Message>> {
        self.retained
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Closes the connection of `client_id` for an administrator (of `tenant`, if named: only
    /// that tenant's clients); returns whether it was connected here. Its session stays, and
    /// its will goes out as for any connection the broker closes.
    pub fn disconnect(&self, client_id: &str, tenant: Option<i64>) -> bool {
        let Some(session) = self.session(client_id) else {
            return false;
        };
        if !session.of_tenant(tenant) {
            return false;
        }
        let kick = session.lock().link.as_mut().and_then(|l| l.kick.take());
        kick.is_some_and(|kick| kick.send(Kick::Administrator).is_ok())
    }

    /// Forgets the retained message of `topic` (of `tenant`, if named), here and in the store;
    /// returns whether there was one. Nobody receives anything: unlike an empty retained
    /// PUBLISH, this is not a message.
    pub fn forget_retained(&self, topic: &str, tenant: Option<i64>) -> bool {
        let found = self
            .retained
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(topic)
            .is_some_and(|m| tenant.is_none_or(|t| m.tenant == Some(t)));
        if found {
            let forget = Message::new(topic, ntex::util::Bytes::new(), QoS::AtMostOnce, true);
            self.retain(&Arc::new(forget));
        }
        found
    }

    /// Whether `client_id` has a session opened by a device other than `identity`.
    pub fn is_device_session_of_another(
        &self,
        client_id: &str,
        identity: Option<&Identity>,
    ) -> bool {
        self.sessions().get(client_id).is_some_and(|s| {
            matches!(s.identity, Some(Identity::Device { .. })) && s.identity.as_ref() != identity
        })
    }

    /// Closes the live connections opened with credentials that were changed or revoked (those
    /// signed in before the change; later ones used the new credentials).
    pub fn kick_revoked(&self, revocation: &Revocation) {
        let sessions: Vec<Arc<Session>> = self
            .sessions()
            .values()
            .filter(|s| {
                s.identity
                    .as_ref()
                    .is_some_and(|i| i.is_revoked_by(&revocation.revoked))
                    && s.lock()
                        .link
                        .as_ref()
                        .is_some_and(|l| l.signed_in_at_ms <= revocation.at_ms)
            })
            .cloned()
            .collect();
        for session in sessions {
            kick_session(&session, Kick::Revoked);
        }
    }

    /// Adds or replaces a subscription; returns whether it already existed.
    pub fn subscribe(
        &self,
        session: &Arc<Session>,
        full_filter: &str,
        filter: SubscriptionFilter,
        opts: SubOptions,
    ) -> bool {
        let existed = {
            let mut tree = self
                .subscriptions
                .write()
                .unwrap_or_else(|e| e.into_inner());
            let existed = tree
                .insert(&filter, SessionKey(session.clone()), opts)
                .is_some();
            if !existed {
                self.interest_added(&filter);
            }
            self.metrics.subscriptions.set(tree.len() as i64);
            existed
        };
        {
            let mut state = session.lock();
            state
                .subscriptions
                .insert(full_filter.to_string(), (filter, opts));
            session.save(&state);
        }
        self.presence_changed(session.identity.as_ref(), PresenceChange::Subscribed, 0);
        existed
    }

    /// Removes a subscription; returns whether it existed.
    pub fn unsubscribe(&self, session: &Arc<Session>, full_filter: &str) -> bool {
        let removed = {
            let mut state = session.lock();
            let removed = state.subscriptions.remove(full_filter);
            session.save(&state);
            removed
        };
        match removed {
            Some((filter, _)) => {
                self.remove_subscriptions(session, &[filter]);
                true
            }
            None => false,
        }
    }

    /// Queues the retained messages matching `filter` for a new subscription.
    pub fn deliver_retained(&self, session: &Arc<Session>, filter: &str, opts: SubOptions) {
        let now = Instant::now();
        let retained: Vec<Arc<Message>> = self
            .retained
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|m| {
                matches(filter, &m.topic)
                    && !m.is_expired(now)
                    && may_read(
                        self.auth.as_ref(),
                        session,
                        &opts,
                        m,
                        is_protected(&m.topic, m.tenant),
                    )
            })
            .cloned()
            .collect();
        for message in retained {
            let qos = min_qos(message.qos, opts.qos);
            let out = Outgoing::new(message, qos, true, opts.id.into_iter().collect());
            self.count(session.enqueue(out, self.limits.queue));
        }
    }

    fn count(&self, result: Enqueued) {
        if result == Enqueued::Overflow {
            self.metrics.dropped_queue_full.inc();
        }
    }

    /// Stores (or, with an empty payload, deletes) the retained message of a topic.
    fn retain(&self, message: &Arc<Message>) {
        let mut retained = self.retained.write().unwrap_or_else(|e| e.into_inner());
        // Staged under the lock: the store sees a topic's changes in the order they were made.
        if let Some(persistence) = &self.persistence {
            persistence.retain(message);
        }
        if message.payload.is_empty() {
            retained.remove(&message.topic);
        } else {
            retained.insert(message.topic.clone(), message.clone());
        }
        self.metrics.retained.set(retained.len() as i64);
    }

    /// Routes messages to and from the other broker nodes of a cluster through `routes`.
    pub fn set_cluster(&self, routes: Arc<ClusterRoutes>) {
        let _ = self.cluster.set(routes);
    }

    fn interest_added(&self, filter: &SubscriptionFilter) {
        if let Some(cluster) = self.cluster.get() {
            cluster.interest_added(filter);
        }
    }

    /// Waits until the subscriptions made so far receive what other nodes route (a no-op on a
    /// node of its own).
    pub async fn subscriptions_routed(&self) {
        if let Some(cluster) = self.cluster.get() {
            cluster.settled().await;
        }
    }

    /// After this node's bus connection may have lost messages (`gap` counts such moments):
    /// the other broker nodes read again what was stored for their sessions (what this node
    /// routed to them may be lost), and once they did (what they route from then on reaches
    /// this node), so does this node for its own.
    pub async fn resync_cluster(&self, gap: u64) {
        let Some(cluster) = self.cluster.get() else {
            return;
        };
        let peers = self.peers.read().unwrap_or_else(|e| e.into_inner()).clone();
        cluster.resync_everywhere(gap, peers).await;
        self.resync().await;
    }

    /// The other nodes running the broker role now, by id.
    pub fn set_peers(&self, peers: Vec<String>) {
        *self.peers.write().unwrap_or_else(|e| e.into_inner()) = peers;
    }

    /// In a cluster sharing its state store: waits (a while at most) until the other broker
    /// nodes know the stored subscriptions of persistent `session` (they store what they accept
    /// for it before acknowledging it only once they know them; and their bus servers know
    /// where to send it), before a SUBACK promises them.
    pub async fn subscriptions_seen(&self, session: &Session) {
        let (Some(cluster), Some(persistence)) = (self.cluster.get(), &self.persistence) else {
            return;
        };
        if !persistence.shared() {
            return;
        }
        let Some(version) = session
            .lock()
            .stored
            .as_ref()
            .and_then(|s| s.subscribed_at())
        else {
            return;
        };
        let peers = self.peers.read().unwrap_or_else(|e| e.into_inner()).clone();
        if cluster
            .seen_everywhere(&session.client_id, version, peers)
            .await
            && let Some(stored) = session.lock().stored.as_ref()
        {
            stored.seen_everywhere(version);
        }
    }

    /// Routes a message to every matching subscription, on this node and (in a cluster) on the
    /// others; returns the number of this node's sessions it was queued for.
    pub fn publish(&self, message: Message) -> usize {
        let Some(cluster) = self.cluster.get() else {
            let message = Arc::new(message);
            if message.retain {
                self.retain(&message);
            }
            return self.route(&message, Groups::All, None);
        };
        // Held from storing for the other nodes' sessions to routing to this node's: a session
        // this node lets go of meanwhile is one or the other ([`LocalBroker::release`]), never
        // neither.
        let remote = self.remote.read().unwrap_or_else(|e| e.into_inner());
        let seq = cluster.next_seq();
        let (handled, here) = self.store_for_others(&remote, &message, seq);
        let stored_at = self
            .persistence
            .as_ref()
            .filter(|_| !handled.stored_for.is_empty())
            .map(|p| p.position());
        cluster.forward(seq, handled, stored_at, &message);
        let message = Arc::new(message);
        if message.retain {
            self.retain(&message);
        }
        self.route(&message, Groups::Only(&here), None)
    }

    fn deliver_shared(&self, key: &SessionKey, opts: &SubOptions, message: &Arc<Message>) -> bool {
        let sub_ids = opts.id.into_iter().collect();
        let result = key.0.enqueue(
            Outgoing::granted(message, opts.qos, opts.retain_as_published, sub_ids),
            self.limits.queue,
        );
        self.count(result);
        result == Enqueued::Queued
    }

    /// `groups`: which shared subscriptions the message matches this node serves. `origin`: the
    /// node that routed it here, and the sessions it stored it for.
    fn route(&self, message: &Arc<Message>, groups: Groups<'_>, origin: Option<&Origin>) -> usize {
        let tree = self.subscriptions.read().unwrap_or_else(|e| e.into_inner());
        let mut deliveries = Deliveries::new(message, self.auth.as_ref(), groups);
        tree.for_each_match(&message.topic, &mut deliveries);
        let (mut queued, mut overflow) = (0, 0);
        let sender = origin.map(|o| Arc::<str>::from(o.sender.as_str()));
        deliveries.per_session(|key, granted, retain_as_published, sub_ids| {
            let mut out = Outgoing::granted(message, granted, retain_as_published, sub_ids);
            if let (Some(origin), Some(sender)) = (origin, &sender)
                && out.qos != QoS::AtMostOnce
                && origin.stored_for.iter().any(|c| **c == *key.0.client_id)
            {
                // Its node stored it for this session already.
                out.record = Some(Record::Routed(sender.clone(), origin.seq));
            }
            match key.0.offer(out, self.limits.queue) {
                Enqueued::Queued => queued += 1,
                Enqueued::Overflow => overflow += 1,
                Enqueued::SkippedOffline | Enqueued::Held => {}
            }
        });
        // Counted once per message: counters shared by every thread, touched per copy, cost a
        // fan-out dearly.
        self.metrics.session_queues.queued.inc_by(queued as i64);
        if overflow > 0 {
            self.metrics.dropped_queue_full.inc_by(overflow);
        }
        for (key, opts) in deliveries.shared {
            queued += usize::from(self.deliver_shared(key, opts, message));
        }
        queued
    }
}

/// What other broker nodes send, delivered to this node's sessions.
#[async_trait]
impl LocalBroker for Broker {
    /// Routes a message another node accepted to this node's plain subscriptions (its retained
    /// messages are that node's).
    fn route_from_cluster(&self, message: Message, origin: &Origin) {
        self.route(&Arc::new(message), Groups::Only(&[]), Some(origin));
    }

    /// Gives a message the bus chose this node for to one member of shared subscription
    /// `filter` here.
    fn route_to_group(&self, message: Message, filter: &SubscriptionFilter) {
        let message = Arc::new(message);
        let tree = self.subscriptions.read().unwrap_or_else(|e| e.into_inner());
        let protected = is_protected(&message.topic, message.tenant);
        let pick = tree
            .group(filter)
            .and_then(|group| pick_member(group, self.auth.as_ref(), &message, protected));
        if let Some((key, opts)) = pick {
            self.deliver_shared(key, opts, &message);
        }
    }

    /// Gives a message the node that accepted it stored for sessions here to their shared
    /// subscriptions (a session that moved on finds it in the store).
    fn route_to_members(&self, message: Message, origin: &Origin) {
        let message = Arc::new(message);
        let protected = is_protected(&message.topic, message.tenant);
        let sender = Arc::<str>::from(origin.sender.as_str());
        for (client_id, filter) in &origin.members {
            let Some(session) = self.session(client_id) else {
                continue;
            };
            let subscription = session.lock().subscriptions.get(filter).map(|(_, o)| *o);
            let Some(opts) = subscription
                .filter(|opts| may_read(self.auth.as_ref(), &session, opts, &message, protected))
            else {
                continue;
            };
            let sub_ids = opts.id.into_iter().collect();
            let mut out = Outgoing::granted(&message, opts.qos, opts.retain_as_published, sub_ids);
            if out.qos != QoS::AtMostOnce {
                out.record = Some(Record::Routed(sender.clone(), origin.seq));
            }
            self.count(session.enqueue(out, self.limits.queue));
        }
    }

    /// Another node connected a client: this node's connection of its client id, if older, is
    /// closed as taken over — unless it is a device's session and the newcomer is not that
    /// device (who may take a device's session over is checked where it is held).
    fn connected_elsewhere(&self, elsewhere: &Connected) {
        let Some(session) = self.session(&elsewhere.client_id) else {
            return;
        };
        if Connected::device_of(session.identity.as_ref()).is_some()
            && Connected::device_of(session.identity.as_ref()) != elsewhere.device
        {
            tracing::warn!(client_id = %elsewhere.client_id, "another node connected a client with a device's id; the device stays connected here");
            return;
        }
        let older = session.lock().link.as_ref().is_some_and(|link| {
            // Connections of the same millisecond: the node names decide, the same way on both.
            (link.signed_in_at_ms, self.incarnation.as_str())
                < (elsewhere.signed_in_at_ms, elsewhere.sender.as_str())
        });
        if older {
            self.metrics.takeovers.inc();
            kick_session(&session, Kick::TakenOver);
        }
    }

    async fn release(&self, client_id: &str, to: &str) {
        let released = {
            // At once, for any publish here: the session is no longer this node's, and is the
            // stand-in of the one taking it over (what this node accepts from now on is stored
            // for it before it is acknowledged, as any other node does).
            let mut remote = self.remote.write().unwrap_or_else(|e| e.into_inner());
            let mut sessions = self.sessions();
            let released = sessions.remove(client_id);
            self.metrics.sessions.set(sessions.len() as i64);
            if let Some(session) = &released {
                let meta = {
                    let mut state = session.lock();
                    // Its records stay: they are the session the other node takes over.
                    let saved = state.stored.take().map_or(0, |s| s.version());
                    SessionMeta {
                        holder: Some(to.to_string()),
                        // Newer than what this node saved, which the records it follows may
                        // still bring; not newer than what the node taking it over saves.
                        version: saved + 1,
                        ..session.meta(&state)
                    }
                };
                self.stand_in(&mut remote, client_id, meta);
                self.metrics
                    .cluster_sessions
                    .set(remote.sessions.len() as i64);
            }
            released
        };
        if let Some(session) = released {
            self.metrics.takeovers.inc();
            self.end_session(&session, Some(Kick::TakenOver));
        }
        if let Err(err) = self.durable().await {
            tracing::warn!(%err, client_id, "a session let go of may not be stored whole");
        }
    }

    async fn seen(&self, client_id: &str, version: u64) {
        let seen = {
            let mut remote = self.remote.write().unwrap_or_else(|e| e.into_inner());
            let known = remote.held.get(client_id).map(|m| m.version);
            if known.is_some_and(|known| known >= version) {
                return;
            }
            let (done, seen) = oneshot::channel();
            remote
                .waiting
                .entry(client_id.to_string())
                .or_default()
                .push((version, done));
            seen
        };
        if tokio::time::timeout(RELEASE_WAIT, seen).await.is_err() {
            tracing::warn!(
                client_id,
                "the record of a session another node changed was not seen in time"
            );
            let mut remote = self.remote.write().unwrap_or_else(|e| e.into_inner());
            remote.seen(client_id, Some(0));
        }
    }

    async fn resync(&self) {
        let Some(persistence) = self.persistence.as_ref().filter(|p| p.shared()) else {
            return;
        };
        // A disconnected session gets what the bus lost when its client connects again.
        let connected: Vec<Arc<Session>> = self
            .sessions()
            .values()
            .filter(|s| s.is_connected() && s.lock().stored.is_some())
            .cloned()
            .collect();
        let mut found = 0;
        for session in connected {
            match persistence.load_session(&session.client_id).await {
                Ok(record) => {
                    found += session.merge_stored(record.map(|r| r.queued).unwrap_or_default());
                }
                Err(err) => {
                    tracing::warn!(%err, client_id = %session.client_id, "cannot read a session again; what the bus lost of it comes when its client connects again");
                }
            }
        }
        if found > 0 {
            tracing::info!(
                messages = found,
                "messages whose live copy the bus lost were read from the store"
            );
        }
    }

    async fn durable_at(&self, position: u64) {
        if let Some(persistence) = &self.persistence
            && let Err(err) = persistence.durable_at(position).await
        {
            tracing::warn!(%err, "routing a stored message that may not be durable");
        }
    }
}

fn kick_session(session: &Session, kick: Kick) {
    if let Some(tx) = session.lock().link.as_mut().and_then(|l| l.kick.take()) {
        let _ = tx.send(kick);
    }
}
