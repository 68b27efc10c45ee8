//! MQTT 5.0 connections.

use std::cell::RefCell;
use std::collections::HashMap;
use std::num::NonZeroU16;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ntex::codec::Encoder;
use ntex::io::IoRef;
use ntex::util::{ByteString, Bytes};
use ntex_mqtt::error::EncodeError;
use ntex_mqtt::{Control, QoS, v5};
use v5::codec::{
    ConnectAckReason, Disconnect, DisconnectReasonCode, PublishAckReason,
    RetainHandling as WireRetain, SubscribeAckReason, UnsubscribeAckReason,
};

use super::{
    Admission, Conn, ConnError, ListenerContext, Outbound, PublishOutcome, SendOutcome, Wire,
    message, peer_addr, peer_certificate, shared_publish, write_shared,
};
use crate::auth::{ConnectRequest, Refusal};
use crate::delivery::{Outgoing, RetainHandling, SubOptions};
use crate::message::{Message, Properties, min_qos};
use crate::session::{Kick, Protocol, Will};
use crate::topic::{SubscriptionFilter, valid_topic_name};

pub(crate) type Session = v5::Session<Conn>;

impl TryFrom<ConnError> for v5::PublishAck {
    type Error = ConnError;

    fn try_from(err: ConnError) -> Result<Self, ConnError> {
        match err {
            ConnError::Hook(reason) => {
                Ok(v5::PublishAck::new(PublishAckReason::UnspecifiedError).reason(reason.into()))
            }
            other => Err(other),
        }
    }
}

/// The topic aliases the broker assigned on one connection (MQTT 5.0 §3.3.2.3.4): the first
/// `max` distinct topics sent get one, and later messages on them carry only the alias. Aliases
/// last as long as the connection; none is ever reassigned.
struct ServerAliases {
    max: u16,
    assigned: RefCell<HashMap<ByteString, NonZeroU16>>,
}

/// How one PUBLISH names its topic.
#[derive(Clone, Copy)]
enum Naming {
    Topic,
    /// The topic and the alias it gets from now on.
    NewAlias(NonZeroU16),
    /// The alias alone (an empty topic name).
    Alias(NonZeroU16),
}

impl ServerAliases {
    fn naming(&self, topic: &ByteString) -> Naming {
        let assigned = self.assigned.borrow();
        if let Some(alias) = assigned.get(topic) {
            return Naming::Alias(*alias);
        }
        // Aliases are numbered from 1 in the order topics are first sent.
        match u16::try_from(assigned.len() + 1)
            .ok()
            .filter(|next| *next <= self.max)
            .and_then(NonZeroU16::new)
        {
            Some(next) => Naming::NewAlias(next),
            None => Naming::Topic,
        }
    }

    /// Records a new alias once the PUBLISH that introduces it went out (an unsent one must not
    /// be referred to).
    fn sent(&self, topic: &ByteString, naming: Naming, outcome: SendOutcome) -> SendOutcome {
        if let (Naming::NewAlias(alias), SendOutcome::Sent) = (naming, outcome) {
            self.assigned.borrow_mut().insert(topic.clone(), alias);
        }
        outcome
    }
}

/// A 5.0 connection's outbound side: its sink, the aliases it assigned, and its I/O for the
/// QoS 0 copies that are the same bytes for every 5.0 subscriber.
pub(crate) struct Sink5 {
    sink: v5::MqttSink,
    aliases: ServerAliases,
    io: IoRef,
    /// The client's maximum packet size (0: none).
    max_packet_size: u32,
}

/// The QoS 0 PUBLISH of `message` as every 5.0 subscriber getting it plainly receives it (no
/// retain flag, topic alias, subscription identifier or expiry interval), encoded on first use.
fn at_most_once_wire(message: &Message) -> Result<&Bytes, EncodeError> {
    shared_publish(&message.wire_v5_at_most_once, |pages| {
        let mut properties = v5::codec::PublishProperties::default();
        forwarded(message, &mut properties);
        let packet = v5::codec::Publish {
            dup: false,
            retain: false,
            qos: QoS::AtMostOnce,
            packet_id: None,
            topic: message.topic.clone(),
            payload_size: message.payload.len() as u32,
            properties,
        };
        v5::codec::Codec::new().encodev(
            v5::codec::Encoded::Publish(packet, Some(message.payload.clone())),
            pages,
        )
    })
}

impl Sink5 {
    /// The PUBLISH for `out`, named as `naming` says.
    fn publish(&self, out: &Outgoing, now: Instant, naming: Naming) -> v5::PublishBuilder {
        let (topic, alias) = match naming {
            Naming::Topic => (out.message.topic.clone(), None),
            Naming::NewAlias(alias) => (out.message.topic.clone(), Some(alias)),
            Naming::Alias(alias) => (ByteString::new(), Some(alias)),
        };
        self.sink.publish(topic).properties(|p| {
            p.topic_alias = alias;
            properties(out, now, p);
        })
    }

    /// A QoS 1/2 PUBLISH for `out`, with its packet id and flags (`None` without a packet id).
    fn acknowledged(
        &self,
        out: &Outgoing,
        now: Instant,
        naming: Naming,
    ) -> Option<v5::PublishBuilder> {
        let id = out.packet_id?;
        Some(
            self.publish(out, now, naming)
                .packet_id(id.get())
                .dup(out.dup)
                .retain(out.retain),
        )
    }
}

fn properties(out: &Outgoing, now: Instant, p: &mut v5::codec::PublishProperties) {
    p.message_expiry_interval = out.message.remaining_expiry(now);
    p.subscription_ids.extend(out.sub_ids.iter().copied());
    forwarded(&out.message, p);
}

/// The publisher's properties every subscriber gets unchanged.
fn forwarded(message: &Message, p: &mut v5::codec::PublishProperties) {
    if let Some(props) = &message.properties {
        p.is_utf8_payload = props.payload_is_utf8;
        p.content_type.clone_from(&props.content_type);
        p.response_topic.clone_from(&props.response_topic);
        p.correlation_data.clone_from(&props.correlation_data);
        p.user_properties.clone_from(&props.user_properties);
    }
}

impl Outbound for Sink5 {
    fn is_ready(&self) -> bool {
        self.sink.is_ready()
    }

    async fn ready(&self) -> bool {
        self.sink.ready().await
    }

    fn send_at_most_once(&self, out: &Outgoing, now: Instant) -> SendOutcome {
        let topic = &out.message.topic;
        let naming = self.aliases.naming(topic);
        if matches!(naming, Naming::Topic)
            && !out.retain
            && out.sub_ids.is_empty()
            && out.message.expires_at.is_none()
        {
            let wire = at_most_once_wire(&out.message);
            return write_shared(&self.io, wire, self.max_packet_size);
        }
        let outcome = self
            .publish(out, now, naming)
            .retain(out.retain)
            .send_at_most_once(out.message.payload.clone())
            .into();
        self.aliases.sent(topic, naming, outcome)
    }

    fn send_at_least_once(&self, out: &Outgoing, now: Instant) -> SendOutcome {
        let topic = &out.message.topic;
        let naming = self.aliases.naming(topic);
        let outcome = match self.acknowledged(out, now, naming) {
            Some(publish) => publish
                .send_at_least_once_no_block(out.message.payload.clone())
                .into(),
            None => SendOutcome::Unsendable,
        };
        self.aliases.sent(topic, naming, outcome)
    }

    async fn send_exactly_once(&self, out: &Outgoing, now: Instant) -> SendOutcome {
        let topic = &out.message.topic;
        let naming = self.aliases.naming(topic);
        let Some(publish) = self.acknowledged(out, now, naming) else {
            return SendOutcome::Unsendable;
        };
        // The PUBLISH is written before the exchange completes: its alias is in use even if the
        // connection is lost while waiting for PUBREC.
        let outcome = match publish.send_exactly_once(out.message.payload.clone()).await {
            Ok(received) => received.release().await.into(),
            Err(err) => Err::<(), _>(err).into(),
        };
        self.aliases.sent(topic, naming, outcome)
    }

    fn close(&self, kick: Kick) {
        let reason = match kick {
            Kick::TakenOver => DisconnectReasonCode::SessionTakenOver,
            Kick::ShuttingDown => DisconnectReasonCode::ServerShuttingDown,
            Kick::Revoked => DisconnectReasonCode::NotAuthorized,
            Kick::Administrator => DisconnectReasonCode::AdministrativeAction,
        };
        self.sink.close_with_reason(Disconnect::new(reason));
    }
}

fn refuse(
    handshake: v5::Handshake,
    reason: ConnectAckReason,
    text: &str,
) -> v5::HandshakeAck<Conn> {
    handshake.fail_with(v5::codec::ConnectAck {
        reason_code: reason,
        reason_string: Some(ByteString::from(text)),
        ..Default::default()
    })
}

fn expiry_from_secs(secs: u32, max: Duration) -> Duration {
    Duration::from_secs(secs.into()).min(max)
}

pub(crate) async fn handshake(
    ctx: Arc<ListenerContext>,
    handshake: v5::Handshake,
) -> Result<v5::HandshakeAck<Conn>, ConnError> {
    let connect = handshake.packet().clone();
    if connect.auth_method.is_some() {
        return Ok(refuse(
            handshake,
            ConnectAckReason::BadAuthenticationMethod,
            "enhanced authentication is not supported; use username and password",
        ));
    }
    let assigned = connect.client_id.is_empty().then(|| ctx.assign_client_id());
    let client_id = assigned
        .clone()
        .unwrap_or_else(|| connect.client_id.clone());
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
        Admission::Busy => {
            return Ok(refuse(
                handshake,
                ConnectAckReason::ServerBusy,
                "too many connections",
            ));
        }
        Admission::Refused(Refusal::BadCredentials) => {
            return Ok(refuse(
                handshake,
                ConnectAckReason::BadUserNameOrPassword,
                "bad username or password",
            ));
        }
        Admission::Refused(Refusal::NotAuthorized) => {
            return Ok(refuse(
                handshake,
                ConnectAckReason::NotAuthorized,
                "not authorized",
            ));
        }
        Admission::Refused(Refusal::Unavailable) => {
            return Ok(refuse(
                handshake,
                ConnectAckReason::ServerUnavailable,
                "authentication unavailable",
            ));
        }
    };
    let max_expiry = ctx.config.max_session_expiry;
    let will = match &connect.last_will {
        Some(will) => {
            let (valid, allowed) = (
                valid_topic_name(&will.topic),
                ctx.broker.auth.may_publish(&principal, &will.topic),
            );
            if !valid || !allowed {
                ctx.release_slot();
                let (reason, text) = if valid {
                    (ConnectAckReason::NotAuthorized, "will topic not authorized")
                } else {
                    (ConnectAckReason::TopicNameInvalid, "invalid will topic")
                };
                return Ok(refuse(handshake, reason, text));
            }
            let mut msg = message(
                0,
                &principal,
                will.topic.clone(),
                will.message.clone(),
                will.qos,
                will.retain,
            )
            .with_expiry(will.message_expiry_interval);
            let props = Properties {
                payload_is_utf8: will.is_utf8_payload.unwrap_or(false),
                content_type: will.content_type.clone(),
                response_topic: will.response_topic.clone(),
                correlation_data: will.correlation_data.clone(),
                user_properties: will.user_properties.clone(),
            };
            if !props.is_empty() {
                msg.properties = Some(Box::new(props));
            }
            Some(Will {
                message: msg,
                delay: Duration::from_secs(will.will_delay_interval_sec.unwrap_or(0).into()),
            })
        }
        None => None,
    };
    let requested_expiry = connect.session_expiry_interval_secs;
    let expiry = expiry_from_secs(requested_expiry, max_expiry);
    let sink = handshake.sink();
    let max_packet_size = connect.max_packet_size.map_or(0, |size| size.get());
    let io = handshake.io().get_ref();
    let outbound = Sink5 {
        sink: sink.clone(),
        aliases: ServerAliases {
            max: ctx.config.server_topic_aliases.min(connect.topic_alias_max),
            assigned: RefCell::default(),
        },
        io: io.clone(),
        max_packet_size,
    };
    let max_keepalive = ctx.config.max_keepalive.max(1);
    let keep_alive = if connect.keep_alive == 0 || connect.keep_alive > max_keepalive {
        max_keepalive
    } else {
        connect.keep_alive
    };
    let wire = Wire {
        io,
        max_packet_size,
        protocol: Protocol::V5,
        keep_alive,
    };
    let opened = ctx.open(
        wire,
        principal,
        client_id,
        connect.clean_start,
        Some(expiry),
        will,
    );
    let (conn, present) = (opened.conn, opened.present);
    conn.spawn_writer(outbound, opened.wake, opened.kick);
    let session = conn.session.clone();
    sink.publish_ack_cb(move |ack, disconnected| {
        if !disconnected {
            session.acknowledged(ack.packet_id);
        }
    });
    let config = ctx.config.clone();
    Ok(handshake
        .ack(conn)
        .with(|ack| {
            ack.session_present = present;
            ack.assigned_client_id = assigned;
            if u64::from(requested_expiry) > expiry.as_secs() {
                ack.session_expiry_interval_secs = Some(expiry.as_secs() as u32);
            }
            ack.max_qos = config.max_qos();
            ack.receive_max =
                NonZeroU16::new(config.receive_maximum.max(1)).unwrap_or(NonZeroU16::MIN);
            ack.topic_alias_max = config.max_topic_alias;
            ack.max_packet_size = Some(config.max_packet_size);
            ack.retain_available = config.retain_available;
            ack.wildcard_subscription_available = true;
            ack.shared_subscription_available = true;
            ack.subscription_identifiers_available = true;
            if keep_alive != connect.keep_alive {
                ack.server_keepalive_sec = Some(keep_alive);
            }
        })
        // [MQTT-3.1.2-22]: one and a half times the keep alive.
        .keep_alive(keep_alive.saturating_add(keep_alive / 2))
        .max_send(Some(ctx.config.max_inflight)))
}

pub(crate) async fn publish(
    session: Session,
    publish: v5::Publish,
) -> Result<v5::PublishAck, ConnError> {
    let conn: &Conn = &session;
    let packet = publish.packet().clone();
    if !packet.properties.subscription_ids.is_empty() {
        return Err(ConnError::Protocol(
            "a PUBLISH from a client carries subscription identifiers",
        ));
    }
    let payload = publish
        .read_all()
        .await
        .map_err(|_| ConnError::Protocol("payload could not be read"))?;
    let props = &packet.properties;
    if props.is_utf8_payload && std::str::from_utf8(&payload).is_err() {
        return Ok(publish
            .ack()
            .reason_code(PublishAckReason::PayloadFormatInvalid)
            .reason("payload format indicator says UTF-8, payload is not".into()));
    }
    let qos = conn.inbound_qos(packet.packet_id, packet.qos);
    let mut msg = message(
        conn.session.id,
        &conn.principal,
        packet.topic.clone(),
        payload,
        qos,
        packet.retain,
    )
    .with_expiry(props.message_expiry_interval);
    let forwarded = Properties {
        payload_is_utf8: props.is_utf8_payload,
        content_type: props.content_type.clone(),
        response_topic: props.response_topic.clone(),
        correlation_data: props.correlation_data.clone(),
        user_properties: props.user_properties.clone(),
    };
    if !forwarded.is_empty() {
        msg.properties = Some(Box::new(forwarded));
    }
    let key = super::order::publish_key(
        &packet.topic,
        props.topic_alias,
        packet.payload_size,
        &msg.payload,
    );
    let ack = publish.ack();
    Ok(match conn.publish(key, msg, packet.dup).await {
        PublishOutcome::Accepted => ack,
        PublishOutcome::TopicInvalid => ack
            .reason_code(PublishAckReason::TopicNameInvalid)
            .reason("invalid topic name".into()),
        PublishOutcome::NotAuthorized => ack
            .reason_code(PublishAckReason::NotAuthorized)
            .reason("not authorized to publish to this topic".into()),
        PublishOutcome::Busy => ack
            .reason_code(PublishAckReason::QuotaExceeded)
            .reason("the platform is busy; retry later".into()),
        PublishOutcome::Failed => ack
            .reason_code(PublishAckReason::UnspecifiedError)
            .reason("the platform could not take the message".into()),
    })
}

fn retain_handling(wire: WireRetain) -> RetainHandling {
    match wire {
        WireRetain::AtSubscribe => RetainHandling::Always,
        WireRetain::AtSubscribeNew => RetainHandling::IfNew,
        WireRetain::NoAtSubscribe => RetainHandling::Never,
    }
}

pub(crate) async fn protocol(
    session: Session,
    message: v5::ProtocolMessage,
) -> Result<v5::ProtocolMessageAck, ConnError> {
    let conn: &Conn = &session;
    Ok(match message {
        v5::ProtocolMessage::Subscribe(mut subscribe) => {
            let shared_no_local = subscribe
                .packet()
                .topic_filters
                .iter()
                .any(|(f, o)| o.no_local && f.starts_with("$share/"));
            if shared_no_local {
                // [MQTT-3.8.3-4]
                let msg = v5::ProtocolMessage::Subscribe(subscribe);
                return Ok(msg.disconnect_with(
                    Disconnect::new(DisconnectReasonCode::ProtocolError)
                        .reason_string(Some("no local on a shared subscription".into())),
                ));
            }
            let id = subscribe.packet().id;
            let mut retained = Vec::new();
            for mut sub in subscribe.iter_mut() {
                let full = sub.topic().to_string();
                let options = *sub.options();
                let filter = match SubscriptionFilter::parse(&full, true) {
                    Ok(filter) => filter,
                    Err(_) => {
                        sub.fail(SubscribeAckReason::TopicFilterInvalid);
                        continue;
                    }
                };
                let Some(read) = conn.may_subscribe(&filter.filter) else {
                    sub.fail(SubscribeAckReason::NotAuthorized);
                    continue;
                };
                let qos = min_qos(options.qos, conn.listener.config.max_qos());
                let opts = SubOptions {
                    qos,
                    no_local: options.no_local,
                    retain_as_published: options.retain_as_published,
                    retain_handling: retain_handling(options.retain_handling),
                    id,
                    read,
                };
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
        v5::ProtocolMessage::Unsubscribe(mut unsubscribe) => {
            for mut item in unsubscribe.iter_mut() {
                let filter = item.topic().to_string();
                if conn.broker().unsubscribe(&conn.session, &filter) {
                    item.success();
                } else {
                    item.fail(UnsubscribeAckReason::NoSubscriptionExisted);
                }
            }
            conn.settled().await;
            unsubscribe.ack()
        }
        v5::ProtocolMessage::Disconnect(disconnect) => {
            let packet = disconnect.packet();
            let graceful = packet.reason_code != DisconnectReasonCode::DisconnectWithWillMessage;
            let expiry = packet.session_expiry_interval_secs.map(|secs| {
                Some(expiry_from_secs(
                    secs,
                    conn.listener.config.max_session_expiry,
                ))
            });
            conn.client_disconnected(graceful, expiry);
            disconnect.ack()
        }
        v5::ProtocolMessage::PublishRelease(release) => release.ack(),
        v5::ProtocolMessage::Ping(ping) => ping.ack(),
        auth @ v5::ProtocolMessage::Auth(_) => auth.ack(),
    })
}

/// Retained messages follow the SUBACK: they are queued once the handler has returned.
fn deliver_retained_after_ack(conn: &Conn, retained: Vec<(String, SubOptions)>) {
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
) -> Result<Option<v5::codec::Encoded>, ConnError> {
    if let Control::Stop(reason) = control {
        tracing::debug!(client_id = %session.session.client_id, ?reason, "connection closed");
        session.finish();
    }
    Ok(None)
}
