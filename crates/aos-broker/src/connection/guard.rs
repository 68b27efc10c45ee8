//! The outermost dispatcher middleware of every 5.0 connection (ntex-mqtt's). It
//!
//! - closes the connection on a second CONNECT ([MQTT-3.1.0-2]; 5.0: DISCONNECT 0x82), which
//!   ntex-mqtt 8.2.1 would silently ignore;
//! - gives every PUBLISH its place in the arrival order (see [`super::order`]), settled once
//!   the packet has been handled;
//! - with persistence, holds back the acknowledgement of a QoS 1/2 PUBLISH until it has been
//!   routed (after every earlier one) and what its routing stored is durable. The wait is here,
//!   outside ntex-mqtt's limit on publishes in progress: a handler that waited for an earlier
//!   publish would keep that publish from ever getting a place.
//!
//! Arrival order is only seen here if the guard never keeps ntex-mqtt's dispatcher waiting.
//! While one answer is pending, the dispatcher (ntex-mqtt 8.2.1 `io.rs`, `call_service`)
//! spawns the calls of the next packets, which first run when the executor gets to them, but
//! polls a packet decoded after the pending answer came in at once, ahead of them. So a packet
//! whose handling does not finish when first polled is finished in a task of its own, and its
//! answer is written by [`Replies`] in packet order; the dispatcher gets no answer for it.

use std::future::{Future, poll_fn};
use std::marker::PhantomData;
use std::ops::Deref;
use std::rc::Rc;
use std::task::{Context, Poll};

use ntex::codec::Encoder;
use ntex::service::{Middleware, Pipeline, Service, ServiceCtx};
use ntex::util::{Either, select};
use ntex_mqtt::error::{DispatcherError, EncodeError};
use ntex_mqtt::v5;
use ntex_mqtt::{ProtocolError, QoS};

use super::Conn;
use super::order::publish_key;
use super::replies::{NodeBound, Replies};

/// What the guard needs to know of a packet of either protocol version.
pub(crate) trait InboundPacket: 'static {
    /// Encodes the answers to the client.
    type Codec: Encoder<Error = EncodeError> + 'static;
    fn codec(conn: &Conn) -> Self::Codec;
    fn is_connect(&self) -> bool;
    /// The ordering key of a PUBLISH.
    fn publish_key(&self) -> Option<u64>;
    /// Whether it is a PUBLISH the client expects acknowledged (QoS 1 or 2).
    fn acknowledged(&self) -> bool;
}

impl InboundPacket for v5::codec::Decoded {
    type Codec = v5::codec::Codec;

    fn codec(conn: &Conn) -> Self::Codec {
        let codec = v5::codec::Codec::new();
        codec.set_max_outbound_size(conn.max_packet_size_out);
        codec
    }

    fn is_connect(&self) -> bool {
        matches!(
            self,
            v5::codec::Decoded::Packet(v5::codec::Packet::Connect(_), _)
        )
    }

    fn publish_key(&self) -> Option<u64> {
        match self {
            v5::codec::Decoded::Publish(p, payload, _) => Some(publish_key(
                &p.topic,
                p.properties.topic_alias,
                p.payload_size,
                payload,
            )),
            _ => None,
        }
    }

    fn acknowledged(&self) -> bool {
        matches!(self, v5::codec::Decoded::Publish(p, _, _) if p.qos != QoS::AtMostOnce)
    }
}

/// The guard for packets of type `R` (one protocol version).
pub(crate) struct ConnectionGuard<R>(PhantomData<R>);

impl<R> ConnectionGuard<R> {
    pub(crate) fn new() -> Self {
        ConnectionGuard(PhantomData)
    }
}

impl<S, St, R, E> Middleware<S, (ntex::SharedCfg, St)> for ConnectionGuard<R>
where
    S: Service<R, Error = DispatcherError<E>>,
    St: Deref<Target = Conn>,
    R: InboundPacket,
{
    type Service = ConnectionGuardService<S, St, R, E>;

    fn create(&self, inner: S, (_, session): (ntex::SharedCfg, St)) -> Self::Service {
        let metrics = &session.broker().metrics;
        let node = NodeBound {
            waiting: metrics.packets_pending.clone(),
            limit: session.listener.config.max_pending_packets,
            paused: metrics.reads_paused.clone(),
        };
        let replies = Rc::new(Replies::new(session.io.clone(), R::codec(&session), node));
        ConnectionGuardService {
            inner: Pipeline::new(inner),
            session,
            replies,
        }
    }
}

pub(crate) struct ConnectionGuardService<S, St, R: InboundPacket, E> {
    inner: Pipeline<S>,
    session: St,
    replies: Rc<Replies<R::Codec, E>>,
}

impl<S, St, R, E> Service<R> for ConnectionGuardService<S, St, R, E>
where
    S: Service<R, Response = Option<<R::Codec as Encoder>::Item>, Error = DispatcherError<E>>
        + 'static,
    St: Deref<Target = Conn> + Clone + 'static,
    R: InboundPacket,
    E: 'static,
{
    type Response = S::Response;
    type Error = DispatcherError<E>;

    async fn ready(&self, _: ServiceCtx<'_, Self>) -> Result<(), Self::Error> {
        self.replies.room().await;
        self.inner.ready().await
    }

    fn poll(&self, cx: &mut Context<'_>) -> Result<(), Self::Error> {
        self.replies.take_failure()?;
        self.inner.poll(cx)
    }

    async fn shutdown(&self) {
        self.replies.stop();
        self.inner.shutdown().await;
    }

    async fn call(
        &self,
        request: R,
        _: ServiceCtx<'_, Self>,
    ) -> Result<Self::Response, Self::Error> {
        if request.is_connect() {
            return Err(DispatcherError::Protocol(ProtocolError::generic_violation(
                "a second CONNECT on an open connection [MQTT-3.1.0-2]",
            )));
        }
        let conn: &Conn = &self.session;
        // Called as the packet is decoded (this call never leaves the dispatcher waiting), so
        // tickets follow the arrival order.
        let ticket = request
            .publish_key()
            .map(|key| conn.framework().order.arrived(key));
        let hold = request.acknowledged() && conn.broker().persists();
        let mut handling = Box::pin(handle(
            self.inner.clone(),
            self.session.clone(),
            request,
            ticket,
            hold,
        ));
        let first = poll_fn(|cx| Poll::Ready(handling.as_mut().poll(cx))).await;
        match first {
            Poll::Ready(answer) if self.replies.is_idle() => answer,
            Poll::Ready(answer) => {
                self.replies.settle(self.replies.reserve(), answer);
                Ok(None)
            }
            Poll::Pending => {
                let place = self.replies.reserve();
                let replies = self.replies.clone();
                ntex::rt::spawn(async move {
                    if let Either::Left(answer) = select(handling, replies.stopped()).await {
                        replies.settle(place, answer);
                    }
                });
                Ok(None)
            }
        }
    }
}

/// Handles one packet: the services below, then its place in the arrival order and, when the
/// acknowledgement is held back, the wait for durability.
async fn handle<S, St, R, E>(
    inner: Pipeline<S>,
    session: St,
    request: R,
    ticket: Option<u64>,
    hold: bool,
) -> Result<S::Response, DispatcherError<E>>
where
    S: Service<R, Error = DispatcherError<E>> + 'static,
    St: Deref<Target = Conn>,
    R: 'static,
{
    let result = inner.call_nowait(request).await;
    let Some(ticket) = ticket else {
        return result;
    };
    let conn: &Conn = &session;
    // Whatever happened to it (refused, a duplicate, an error), its place is released.
    conn.release(Some(ticket), None);
    if hold && result.is_ok() {
        conn.framework().order.released(ticket).await;
        if let Err(err) = conn.durable().await {
            tracing::error!(client_id = %conn.session.client_id, %err, "a publish could not be stored; the connection is closed unacknowledged");
            return Err(DispatcherError::Protocol(ProtocolError::generic_violation(
                "the broker cannot store the message",
            )));
        }
    }
    result
}
