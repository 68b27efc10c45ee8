//! One MQTT connection: what 3.1.1 and 5.0 share — admission, publish handling, the writer task
//! that drains the session's queue into the socket, and clean-up when the connection ends.

mod exactly_once;
mod guard;
mod order;
mod replies;
pub(crate) mod v3;
pub(crate) mod v5;
pub(crate) mod version;

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use std::num::NonZeroU16;

use aos_core::state::StateError;
use ntex::io::IoRef;
use ntex::util::{BytePages, ByteString, Bytes};
use ntex_mqtt::QoS;
use tokio::sync::{Notify, oneshot};

use crate::BrokerConfig;
use crate::auth::{ConnectRequest, Principal, Refusal};
use crate::broker::{Broker, HookError};
use crate::delivery::Outgoing;
use crate::message::Message;
use crate::metrics::{ListenerLabel, QosLabel};
use crate::session::{Kick, Link, Peer, Protocol, Session, Will};
use crate::topic::valid_topic_name;

pub(crate) use exactly_once::ExactlyOnce;
pub(crate) use guard::ConnectionGuard;

/// The error type of the connection services.
#[derive(Debug)]
pub enum ConnError {
    /// The client broke the protocol; the connection is closed.
    Protocol(&'static str),
    /// The platform could not take a message (see [`HookError`]).
    Hook(String),
}

impl From<()> for ConnError {
    fn from((): ()) -> Self {
        ConnError::Protocol("service initialisation failed")
    }
}

/// What every connection of one listener shares.
pub struct ListenerContext {
    pub broker: Arc<Broker>,
    pub config: Arc<BrokerConfig>,
    pub name: Arc<str>,
    /// Open connections across all listeners of the broker.
    pub connections: Arc<AtomicUsize>,
    /// Open connections of this listener, and its own limit.
    pub listener_connections: AtomicUsize,
    pub listener_limit: Option<usize>,
}

impl ListenerContext {
    fn label(&self) -> ListenerLabel {
        ListenerLabel {
            listener: self.name.to_string(),
        }
    }
}

/// Outcome of the common CONNECT checks.
pub(crate) enum Admission {
    Accepted(Principal),
    Refused(Refusal),
    /// `max_connections` reached.
    Busy,
}

impl ListenerContext {
    /// Authenticates a CONNECT and reserves a connection slot.
    pub(crate) async fn admit(&self, request: ConnectRequest) -> Admission {
        let open = self.connections.fetch_add(1, Ordering::AcqRel);
        let here = self.listener_connections.fetch_add(1, Ordering::AcqRel);
        if open >= self.config.max_connections
            || self.listener_limit.is_some_and(|limit| here >= limit)
        {
            self.refused();
            return Admission::Busy;
        }
        let signed_in_at_ms = chrono::Utc::now().timestamp_millis();
        let mut authenticated = self.broker.auth.authenticate(&request).await;
        // In a cluster, the session is the cluster's: taken over here before it is opened.
        if let Ok(principal) = &authenticated
            && let Err(refusal) = self
                .broker
                .take_over(&request.client_id, principal.identity.as_ref())
                .await
        {
            authenticated = Err(refusal);
        }
        let authenticated = authenticated.and_then(|mut principal| {
            principal.signed_in_at_ms = signed_in_at_ms;
            // A device's session (its client id is its id) is taken over by that device only:
            // nobody else may disconnect it or inherit its messages.
            if self
                .broker
                .is_device_session_of_another(&request.client_id, principal.identity.as_ref())
            {
                Err(Refusal::NotAuthorized)
            } else {
                Ok(principal)
            }
        });
        match authenticated {
            Ok(principal) => Admission::Accepted(principal),
            Err(refusal) => {
                self.refused();
                tracing::info!(client_id = %request.client_id, user = ?request.username, peer = ?request.peer, ?refusal, "CONNECT refused");
                Admission::Refused(refusal)
            }
        }
    }

    /// A CONNECT was refused: its slot is given back, and it is counted.
    fn refused(&self) {
        self.release_slot();
        self.broker
            .metrics
            .connections_refused
            .get_or_create(&self.label())
            .inc();
    }

    /// Gives back a connection slot taken by `admit`.
    pub(crate) fn release_slot(&self) {
        self.connections.fetch_sub(1, Ordering::AcqRel);
        self.listener_connections.fetch_sub(1, Ordering::AcqRel);
    }

    /// A client id for a client that sent none: unique in the cluster and across restarts (a
    /// 5.0 client may keep a session under it, which no later client may inherit).
    pub(crate) fn assign_client_id(&self) -> ByteString {
        ByteString::from(format!(
            "aos-{}-{}-{}",
            self.broker.incarnation,
            self.name,
            self.broker.next_id()
        ))
    }

    /// Opens the session for an admitted client. What the session queues for it is taken by
    /// the connection's own dispatcher (3.1.1) or by a writer task (5.0, see [`Conn::spawn_writer`]).
    pub(crate) fn open(
        self: &Arc<Self>,
        wire: Wire,
        principal: Principal,
        client_id: ByteString,
        clean_start: bool,
        expiry: Option<Duration>,
        will: Option<Will>,
    ) -> Opened {
        let generation = self.broker.next_id();
        let wake = Arc::new(Notify::new());
        let (kick_tx, kick) = oneshot::channel();
        let address = wire
            .io
            .query::<ntex::io::types::PeerAddr>()
            .get()
            .map(|a| a.0);
        let peer = Peer {
            address,
            protocol: wire.protocol,
            listener: self.name.clone(),
            keep_alive: wire.keep_alive,
        };
        let (session, present) = self.broker.connect(
            &client_id,
            &principal,
            clean_start,
            expiry,
            will,
            Link {
                generation,
                signed_in_at_ms: principal.signed_in_at_ms,
                wake: wake.clone(),
                kick: Some(kick_tx),
                peer,
            },
        );
        self.broker
            .metrics
            .connections
            .get_or_create(&self.label())
            .inc();
        self.broker
            .metrics
            .connections_accepted
            .get_or_create(&self.label())
            .inc();
        tracing::info!(%client_id, peer = ?address, listener = %self.name, present, "client connected");
        Opened {
            conn: Conn {
                io: wire.io,
                max_packet_size_out: wire.max_packet_size,
                listener: self.clone(),
                session,
                generation,
                principal,
                graceful: Cell::new(false),
                disconnect_expiry: Cell::new(None),
                finished: Cell::new(false),
                framework: std::cell::OnceCell::new(),
            },
            present,
            wake,
            kick,
        }
    }
}

/// A session opened for a connection, and what tells the connection about it.
pub(crate) struct Opened {
    pub conn: Conn,
    /// Whether the client resumed a session.
    pub present: bool,
    /// Notified when the session's queue gets a message after it was found empty.
    pub wake: Arc<Notify>,
    /// Resolves when the connection must close (taken over, revoked, shutting down).
    pub kick: oneshot::Receiver<Kick>,
}

/// The client's address, if the transport has one.
pub(crate) fn peer_addr(io: &ntex::io::IoBoxed) -> Option<SocketAddr> {
    io.query::<ntex::io::types::PeerAddr>().get().map(|a| a.0)
}

/// The fingerprint of the client certificate a TLS listener verified, if the client sent one.
pub(crate) fn peer_certificate(io: &ntex::io::IoBoxed) -> Option<String> {
    io.query::<ntex_tls::rustls::PeerCert<'static>>()
        .as_ref()
        .map(|cert| aos_auth::secret::certificate_fingerprint(&cert.0))
}

/// The connection a session is opened on.
pub(crate) struct Wire {
    pub io: ntex::io::IoRef,
    /// The largest packet the client takes (0: no limit).
    pub max_packet_size: u32,
    pub protocol: Protocol,
    /// Seconds, as in force.
    pub keep_alive: u16,
}

/// Per-connection state (the ntex-mqtt session state).
pub struct Conn {
    /// The client's connection, for answers the connection guard writes itself.
    pub(crate) io: ntex::io::IoRef,
    /// The largest packet the client takes (0: no limit).
    pub(crate) max_packet_size_out: u32,
    pub listener: Arc<ListenerContext>,
    pub session: Arc<Session>,
    pub generation: u64,
    pub principal: Principal,
    /// The client ended with a normal DISCONNECT (its will is discarded).
    graceful: Cell<bool>,
    /// A session expiry interval sent with a 5.0 DISCONNECT.
    disconnect_expiry: Cell<Option<Option<Duration>>>,
    finished: Cell<bool>,
    /// What only a connection on ntex-mqtt's framework (5.0) uses, made on first use: a 3.1.1
    /// connection does not carry it.
    framework: std::cell::OnceCell<Box<Framework>>,
}

/// The state of a connection that ntex-mqtt's framework serves (5.0).
#[derive(Default)]
pub(crate) struct Framework {
    /// Tells the writer task that the connection is gone.
    closed: Arc<Notify>,
    /// Keeps this client's publishes in arrival order (see `order`).
    pub(crate) order: order::InboundOrder,
    /// QoS 2 publishes in progress, handed to ntex-mqtt as QoS 1 (see [`ExactlyOnce`]).
    pub(crate) exactly_once: std::cell::RefCell<std::collections::HashSet<NonZeroU16>>,
}

impl Conn {
    pub fn broker(&self) -> &Arc<Broker> {
        &self.listener.broker
    }

    pub(crate) fn framework(&self) -> &Framework {
        self.framework.get_or_init(Box::default)
    }

    /// Starts the task that drains the session's queue into `sink` (5.0 connections).
    pub(crate) fn spawn_writer<S: Outbound>(
        &self,
        sink: S,
        wake: Arc<Notify>,
        kick: oneshot::Receiver<Kick>,
    ) {
        ntex::rt::spawn(writer(
            sink,
            self.session.clone(),
            self.broker().clone(),
            wake,
            kick,
            self.framework().closed.clone(),
        ));
    }

    pub(crate) fn client_disconnected(&self, graceful: bool, expiry: Option<Option<Duration>>) {
        self.graceful.set(graceful);
        if expiry.is_some() {
            self.disconnect_expiry.set(expiry);
        }
    }

    /// The connection has ended (any reason); runs once.
    pub(crate) fn finish(&self) {
        if self.finished.replace(true) {
            return;
        }
        if let Some(framework) = self.framework.get() {
            framework.closed.notify_one();
        }
        self.listener.release_slot();
        self.broker()
            .metrics
            .connections
            .get_or_create(&self.listener.label())
            .dec();
        self.broker().disconnected(
            &self.session,
            self.generation,
            self.graceful.get(),
            self.disconnect_expiry.get(),
        );
    }

    /// The QoS a PUBLISH with `packet_id` was sent with (a QoS 2 one reaches the handler as QoS 1).
    pub(crate) fn inbound_qos(&self, packet_id: Option<NonZeroU16>, qos: QoS) -> QoS {
        match packet_id {
            Some(id) if self.framework().exactly_once.borrow().contains(&id) => QoS::ExactlyOnce,
            _ => qos,
        }
    }

    /// Waits until what the broker promised so far is durable (with persistence).
    pub(crate) async fn durable(&self) -> Result<(), StateError> {
        self.broker().durable().await
    }

    /// Waits until the session's subscriptions are durable and, in a cluster, receive what the
    /// other nodes route (a persistent session's: that the other nodes know them), before
    /// SUBACK / UNSUBACK; a store that cannot write is logged, and
    /// the client still answered.
    pub(crate) async fn settled(&self) {
        self.broker().subscriptions_routed().await;
        if let Err(err) = self.durable().await {
            tracing::error!(client_id = %self.session.client_id, %err, "the session's subscriptions could not be stored");
            return;
        }
        self.broker().subscriptions_seen(&self.session).await;
    }

    /// Checks a PUBLISH from this client, hands it to the platform hook, and routes it in its
    /// arrival order. `key` is its ordering key (see `order::publish_key`).
    /// `resent`: the client flagged the PUBLISH as sent before (DUP). (With persistence, the
    /// connection guard holds its acknowledgement back until what its routing stored is
    /// durable.)
    pub(crate) async fn publish(&self, key: u64, message: Message, resent: bool) -> PublishOutcome {
        let ticket = self.framework().order.claim(key);
        if resent && message.qos == QoS::AtLeastOnce {
            // QoS 1 allows duplicates: a resent message the broker had already taken (its
            // PUBACK lost with a connection or a node) is taken again. Counted, not hidden.
            self.broker().metrics.resent_received.inc();
        }
        let (outcome, accepted) = self.accept(message).await;
        self.release(ticket, accepted);
        outcome
    }

    async fn accept(&self, message: Message) -> (PublishOutcome, Option<Message>) {
        let outcome = self.admissible(&message);
        if outcome != PublishOutcome::Accepted {
            return (outcome, None);
        }
        match self.broker().hook() {
            Some(hook) => self.hand_over(hook, message).await,
            None => (outcome, Some(message)),
        }
    }

    /// What this client may read through `filter`; `None` (counted as a denial) if nothing.
    pub(crate) fn may_subscribe(&self, filter: &str) -> Option<crate::auth::ReadCheck> {
        match self.broker().auth.may_subscribe(&self.principal, filter) {
            crate::auth::SubscribeAccess::Granted(read) => Some(read),
            crate::auth::SubscribeAccess::Refused => {
                self.broker().metrics.denied.inc();
                None
            }
        }
    }

    /// The checks a PUBLISH from this client passes before the platform sees it (counted in
    /// the metrics, with the message itself).
    pub(crate) fn admissible(&self, message: &Message) -> PublishOutcome {
        let metrics = &self.broker().metrics;
        metrics
            .messages_received
            .get_or_create(&QosLabel {
                qos: message.qos as u8,
            })
            .inc();
        metrics.bytes_received.inc_by(message.payload.len() as u64);
        if !valid_topic_name(&message.topic) {
            return PublishOutcome::TopicInvalid;
        }
        if message.topic.starts_with("$SYS")
            || !self
                .broker()
                .auth
                .may_publish(&self.principal, &message.topic)
        {
            metrics.denied.inc();
            return PublishOutcome::NotAuthorized;
        }
        PublishOutcome::Accepted
    }

    /// Hands an admissible message to the platform's hook; returns it if the platform took it.
    pub(crate) async fn hand_over(
        &self,
        hook: Arc<dyn crate::broker::PublishHook>,
        message: Message,
    ) -> (PublishOutcome, Option<Message>) {
        if let Err(err) = hook.accept(&self.principal, &message).await {
            tracing::warn!(client_id = %self.session.client_id, %err, "publish not taken by the platform");
            let outcome = match err {
                HookError::Busy(_) => PublishOutcome::Busy,
                HookError::Failed(_) => PublishOutcome::Failed,
            };
            return (outcome, None);
        }
        (PublishOutcome::Accepted, Some(message))
    }

    /// Finishes a publish's place in the arrival order (routing `message`, if any, once every
    /// earlier publish is finished). Without a place, routes at once.
    pub(crate) fn release(&self, ticket: Option<u64>, message: Option<Message>) {
        match ticket {
            Some(ticket) => {
                for message in self.framework().order.complete(ticket, message) {
                    self.broker().publish(message);
                }
            }
            None => {
                if let Some(message) = message {
                    self.broker().publish(message);
                }
            }
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.finish();
    }
}

/// What became of a PUBLISH.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PublishOutcome {
    Accepted,
    TopicInvalid,
    NotAuthorized,
    Busy,
    Failed,
}

/// Builds the broker-side message from a client's PUBLISH (or will, whose origin is 0).
pub(crate) fn message(
    origin: u64,
    publisher: &Principal,
    topic: ByteString,
    payload: Bytes,
    qos: QoS,
    retain: bool,
) -> Message {
    let mut message = Message::new(topic, payload, qos, retain);
    message.origin = origin;
    message.tenant = publisher.tenant();
    message
}

/// Sending to one client, for the version-independent writer.
pub(crate) trait Outbound: 'static {
    fn is_ready(&self) -> bool;
    /// Waits until the client can take another QoS 1/2 message; false once the connection is gone.
    async fn ready(&self) -> bool;
    fn send_at_most_once(&self, out: &Outgoing, now: Instant) -> SendOutcome;
    /// Sends without waiting for the PUBACK (the ack callback records it).
    fn send_at_least_once(&self, out: &Outgoing, now: Instant) -> SendOutcome;
    /// Sends and completes the QoS 2 exchange (ntex-mqtt allows one at a time per connection).
    async fn send_exactly_once(&self, out: &Outgoing, now: Instant) -> SendOutcome;
    fn close(&self, kick: Kick);
}

/// What became of one message handed to a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SendOutcome {
    Sent,
    /// It cannot be sent to this client (larger than the client's maximum packet size): dropped.
    Unsendable,
    /// The connection is gone.
    Closed,
}

/// A QoS 0 PUBLISH that goes out as the same bytes to every subscriber getting it plainly,
/// encoded by `encode` into `cache` by the first connection that sends it, copied by the
/// others.
fn shared_publish<E>(
    cache: &OnceLock<Bytes>,
    encode: impl FnOnce(&mut BytePages) -> Result<(), E>,
) -> Result<&Bytes, E> {
    if let Some(wire) = cache.get() {
        return Ok(wire);
    }
    let mut pages = BytePages::default();
    encode(&mut pages)?;
    Ok(cache.get_or_init(|| Bytes::from(pages)))
}

/// Writes a shared PUBLISH (see [`shared_publish`]) to one connection: unsendable if it could
/// not be encoded or is larger than the client's maximum packet size (0: no maximum).
fn write_shared<E>(io: &IoRef, wire: Result<&Bytes, E>, max_packet_size: u32) -> SendOutcome {
    match wire {
        Ok(wire) if max_packet_size == 0 || wire.len() <= max_packet_size as usize => {
            match io.encode_slice(wire) {
                Ok(()) => SendOutcome::Sent,
                Err(_) => SendOutcome::Closed,
            }
        }
        _ => SendOutcome::Unsendable,
    }
}

impl<T> From<Result<T, ntex_mqtt::error::SendPacketError>> for SendOutcome {
    fn from(result: Result<T, ntex_mqtt::error::SendPacketError>) -> SendOutcome {
        match result {
            Ok(_) => SendOutcome::Sent,
            Err(ntex_mqtt::error::SendPacketError::Encode(_)) => SendOutcome::Unsendable,
            Err(_) => SendOutcome::Closed,
        }
    }
}

/// How many queued messages a writer takes at once.
const BATCH: usize = 64;

/// What a writer sent since it last told the broker's metrics: counted per batch, because
/// counters every connection shares, touched per message, cost a fan-out dearly.
#[derive(Default)]
struct Tally {
    sent: [u64; 3],
    bytes: u64,
    expired: u64,
    oversize: u64,
}

impl Tally {
    fn sent(&mut self, out: &Outgoing) {
        self.sent[out.qos as usize] += 1;
        self.bytes += out.message.payload.len() as u64;
    }

    fn flush(&mut self, metrics: &crate::metrics::BrokerMetrics) {
        for (qos, sent) in (0u8..).zip(self.sent) {
            if sent > 0 {
                metrics
                    .messages_sent
                    .get_or_create(&QosLabel { qos })
                    .inc_by(sent);
            }
        }
        if self.bytes > 0 {
            metrics.bytes_sent.inc_by(self.bytes);
        }
        if self.expired > 0 {
            metrics.dropped_expired.inc_by(self.expired);
        }
        if self.oversize > 0 {
            metrics.dropped_oversize.inc_by(self.oversize);
        }
        *self = Tally::default();
    }
}

/// Drains the session's queue into the connection until it closes.
async fn writer<S: Outbound>(
    sink: S,
    session: Arc<Session>,
    broker: Arc<Broker>,
    wake: Arc<Notify>,
    mut kick: oneshot::Receiver<Kick>,
    closed: Arc<Notify>,
) {
    let mut tally = Tally::default();
    loop {
        tally.flush(&broker.metrics);
        // Wait until the client can take more: the sink has no credit before CONNACK is written,
        // none while the client's receive maximum is used up, and none while its socket is full
        // (a client that does not read). Meanwhile the session queue absorbs, then drops, what
        // keeps coming — publishers never wait for a subscriber.
        tokio::select! {
            biased;
            reason = &mut kick => {
                if let Ok(reason) = reason {
                    sink.close(reason);
                }
                return;
            }
            _ = closed.notified() => return,
            ready = async { sink.is_ready() || sink.ready().await } => {
                if !ready {
                    return;
                }
            }
        }
        // One clock read per batch serves both (the reads showed in fan-out profiles).
        let now = Instant::now();
        let (batch, expired) = session.take_to_send(now, BATCH);
        tally.expired += expired as u64;
        if batch.is_empty() {
            tokio::select! {
                _ = wake.notified() => {}
                _ = closed.notified() => return,
                reason = &mut kick => {
                    if let Ok(reason) = reason {
                        sink.close(reason);
                    }
                    return;
                }
            }
            continue;
        }
        for out in batch {
            let sent = match out.qos {
                QoS::AtMostOnce => sink.send_at_most_once(&out, now),
                QoS::AtLeastOnce => sink.send_at_least_once(&out, now),
                QoS::ExactlyOnce => sink.send_exactly_once(&out, Instant::now()).await,
            };
            match sent {
                SendOutcome::Sent => {
                    if let (QoS::ExactlyOnce, Some(id)) = (out.qos, out.packet_id) {
                        session.acknowledged(id);
                    }
                    tally.sent(&out);
                }
                SendOutcome::Unsendable => {
                    // Not for this client: forget it, and go on with the next.
                    if let Some(id) = out.packet_id {
                        session.acknowledged(id);
                    }
                    tally.oversize += 1;
                }
                // Gone: QoS 1/2 messages stay in flight for the next connection of the session
                // (QoS 0 ones taken with them are lost with the connection, as MQTT allows).
                SendOutcome::Closed => {
                    tally.flush(&broker.metrics);
                    return;
                }
            }
        }
    }
}
