//! One MQTT connection: what 3.1.1 and 5.0 share — admission, publish checks, the dispatcher
//! that serves the connection, and clean-up when the connection ends.

pub(crate) mod dispatcher;
pub(crate) mod transport;
pub(crate) mod v3;
pub(crate) mod v5;
pub(crate) mod version;

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use aos_core::state::StateError;
use ntex::util::{BytePages, ByteString, Bytes};
use ntex_mqtt::QoS;
use tokio::sync::{Notify, oneshot};

use ntex::time::Millis;

use self::dispatcher::Dispatcher;
use self::transport::Transport;
use self::v3::V3;
use self::v5::V5;
use crate::BrokerConfig;
use crate::auth::{ConnectRequest, Principal, Refusal};
use crate::broker::{Broker, HookError};
use crate::delivery::Outgoing;
use crate::message::Message;
use crate::metrics::ListenerLabel;
use crate::session::{Kick, Link, Peer, Protocol, Session, Will};
use crate::topic::valid_topic_name;

/// A connection whose client is in, on the dispatcher of its MQTT version.
pub(crate) enum Admitted {
    V3(Box<Dispatcher<V3>>),
    V5(Box<Dispatcher<V5>>),
}

/// A connection being let in (boxed: gone once the client is in), then served to its end.
pub(crate) async fn serve(admitting: Pin<Box<dyn Future<Output = Option<Admitted>>>>) {
    if let Some(admitted) = admitting.await {
        admitted.serve().await;
    }
}

impl Admitted {
    /// Serves the connection until it ends.
    pub(crate) async fn serve(self) {
        match self {
            Admitted::V3(dispatcher) => dispatcher.serve().await,
            Admitted::V5(dispatcher) => dispatcher.serve().await,
        }
    }
}

/// Reads a new connection's CONNECT within `connect_timeout` (3.1.1 and 5.0 on the same
/// listener: its version first) and lets the client in if it may. Boxed by the caller, and
/// gone once the client is in: what an idle connection keeps is its dispatcher.
pub(crate) async fn admit(
    ctx: Arc<ListenerContext>,
    io: Transport,
    connect_timeout: Duration,
) -> Option<Admitted> {
    let started = std::time::Instant::now();
    let version = match ntex::time::timeout(
        Millis::from(connect_timeout),
        io.recv(&version::VersionCodec),
    )
    .await
    {
        Ok(Ok(version)) => version,
        Ok(Err(err)) => {
            tracing::debug!(peer = ?io.peer_addr(), error = ?err, "not an MQTT CONNECT");
            return None;
        }
        Err(()) => {
            tracing::debug!(peer = ?io.peer_addr(), "no CONNECT in time");
            return None;
        }
    };
    // One timeout for the whole CONNECT: what reading its version took is spent.
    let left = Millis::from(connect_timeout.saturating_sub(started.elapsed()));
    match version {
        version::Version::V3 => dispatcher::accept::<V3>(ctx, io, left)
            .await
            .map(Admitted::V3),
        version::Version::V5 => dispatcher::accept::<V5>(ctx, io, left)
            .await
            .map(Admitted::V5),
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
    /// the connection's dispatcher, woken by `wake`.
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
        let address = wire.peer;
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
                listener: self.clone(),
                session,
                generation,
                principal,
                graceful: Cell::new(false),
                disconnect_expiry: Cell::new(None),
                finished: Cell::new(false),
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

/// The connection a session is opened on.
pub(crate) struct Wire {
    /// The client's address, if known.
    pub peer: Option<SocketAddr>,
    pub protocol: Protocol,
    /// Seconds, as in force.
    pub keep_alive: u16,
}

/// What a connection knows of its client and session.
pub struct Conn {
    pub listener: Arc<ListenerContext>,
    pub session: Arc<Session>,
    pub generation: u64,
    pub principal: Principal,
    /// The client ended with a normal DISCONNECT (its will is discarded).
    graceful: Cell<bool>,
    /// A session expiry interval sent with a 5.0 DISCONNECT.
    disconnect_expiry: Cell<Option<Option<Duration>>>,
    finished: Cell<bool>,
}

impl Conn {
    pub fn broker(&self) -> &Arc<Broker> {
        &self.listener.broker
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
        metrics.messages_received.of(message.qos).inc();
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
fn write_shared<E>(
    io: &transport::Transport,
    wire: Result<&Bytes, E>,
    max_packet_size: u32,
) -> SendOutcome {
    match wire {
        Ok(wire) if max_packet_size == 0 || wire.len() <= max_packet_size as usize => {
            match io.write_bytes(wire) {
                Ok(()) => SendOutcome::Sent,
                Err(_) => SendOutcome::Closed,
            }
        }
        _ => SendOutcome::Unsendable,
    }
}

/// How many queued messages a dispatcher takes at once.
const BATCH: usize = 64;

/// What a dispatcher sent since it last told the broker's metrics: counted per batch, because
/// counters every connection shares, touched per message, cost a fan-out dearly.
#[derive(Default)]
struct Tally {
    /// Messages sent, by QoS.
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
        metrics.messages_sent.add(self.sent);
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
