//! MQTT 3.1.1 connections: the handshake, and 3.1.1's part of the connection's
//! [`Dispatcher`].

use std::num::NonZeroU16;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ntex::codec::Encoder;
use ntex::time::Seconds;
use ntex::util::Bytes;
use ntex_mqtt::QoS;
use ntex_mqtt::error::EncodeError;
use ntex_mqtt::v3::codec::{
    Codec, Connect, ConnectAck, ConnectAckReason, Decoded, Encoded, Packet, Publish,
    SubscribeReturnCode,
};

use super::dispatcher::{Answer, Closing, Dialect, Dispatcher, Inbound, codec_items};
use super::transport::Transport;
use super::{
    Admission, Conn, ListenerContext, Opened, PublishOutcome, SendOutcome, Wire, message,
    shared_publish, write_shared,
};
use crate::auth::{ConnectRequest, Refusal};
use crate::delivery::{Outgoing, SubOptions};
use crate::message::Message;
use crate::session::{Protocol, Will};
use crate::topic::valid_topic_filter;

/// Checks a CONNECT and opens the client's session; the CONNACK code if it is refused.
async fn handshake(
    ctx: &Arc<ListenerContext>,
    io: &Transport,
    connect: Connect,
) -> Result<(Opened, Seconds), ConnectAckReason> {
    if connect.client_id.is_empty() && !connect.clean_session {
        // [MQTT-3.1.3-8]: a persistent session needs a client id.
        return Err(ConnectAckReason::IdentifierRejected);
    }
    let client_id = if connect.client_id.is_empty() {
        ctx.assign_client_id()
    } else {
        connect.client_id.clone()
    };
    let request = ConnectRequest {
        client_id: client_id.to_string(),
        username: connect.username.as_ref().map(|u| u.to_string()),
        password: connect.password.as_ref().map(|p| p.to_vec()),
        peer: io.peer_addr(),
        certificate: io.peer_certificate(),
        listener: ctx.name.to_string(),
    };
    let principal = match ctx.admit(request).await {
        Admission::Accepted(principal) => principal,
        Admission::Busy | Admission::Refused(Refusal::Unavailable) => {
            return Err(ConnectAckReason::ServiceUnavailable);
        }
        Admission::Refused(Refusal::BadCredentials) => {
            return Err(ConnectAckReason::BadUserNameOrPassword);
        }
        Admission::Refused(Refusal::NotAuthorized) => return Err(ConnectAckReason::NotAuthorized),
    };
    let will = match &connect.last_will {
        Some(will) => {
            if !crate::topic::valid_topic_name(&will.topic)
                || !ctx.broker.auth.may_publish(&principal, &will.topic)
            {
                ctx.release_slot();
                return Err(ConnectAckReason::NotAuthorized);
            }
            Some(Will {
                message: message(
                    0,
                    &principal,
                    will.topic.clone(),
                    will.message.clone(),
                    will.qos,
                    will.retain,
                ),
                delay: Duration::ZERO,
            })
        }
        None => None,
    };
    let expiry = if connect.clean_session {
        Some(Duration::ZERO)
    } else {
        Some(ctx.config.max_session_expiry)
    };
    let wire = Wire {
        peer: io.peer_addr(),
        protocol: Protocol::V3,
        keep_alive: connect.keep_alive,
    };
    let opened = ctx.open(
        wire,
        principal,
        client_id,
        connect.clean_session,
        expiry,
        will,
    );
    Ok((opened, Seconds(connect.keep_alive)))
}

/// MQTT 3.1.1's part of the dispatcher.
pub(crate) struct V3 {
    codec: Codec,
}

impl Dialect for V3 {
    codec_items!(set_max_size);

    async fn accept(
        ctx: Arc<ListenerContext>,
        mut io: Transport,
        codec: Codec,
        connect: Box<Connect>,
    ) -> Option<Box<Dispatcher<V3>>> {
        let (opened, keep_alive) = match handshake(&ctx, &io, *connect).await {
            Ok(accepted) => accepted,
            Err(reason) => {
                let _ = io.encode(
                    Encoded::Packet(Packet::ConnectAck(ConnectAck {
                        session_present: false,
                        return_code: reason,
                    })),
                    &codec,
                );
                let _ = io.shutdown().await;
                return None;
            }
        };
        let ack = Encoded::Packet(Packet::ConnectAck(ConnectAck {
            session_present: opened.present,
            return_code: ConnectAckReason::ConnectionAccepted,
        }));
        if io.encode(ack, &codec).is_err() {
            return None;
        }
        let max_inflight = ctx.config.max_inflight;
        Some(Dispatcher::new(
            V3 { codec },
            io,
            opened,
            keep_alive,
            max_inflight,
        ))
    }

    fn publish(d: &mut Dispatcher<V3>, publish: Publish, payload: Bytes) -> Result<(), Closing> {
        if publish.qos > d.conn.listener.config.max_qos() {
            return Err(Closing::violation("a PUBLISH above the maximum QoS"));
        }
        let packet_id = match (publish.qos, publish.packet_id) {
            (QoS::AtMostOnce, _) => None,
            (_, Some(id)) => Some(id),
            (_, None) => return Err(Closing::violation("a QoS 1/2 PUBLISH without a packet id")),
        };
        if let Some(id) = packet_id {
            if !d.claim_id(id) {
                return Err(Closing::violation(
                    "a packet id still in use [MQTT-2.3.1-2]",
                ));
            }
            if publish.qos == QoS::ExactlyOnce && d.conn.session.lock().qos2_received.contains(&id)
            {
                // A resend of a message already taken: acknowledged again, taken once.
                return d.respond(Answer::packet(
                    Packet::PublishReceived { packet_id: id },
                    Some(id),
                ));
            }
        }
        let message = message(
            d.conn.session.id,
            &d.conn.principal,
            publish.topic,
            payload,
            publish.qos,
            publish.retain,
        );
        d.take(message, packet_id, publish.dup)
    }

    fn control(d: &mut Dispatcher<V3>, packet: Packet) -> Result<(), Closing> {
        match packet {
            Packet::PublishAck { packet_id } | Packet::PublishComplete { packet_id } => {
                d.acknowledged(packet_id);
                Ok(())
            }
            Packet::PublishReceived { packet_id } => d.received(packet_id),
            Packet::PublishRelease { packet_id } => {
                d.conn.session.qos2_released(packet_id);
                // [MQTT-4.3.3-2]: PUBCOMP answers every PUBREL, a repeated one included.
                d.respond(Answer::packet(Packet::PublishComplete { packet_id }, None))
            }
            Packet::PingRequest => d.respond(Answer::packet(Packet::PingResponse, None)),
            Packet::Subscribe {
                packet_id,
                topic_filters,
            } => {
                if topic_filters.iter().any(|(f, _)| !valid_topic_filter(f)) {
                    return Err(Closing::violation("an invalid topic filter [MQTT-4.7.1]"));
                }
                if !d.claim_id(packet_id) {
                    return Err(Closing::violation(
                        "a packet id still in use [MQTT-2.3.1-2]",
                    ));
                }
                let mut retained = Vec::new();
                let status = topic_filters
                    .iter()
                    .map(|(full, qos)| {
                        match d.subscribe_to(full, *qos, SubOptions::qos, &mut retained) {
                            Ok(qos) => SubscribeReturnCode::Success(qos),
                            Err(_) => SubscribeReturnCode::Failure,
                        }
                    })
                    .collect();
                let suback = Packet::SubscribeAck { packet_id, status };
                d.subscribed(suback, packet_id, retained);
                Ok(())
            }
            Packet::Unsubscribe {
                packet_id,
                topic_filters,
            } => {
                if topic_filters.iter().any(|f| !valid_topic_filter(f)) {
                    return Err(Closing::violation("an invalid topic filter [MQTT-4.7.1]"));
                }
                if !d.claim_id(packet_id) {
                    return Err(Closing::violation(
                        "a packet id still in use [MQTT-2.3.1-2]",
                    ));
                }
                for filter in &topic_filters {
                    d.conn.broker().unsubscribe(&d.conn.session, filter);
                }
                d.respond_settled(Answer::packet(
                    Packet::UnsubscribeAck { packet_id },
                    Some(packet_id),
                ));
                Ok(())
            }
            Packet::Disconnect => {
                d.conn.client_disconnected(true, None);
                d.reading = false;
                Ok(())
            }
            Packet::Connect(_) => Err(Closing::violation(
                "a second CONNECT on an open connection [MQTT-3.1.0-2]",
            )),
            Packet::ConnectAck(_)
            | Packet::SubscribeAck { .. }
            | Packet::UnsubscribeAck { .. }
            | Packet::PingResponse => Err(Closing::violation("a packet only a server sends")),
        }
    }

    fn acknowledgement(
        conn: &Conn,
        packet_id: Option<NonZeroU16>,
        qos: QoS,
        outcome: PublishOutcome,
    ) -> Result<Option<Packet>, Closing> {
        match outcome {
            PublishOutcome::TopicInvalid => {
                return Err(Closing::violation("an invalid topic name"));
            }
            // Not acknowledged, so that the client sends it again later.
            PublishOutcome::Busy | PublishOutcome::Failed => {
                return Err(Closing::gone("the platform could not take the message"));
            }
            // 3.1.1 has no negative acknowledgement: a publish the client may not make is
            // acknowledged and dropped.
            PublishOutcome::Accepted | PublishOutcome::NotAuthorized => {}
        }
        Ok(match (packet_id, qos) {
            (Some(id), QoS::ExactlyOnce) => {
                // Waits in the session for PUBREL (stored with it): a resend is not taken again.
                conn.session.qos2_taken(id);
                Some(Packet::PublishReceived { packet_id: id })
            }
            (Some(id), _) => Some(Packet::PublishAck { packet_id: id }),
            (None, _) => None,
        })
    }

    fn release(packet_id: NonZeroU16) -> Packet {
        Packet::PublishRelease { packet_id }
    }

    fn send(&mut self, io: &Transport, out: &Outgoing, _: Instant) -> SendOutcome {
        let message = &out.message;
        if out.qos == QoS::AtMostOnce && !out.retain {
            return write_shared(io, at_most_once_wire(message), 0);
        }
        let publish = Publish {
            dup: out.dup,
            retain: out.retain,
            qos: out.qos,
            topic: message.topic.clone(),
            packet_id: out.packet_id.filter(|_| out.qos != QoS::AtMostOnce),
            payload_size: message.payload.len() as u32,
        };
        match io.encode(
            Encoded::Publish(publish, Some(message.payload.clone())),
            &self.codec,
        ) {
            Ok(()) => SendOutcome::Sent,
            Err(_) => SendOutcome::Unsendable,
        }
    }

    /// 3.1.1 has no DISCONNECT from the server: the network connection is closed.
    fn closing(&self, _: &Transport, _: &Closing) -> bool {
        false
    }
}

/// The QoS 0 PUBLISH of `message` without the retain flag, encoded on first use.
fn at_most_once_wire(message: &Message) -> Result<&Bytes, EncodeError> {
    shared_publish(&message.wire_v3_at_most_once, |pages| {
        let packet = Publish {
            dup: false,
            retain: false,
            qos: QoS::AtMostOnce,
            topic: message.topic.clone(),
            packet_id: None,
            payload_size: message.payload.len() as u32,
        };
        Codec::new().encodev(
            Encoded::Publish(packet, Some(message.payload.clone())),
            pages,
        )
    })
}

#[cfg(test)]
mod tests {
    use ntex::codec::Decoder;
    use ntex::util::BytesMut;

    use super::*;

    #[test]
    fn the_shared_qos0_publish_is_what_the_codec_reads_back() {
        let message = Message::new(
            "devices/7/commands",
            Bytes::from_static(b"{\"on\":true}"),
            QoS::ExactlyOnce,
            true,
        );
        let wire = at_most_once_wire(&message).expect("encodes").clone();
        assert!(std::ptr::eq(
            at_most_once_wire(&message).expect("cached").as_ptr(),
            wire.as_ptr()
        ));
        let mut buf = BytesMut::from(&wire[..]);
        let Some(Decoded::Publish(publish, payload, _)) =
            Codec::new().decode(&mut buf).expect("decodes")
        else {
            panic!("not a whole PUBLISH");
        };
        assert!(buf.is_empty());
        assert_eq!(
            (publish.qos, publish.retain, publish.dup, publish.packet_id),
            (QoS::AtMostOnce, false, false, None)
        );
        assert_eq!(&publish.topic[..], "devices/7/commands");
        assert_eq!(&payload[..], b"{\"on\":true}");
    }
}
