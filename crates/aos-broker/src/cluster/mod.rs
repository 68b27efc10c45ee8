//! Routing between the broker nodes of a cluster, on the bus (NATS core in distributed mode).
//!
//! Every message a node routes is also published on the bus, on the subject of its topic
//! ([`subject::of_topic`]). A node subscribes once per distinct filter its own sessions hold
//! ([`subject::patterns_of`]), so it receives only what its clients may want, and routes what
//! arrives to its own sessions exactly as a local publish (QoS, retain-as-published, expiry,
//! properties, subscription identifiers, tenant isolation), never onwards. Its own messages
//! coming back, and the second copy NATS sends when two of its filters overlap, are dropped by
//! the sender's incarnation and sequence number.
//!
//! A shared subscription's members on every node form one NATS queue group per pattern: the
//! bus gives each message to one node (the sender's too), which gives it to one of its members.
//! When a member is a persistent session another node holds, the publishing node chooses the
//! member itself (before it acknowledges a QoS 1/2 message it must have stored it for the one
//! chosen): one of its own, or one elsewhere, to which it sends the message on the subject of
//! that member's node ([`subject::of_node`]); the message on the topic's subject then tells the
//! group's other members to leave it.
//!
//! A node that connects a client tells the others (`broker.connected`), and a node holding an
//! older connection of the same client id closes it as taken over (5.0: 0x8E) — unless it is a
//! device's session and the newcomer is not that device.
//!
//! With a shared state store a session is the cluster's: the node a client connects to takes
//! its session over from the store, first asking the node that holds it to let go
//! (`broker.release`, answered on `broker.released` once what it stored is durable). A holder
//! that does not answer within [`RELEASE_WAIT`] is taken for gone. Before it answers a SUBSCRIBE
//! of a persistent session, a node asks every other broker node to say once it saw the
//! session's record with those subscriptions (`broker.know`, answered on `broker.known`): from
//! then on each stores what it accepts for them before acknowledging it, and its bus server
//! knows the node's interest (the question travelled the same routes after it). A node that does
//! not answer within [`RELEASE_WAIT`] is not waited for longer.
//!
//! Delivery between nodes is as NATS core's: at most once, in order per topic (what MQTT
//! orders); messages on topics that different filters cover may overtake one another. What was
//! stored for a persistent session is not lost with its live copy: a node whose bus connection
//! may have lost messages (it came back, or the server dropped what it did not take in time)
//! asks every other broker node to read again what was stored for their connected persistent
//! sessions (`broker.resync`, answered on `broker.known`), then does so itself.

pub(crate) mod subject;
mod wire;

pub(crate) use wire::{Connected, Origin};

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aos_core::access::Identity;
use aos_core::bus::BusError;
use aos_core::{Bus, Subscription};
use async_trait::async_trait;
use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::message::Message;
use crate::topic::SubscriptionFilter;

/// The subjects of the nodes' talk about clients and sessions.
const CONTROL_SUBJECTS: &str = "broker.>";
/// Where nodes announce the clients they connect.
const CONNECTED_SUBJECT: &str = "broker.connected";
/// Where a node asks the holder of a session to let go of it.
const RELEASE_SUBJECT: &str = "broker.release";
/// Where the holder answers that it did.
const RELEASED_SUBJECT: &str = "broker.released";
/// How long a node waits for the holder of a session to let go of it before taking it for gone
/// (and for the other nodes to see a session's record).
pub const RELEASE_WAIT: Duration = Duration::from_secs(2);
/// Where a node asks the others to say once they saw a version of a session's record.
const KNOW_SUBJECT: &str = "broker.know";
/// Where they answer that they did (and that they read their sessions again).
const KNOWN_SUBJECT: &str = "broker.known";
/// Where a node whose bus connection may have lost messages asks the others to read again the
/// copies stored for their sessions (it may have lost what it routed to them).
const RESYNC_SUBJECT: &str = "broker.resync";

/// Routed messages a node may have waiting before its bus subscriptions wait for it.
const INBOUND_BUFFER: usize = 65_536;
/// Messages a node may have waiting for the bus; more are dropped and counted.
const OUTBOUND_BUFFER: usize = 65_536;
/// Messages handed to the bus, or routed from it, in one go.
const BATCH: usize = 256;

/// A change in the filters a node's sessions hold.
enum Interest {
    Added(SubscriptionFilter),
    Removed(SubscriptionFilter),
    /// Answered once every change before it is in place.
    Settled(oneshot::Sender<()>),
}

/// What the routing needs of this node's broker: to deliver what other nodes send.
#[async_trait]
pub trait LocalBroker: Send + Sync + 'static {
    /// Routes a message another node accepted to this node's plain subscriptions (its retained
    /// messages are that node's).
    fn route_from_cluster(&self, message: Message, origin: &Origin);
    /// Gives a message the bus chose this node for to one member of shared subscription
    /// `filter` here.
    fn route_to_group(&self, message: Message, filter: &SubscriptionFilter);
    /// Gives a message the node that accepted it stored for sessions here (`origin.members`)
    /// to their shared subscriptions.
    fn route_to_members(&self, message: Message, origin: &Origin);
    /// Another node connected a client: this node's older connection of its client id, if any,
    /// is taken over.
    fn connected_elsewhere(&self, elsewhere: &Connected);
    /// Broker incarnation `to` takes the session of `client_id` over from the shared store: this
    /// node lets go of it, and returns once what it stored of it is durable.
    async fn release(&self, client_id: &str, to: &str);
    /// Returns once this node saw version `version` of the record of the session of
    /// `client_id` (or after [`RELEASE_WAIT`]).
    async fn seen(&self, client_id: &str, version: u64);
    /// Returns once what this node stored up to `position` is durable.
    async fn durable_at(&self, position: u64);
    /// Reads again what other nodes stored for this node's connected persistent sessions, and
    /// queues what they do not have (the bus lost its live copy).
    async fn resync(&self);
}

/// Something to publish on the bus: its subject and payload, and the position in this node's
/// store that must be durable first (a message stored for other nodes' sessions goes out only
/// once stored, so that a node that takes one of them over either finds it in the store or
/// receives it).
type Outbound = (String, Bytes, Option<u64>);

/// What the publishing node did with a message before it routes it to the others.
#[derive(Default)]
pub struct Handled {
    /// The persistent sessions held elsewhere it stored the message for.
    pub stored_for: Vec<String>,
    /// The shared subscriptions it chose the member of.
    pub served: Vec<SubscriptionFilter>,
    /// The members elsewhere it chose, among `stored_for`.
    pub members: Vec<Member>,
}

/// A member of a shared subscription that a persistent session on another node holds.
pub struct Member {
    /// The broker incarnation holding the session.
    pub holder: String,
    pub client_id: String,
    /// The filter as subscribed (`$share/{group}/{filter}`).
    pub filter: String,
}

/// The nodes waiting for holders to let go of sessions, by client id.
type Releases = Arc<Mutex<HashMap<String, Vec<oneshot::Sender<()>>>>>;

/// The versions of session records this node waits for the other nodes to see, by client id
/// and version: the nodes yet to answer, and who waits.
type Knowing = Arc<Mutex<HashMap<(String, u64), (HashSet<String>, Option<oneshot::Sender<()>>)>>>;

/// The node of broker incarnation `incarnation` (`<node id>-<start, hex ms>`).
pub fn node_of(incarnation: &str) -> &str {
    incarnation
        .rsplit_once('-')
        .map_or(incarnation, |(node, _)| node)
}

/// What the broker calls: messages to send, filters held. Cheap and non-blocking: the work is
/// done by [`ClusterRouting::run`].
pub struct ClusterRoutes {
    /// This node's incarnation: its id and start time (sequence numbers restart with it).
    sender: String,
    seq: AtomicU64,
    outbound: mpsc::Sender<Outbound>,
    /// Counts what the bus could not take in time.
    dropped: Counter,
    interest: mpsc::UnboundedSender<Interest>,
    releases: Releases,
    knowing: Knowing,
}

/// The tasks behind [`ClusterRoutes`], run by the broker role.
pub struct ClusterRouting {
    sender: String,
    outbound: mpsc::Receiver<Outbound>,
    interest: mpsc::UnboundedReceiver<Interest>,
    releases: Releases,
    knowing: Knowing,
}

impl ClusterRoutes {
    /// `sender`: the broker's incarnation (sequence numbers restart with it).
    /// `dropped` counts the messages the bus could not take in time.
    pub fn new(sender: &str, dropped: Counter) -> (Arc<ClusterRoutes>, ClusterRouting) {
        let sender = sender.to_string();
        let (outbound_tx, outbound) = mpsc::channel(OUTBOUND_BUFFER);
        let (interest_tx, interest) = mpsc::unbounded_channel();
        let (releases, knowing) = (Releases::default(), Knowing::default());
        let routes = ClusterRoutes {
            sender: sender.clone(),
            seq: AtomicU64::new(1),
            outbound: outbound_tx,
            dropped,
            interest: interest_tx,
            releases: releases.clone(),
            knowing: knowing.clone(),
        };
        let routing = ClusterRouting {
            sender,
            outbound,
            interest,
            releases,
            knowing,
        };
        (Arc::new(routes), routing)
    }

    /// The number of the next message this node routes (unique with its incarnation).
    pub fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends message `seq` (of [`ClusterRoutes::next_seq`]), which this node accepted and
    /// handled as `handled` says (what it stored durable from `stored_at` on), to the other
    /// nodes.
    pub fn forward(&self, seq: u64, handled: Handled, stored_at: Option<u64>, message: &Message) {
        let Handled {
            stored_for,
            served,
            members,
        } = handled;
        let mut by_holder: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for member in members {
            by_holder
                .entry(member.holder)
                .or_default()
                .push((member.client_id, member.filter));
        }
        for (holder, members) in by_holder {
            let origin = Origin {
                sender: self.sender.clone(),
                seq,
                stored_for: members.iter().map(|(c, _)| c.clone()).collect(),
                served: Vec::new(),
                members,
            };
            let payload = wire::encode(&origin, message);
            self.send_after(subject::of_node(&holder), payload, stored_at);
        }
        let origin = Origin {
            sender: self.sender.clone(),
            seq,
            stored_for,
            served: served
                .iter()
                .filter_map(|f| Some(subject::queue_of(f.group.as_deref()?, &f.filter)))
                .collect(),
            members: Vec::new(),
        };
        let payload = wire::encode(&origin, message);
        self.send_after(subject::of_topic(&message.topic), payload, stored_at);
    }

    /// Hands something to the bus; what it cannot take in time is dropped and counted (delivery
    /// between nodes is at most once), so a node's memory does not grow with a backlog.
    fn send(&self, subject: String, payload: Bytes) {
        self.send_after(subject, payload, None);
    }

    /// [`ClusterRoutes::send`], once this node's store is durable up to `position`.
    fn send_after(&self, subject: String, payload: Bytes, position: Option<u64>) {
        if let Err(mpsc::error::TrySendError::Full(_)) =
            self.outbound.try_send((subject, payload, position))
        {
            self.dropped.inc();
        }
    }

    /// This node connected a client: an older connection of its client id on another node is
    /// taken over.
    pub fn connected(&self, client_id: &str, signed_in_at_ms: i64, identity: Option<&Identity>) {
        let connected = wire::Connected {
            sender: self.sender.clone(),
            client_id: client_id.to_string(),
            signed_in_at_ms,
            device: wire::Connected::device_of(identity),
        };
        self.send(CONNECTED_SUBJECT.to_string(), connected.encode());
    }

    /// Asks `holder` (a broker's incarnation) to let go of the session of `client_id`; returns
    /// true once it has, false after [`RELEASE_WAIT`] (the holder is gone).
    pub async fn release(&self, client_id: &str, holder: &str) -> bool {
        let (done, released) = oneshot::channel();
        self.releases()
            .entry(client_id.to_string())
            .or_default()
            .push(done);
        let ask = wire::Handover {
            sender: self.sender.clone(),
            client_id: client_id.to_string(),
            to: holder.to_string(),
        };
        self.send(RELEASE_SUBJECT.to_string(), ask.encode());
        if tokio::time::timeout(RELEASE_WAIT, released).await.is_ok() {
            return true;
        }
        tracing::info!(
            client_id,
            holder,
            "the node holding a session did not let go of it in time; taken for gone"
        );
        let mut releases = self.releases();
        if let Some(waiting) = releases.get_mut(client_id) {
            waiting.retain(|w| !w.is_closed());
            if waiting.is_empty() {
                releases.remove(client_id);
            }
        }
        false
    }

    /// Asks the broker nodes `peers` (node ids; this one is left out) to see version `version`
    /// of the record of the session of `client_id`; returns true once all of them said they
    /// did, false after [`RELEASE_WAIT`].
    pub async fn seen_everywhere(&self, client_id: &str, version: u64, peers: Vec<String>) -> bool {
        match self
            .ask_everywhere(KNOW_SUBJECT, client_id, version, peers)
            .await
        {
            Ok(()) => true,
            Err(late) => {
                tracing::warn!(client_id, nodes = ?late, "broker nodes did not say in time that they know a session's subscriptions");
                false
            }
        }
    }

    /// Asks the broker nodes `peers` (node ids) to read again what was stored for their
    /// sessions (this node's bus connection may have lost what it routed to them, `gap` counts
    /// such moments); returns once all of them did, or after [`RELEASE_WAIT`]: whatever they
    /// route from then on reaches this node (the question travelled the routes after its
    /// subscriptions).
    pub async fn resync_everywhere(&self, gap: u64, peers: Vec<String>) {
        if let Err(late) = self.ask_everywhere(RESYNC_SUBJECT, "", gap, peers).await {
            // Usual while NATS elects leaders: they read once their store answers.
            tracing::info!(nodes = ?late, "broker nodes did not say in time that they read their sessions again");
        }
    }

    /// Asks `peers` (this node left out) on `subject` about `(client_id, version)`; returns
    /// once all of them answered, or after [`RELEASE_WAIT`] with those that did not.
    async fn ask_everywhere(
        &self,
        subject: &str,
        client_id: &str,
        version: u64,
        peers: Vec<String>,
    ) -> Result<(), HashSet<String>> {
        let me = node_of(&self.sender);
        let peers: HashSet<String> = peers.into_iter().filter(|p| p != me).collect();
        if peers.is_empty() {
            return Ok(());
        }
        let (done, seen) = oneshot::channel();
        let key = (client_id.to_string(), version);
        self.knowing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), (peers, Some(done)));
        let ask = wire::Known {
            sender: self.sender.clone(),
            client_id: client_id.to_string(),
            version,
            to: String::new(),
        };
        self.send(subject.to_string(), ask.encode());
        let answered = tokio::time::timeout(RELEASE_WAIT, seen).await.is_ok();
        let waiting = self
            .knowing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        match waiting {
            Some((late, _)) if !answered => Err(late),
            _ => Ok(()),
        }
    }

    fn releases(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<oneshot::Sender<()>>>> {
        self.releases.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A session of this node now holds `filter` (counted per filter and shared group).
    pub fn interest_added(&self, filter: &SubscriptionFilter) {
        let _ = self.interest.send(Interest::Added(filter.clone()));
    }

    /// A session of this node no longer holds `filter`.
    pub fn interest_removed(&self, filter: &SubscriptionFilter) {
        let _ = self.interest.send(Interest::Removed(filter.clone()));
    }

    /// Waits until the filters held so far receive the other nodes' messages (before a SUBACK:
    /// a message published anywhere after it reaches the new subscription).
    pub async fn settled(&self) {
        let (done, settled) = oneshot::channel();
        if self.interest.send(Interest::Settled(done)).is_ok() {
            let _ = settled.await;
        }
    }
}

impl ClusterRouting {
    /// Sends, subscribes and routes until `stop`.
    pub async fn run(
        self,
        broker: Arc<dyn LocalBroker>,
        bus: Arc<dyn Bus>,
        stop: CancellationToken,
    ) {
        let ClusterRouting {
            sender,
            mut outbound,
            mut interest,
            releases,
            knowing,
        } = self;
        let (inbound_tx, mut inbound) = mpsc::channel::<Arrived>(INBOUND_BUFFER);
        let mut held = Held::default();
        let mut seen = Seen::default();
        let (mut sending, mut arrived) = (Vec::with_capacity(BATCH), Vec::with_capacity(BATCH));
        let mut control = match bus.subscribe(CONTROL_SUBJECTS).await {
            Ok(subscription) => Some(subscription),
            Err(err) => {
                tracing::error!(%err, "cannot follow the clients other nodes connect; a client id connected twice stays connected on both nodes");
                None
            }
        };
        let mut members = match bus.subscribe(&subject::of_node(&sender)).await {
            Ok(subscription) => Some(subscription),
            Err(err) => {
                tracing::error!(%err, "cannot receive what other nodes send to this node's members of shared subscriptions; they get it when they connect again");
                None
            }
        };
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                Some(message) = next_of(&mut control) => {
                    control_message(&message, &sender, &broker, &bus, (&releases, &knowing));
                }
                Some(message) = next_of(&mut members) => match wire::decode(&message.payload) {
                    Some(routed) => broker.route_to_members(routed.message, &routed.origin),
                    None => tracing::warn!("ignored a malformed message for members of shared subscriptions"),
                },
                sent = outbound.recv_many(&mut sending, BATCH) => {
                    if sent == 0 {
                        return;
                    }
                    // In order: what waits for the store holds back what follows it.
                    if let Some(position) = sending.iter().filter_map(|(_, _, p)| *p).max() {
                        broker.durable_at(position).await;
                    }
                    for (subject, payload, _) in sending.drain(..) {
                        if let Err(err) = bus.publish(&subject, payload).await {
                            tracing::warn!(%err, %subject, "a message could not be routed to the other nodes");
                        }
                    }
                }
                Some(change) = interest.recv() => {
                    held.change(change, bus.as_ref(), &inbound_tx).await;
                }
                _ = inbound.recv_many(&mut arrived, BATCH) => {
                    for (payload, shared) in arrived.drain(..) {
                        let Some(routed) = wire::decode(&payload) else {
                            tracing::warn!("ignored a malformed routed message");
                            continue;
                        };
                        match shared {
                            // Its sender chose the member.
                            Some(filter) if served_by_sender(&routed.origin, &filter) => {}
                            // The bus chose this node (maybe the sender) for a shared subscription.
                            Some(filter) => broker.route_to_group(routed.message, &filter),
                            None if routed.origin.sender != sender
                                && seen.first(&routed.origin.sender, routed.origin.seq) =>
                            {
                                broker.route_from_cluster(routed.message, &routed.origin);
                            }
                            None => {}
                        }
                    }
                }
            }
        }
    }
}

/// The next message of `subscription`, if it could be made (else never).
async fn next_of(subscription: &mut Option<Subscription>) -> Option<aos_core::bus::BusMessage> {
    match subscription {
        Some(subscription) => subscription.next().await,
        None => std::future::pending().await,
    }
}

/// Whether the node that accepted a message chose the member of shared subscription `filter`
/// itself.
fn served_by_sender(origin: &Origin, filter: &SubscriptionFilter) -> bool {
    let queue = filter
        .group
        .as_deref()
        .map(|group| subject::queue_of(group, &filter.filter));
    queue.is_some_and(|queue| origin.served.contains(&queue))
}

/// Handles what another node says about clients and sessions.
fn control_message(
    message: &aos_core::bus::BusMessage,
    me: &str,
    broker: &Arc<dyn LocalBroker>,
    bus: &Arc<dyn Bus>,
    (releases, knowing): (&Releases, &Knowing),
) {
    match message.subject.as_str() {
        CONNECTED_SUBJECT => match wire::Connected::decode(&message.payload) {
            Some(elsewhere) if elsewhere.sender != me => broker.connected_elsewhere(&elsewhere),
            Some(_) => {}
            None => tracing::warn!("ignored a malformed connection announcement"),
        },
        RELEASE_SUBJECT => match wire::Handover::decode(&message.payload) {
            Some(ask) if ask.to == me => {
                let (broker, bus) = (broker.clone(), bus.clone());
                let answer = wire::Handover {
                    sender: me.to_string(),
                    client_id: ask.client_id,
                    to: ask.sender,
                };
                tokio::spawn(async move {
                    broker.release(&answer.client_id, &answer.to).await;
                    if let Err(err) = bus.publish(RELEASED_SUBJECT, answer.encode()).await {
                        tracing::warn!(%err, "could not answer a node taking a session over; it waits a while");
                    }
                });
            }
            Some(_) => {}
            None => tracing::warn!("ignored a malformed request to let go of a session"),
        },
        RELEASED_SUBJECT => match wire::Handover::decode(&message.payload) {
            Some(answer) if answer.to == me => {
                let waiting = releases
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&answer.client_id);
                for done in waiting.into_iter().flatten() {
                    let _ = done.send(());
                }
            }
            Some(_) => {}
            None => tracing::warn!("ignored a malformed answer about a session"),
        },
        KNOW_SUBJECT | RESYNC_SUBJECT => match wire::Known::decode(&message.payload) {
            Some(ask) if ask.sender != me => {
                let (broker, bus) = (broker.clone(), bus.clone());
                let resync = message.subject == RESYNC_SUBJECT;
                let answer = wire::Known {
                    sender: me.to_string(),
                    to: ask.sender,
                    ..ask
                };
                tokio::spawn(async move {
                    if resync {
                        broker.resync().await;
                    } else {
                        broker.seen(&answer.client_id, answer.version).await;
                    }
                    if let Err(err) = bus.publish(KNOWN_SUBJECT, answer.encode()).await {
                        tracing::warn!(%err, "could not answer a node about its sessions; it waits a while");
                    }
                });
            }
            Some(_) => {}
            None => {
                tracing::warn!(subject = %message.subject, "ignored a malformed question about sessions");
            }
        },
        KNOWN_SUBJECT => match wire::Known::decode(&message.payload) {
            Some(answer) if answer.to == me => {
                let mut knowing = knowing.lock().unwrap_or_else(|e| e.into_inner());
                let key = (answer.client_id, answer.version);
                if let Some((waiting, done)) = knowing.get_mut(&key) {
                    waiting.remove(node_of(&answer.sender));
                    if waiting.is_empty()
                        && let Some(done) = done.take()
                    {
                        let _ = done.send(());
                    }
                }
            }
            Some(_) => {}
            None => tracing::warn!("ignored a malformed answer about a session's record"),
        },
        _ => {}
    }
}

/// A routed message as a bus subscription received it: through a plain filter's pattern, or
/// as the chosen member node of a shared subscription.
type Arrived = (Bytes, Option<Arc<SubscriptionFilter>>);

/// The bus subscriptions of the filters this node's sessions hold, with how many hold each.
#[derive(Default)]
struct Held {
    filters: HashMap<SubscriptionFilter, usize>,
    /// Per pattern (and shared group): how many filters need it, and the task reading it
    /// (ended when dropped).
    patterns: HashMap<(Option<String>, String), (usize, Reader)>,
}

/// Ends its reading task when dropped (which drops the bus subscription).
struct Reader(JoinHandle<()>);

impl Drop for Reader {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Held {
    async fn change(&mut self, change: Interest, bus: &dyn Bus, inbound: &mpsc::Sender<Arrived>) {
        match change {
            Interest::Settled(done) => {
                let _ = done.send(());
            }
            Interest::Added(filter) => {
                let count = self.filters.entry(filter.clone()).or_default();
                *count += 1;
                if *count > 1 {
                    return;
                }
                let filter = Arc::new(filter);
                for pattern in subject::patterns_of(&filter.filter) {
                    let key = (filter.group.clone(), pattern);
                    if let Some((users, _)) = self.patterns.get_mut(&key) {
                        *users += 1;
                        continue;
                    }
                    match subscribe(bus, &key.1, &filter).await {
                        Ok(mut subscription) => {
                            let inbound = inbound.clone();
                            let shared = filter.group.is_some().then(|| filter.clone());
                            let reader = tokio::spawn(async move {
                                while let Some(message) = subscription.next().await {
                                    let arrived = (message.payload, shared.clone());
                                    if inbound.send(arrived).await.is_err() {
                                        return;
                                    }
                                }
                            });
                            self.patterns.insert(key, (1, Reader(reader)));
                        }
                        Err(err) => {
                            tracing::error!(%err, filter = %filter.filter, "cannot subscribe to other nodes' messages for a filter; its subscribers here get only this node's");
                        }
                    }
                }
            }
            Interest::Removed(filter) => {
                let Some(count) = self.filters.get_mut(&filter) else {
                    return;
                };
                *count -= 1;
                if *count > 0 {
                    return;
                }
                self.filters.remove(&filter);
                for pattern in subject::patterns_of(&filter.filter) {
                    let key = (filter.group.clone(), pattern);
                    if let Some((users, _)) = self.patterns.get_mut(&key) {
                        *users -= 1;
                        if *users == 0 {
                            self.patterns.remove(&key);
                        }
                    }
                }
            }
        }
    }
}

/// A plain filter's pattern takes every message; a shared subscription's joins the queue group
/// of its members on every node, so each message goes to one node.
async fn subscribe(
    bus: &dyn Bus,
    pattern: &str,
    filter: &SubscriptionFilter,
) -> Result<Subscription, BusError> {
    match &filter.group {
        Some(group) => {
            bus.queue_subscribe(pattern, &subject::queue_of(group, &filter.filter))
                .await
        }
        None => bus.subscribe(pattern).await,
    }
}

/// Sequence numbers a node's window holds: a copy arriving later than this many newer
/// messages of its sender is taken for one already routed.
const WINDOW: u64 = 1 << 16;

/// Which messages of each sender were routed already (NATS sends a node one copy per
/// matching subscription).
#[derive(Default)]
struct Seen {
    senders: HashMap<String, Window>,
}

struct Window {
    newest: u64,
    /// Bit `seq % WINDOW`: seen, for the WINDOW sequence numbers up to `newest`.
    bits: Vec<u64>,
}

impl Seen {
    /// Whether this is the first copy of message `seq` of `sender`.
    fn first(&mut self, sender: &str, seq: u64) -> bool {
        let window = self
            .senders
            .entry(sender.to_string())
            .or_insert_with(|| Window {
                newest: 0,
                bits: vec![0; (WINDOW / 64) as usize],
            });
        if seq > window.newest {
            if seq - window.newest >= WINDOW {
                window.bits.fill(0);
            } else {
                for cleared in window.newest + 1..seq {
                    window.set(cleared, false);
                }
            }
            window.newest = seq;
            window.set(seq, true);
            return true;
        }
        if window.newest - seq >= WINDOW || window.get(seq) {
            return false;
        }
        window.set(seq, true);
        true
    }
}

impl Window {
    fn index(seq: u64) -> (usize, u64) {
        let bit = seq % WINDOW;
        ((bit / 64) as usize, 1 << (bit % 64))
    }

    fn get(&self, seq: u64) -> bool {
        let (word, mask) = Window::index(seq);
        self.bits[word] & mask != 0
    }

    fn set(&mut self, seq: u64, seen: bool) {
        let (word, mask) = Window::index(seq);
        if seen {
            self.bits[word] |= mask;
        } else {
            self.bits[word] &= !mask;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_message_of_each_sender_is_routed_once() {
        let mut seen = Seen::default();
        assert!(seen.first("a", 1));
        assert!(seen.first("a", 3));
        assert!(!seen.first("a", 1));
        assert!(seen.first("a", 2), "out of order, still a first copy");
        assert!(!seen.first("a", 2));
        assert!(seen.first("b", 2), "senders are apart");
        assert!(seen.first("a", 3 + WINDOW + 5));
        assert!(!seen.first("a", 3), "older than the window");
        assert!(seen.first("a", 3 + WINDOW + 4));
    }
}
