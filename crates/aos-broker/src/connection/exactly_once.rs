//! Exactly-once delivery of inbound QoS 2 publishes on 5.0 connections, done here instead of in
//! ntex-mqtt 8.2.1 (3.1.1 connections have their own dispatcher, `v3`, which does the same). ntex-mqtt
//! keeps the packet ids waiting for PUBREL per *connection* (its 5.0 dispatcher never even frees
//! them, so a client would soon be refused). Here a
//! QoS 2 publish goes through the dispatcher as QoS 1, its PUBACK goes out as PUBREC, and the
//! packet id waits in the *session* for PUBREL — kept in the state store for a persistent session,
//! and PUBREC sent only once that is durable (the connection guard waits for it) — so a resent duplicate, even on a new connection
//! after a restart of the broker, is acknowledged but not taken twice.

use std::num::NonZeroU16;
use std::ops::Deref;

use ntex::service::{Middleware, Service, ServiceCtx};
use ntex_mqtt::QoS;
use ntex_mqtt::error::{DispatcherError, SpecViolation};
use ntex_mqtt::v5;

use super::Conn;

/// What the middleware needs of a packet of either protocol version.
pub(crate) trait Qos2Packet {
    type Encoded;
    /// Whether QoS 2 messages waiting for PUBREL count against the receive maximum (5.0).
    const RECEIVE_MAXIMUM: bool;
    /// The packet id of a QoS 2 PUBLISH.
    fn qos2_publish(&self) -> Option<NonZeroU16>;
    /// Hands the PUBLISH on as QoS 1.
    fn downgrade(&mut self);
    /// The packet id of a PUBREL.
    fn pubrel(&self) -> Option<NonZeroU16>;
    /// The PUBREC for the QoS 1 acknowledgement the handler gave, and whether the message was
    /// taken; any other response as it is.
    fn pubrec(response: Self::Encoded) -> (Self::Encoded, bool);
    /// The PUBREC for a message taken before.
    fn pubrec_again(id: NonZeroU16) -> Self::Encoded;
    fn pubcomp(id: NonZeroU16, known: bool) -> Self::Encoded;
}

impl Qos2Packet for v5::codec::Decoded {
    type Encoded = v5::codec::Encoded;
    const RECEIVE_MAXIMUM: bool = true;

    fn qos2_publish(&self) -> Option<NonZeroU16> {
        match self {
            v5::codec::Decoded::Publish(p, _, _) if p.qos == QoS::ExactlyOnce => p.packet_id,
            _ => None,
        }
    }

    fn downgrade(&mut self) {
        if let v5::codec::Decoded::Publish(p, _, _) = self {
            p.qos = QoS::AtLeastOnce;
        }
    }

    fn pubrel(&self) -> Option<NonZeroU16> {
        match self {
            v5::codec::Decoded::Packet(v5::codec::Packet::PublishRelease(release), _) => {
                Some(release.packet_id)
            }
            _ => None,
        }
    }

    fn pubrec(response: Self::Encoded) -> (Self::Encoded, bool) {
        match response {
            v5::codec::Encoded::Packet(v5::codec::Packet::PublishAck(ack)) => {
                let taken = (ack.reason_code as u8) < 0x80;
                (
                    v5::codec::Encoded::Packet(v5::codec::Packet::PublishReceived(ack)),
                    taken,
                )
            }
            other => (other, false),
        }
    }

    fn pubrec_again(packet_id: NonZeroU16) -> Self::Encoded {
        v5::codec::Encoded::Packet(v5::codec::Packet::PublishReceived(v5::codec::PublishAck {
            packet_id,
            reason_code: v5::codec::PublishAckReason::Success,
            properties: Vec::new(),
            reason_string: None,
        }))
    }

    fn pubcomp(packet_id: NonZeroU16, known: bool) -> Self::Encoded {
        v5::codec::Encoded::Packet(v5::codec::Packet::PublishComplete(v5::codec::PublishAck2 {
            packet_id,
            reason_code: if known {
                v5::codec::PublishAck2Reason::Success
            } else {
                v5::codec::PublishAck2Reason::PacketIdNotFound
            },
            properties: Vec::new(),
            reason_string: None,
        }))
    }
}

pub(crate) struct ExactlyOnce;

impl<S, St> Middleware<S, (ntex::SharedCfg, St)> for ExactlyOnce {
    type Service = ExactlyOnceService<S, St>;

    fn create(&self, inner: S, (_, session): (ntex::SharedCfg, St)) -> Self::Service {
        ExactlyOnceService { inner, session }
    }
}

pub(crate) struct ExactlyOnceService<S, St> {
    inner: S,
    session: St,
}

impl<S, St, R, E> Service<R> for ExactlyOnceService<S, St>
where
    S: Service<R, Response = Option<R::Encoded>, Error = DispatcherError<E>>,
    St: Deref<Target = Conn>,
    R: Qos2Packet,
{
    type Response = Option<R::Encoded>;
    type Error = DispatcherError<E>;

    ntex::forward_ready!(inner);
    ntex::forward_poll!(inner);
    ntex::forward_shutdown!(inner);

    async fn call(
        &self,
        mut request: R,
        ctx: ServiceCtx<'_, Self>,
    ) -> Result<Self::Response, Self::Error> {
        let conn: &Conn = &self.session;
        if let Some(id) = request.pubrel() {
            let known = conn.session.qos2_released(id);
            return Ok(Some(R::pubcomp(id, known)));
        }
        let Some(id) = request.qos2_publish() else {
            return ctx.call(&self.inner, request).await;
        };
        let waiting = {
            let state = conn.session.lock();
            if state.qos2_received.contains(&id) {
                // A resend of a message already taken: acknowledge again, take nothing.
                return Ok(Some(R::pubrec_again(id)));
            }
            state.qos2_received.len()
        };
        // QoS 2 messages count against the receive maximum until PUBCOMP [MQTT-3.3.4-9].
        if R::RECEIVE_MAXIMUM && waiting >= usize::from(conn.listener.config.receive_maximum) {
            return Err(SpecViolation::Pub_3_3_4_7.into());
        }
        conn.framework().exactly_once.borrow_mut().insert(id);
        request.downgrade();
        let response = ctx.call(&self.inner, request).await;
        conn.framework().exactly_once.borrow_mut().remove(&id);
        let Some(response) = response? else {
            return Ok(None);
        };
        let (pubrec, taken) = R::pubrec(response);
        if taken {
            // Stored with the session; the connection guard sends PUBREC once it is durable.
            conn.session.qos2_taken(id);
        }
        Ok(Some(pubrec))
    }
}
