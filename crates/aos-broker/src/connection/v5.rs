//! MQTT 5.0 connections: the handshake, and 5.0's part of the connection's [`Dispatcher`]
//! (reason codes, properties, topic aliases both ways, flow control by receive maximum).

use std::collections::HashMap;
use std::num::NonZeroU16;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ntex::codec::Encoder;
use ntex::time::Seconds;
use ntex::util::{ByteString, Bytes};
use ntex_mqtt::QoS;
use ntex_mqtt::error::EncodeError;
use ntex_mqtt::v5::codec::{
    Codec, Connect, ConnectAck, ConnectAckReason, Decoded, Disconnect, DisconnectReasonCode,
    Encoded, Packet, Publish, PublishAck, PublishAck2, PublishAck2Reason, PublishAckReason,
    PublishProperties, RetainHandling as WireRetain, SubscribeAck, SubscribeAckReason,
    UnsubscribeAck, UnsubscribeAckReason,
};

use super::dispatcher::{
    Answer, Closing, Dialect, Dispatcher, Inbound, NotSubscribed, codec_items,
};
use super::transport::Transport;
use super::{
    Admission, Conn, ListenerContext, Opened, PublishOutcome, SendOutcome, Wire, message,
    shared_publish, write_shared,
};
use crate::auth::{ConnectRequest, Refusal};
use crate::delivery::{Outgoing, RetainHandling, SubOptions};
use crate::message::{Message, Properties};
use crate::session::{Protocol, Will};
use crate::topic::{valid_topic_filter, valid_topic_name};

/// A client let in: its session, its CONNACK, and the keep alive in force.
struct Accepted {
    opened: Opened,
    ack: Box<ConnectAck>,
    keep_alive: u16,
}

fn refusal(reason: ConnectAckReason, text: &'static str) -> Box<ConnectAck> {
    Box::new(ConnectAck {
        reason_code: reason,
        reason_string: Some(ByteString::from_static(text)),
        ..Default::default()
    })
}

fn expiry_from_secs(secs: u32, max: Duration) -> Duration {
    Duration::from_secs(secs.into()).min(max)
}

/// Checks a CONNECT and opens the client's session; the CONNACK that refuses it otherwise.
async fn handshake(
    ctx: &Arc<ListenerContext>,
    io: &Transport,
    connect: &Connect,
) -> Result<Accepted, Box<ConnectAck>> {
    let config = &ctx.config;
    if connect.auth_method.is_some() {
        return Err(refusal(
            ConnectAckReason::BadAuthenticationMethod,
            "enhanced authentication is not supported; use username and password",
        ));
    }
    if let Some(will) = &connect.last_will {
        // A will the server could not publish as asked.
        if will.qos > config.max_qos() {
            return Err(refusal(
                ConnectAckReason::QosNotSupported,
                "the will's QoS is above the maximum QoS",
            ));
        }
        if will.retain && !config.retain_available {
            return Err(refusal(
                ConnectAckReason::RetainNotSupported,
                "retained messages are not available, the will's included",
            ));
        }
    }
    let assigned = connect.client_id.is_empty().then(|| ctx.assign_client_id());
    let client_id = assigned
        .clone()
        .unwrap_or_else(|| connect.client_id.clone());
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
        Admission::Busy => {
            return Err(refusal(
                ConnectAckReason::ServerBusy,
                "too many connections",
            ));
        }
        Admission::Refused(Refusal::BadCredentials) => {
            return Err(refusal(
                ConnectAckReason::BadUserNameOrPassword,
                "bad username or password",
            ));
        }
        Admission::Refused(Refusal::NotAuthorized) => {
            return Err(refusal(ConnectAckReason::NotAuthorized, "not authorized"));
        }
        Admission::Refused(Refusal::Unavailable) => {
            return Err(refusal(
                ConnectAckReason::ServerUnavailable,
                "authentication unavailable",
            ));
        }
    };
    let will = match &connect.last_will {
        Some(will) => {
            let (valid, allowed) = (
                valid_topic_name(&will.topic),
                ctx.broker.auth.may_publish(&principal, &will.topic),
            );
            if !valid || !allowed {
                ctx.release_slot();
                return Err(if valid {
                    refusal(ConnectAckReason::NotAuthorized, "will topic not authorized")
                } else {
                    refusal(ConnectAckReason::TopicNameInvalid, "invalid will topic")
                });
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
    let expiry = expiry_from_secs(requested_expiry, config.max_session_expiry);
    let max_keepalive = config.max_keepalive.max(1);
    let keep_alive = if connect.keep_alive == 0 || connect.keep_alive > max_keepalive {
        max_keepalive
    } else {
        connect.keep_alive
    };
    let wire = Wire {
        peer: io.peer_addr(),
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
    let ack = ConnectAck {
        session_present: opened.present,
        assigned_client_id: assigned,
        session_expiry_interval_secs: (u64::from(requested_expiry) > expiry.as_secs())
            .then_some(expiry.as_secs() as u32),
        max_qos: config.max_qos(),
        receive_max: NonZeroU16::new(config.receive_maximum.max(1)).unwrap_or(NonZeroU16::MIN),
        topic_alias_max: config.max_topic_alias,
        max_packet_size: Some(config.max_packet_size),
        retain_available: config.retain_available,
        wildcard_subscription_available: true,
        shared_subscription_available: true,
        subscription_identifiers_available: true,
        server_keepalive_sec: (keep_alive != connect.keep_alive).then_some(keep_alive),
        ..Default::default()
    };
    Ok(Accepted {
        opened,
        ack: Box::new(ack),
        keep_alive,
    })
}

/// MQTT 5.0's part of the dispatcher.
pub(crate) struct V5 {
    codec: Codec,
    /// The largest packet the client takes (0: no limit).
    max_packet_size: u32,
    /// The CONNECT asked for no session after the connection: a DISCONNECT may not ask for
    /// one.
    zero_expiry: bool,
    /// The topic aliases the client set.
    client_aliases: HashMap<NonZeroU16, ByteString>,
    /// The aliases the broker assigned (if it may).
    server_aliases: Option<Box<ServerAliases>>,
}

impl Dialect for V5 {
    codec_items!(set_max_inbound_size);

    async fn accept(
        ctx: Arc<ListenerContext>,
        mut io: Transport,
        codec: Codec,
        connect: Box<Connect>,
    ) -> Option<Box<Dispatcher<V5>>> {
        if let Some(size) = connect.max_packet_size {
            codec.set_max_outbound_size(size.get());
        }
        let accepted = match handshake(&ctx, &io, &connect).await {
            Ok(accepted) => accepted,
            Err(refusal) => {
                let _ = io.encode(Encoded::Packet(Packet::ConnectAck(refusal)), &codec);
                let _ = io.shutdown().await;
                return None;
            }
        };
        let Accepted {
            opened,
            ack,
            keep_alive,
        } = accepted;
        if io
            .encode(Encoded::Packet(Packet::ConnectAck(ack)), &codec)
            .is_err()
        {
            return None;
        }
        let config = &ctx.config;
        let server_aliases = config.server_topic_aliases.min(connect.topic_alias_max);
        let dialect = V5 {
            codec,
            max_packet_size: connect.max_packet_size.map_or(0, |size| size.get()),
            zero_expiry: connect.session_expiry_interval_secs == 0,
            client_aliases: HashMap::new(),
            server_aliases: (server_aliases > 0).then(|| {
                Box::new(ServerAliases {
                    max: server_aliases,
                    assigned: HashMap::new(),
                })
            }),
        };
        // As many QoS 1/2 messages in flight as the client takes [MQTT-3.3.4-9].
        let max_inflight = connect.receive_max.map_or(config.max_inflight, |max| {
            max.get().min(config.max_inflight)
        });
        let keep_alive = Seconds(keep_alive);
        Some(Dispatcher::new(
            dialect,
            io,
            opened,
            keep_alive,
            max_inflight,
        ))
    }

    fn publish(
        d: &mut Dispatcher<V5>,
        mut publish: Publish,
        payload: Bytes,
    ) -> Result<(), Closing> {
        let config = &d.conn.listener.config;
        let (retain_available, receive_maximum, max_qos, max_topic_alias) = (
            config.retain_available,
            usize::from(config.receive_maximum.max(1)),
            config.max_qos(),
            config.max_topic_alias,
        );
        if publish.topic.contains(['#', '+']) {
            return Err(Closing::violation(
                "a PUBLISH to a topic with wildcards [MQTT-3.3.2-2]",
            ));
        }
        if publish.retain && !retain_available {
            return Err(Closing::new(
                "a retained PUBLISH, and retained messages are not available [MQTT-3.2.2-14]",
                DisconnectReasonCode::RetainNotSupported,
            ));
        }
        let packet_id = match (publish.qos, publish.packet_id) {
            (QoS::AtMostOnce, _) => None,
            (_, Some(id)) => Some(id),
            (_, None) => return Err(Closing::violation("a QoS 1/2 PUBLISH without a packet id")),
        };
        if let Some(id) = packet_id {
            if d.busy() >= receive_maximum {
                return Err(Closing::new(
                    "more unacknowledged PUBLISHes than the receive maximum [MQTT-3.3.4-7]",
                    DisconnectReasonCode::ReceiveMaximumExceeded,
                ));
            }
            if publish.qos > max_qos {
                return Err(Closing::new(
                    "a PUBLISH above the maximum QoS [MQTT-3.2.2-11]",
                    DisconnectReasonCode::QosNotSupported,
                ));
            }
            if !d.claim_id(id) {
                let ack = acknowledgement(
                    id,
                    publish.qos,
                    PublishAckReason::PacketIdentifierInUse,
                    None,
                );
                return d.respond(Answer::packet(ack, None));
            }
        }
        d.dialect.resolve_alias(&mut publish, max_topic_alias)?;
        let props = &publish.properties;
        if !props.subscription_ids.is_empty() {
            return Err(Closing::violation(
                "a PUBLISH from a client carries subscription identifiers [MQTT-3.3.4-6]",
            ));
        }
        if props.is_utf8_payload && std::str::from_utf8(&payload).is_err() {
            let Some(id) = packet_id else {
                return Ok(());
            };
            let ack = acknowledgement(
                id,
                publish.qos,
                PublishAckReason::PayloadFormatInvalid,
                Some("the payload format indicator says UTF-8, and the payload is not"),
            );
            return d.respond(Answer::packet(ack, Some(id)));
        }
        if let (QoS::ExactlyOnce, Some(id)) = (publish.qos, packet_id) {
            let (resent, waiting) = {
                let state = d.conn.session.lock();
                (state.qos2_received.contains(&id), state.qos2_received.len())
            };
            if resent {
                // A resend of a message already taken: acknowledged again, taken once.
                let ack = acknowledgement(id, publish.qos, PublishAckReason::Success, None);
                return d.respond(Answer::packet(ack, Some(id)));
            }
            // QoS 2 messages count against the receive maximum until PUBCOMP [MQTT-3.3.4-9].
            if waiting >= receive_maximum {
                return Err(Closing::new(
                    "more QoS 2 messages waiting for PUBREL than the receive maximum [MQTT-3.3.4-7]",
                    DisconnectReasonCode::ReceiveMaximumExceeded,
                ));
            }
        }
        let props = publish.properties;
        let mut msg = message(
            d.conn.session.id,
            &d.conn.principal,
            publish.topic,
            payload,
            publish.qos,
            publish.retain,
        )
        .with_expiry(props.message_expiry_interval);
        let forwarded = Properties {
            payload_is_utf8: props.is_utf8_payload,
            content_type: props.content_type,
            response_topic: props.response_topic,
            correlation_data: props.correlation_data,
            user_properties: props.user_properties,
        };
        if !forwarded.is_empty() {
            msg.properties = Some(Box::new(forwarded));
        }
        d.take(msg, packet_id, publish.dup)
    }

    fn control(d: &mut Dispatcher<V5>, packet: Packet) -> Result<(), Closing> {
        match packet {
            Packet::PublishAck(ack) => {
                d.acknowledged(ack.packet_id);
                Ok(())
            }
            Packet::PublishComplete(ack) => {
                d.acknowledged(ack.packet_id);
                Ok(())
            }
            Packet::PublishReceived(ack) => {
                if (ack.reason_code as u8) < 0x80 {
                    d.received(ack.packet_id)
                } else {
                    // The client refused the message: the exchange ends here [MQTT-4.3.3-4].
                    d.acknowledged(ack.packet_id);
                    Ok(())
                }
            }
            Packet::PublishRelease(release) => {
                let packet_id = release.packet_id;
                let known = d.conn.session.qos2_released(packet_id);
                let complete = PublishAck2 {
                    packet_id,
                    reason_code: if known {
                        PublishAck2Reason::Success
                    } else {
                        PublishAck2Reason::PacketIdNotFound
                    },
                    ..Default::default()
                };
                d.respond(Answer::packet(Packet::PublishComplete(complete), None))
            }
            Packet::PingRequest => d.respond(Answer::packet(Packet::PingResponse, None)),
            Packet::Subscribe(subscribe) => {
                let filters = &subscribe.topic_filters;
                if filters.iter().any(|(f, _)| !valid_topic_filter(f)) {
                    return Err(Closing::violation("an invalid topic filter [MQTT-4.7.1]"));
                }
                if filters
                    .iter()
                    .any(|(f, o)| o.no_local && f.starts_with("$share/"))
                {
                    return Err(Closing::violation(
                        "no local on a shared subscription [MQTT-3.8.3-4]",
                    ));
                }
                let packet_id = subscribe.packet_id;
                if !d.claim_id(packet_id) {
                    let suback = SubscribeAck {
                        packet_id,
                        status: vec![SubscribeAckReason::PacketIdentifierInUse; filters.len()],
                        properties: Vec::new(),
                        reason_string: None,
                    };
                    return d.respond(Answer::packet(Packet::SubscribeAck(suback), None));
                }
                let id = subscribe.id;
                let mut retained = Vec::new();
                let status = filters
                    .iter()
                    .map(|(full, options)| {
                        let opts = |qos, read| SubOptions {
                            qos,
                            no_local: options.no_local,
                            retain_as_published: options.retain_as_published,
                            retain_handling: retain_handling(options.retain_handling),
                            id,
                            read,
                        };
                        match d.subscribe_to(full, options.qos, opts, &mut retained) {
                            Ok(QoS::AtMostOnce) => SubscribeAckReason::GrantedQos0,
                            Ok(QoS::AtLeastOnce) => SubscribeAckReason::GrantedQos1,
                            Ok(QoS::ExactlyOnce) => SubscribeAckReason::GrantedQos2,
                            Err(NotSubscribed::Invalid) => SubscribeAckReason::TopicFilterInvalid,
                            Err(NotSubscribed::NotAuthorized) => SubscribeAckReason::NotAuthorized,
                        }
                    })
                    .collect();
                let suback = SubscribeAck {
                    packet_id,
                    status,
                    properties: Vec::new(),
                    reason_string: None,
                };
                d.subscribed(Packet::SubscribeAck(suback), packet_id, retained);
                Ok(())
            }
            Packet::Unsubscribe(unsubscribe) => {
                let filters = &unsubscribe.topic_filters;
                if filters.iter().any(|f| !valid_topic_filter(f)) {
                    return Err(Closing::violation("an invalid topic filter [MQTT-4.7.1]"));
                }
                let packet_id = unsubscribe.packet_id;
                let in_use = !d.claim_id(packet_id);
                let status = filters
                    .iter()
                    .map(|filter| {
                        if in_use {
                            UnsubscribeAckReason::PacketIdentifierInUse
                        } else if d.conn.broker().unsubscribe(&d.conn.session, filter) {
                            UnsubscribeAckReason::Success
                        } else {
                            UnsubscribeAckReason::NoSubscriptionExisted
                        }
                    })
                    .collect();
                let unsuback = Packet::UnsubscribeAck(UnsubscribeAck {
                    packet_id,
                    status,
                    properties: Vec::new(),
                    reason_string: None,
                });
                if in_use {
                    return d.respond(Answer::packet(unsuback, None));
                }
                d.respond_settled(Answer::packet(unsuback, Some(packet_id)));
                Ok(())
            }
            Packet::Disconnect(disconnect) => {
                let expiry = disconnect.session_expiry_interval_secs;
                if d.dialect.zero_expiry && expiry.is_some_and(|secs| secs > 0) {
                    return Err(Closing::violation(
                        "a session expiry on DISCONNECT after none on CONNECT",
                    ));
                }
                let graceful =
                    disconnect.reason_code != DisconnectReasonCode::DisconnectWithWillMessage;
                let max = d.conn.listener.config.max_session_expiry;
                let expiry = expiry.map(|secs| Some(expiry_from_secs(secs, max)));
                d.conn.client_disconnected(graceful, expiry);
                d.reading = false;
                Ok(())
            }
            Packet::Auth(_) => Err(Closing::violation(
                "an AUTH without an authentication method in CONNECT",
            )),
            Packet::Connect(_) => Err(Closing::violation(
                "a second CONNECT on an open connection [MQTT-3.1.0-2]",
            )),
            Packet::ConnectAck(_)
            | Packet::SubscribeAck(_)
            | Packet::UnsubscribeAck(_)
            | Packet::PingResponse => Err(Closing::violation("a packet only a server sends")),
        }
    }

    fn acknowledgement(
        conn: &Conn,
        packet_id: Option<NonZeroU16>,
        qos: QoS,
        outcome: PublishOutcome,
    ) -> Result<Option<Packet>, Closing> {
        let Some(id) = packet_id else {
            return Ok(None);
        };
        let (reason, text) = match outcome {
            PublishOutcome::Accepted => (PublishAckReason::Success, None),
            PublishOutcome::TopicInvalid => (
                PublishAckReason::TopicNameInvalid,
                Some("invalid topic name"),
            ),
            PublishOutcome::NotAuthorized => (
                PublishAckReason::NotAuthorized,
                Some("not authorized to publish to this topic"),
            ),
            PublishOutcome::Busy => (
                PublishAckReason::QuotaExceeded,
                Some("the platform is busy; retry later"),
            ),
            PublishOutcome::Failed => (
                PublishAckReason::UnspecifiedError,
                Some("the platform could not take the message"),
            ),
        };
        if qos == QoS::ExactlyOnce && outcome == PublishOutcome::Accepted {
            // Waits in the session for PUBREL (stored with it): a resend is not taken again.
            conn.session.qos2_taken(id);
        }
        Ok(Some(acknowledgement(id, qos, reason, text)))
    }

    fn release(packet_id: NonZeroU16) -> Packet {
        Packet::PublishRelease(PublishAck2 {
            packet_id,
            ..Default::default()
        })
    }

    fn send(&mut self, io: &Transport, out: &Outgoing, now: Instant) -> SendOutcome {
        let topic = &out.message.topic;
        let naming = self
            .server_aliases
            .as_ref()
            .map_or(Naming::Topic, |aliases| aliases.naming(topic));
        if out.qos == QoS::AtMostOnce
            && matches!(naming, Naming::Topic)
            && !out.retain
            && out.sub_ids.is_empty()
            && out.message.expires_at.is_none()
        {
            return write_shared(io, at_most_once_wire(&out.message), self.max_packet_size);
        }
        let (name, alias) = match naming {
            Naming::Topic => (topic.clone(), None),
            Naming::NewAlias(alias) => (topic.clone(), Some(alias)),
            Naming::Alias(alias) => (ByteString::new(), Some(alias)),
        };
        let mut properties = PublishProperties {
            topic_alias: alias,
            ..Default::default()
        };
        outgoing_properties(out, now, &mut properties);
        let publish = Publish {
            dup: out.dup,
            retain: out.retain,
            qos: out.qos,
            packet_id: out.packet_id.filter(|_| out.qos != QoS::AtMostOnce),
            topic: name,
            payload_size: out.message.payload.len() as u32,
            properties,
        };
        let outcome = match io.encode(
            Encoded::Publish(publish, Some(out.message.payload.clone())),
            &self.codec,
        ) {
            Ok(()) => SendOutcome::Sent,
            Err(_) => SendOutcome::Unsendable,
        };
        if let Some(aliases) = &mut self.server_aliases {
            aliases.sent(topic, naming, outcome);
        }
        outcome
    }

    fn closing(&self, io: &Transport, closing: &Closing) -> bool {
        let Some(reason) = closing.reason else {
            return false;
        };
        let disconnect = Disconnect {
            reason_string: Some(ByteString::from_static(closing.why)),
            ..Disconnect::new(reason)
        };
        io.encode(Encoded::Packet(Packet::Disconnect(disconnect)), &self.codec)
            .is_ok()
    }
}

impl V5 {
    /// Names the PUBLISH's topic by the alias it carries, or records the alias (MQTT 5.0
    /// §3.3.2.3.4).
    fn resolve_alias(&mut self, publish: &mut Publish, max: u16) -> Result<(), Closing> {
        let Some(alias) = publish.properties.topic_alias else {
            return Ok(());
        };
        if alias.get() > max {
            return Err(Closing::new(
                "a topic alias above the topic alias maximum [MQTT-3.3.2-9]",
                DisconnectReasonCode::TopicAliasInvalid,
            ));
        }
        let aliases = &mut self.client_aliases;
        if publish.topic.is_empty() {
            match aliases.get(&alias) {
                Some(topic) => publish.topic = topic.clone(),
                None => {
                    return Err(Closing::new(
                        "a topic alias the client has not set",
                        DisconnectReasonCode::TopicAliasInvalid,
                    ));
                }
            }
        } else {
            // A copy: the topic read shares the read buffer, which the alias would keep.
            aliases.insert(alias, ByteString::from(publish.topic.as_str()));
        }
        Ok(())
    }
}

/// The PUBACK (QoS 1) or PUBREC (QoS 2) for a PUBLISH.
fn acknowledgement(
    packet_id: NonZeroU16,
    qos: QoS,
    reason_code: PublishAckReason,
    text: Option<&'static str>,
) -> Packet {
    let ack = PublishAck {
        packet_id,
        reason_code,
        properties: Vec::new(),
        reason_string: text.map(ByteString::from_static),
    };
    if qos == QoS::ExactlyOnce {
        Packet::PublishReceived(ack)
    } else {
        Packet::PublishAck(ack)
    }
}

/// The topic aliases the broker assigned on one connection (MQTT 5.0 §3.3.2.3.4): the first
/// `max` distinct topics sent get one, and later messages on them carry only the alias. Aliases
/// last as long as the connection; none is ever reassigned.
struct ServerAliases {
    max: u16,
    assigned: HashMap<ByteString, NonZeroU16>,
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
        if let Some(alias) = self.assigned.get(topic) {
            return Naming::Alias(*alias);
        }
        // Aliases are numbered from 1 in the order topics are first sent.
        match u16::try_from(self.assigned.len() + 1)
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
    fn sent(&mut self, topic: &ByteString, naming: Naming, outcome: SendOutcome) {
        if let (Naming::NewAlias(alias), SendOutcome::Sent) = (naming, outcome) {
            self.assigned.insert(topic.clone(), alias);
        }
    }
}

/// The QoS 0 PUBLISH of `message` as every 5.0 subscriber getting it plainly receives it (no
/// retain flag, topic alias, subscription identifier or expiry interval), encoded on first use.
fn at_most_once_wire(message: &Message) -> Result<&Bytes, EncodeError> {
    shared_publish(&message.wire_v5_at_most_once, |pages| {
        let mut properties = PublishProperties::default();
        forwarded(message, &mut properties);
        let packet = Publish {
            dup: false,
            retain: false,
            qos: QoS::AtMostOnce,
            packet_id: None,
            topic: message.topic.clone(),
            payload_size: message.payload.len() as u32,
            properties,
        };
        Codec::new().encodev(
            Encoded::Publish(packet, Some(message.payload.clone())),
            pages,
        )
    })
}

fn outgoing_properties(out: &Outgoing, now: Instant, p: &mut PublishProperties) {
    p.message_expiry_interval = out.message.remaining_expiry(now);
    p.subscription_ids.extend(out.sub_ids.iter().copied());
    forwarded(&out.message, p);
}

/// The publisher's properties every subscriber gets unchanged.
fn forwarded(message: &Message, p: &mut PublishProperties) {
    if let Some(props) = &message.properties {
        p.is_utf8_payload = props.payload_is_utf8;
        p.content_type.clone_from(&props.content_type);
        p.response_topic.clone_from(&props.response_topic);
        p.correlation_data.clone_from(&props.correlation_data);
        p.user_properties.clone_from(&props.user_properties);
    }
}

fn retain_handling(wire: WireRetain) -> RetainHandling {
    match wire {
        WireRetain::AtSubscribe => RetainHandling::Always,
        WireRetain::AtSubscribeNew => RetainHandling::IfNew,
        WireRetain::NoAtSubscribe => RetainHandling::Never,
    }
}
