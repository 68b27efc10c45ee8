//! MQTT 3.1.1 connections, served by the broker's own dispatcher: one future per connection
//! reads the client's packets with ntex-mqtt's codec, answers them in the order they came, and
//! drains the session's queue into the socket. An idle connection holds this future, its
//! session and its socket, and nothing else: no writer task, no service pipeline.
//!
//! Packets are handled in arrival order. A PUBLISH the platform hook has to take, and a
//! SUBSCRIBE or UNSUBSCRIBE that waits for the subscriptions to settle, is handled while the
//! next packets are read; its answer, and the routing of its message, waits for every earlier
//! packet's (MQTT 3.1.1 §4.6). With persistence, the acknowledgement of a QoS 1/2 PUBLISH also
//! waits until what its routing stored is durable.

use std::collections::HashSet;
use std::future::{Future, poll_fn};
use std::num::NonZeroU16;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesOrdered, StreamExt};
use ntex::codec::Encoder;
use ntex::io::{IoBoxed, RecvError};
use ntex::time::Seconds;
use ntex::util::{Bytes, BytesMut};
use ntex_mqtt::QoS;
use ntex_mqtt::error::EncodeError;
use ntex_mqtt::v3::codec::{
    Codec, Connect, ConnectAck, ConnectAckReason, Decoded, Encoded, Packet, Publish,
    SubscribeReturnCode,
};
use tokio::sync::{Notify, oneshot};

use super::{
    Admission, BATCH, Conn, ListenerContext, Opened, PublishOutcome, SendOutcome, Tally, Wire,
    message, peer_addr, peer_certificate, shared_publish, write_shared,
};
use crate::auth::{ConnectRequest, Refusal};
use crate::delivery::{Outgoing, SubOptions};
use crate::message::Message;
use crate::session::{Kick, Protocol, Will};
use crate::topic::{SubscriptionFilter, valid_topic_filter};

/// Payloads from this size on are read in chunks (the read buffer need not hold them whole).
const CHUNK: u32 = 32 * 1024;

/// Serves a 3.1.1 connection from its CONNECT to its end.
pub(crate) async fn serve(ctx: Arc<ListenerContext>, io: IoBoxed, connect_timeout: Seconds) {
    // Boxed, and dropped once the client is in: the future kept for an idle connection's life
    // is the dispatcher's alone.
    let Some(dispatcher) = Box::pin(accept(ctx, io, connect_timeout)).await else {
        return;
    };
    let conn = dispatcher.conn.clone();
    let ended = dispatcher.run().await;
    tracing::debug!(client_id = %conn.session.client_id, reason = ended, "connection closed");
    conn.finish();
}

/// Reads the CONNECT, opens the client's session and sends CONNACK; the connection's
/// dispatcher if the client is in (boxed: the future that runs it holds only a pointer).
async fn accept(
    ctx: Arc<ListenerContext>,
    io: IoBoxed,
    connect_timeout: Seconds,
) -> Option<Box<Dispatcher>> {
    let codec = Codec::new();
    codec.set_max_size(ctx.config.max_packet_size);
    codec.set_min_chunk_size(CHUNK);
    let first = ntex::time::timeout(connect_timeout, poll_fn(|cx| io.poll_recv(&codec, cx))).await;
    let connect = match first {
        Ok(Ok(Decoded::Packet(Packet::Connect(connect), _))) => connect,
        Ok(Ok(_)) => {
            tracing::debug!(peer = ?peer_addr(&io), "the first packet is not CONNECT [MQTT-3.1.0-1]");
            return None;
        }
        Ok(Err(err)) => {
            tracing::debug!(peer = ?peer_addr(&io), error = ?recv_error(&err), "no CONNECT");
            return None;
        }
        Err(()) => {
            tracing::debug!(peer = ?peer_addr(&io), "no CONNECT in time");
            return None;
        }
    };
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
    Some(Box::new(Dispatcher {
        max_inflight: usize::from(ctx.config.max_inflight.max(1)),
        io,
        codec,
        conn: Rc::new(opened.conn),
        wake: opened.wake,
        kick: opened.kick,
        keep_alive,
        busy_ids: HashSet::new(),
        handling: InOrder::default(),
        answers: InOrder::default(),
        partial: None,
        unacknowledged: 0,
        queue_drained: false,
        reading: true,
        paused: false,
        tally: Tally::default(),
    }))
}

fn recv_error(err: &RecvError<Codec>) -> String {
    match err {
        RecvError::KeepAlive => "keep-alive timeout".into(),
        RecvError::WriteBackpressure => "write back-pressure".into(),
        RecvError::Decoder(err) => format!("malformed packet: {err}"),
        RecvError::PeerGone(Some(err)) => format!("connection lost: {err}"),
        RecvError::PeerGone(None) => "connection closed by the client".into(),
    }
}

/// Checks a CONNECT and opens the client's session; the CONNACK code if it is refused.
async fn handshake(
    ctx: &Arc<ListenerContext>,
    io: &IoBoxed,
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
        peer: peer_addr(io),
        certificate: peer_certificate(io),
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
        io: io.get_ref(),
        max_packet_size: 0,
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
    // [MQTT-3.1.2-24]: one and a half times the keep alive.
    let keep_alive = Seconds(connect.keep_alive.saturating_add(connect.keep_alive / 2));
    Ok((opened, keep_alive))
}

/// A packet being handled, in arrival order.
type Handling = Pin<Box<dyn Future<Output = Handled>>>;
/// An answer waiting for what the answers before it wait for; an error closes the connection.
type Waiting = Pin<Box<dyn Future<Output = Result<Answer, &'static str>>>>;

/// What handling a packet came to.
struct Handled {
    /// A message to route once every earlier packet's is (boxed: a whole message inline would
    /// size every connection's future for it).
    route: Option<Box<Message>>,
    /// The answer waits until what the broker stored so far is durable.
    durable_first: bool,
    answer: Answer,
    /// Why the connection is closed instead.
    refused: Option<&'static str>,
}

/// What is written back for a packet, and what follows it.
#[derive(Default)]
struct Answer {
    packet: Option<Packet>,
    /// The packet id this answer frees for the client's next packet.
    frees: Option<NonZeroU16>,
    /// Retained messages that follow a SUBACK: (filter, options).
    retained: Vec<(String, SubOptions)>,
}

impl Answer {
    fn packet(packet: Packet, frees: Option<NonZeroU16>) -> Answer {
        Answer {
            packet: Some(packet),
            frees,
            retained: Vec::new(),
        }
    }
}

/// The state of one connection after CONNACK.
struct Dispatcher {
    io: IoBoxed,
    codec: Codec,
    conn: Rc<Conn>,
    wake: Arc<Notify>,
    /// Resolves when the broker closes the connection (taken over, revoked, shutting down).
    kick: oneshot::Receiver<Kick>,
    keep_alive: Seconds,
    max_inflight: usize,
    /// Packet ids of the client's packets in handling: reusing one is a protocol error
    /// [MQTT-2.3.1-2].
    busy_ids: HashSet<NonZeroU16>,
    /// Packets in handling, in arrival order.
    handling: InOrder<Handling>,
    /// Answers held back (durability, or an earlier answer held back), in order.
    answers: InOrder<Waiting>,
    /// A PUBLISH whose payload is still coming in chunks.
    partial: Option<(Publish, BytesMut)>,
    /// QoS 1/2 messages sent and not acknowledged yet.
    unacknowledged: usize,
    /// The session's queue was found empty; woken by `wake`.
    queue_drained: bool,
    /// False once the client sent DISCONNECT or its side of the connection closed.
    reading: bool,
    /// Not read from because of the node's bound on waiting packets (counted once per pause).
    paused: bool,
    tally: Tally,
}

/// What the dispatcher waits for next.
enum Event {
    Kicked(Option<Kick>),
    Handled(Handled),
    Answer(Result<Answer, &'static str>),
    Packet(Result<Decoded, RecvError<Codec>>),
    /// The socket took what was waiting (false: the connection is gone).
    Flushed(bool),
    Woken,
    Send,
}

impl Dispatcher {
    /// Runs until the connection ends; returns why.
    async fn run(mut self: Box<Self>) -> &'static str {
        self.restart_keep_alive();
        let ended = loop {
            let backpressure = self.io.is_wr_backpressure();
            // A client that does not read what it is sent is not read from either (its
            // answers would pile up) until its socket takes more.
            let readable = !backpressure && self.may_read();
            let can_send = !self.queue_drained && !backpressure && self.has_credit();
            let (handling, answers) = (!self.handling.is_empty(), !self.answers.is_empty());
            let drained = self.queue_drained;
            let event = tokio::select! {
                biased;
                kicked = &mut self.kick => Event::Kicked(kicked.ok()),
                Some(handled) = self.handling.next(), if handling => {
                    Event::Handled(handled)
                }
                Some(answer) = self.answers.next(), if answers => {
                    Event::Answer(answer)
                }
                packet = poll_fn(|cx| self.io.poll_recv(&self.codec, cx)), if readable => {
                    Event::Packet(packet)
                }
                flushed = poll_fn(|cx| self.io.poll_flush(cx, false)), if backpressure => {
                    Event::Flushed(flushed.is_ok())
                }
                () = self.wake.notified(), if drained => Event::Woken,
                () = std::future::ready(()), if can_send => Event::Send,
                // No `else`: the kick branch is always enabled.
            };
            let step = match event {
                Event::Kicked(kick) => {
                    // 3.1.1 has no server DISCONNECT: the network connection is closed (below).
                    tracing::debug!(client_id = %self.conn.session.client_id, ?kick, "connection closed by the broker");
                    Err("closed by the broker")
                }
                Event::Handled(handled) => {
                    self.conn.broker().metrics.packets_pending.dec();
                    self.handled(handled)
                }
                Event::Answer(answer) => {
                    self.conn.broker().metrics.packets_pending.dec();
                    answer.and_then(|answer| self.write(answer))
                }
                Event::Packet(Ok(packet)) => {
                    self.restart_keep_alive();
                    self.packet(packet)
                }
                // Not read from until the socket takes more (next turn).
                Event::Packet(Err(RecvError::WriteBackpressure)) => Ok(()),
                Event::Packet(Err(err)) => {
                    if matches!(err, RecvError::PeerGone(_)) {
                        // Packets already read are still handled (a client may publish and
                        // close).
                        self.reading = false;
                        Ok(())
                    } else {
                        tracing::debug!(client_id = %self.conn.session.client_id, error = %recv_error(&err), "connection closed");
                        Err("protocol error or keep-alive timeout")
                    }
                }
                Event::Flushed(true) => Ok(()),
                Event::Flushed(false) => Err("the connection is gone"),
                Event::Woken => {
                    self.queue_drained = false;
                    Ok(())
                }
                Event::Send => self.send_batch(),
            };
            if let Err(why) = step {
                self.io.close();
                break why;
            }
            if !self.reading && self.handling.is_empty() && self.answers.is_empty() {
                break "the client ended the connection";
            }
        };
        self.tally.flush(&self.conn.broker().metrics);
        self.settle_pending();
        let _ = self.io.shutdown().await;
        ended
    }

    fn restart_keep_alive(&self) {
        if !self.keep_alive.is_zero() {
            self.io.start_timer(self.keep_alive);
        }
    }

    fn has_credit(&self) -> bool {
        self.unacknowledged < self.max_inflight
    }

    /// Whether the next packet may be read: none of this client's packets is waiting, or
    /// fewer than the receive maximum are (3.1.1 announces none, but a client cannot tell
    /// flow control from a slow network) and the node holds fewer than its bound.
    fn may_read(&mut self) -> bool {
        if !self.reading {
            return false;
        }
        let waiting = self.handling.len() + self.answers.len();
        let config = &self.conn.listener.config;
        let limit = usize::from(config.receive_maximum.max(1));
        let metrics = &self.conn.broker().metrics;
        let node_full = usize::try_from(metrics.packets_pending.get())
            .is_ok_and(|n| n >= config.max_pending_packets);
        if waiting == 0 || (waiting < limit && !node_full) {
            self.paused = false;
            return true;
        }
        if waiting < limit && !self.paused {
            self.paused = true;
            metrics.reads_paused.inc();
        }
        false
    }

    /// Queues the handling of a packet behind the earlier ones.
    fn wait(&mut self, handling: Handling) {
        self.conn.broker().metrics.packets_pending.inc();
        self.handling.push_back(handling);
    }

    fn packet(&mut self, packet: Decoded) -> Result<(), &'static str> {
        match packet {
            Decoded::Publish(publish, payload, _) => {
                if payload.len() < publish.payload_size as usize {
                    let mut whole = BytesMut::with_capacity(publish.payload_size as usize);
                    whole.extend_from_slice(&payload);
                    self.partial = Some((publish, whole));
                    return Ok(());
                }
                self.publish(publish, payload)
            }
            Decoded::PayloadChunk(chunk, done) => {
                let Some((publish, mut whole)) = self.partial.take() else {
                    return Err("a payload chunk without a PUBLISH");
                };
                whole.extend_from_slice(&chunk);
                if done {
                    self.publish(publish, whole.freeze())
                } else {
                    self.partial = Some((publish, whole));
                    Ok(())
                }
            }
            Decoded::Packet(packet, _) => self.control(packet),
        }
    }

    fn control(&mut self, packet: Packet) -> Result<(), &'static str> {
        match packet {
            Packet::PublishAck { packet_id } | Packet::PublishComplete { packet_id } => {
                self.acknowledged(packet_id);
                Ok(())
            }
            Packet::PublishReceived { packet_id } => {
                // The client has the QoS 2 message: release it; it is done at PUBCOMP.
                self.answer(Answer::packet(Packet::PublishRelease { packet_id }, None))
            }
            Packet::PublishRelease { packet_id } => {
                self.conn.session.qos2_released(packet_id);
                // [MQTT-4.3.3-2]: PUBCOMP answers every PUBREL, a repeated one included.
                self.answer(Answer::packet(Packet::PublishComplete { packet_id }, None))
            }
            Packet::PingRequest => self.answer(Answer::packet(Packet::PingResponse, None)),
            Packet::Subscribe {
                packet_id,
                topic_filters,
            } => {
                if topic_filters.iter().any(|(f, _)| !valid_topic_filter(f)) {
                    return Err("an invalid topic filter [MQTT-4.7.1]");
                }
                self.claim_id(packet_id)?;
                let subscribed = self.subscribe(packet_id, topic_filters);
                self.wait(subscribed);
                Ok(())
            }
            Packet::Unsubscribe {
                packet_id,
                topic_filters,
            } => {
                if topic_filters.iter().any(|f| !valid_topic_filter(f)) {
                    return Err("an invalid topic filter [MQTT-4.7.1]");
                }
                self.claim_id(packet_id)?;
                for filter in &topic_filters {
                    self.conn.broker().unsubscribe(&self.conn.session, filter);
                }
                let conn = self.conn.clone();
                self.wait(Box::pin(async move {
                    conn.settled().await;
                    Handled {
                        route: None,
                        durable_first: false,
                        answer: Answer::packet(
                            Packet::UnsubscribeAck { packet_id },
                            Some(packet_id),
                        ),
                        refused: None,
                    }
                }));
                Ok(())
            }
            Packet::Disconnect => {
                self.conn.client_disconnected(true, None);
                self.reading = false;
                Ok(())
            }
            Packet::Connect(_) => Err("a second CONNECT on an open connection [MQTT-3.1.0-2]"),
            Packet::ConnectAck(_)
            | Packet::SubscribeAck { .. }
            | Packet::UnsubscribeAck { .. }
            | Packet::PingResponse => Err("a packet only a server sends"),
        }
    }

    fn claim_id(&mut self, packet_id: NonZeroU16) -> Result<(), &'static str> {
        if self.busy_ids.insert(packet_id) {
            Ok(())
        } else {
            Err("a packet id still in use [MQTT-2.3.1-2]")
        }
    }

    /// Subscribes at once (a PUBLISH read after the SUBSCRIBE is routed to it); the SUBACK
    /// waits until the subscriptions have settled.
    fn subscribe(
        &mut self,
        packet_id: NonZeroU16,
        filters: Vec<(ntex::util::ByteString, QoS)>,
    ) -> Handling {
        let conn = self.conn.clone();
        let mut status = Vec::with_capacity(filters.len());
        let mut retained = Vec::new();
        for (full, qos) in filters {
            let Ok(filter) = SubscriptionFilter::parse(&full, true) else {
                status.push(SubscribeReturnCode::Failure);
                continue;
            };
            let Some(read) = conn.may_subscribe(&filter.filter) else {
                status.push(SubscribeReturnCode::Failure);
                continue;
            };
            let qos = crate::message::min_qos(qos, conn.listener.config.max_qos());
            let opts = SubOptions::qos(qos, read);
            let existed = conn
                .broker()
                .subscribe(&conn.session, &full, filter.clone(), opts);
            if filter.group.is_none() && opts.wants_retained(existed) {
                retained.push((filter.filter, opts));
            }
            status.push(SubscribeReturnCode::Success(qos));
        }
        Box::pin(async move {
            conn.settled().await;
            Handled {
                route: None,
                durable_first: false,
                answer: Answer {
                    packet: Some(Packet::SubscribeAck { packet_id, status }),
                    frees: Some(packet_id),
                    retained,
                },
                refused: None,
            }
        })
    }

    fn publish(&mut self, publish: Publish, payload: Bytes) -> Result<(), &'static str> {
        if publish.qos > self.conn.listener.config.max_qos() {
            // [MQTT-3.2.2-11] (5.0): above the maximum QoS the server granted.
            return Err("a PUBLISH above the maximum QoS");
        }
        let packet_id = match (publish.qos, publish.packet_id) {
            (QoS::AtMostOnce, _) => None,
            (_, Some(id)) => Some(id),
            (_, None) => return Err("a QoS 1/2 PUBLISH without a packet id"),
        };
        if let Some(id) = packet_id {
            self.claim_id(id)?;
            if publish.qos == QoS::ExactlyOnce
                && self.conn.session.lock().qos2_received.contains(&id)
            {
                // A resend of a message already taken: acknowledged again, taken once.
                return self.answer(Answer::packet(
                    Packet::PublishReceived { packet_id: id },
                    Some(id),
                ));
            }
        }
        let conn = &self.conn;
        if publish.dup && publish.qos == QoS::AtLeastOnce {
            // QoS 1 allows duplicates: a resent message the broker had already taken (its
            // PUBACK lost with a connection or a node) is taken again. Counted, not hidden.
            conn.broker().metrics.resent_received.inc();
        }
        let message = message(
            conn.session.id,
            &conn.principal,
            publish.topic,
            payload,
            publish.qos,
            publish.retain,
        );
        let durable_first = packet_id.is_some() && conn.broker().persists();
        let outcome = conn.admissible(&message);
        let hook = conn.broker().hook();
        match hook {
            Some(hook) if outcome == PublishOutcome::Accepted => {
                let conn = conn.clone();
                self.wait(Box::pin(async move {
                    let (outcome, taken) = conn.hand_over(hook, message).await;
                    let (taken, mut handled) =
                        published(&conn, packet_id, publish.qos, outcome, taken, durable_first);
                    handled.route = taken.map(Box::new);
                    handled
                }));
                Ok(())
            }
            _ => {
                let taken = (outcome == PublishOutcome::Accepted).then_some(message);
                let (taken, mut handled) =
                    published(conn, packet_id, publish.qos, outcome, taken, durable_first);
                if self.handling.is_empty() {
                    self.settle(taken, handled)
                } else {
                    handled.route = taken.map(Box::new);
                    self.wait(Box::pin(std::future::ready(handled)));
                    Ok(())
                }
            }
        }
    }

    /// A packet's handling is done (in arrival order): its message is routed and its answer
    /// written, or held back behind durability or an earlier held-back answer.
    fn handled(&mut self, mut handled: Handled) -> Result<(), &'static str> {
        let route = handled.route.take().map(|message| *message);
        self.settle(route, handled)
    }

    /// [`Dispatcher::handled`], with the message to route apart.
    fn settle(&mut self, route: Option<Message>, handled: Handled) -> Result<(), &'static str> {
        if let Some(why) = handled.refused {
            return Err(why);
        }
        if let Some(message) = route {
            self.conn.broker().publish(message);
        }
        if handled.durable_first {
            let conn = self.conn.clone();
            let answer = handled.answer;
            self.hold(Box::pin(async move {
                match conn.durable().await {
                    Ok(()) => Ok(answer),
                    Err(err) => {
                        tracing::error!(client_id = %conn.session.client_id, %err, "a publish could not be stored; the connection is closed unacknowledged");
                        Err("the broker cannot store the message")
                    }
                }
            }));
            return Ok(());
        }
        self.answer(handled.answer)
    }

    fn hold(&mut self, waiting: Waiting) {
        self.conn.broker().metrics.packets_pending.inc();
        self.answers.push_back(waiting);
    }

    /// Writes an answer now, or after the answers held back before it.
    fn answer(&mut self, answer: Answer) -> Result<(), &'static str> {
        if self.answers.is_empty() {
            self.write(answer)
        } else {
            self.hold(Box::pin(std::future::ready(Ok(answer))));
            Ok(())
        }
    }

    fn write(&mut self, answer: Answer) -> Result<(), &'static str> {
        if let Some(id) = answer.frees {
            self.busy_ids.remove(&id);
        }
        if let Some(packet) = answer.packet
            && self
                .io
                .encode(Encoded::Packet(packet), &self.codec)
                .is_err()
        {
            return Err("an answer could not be written");
        }
        for (filter, opts) in answer.retained {
            self.conn
                .broker()
                .deliver_retained(&self.conn.session, &filter, opts);
        }
        Ok(())
    }

    /// The client acknowledged a QoS 1 (PUBACK) or QoS 2 (PUBCOMP) message.
    fn acknowledged(&mut self, packet_id: NonZeroU16) {
        if self.conn.session.acknowledged(packet_id) {
            self.unacknowledged = self.unacknowledged.saturating_sub(1);
        }
    }

    /// Sends the next run of queued messages.
    /// Sends up to [`BATCH`] queued messages, as far as the client's credit and socket allow: a
    /// run of QoS 0 messages is taken under one lock, QoS 1/2 ones one by one (each takes credit).
    fn send_batch(&mut self) -> Result<(), &'static str> {
        // One clock read per batch serves both (the reads showed in fan-out profiles).
        let now = Instant::now();
        let session = self.conn.session.clone();
        let mut room = BATCH;
        while room > 0 && self.has_credit() && !self.io.is_wr_backpressure() {
            let (batch, expired) = session.take_to_send(now, room);
            self.tally.expired += expired as u64;
            if batch.is_empty() {
                self.queue_drained = true;
                break;
            }
            room = room.saturating_sub(batch.len());
            for out in batch {
                match self.send(&out) {
                    SendOutcome::Sent => {
                        if out.qos != QoS::AtMostOnce {
                            self.unacknowledged += 1;
                        }
                        self.tally.sent(&out);
                    }
                    SendOutcome::Unsendable => {
                        // Not for this client: forget it, and go on with the next.
                        if let Some(id) = out.packet_id {
                            session.acknowledged(id);
                        }
                        self.tally.oversize += 1;
                    }
                    // QoS 1/2 messages stay in flight for the next connection of the session
                    // (QoS 0 ones taken with them are lost with the connection, as MQTT allows).
                    SendOutcome::Closed => return Err("the connection is gone"),
                }
            }
        }
        // Counted per turn: a subscriber whose queue never empties still shows what it sent.
        self.tally.flush(&self.conn.broker().metrics);
        Ok(())
    }

    fn send(&self, out: &Outgoing) -> SendOutcome {
        let message = &out.message;
        if out.qos == QoS::AtMostOnce && !out.retain {
            return write_shared(&self.io, at_most_once_wire(message), 0);
        }
        let packet_id = match out.qos {
            QoS::AtMostOnce => None,
            _ => match out.packet_id {
                Some(id) => Some(id),
                None => return SendOutcome::Unsendable,
            },
        };
        let publish = Publish {
            dup: out.dup,
            retain: out.retain,
            qos: out.qos,
            topic: message.topic.clone(),
            packet_id,
            payload_size: message.payload.len() as u32,
        };
        match self.io.encode(
            Encoded::Publish(publish, Some(message.payload.clone())),
            &self.codec,
        ) {
            Ok(()) => SendOutcome::Sent,
            Err(_) => SendOutcome::Unsendable,
        }
    }

    /// The connection is ending: packets already read are still routed (their answers cannot
    /// be written any more), and the node's count of waiting packets is given back.
    fn settle_pending(&mut self) {
        let pending = self.handling.len() + self.answers.len();
        self.conn
            .broker()
            .metrics
            .packets_pending
            .dec_by(i64::try_from(pending).unwrap_or(i64::MAX));
        self.answers = InOrder::default();
        let handling = std::mem::take(&mut self.handling);
        if handling.is_empty() {
            return;
        }
        // Handled in a task of their own: the platform may still be taking them.
        let broker = self.conn.broker().clone();
        ntex::rt::spawn(async move {
            let mut handling = handling;
            while let Some(handled) = handling.next().await {
                if let Some(message) = handled.route {
                    broker.publish(*message);
                }
            }
        });
    }
}

/// Futures that finish in the order they were queued. It holds a `FuturesOrdered` only while
/// it has some: one allocates as it is created, which an idle connection should not pay for.
struct InOrder<F: Future>(Option<FuturesOrdered<F>>);

impl<F: Future> Default for InOrder<F> {
    fn default() -> Self {
        InOrder(None)
    }
}

impl<F: Future> InOrder<F> {
    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, FuturesOrdered::len)
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push_back(&mut self, future: F) {
        self.0
            .get_or_insert_with(FuturesOrdered::new)
            .push_back(future);
    }

    /// The next output, in order; `None` when empty.
    async fn next(&mut self) -> Option<F::Output> {
        let queue = self.0.as_mut()?;
        let output = queue.next().await;
        if queue.is_empty() {
            self.0 = None;
        }
        output
    }
}

/// What a PUBLISH's handling came to: its message to route, and its acknowledgement.
fn published(
    conn: &Conn,
    packet_id: Option<NonZeroU16>,
    qos: QoS,
    outcome: PublishOutcome,
    taken: Option<Message>,
    durable_first: bool,
) -> (Option<Message>, Handled) {
    let refused = match outcome {
        PublishOutcome::TopicInvalid => Some("an invalid topic name"),
        // Not acknowledged, so that the client sends it again later.
        PublishOutcome::Busy | PublishOutcome::Failed => {
            Some("the platform could not take the message")
        }
        PublishOutcome::Accepted | PublishOutcome::NotAuthorized => None,
    };
    if refused.is_some() {
        let handled = Handled {
            route: None,
            durable_first: false,
            answer: Answer::default(),
            refused,
        };
        return (None, handled);
    }
    // 3.1.1 has no negative acknowledgement: a publish the client may not make is
    // acknowledged and dropped.
    let answer = match (packet_id, qos) {
        (Some(id), QoS::ExactlyOnce) => {
            // Waits in the session for PUBREL (stored with it): a resend is not taken again.
            conn.session.qos2_taken(id);
            Answer::packet(Packet::PublishReceived { packet_id: id }, Some(id))
        }
        (Some(id), _) => Answer::packet(Packet::PublishAck { packet_id: id }, Some(id)),
        (None, _) => Answer::default(),
    };
    let handled = Handled {
        route: None,
        durable_first: durable_first && outcome == PublishOutcome::Accepted,
        answer,
        refused: None,
    };
    (taken, handled)
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

#[cfg(test)]
mod footprint {
    use super::*;

    fn future_size<A, F: FnOnce(A) -> Fut, Fut>(_: F) -> usize {
        std::mem::size_of::<Fut>()
    }

    fn future_size3<A, B, C, F: FnOnce(A, B, C) -> Fut, Fut>(_: F) -> usize {
        std::mem::size_of::<Fut>()
    }

    /// What an idle connection holds for its life: the future serving it (whose handshake is
    /// boxed and gone) and its dispatcher. Half a KiB each at most: a whole message or CONNECT
    /// kept inline by accident (as partly moved values in an async fn are) costs every device.
    #[test]
    fn an_idle_connection_keeps_a_small_future_and_dispatcher() {
        let serving = future_size3(serve);
        let running = future_size(Dispatcher::run);
        let dispatcher = std::mem::size_of::<Dispatcher>();
        assert!(serving <= 512, "serve's future is {serving} bytes");
        assert!(running <= 512, "the dispatcher's loop is {running} bytes");
        assert!(dispatcher <= 512, "the dispatcher is {dispatcher} bytes");
    }
}
