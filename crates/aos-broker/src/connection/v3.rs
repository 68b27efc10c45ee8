//! MQTT 3.1.1 connections.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ntex::codec::Encoder;
use ntex::io::IoRef;
use ntex::time::Seconds;
use ntex::util::Bytes;
use ntex_mqtt::error::EncodeError;
use ntex_mqtt::{Control, QoS, v3};

use super::{
    Admission, Conn, ConnError, ListenerContext, Outbound, PublishOutcome, SendOutcome, Wire,
    message, peer_addr, peer_certificate, shared_publish, write_shared,
};
use crate::auth::{ConnectRequest, Refusal, SubscribeAccess};
use crate::delivery::{Outgoing, SubOptions};
use crate::message::Message;
use crate::session::{Kick, Protocol, Will};
use crate::topic::SubscriptionFilter;

pub(crate) type Session = v3::Session<Conn>;

/// A QoS 1/2 PUBLISH for `out`, with its packet id and flags (`None` without a packet id).
fn acknowledged_publish(sink: &v3::MqttSink, out: &Outgoing) -> Option<v3::PublishBuilder> {
    let id = out.packet_id?;
    let publish = sink
        .publish(out.message.topic.clone())
        .packet_id(id.get())
        .dup(out.dup);
    Some(if out.retain {
        publish.retain()
    } else {
        publish
    })
}

/// A 3.1.1 connection's outbound side: its sink, and its I/O for the QoS 0 copies of a
/// message, which are the same bytes for every 3.1.1 subscriber.
pub(crate) struct Sink3 {
    sink: v3::MqttSink,
    io: IoRef,
}

/// The QoS 0 PUBLISH of `message` without the retain flag, encoded on first use.
fn at_most_once_wire(message: &Message) -> Result<&Bytes, EncodeError> {
    shared_publish(&message.wire_v3_at_most_once, |pages| {
        let packet = v3::codec::Publish {
            dup: false,
            retain: false,
            qos: QoS::AtMostOnce,
            topic: message.topic.clone(),
            packet_id: None,
            payload_size: message.payload.len() as u32,
        };
        v3::codec::Codec::new().encodev(
            v3::codec::Encoded::Publish(packet, Some(message.payload.clone())),
            pages,
        )
    })
}

impl Outbound for Sink3 {
    fn is_ready(&self) -> bool {
        self.sink.is_ready()
    }

    async fn ready(&self) -> bool {
        self.sink.ready().await
    }

    fn send_at_most_once(&self, out: &Outgoing, _now: Instant) -> SendOutcome {
        if out.retain {
            return self
                .sink
                .publish(out.message.topic.clone())
                .retain()
                .send_at_most_once(out.message.payload.clone())
                .into();
        }
        write_shared(&self.io, at_most_once_wire(&out.message), 0)
    }

    fn send_at_least_once(&self, out: &Outgoing, _now: Instant) -> SendOutcome {
        match acknowledged_publish(&self.sink, out) {
            Some(publish) => publish
                .send_at_least_once_no_block(out.message.payload.clone())
                .into(),
            None => SendOutcome::Unsendable,
        }
    }

    async fn send_exactly_once(&self, out: &Outgoing, _now: Instant) -> SendOutcome {
        let Some(publish) = acknowledged_publish(&self.sink, out) else {
            return SendOutcome::Unsendable;
        };
        match publish.send_exactly_once(out.message.payload.clone()).await {
            Ok(received) => received.release().await.into(),
            Err(err) => Err::<(), _>(err).into(),
        }
    }

    fn close(&self, _kick: Kick) {
        // 3.1.1 has no server DISCONNECT: the network connection is closed.
        self.sink.close();
    }
}

pub(crate) async fn handshake(
    ctx: Arc<ListenerContext>,
    handshake: v3::Handshake,
) -> Result<v3::HandshakeAck<Conn>, ConnError> {
    let connect = handshake.packet().clone();
    if connect.client_id.is_empty() && !connect.clean_session {
        // [MQTT-3.1.3-8]: a persistent session needs a client id.
        return Ok(handshake.identifier_rejected());
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
        peer: peer_addr(handshake.io()),
        certificate: peer_certificate(handshake.io()),
        listener: ctx.name.to_string(),
    };
    let principal = match ctx.admit(request).await {
        Admission::Accepted(principal) => principal,
        Admission::Busy => return Ok(handshake.service_unavailable()),
        Admission::Refused(Refusal::BadCredentials) => return Ok(handshake.bad_username_or_pwd()),
        Admission::Refused(Refusal::NotAuthorized) => return Ok(handshake.not_authorized()),
        Admission::Refused(Refusal::Unavailable) => return Ok(handshake.service_unavailable()),
    };
    let will = match &connect.last_will {
        Some(will) => {
            if !crate::topic::valid_topic_name(&will.topic)
                || !ctx.broker.auth.may_publish(&principal, &will.topic)
            {
                ctx.release_slot();
                return Ok(handshake.not_authorized());
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
    let sink = handshake.sink();
    let io = handshake.io().get_ref();
    let wire = Wire {
        sink: Sink3 {
            sink: sink.clone(),
            io: io.clone(),
        },
        io,
        max_packet_size: 0,
        protocol: Protocol::V3,
        keep_alive: connect.keep_alive,
    };
    let (conn, present) = ctx.open(
        wire,
        principal,
        client_id,
        connect.clean_session,
        expiry,
        will,
    );
    let session = conn.session.clone();
    sink.publish_ack_cb(move |id, disconnected| {
        if !disconnected {
            session.acknowledged(id);
        }
    });
    let keep_alive = if connect.keep_alive == 0 {
        Seconds::ZERO
    } else {
        // [MQTT-3.1.2-24]: one and a half times the keep alive.
        Seconds(connect.keep_alive.saturating_add(connect.keep_alive / 2))
    };
    Ok(handshake
        .ack(conn, present)
        .idle_timeout(keep_alive)
        .max_send(Some(ctx.config.max_inflight)))
}

pub(crate) async fn publish(session: Session, publish: v3::Publish) -> Result<(), ConnError> {
    let conn: &Conn = &session;
    let payload = publish
        .read_all()
        .await
        .map_err(|_| ConnError::Protocol("payload could not be read"))?;
    let packet = publish.packet();
    let key = super::order::publish_key(&packet.topic, None, packet.payload_size, &payload);
    let message = message(
        conn.session.id,
        &conn.principal,
        packet.topic.clone(),
        payload,
        conn.inbound_qos(packet.packet_id, publish.qos()),
        publish.retain(),
    );
    match conn.publish(key, message, packet.dup).await {
        // 3.1.1 has no negative acknowledgement: a refused publish is acknowledged and dropped.
        PublishOutcome::Accepted | PublishOutcome::NotAuthorized => Ok(()),
        PublishOutcome::TopicInvalid => Err(ConnError::Protocol("invalid topic name")),
        PublishOutcome::Busy | PublishOutcome::Failed => Err(ConnError::Hook(
            "the platform could not take the message".into(),
        )),
    }
}

pub(crate) async fn protocol(
    session: Session,
    message: v3::ProtocolMessage,
) -> Result<v3::ProtocolMessageAck, ConnError> {
    let conn: &Conn = &session;
    Ok(match message {
        v3::ProtocolMessage::Subscribe(mut subscribe) => {
            let mut retained = Vec::new();
            for mut sub in subscribe.iter_mut() {
                let full = sub.topic().to_string();
                let Ok(filter) = SubscriptionFilter::parse(&full, true) else {
                    sub.fail();
                    continue;
                };
                let SubscribeAccess::Granted(read) = conn
                    .broker()
                    .auth
                    .may_subscribe(&conn.principal, &filter.filter)
                else {
                    conn.broker().metrics.denied.inc();
                    sub.fail();
                    continue;
                };
                let qos = crate::message::min_qos(sub.qos(), conn.listener.config.max_qos());
                let opts = SubOptions::qos(qos, read);
                let existed = conn
                    .broker()
                    .subscribe(&conn.session, &full, filter.clone(), opts);
                if filter.group.is_none() && opts.wants_retained(existed) {
                    retained.push((filter.filter, opts));
                }
                sub.confirm(qos);
            }
            conn.settled().await;
            deliver_retained_after_ack(conn, retained);
            subscribe.ack()
        }
        v3::ProtocolMessage::Unsubscribe(unsubscribe) => {
            for filter in unsubscribe.iter() {
                conn.broker().unsubscribe(&conn.session, filter);
            }
            conn.settled().await;
            unsubscribe.ack()
        }
        v3::ProtocolMessage::Disconnect(disconnect) => {
            conn.client_disconnected(true, None);
            disconnect.ack()
        }
        v3::ProtocolMessage::PublishRelease(release) => release.ack(),
        v3::ProtocolMessage::Ping(ping) => ping.ack(),
    })
}

/// Retained messages follow the SUBACK: they are queued once the handler has returned.
pub(crate) fn deliver_retained_after_ack(conn: &Conn, retained: Vec<(String, SubOptions)>) {
    if retained.is_empty() {
        return;
    }
    let broker = conn.broker().clone();
    let session = conn.session.clone();
    ntex::rt::spawn(async move {
        for (filter, opts) in retained {
            broker.deliver_retained(&session, &filter, opts);
        }
    });
}

pub(crate) async fn control(
    session: Session,
    control: Control<ConnError>,
) -> Result<Option<v3::codec::Encoded>, ConnError> {
    if let Control::Stop(reason) = control {
        tracing::debug!(client_id = %session.session.client_id, ?reason, "connection closed");
        session.finish();
    }
    Ok(None)
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
        let Some(v3::codec::Decoded::Publish(publish, payload, _)) =
            v3::codec::Codec::new().decode(&mut buf).expect("decodes")
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
