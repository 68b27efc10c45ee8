//! The outermost dispatcher middleware of every connection. It sees the client's packets in
//! arrival order, and
//!
//! - closes the connection on a second CONNECT ([MQTT-3.1.0-2]; 5.0: DISCONNECT 0x82), which
//!   ntex-mqtt 8.2.1 would silently ignore;
//! - gives every PUBLISH its place in the arrival order (see [`super::order`]), settled once
//!   the packet has been handled;
//! - with persistence, holds back the acknowledgement of a QoS 1/2 PUBLISH until it has been
//!   routed (after every earlier one) and what its routing stored is durable. The wait is here,
//!   outside ntex-mqtt's limit on publishes in progress: a handler that waited for an earlier
//!   publish would keep that publish from ever getting a place.

use std::ops::Deref;

use ntex::service::{Middleware, Service, ServiceCtx};
use ntex_mqtt::error::DispatcherError;
use ntex_mqtt::{ProtocolError, QoS};
use ntex_mqtt::{v3, v5};

use super::Conn;
use super::order::publish_key;

/// What the guard needs to know of a packet of either protocol version.
pub(crate) trait InboundPacket {
    fn is_connect(&self) -> bool;
    /// The ordering key of a PUBLISH.
    fn publish_key(&self) -> Option<u64>;
    /// Whether it is a PUBLISH the client expects acknowledged (QoS 1 or 2).
    fn acknowledged(&self) -> bool;
}

impl InboundPacket for v3::codec::Decoded {
    fn is_connect(&self) -> bool {
        matches!(
            self,
            v3::codec::Decoded::Packet(v3::codec::Packet::Connect(_), _)
        )
    }

    fn publish_key(&self) -> Option<u64> {
        match self {
            v3::codec::Decoded::Publish(p, payload, _) => {
                Some(publish_key(&p.topic, None, p.payload_size, payload))
            }
            _ => None,
        }
    }

    fn acknowledged(&self) -> bool {
        matches!(self, v3::codec::Decoded::Publish(p, _, _) if p.qos != QoS::AtMostOnce)
    }
}

impl InboundPacket for v5::codec::Decoded {
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

pub(crate) struct ConnectionGuard;

impl<S, St> Middleware<S, (ntex::SharedCfg, St)> for ConnectionGuard {
    type Service = ConnectionGuardService<S, St>;

    fn create(&self, inner: S, (_, session): (ntex::SharedCfg, St)) -> Self::Service {
        ConnectionGuardService { inner, session }
    }
}

pub(crate) struct ConnectionGuardService<S, St> {
    inner: S,
    session: St,
}

impl<S, St, R, E> Service<R> for ConnectionGuardService<S, St>
where
    S: Service<R, Error = DispatcherError<E>>,
    St: Deref<Target = Conn>,
    R: InboundPacket,
{
    type Response = S::Response;
    type Error = DispatcherError<E>;

    ntex::forward_ready!(inner);
    ntex::forward_poll!(inner);
    ntex::forward_shutdown!(inner);

    async fn call(
        &self,
        request: R,
        ctx: ServiceCtx<'_, Self>,
    ) -> Result<Self::Response, Self::Error> {
        if request.is_connect() {
            return Err(DispatcherError::Protocol(ProtocolError::generic_violation(
                "a second CONNECT on an open connection [MQTT-3.1.0-2]",
            )));
        }
        // Runs in arrival order: nothing above awaits.
        let ticket = request
            .publish_key()
            .map(|key| self.session.order.arrived(key));
        let acknowledged = request.acknowledged();
        let result = ctx.call(&self.inner, request).await;
        if let Some(ticket) = ticket {
            // Whatever happened to it (refused, a duplicate, an error), its place is released.
            self.session.release(Some(ticket), None);
            if acknowledged && result.is_ok() && self.session.broker().persists() {
                self.session.order.released(ticket).await;
                if let Err(err) = self.session.durable().await {
                    tracing::error!(client_id = %self.session.session.client_id, %err, "a publish could not be stored; the connection is closed unacknowledged");
                    return Err(DispatcherError::Protocol(ProtocolError::generic_violation(
                        "the broker cannot store the message",
                    )));
                }
            }
        }
        result
    }
}
