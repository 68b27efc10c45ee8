//! The dispatcher every MQTT connection runs on once its CONNACK is out, 3.1.1 and 5.0 alike:
//! one future per connection reads the client's packets with ntex-mqtt's codec, answers them
//! in the order they came, and drains the session's queue into the socket. An idle connection
//! holds this future, its session and its socket, and nothing else: no writer task, no service
//! pipeline. What differs between the versions (packets, reason codes, topic aliases) is the
//! version's [`Dialect`].
//!
//! Packets are handled in arrival order. A PUBLISH the platform hook has to take, and a
//! SUBSCRIBE or UNSUBSCRIBE that waits for the subscriptions to settle, is handled while the
//! next packets are read; its answer, and the routing of its message, waits for every earlier
//! packet's (MQTT 3.1.1 §4.6, 5.0 §4.6). With persistence, the acknowledgement of a QoS 1/2
//! PUBLISH also waits until what its routing stored is durable.

use std::collections::HashSet;
use std::future::{Future, poll_fn};
use std::num::NonZeroU16;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesOrdered, StreamExt};
use ntex::codec::{Decoder, Encoder};
use ntex::io::RecvError;
use ntex::time::{Millis, Seconds, Sleep};
use ntex::util::{Bytes, BytesMut};
use ntex_mqtt::QoS;
use ntex_mqtt::error::{DecodeError, EncodeError};
use ntex_mqtt::v5::codec::DisconnectReasonCode;
use tokio::sync::{Notify, oneshot};

use super::transport::Transport;
use super::{BATCH, Conn, ListenerContext, Opened, PublishOutcome, SendOutcome, Tally};
use crate::auth::ReadCheck;
use crate::delivery::{Outgoing, SubOptions};
use crate::message::Message;
use crate::session::Kick;
use crate::topic::SubscriptionFilter;

/// Payloads from this size on are read in chunks (the read buffer need not hold them whole).
pub(crate) const CHUNK: u32 = 32 * 1024;

/// How long a client the broker disconnected for a fault it told it of is still read from (what
/// it sends is dropped): its packets already on their way would otherwise meet a closed socket,
/// whose TCP reset can destroy the DISCONNECT before the client reads it.
const LINGER: Seconds = Seconds(1);

/// How many events a connection handles before the other connections of its worker thread get
/// their turn.
const TURNS: u8 = 64;

/// What one item the codec decoded is.
pub(crate) enum Inbound<P, K> {
    /// A PUBLISH's header and the start of its payload.
    Publish(P, Bytes),
    /// More of the payload being read; true with its end.
    Chunk(Bytes, bool),
    Packet(K),
}

/// One MQTT version's part of the dispatcher.
pub(crate) trait Dialect: Sized + 'static {
    type Codec: Decoder<Error = DecodeError> + Encoder<Error = EncodeError>;
    /// A PUBLISH header.
    type Publish;
    /// Any other packet from the client.
    type Packet;
    /// A packet the broker answers with.
    type Answer: 'static;

    type Connect;

    /// The codec a connection is read with, from its CONNECT on.
    fn new_codec(max_packet_size: u32) -> Self::Codec;
    /// The CONNECT, if that is what a first packet is.
    fn connect(item: <Self::Codec as Decoder>::Item) -> Option<Self::Connect>;
    /// Opens the client's session and sends CONNACK; the connection's dispatcher if the client
    /// is in.
    async fn accept(
        ctx: Arc<ListenerContext>,
        io: Transport,
        codec: Self::Codec,
        connect: Self::Connect,
    ) -> Option<Box<Dispatcher<Self>>>;

    fn codec(&self) -> &Self::Codec;
    fn inbound(item: <Self::Codec as Decoder>::Item) -> Inbound<Self::Publish, Self::Packet>;
    fn payload_size(publish: &Self::Publish) -> u32;
    fn encoded(answer: Self::Answer) -> <Self::Codec as Encoder>::Item;
    /// Handles a whole PUBLISH.
    fn publish(
        d: &mut Dispatcher<Self>,
        publish: Self::Publish,
        payload: Bytes,
    ) -> Result<(), Closing>;
    fn control(d: &mut Dispatcher<Self>, packet: Self::Packet) -> Result<(), Closing>;
    /// The answer to a PUBLISH whose handling came to `outcome` (none for QoS 0); an error
    /// closes the connection instead.
    fn acknowledgement(
        conn: &Conn,
        packet_id: Option<NonZeroU16>,
        qos: QoS,
        outcome: PublishOutcome,
    ) -> Result<Option<Self::Answer>, Closing>;
    /// PUBREL, for the client's PUBREC of a QoS 2 message.
    fn release(packet_id: NonZeroU16) -> Self::Answer;
    /// Writes a queued message (a QoS 1/2 one has its packet id).
    fn send(&mut self, io: &Transport, out: &Outgoing, now: Instant) -> SendOutcome;
    /// Tells the client why the broker closes the connection, where the version can; whether
    /// it did.
    fn closing(&self, io: &Transport, closing: &Closing) -> bool;
}

/// Why the broker closes a connection, and the reason code a 5.0 client is told (none: the
/// client ended it, or it is gone).
#[derive(Debug)]
pub(crate) struct Closing {
    pub why: &'static str,
    pub reason: Option<DisconnectReasonCode>,
}

impl Closing {
    pub(crate) fn new(why: &'static str, reason: DisconnectReasonCode) -> Closing {
        Closing {
            why,
            reason: Some(reason),
        }
    }

    /// The client broke the protocol.
    pub(crate) fn violation(why: &'static str) -> Closing {
        Closing::new(why, DisconnectReasonCode::ProtocolError)
    }

    /// Nothing can be told: the connection is gone, or the client ended it.
    pub(crate) fn gone(why: &'static str) -> Closing {
        Closing { why, reason: None }
    }

    fn kicked(kick: Kick) -> Closing {
        let reason = match kick {
            Kick::TakenOver => DisconnectReasonCode::SessionTakenOver,
            Kick::ShuttingDown => DisconnectReasonCode::ServerShuttingDown,
            Kick::Revoked => DisconnectReasonCode::NotAuthorized,
            Kick::Administrator => DisconnectReasonCode::AdministrativeAction,
        };
        Closing::new("closed by the broker", reason)
    }

    fn unreadable<U: Decoder<Error = DecodeError>>(err: &RecvError<U>) -> Closing {
        match err {
            RecvError::KeepAlive => {
                Closing::new("keep-alive timeout", DisconnectReasonCode::KeepAliveTimeout)
            }
            RecvError::Decoder(DecodeError::MaxSizeExceeded { .. }) => Closing::new(
                "a packet larger than the maximum packet size",
                DisconnectReasonCode::PacketTooLarge,
            ),
            RecvError::Decoder(_) => {
                Closing::new("a malformed packet", DisconnectReasonCode::MalformedPacket)
            }
            RecvError::WriteBackpressure | RecvError::PeerGone(_) => {
                Closing::gone("the connection is gone")
            }
        }
    }
}

/// The parts of a [`Dialect`] that are the same for ntex-mqtt's 3.1.1 and 5.0 codecs, whose
/// items have the same shape: expanded in each version's module, with its own types, and the
/// name of its codec's setter of the largest packet it reads.
macro_rules! codec_items {
    ($set_max_inbound_size:ident) => {
        type Codec = Codec;
        type Publish = Publish;
        type Packet = Packet;
        type Answer = Packet;
        type Connect = Box<Connect>;

        fn new_codec(max_packet_size: u32) -> Codec {
            let codec = Codec::new();
            codec.$set_max_inbound_size(max_packet_size);
            codec.set_min_chunk_size($crate::connection::dispatcher::CHUNK);
            codec
        }

        fn connect(item: Decoded) -> Option<Box<Connect>> {
            match item {
                Decoded::Packet(Packet::Connect(connect), _) => Some(connect),
                _ => None,
            }
        }

        fn codec(&self) -> &Codec {
            &self.codec
        }

        fn inbound(item: Decoded) -> Inbound<Publish, Packet> {
            match item {
                Decoded::Publish(publish, payload, _) => Inbound::Publish(publish, payload),
                Decoded::PayloadChunk(chunk, done) => Inbound::Chunk(chunk, done),
                Decoded::Packet(packet, _) => Inbound::Packet(packet),
            }
        }

        fn payload_size(publish: &Publish) -> u32 {
            publish.payload_size
        }

        fn encoded(answer: Packet) -> Encoded {
            Encoded::Packet(answer)
        }
    };
}
pub(crate) use codec_items;

/// Reads a new connection's CONNECT, in time, and lets the client in if it may.
pub(crate) async fn accept<V: Dialect>(
    ctx: Arc<ListenerContext>,
    io: Transport,
    connect_timeout: Millis,
) -> Option<Box<Dispatcher<V>>> {
    // The codec that reads the CONNECT is the connection's (5.0: it keeps whether the client
    // asked for problem information [MQTT-3.1.2-29]).
    let codec = V::new_codec(ctx.config.max_packet_size);
    let first = ntex::time::timeout(connect_timeout, io.recv(&codec)).await;
    let connect = match first {
        Ok(Ok(item)) => V::connect(item),
        Ok(Err(err)) => {
            tracing::debug!(peer = ?io.peer_addr(), error = %recv_error(&err), "no CONNECT");
            return None;
        }
        Err(()) => {
            tracing::debug!(peer = ?io.peer_addr(), "no CONNECT in time");
            return None;
        }
    };
    let Some(connect) = connect else {
        tracing::debug!(peer = ?io.peer_addr(), "the first packet is not CONNECT [MQTT-3.1.0-1]");
        return None;
    };
    V::accept(ctx, io, codec, connect).await
}

/// Why reading a packet failed, for the log.
fn recv_error<U: Decoder>(err: &RecvError<U>) -> String
where
    U::Error: std::fmt::Display,
{
    match err {
        RecvError::KeepAlive => "keep-alive timeout".into(),
        RecvError::WriteBackpressure => "write back-pressure".into(),
        RecvError::Decoder(err) => format!("malformed packet: {err}"),
        RecvError::PeerGone(Some(err)) => format!("connection lost: {err}"),
        RecvError::PeerGone(None) => "connection closed by the client".into(),
    }
}

/// A packet being handled, in arrival order.
pub(crate) type Handling<A> = Pin<Box<dyn Future<Output = Handled<A>>>>;
/// An answer waiting for what the answers before it wait for; an error closes the connection.
type Waiting<A> = Pin<Box<dyn Future<Output = Result<Answer<A>, Closing>>>>;

/// What handling a packet came to.
pub(crate) struct Handled<A> {
    /// A message to route once every earlier packet's is (boxed: a whole message inline would
    /// size every connection's future for it).
    route: Option<Box<Message>>,
    /// The answer waits until what the broker stored so far is durable.
    durable_first: bool,
    answer: Answer<A>,
    /// Why the connection is closed instead.
    refused: Option<Closing>,
}

impl<A> Handled<A> {
    pub(crate) fn answer(answer: Answer<A>) -> Handled<A> {
        Handled {
            route: None,
            durable_first: false,
            answer,
            refused: None,
        }
    }
}

/// What is written back for a packet, and what follows it.
pub(crate) struct Answer<A> {
    packet: Option<A>,
    /// The packet id this answer frees for the client's next packet.
    frees: Option<NonZeroU16>,
    /// Retained messages that follow a SUBACK: (filter, options).
    retained: Vec<(String, SubOptions)>,
}

impl<A> Answer<A> {
    pub(crate) fn packet(packet: A, frees: Option<NonZeroU16>) -> Answer<A> {
        Answer {
            packet: Some(packet),
            frees,
            retained: Vec::new(),
        }
    }

    fn none() -> Answer<A> {
        Answer {
            packet: None,
            frees: None,
            retained: Vec::new(),
        }
    }
}

/// Why a filter of a SUBSCRIBE was not subscribed to.
pub(crate) enum NotSubscribed {
    Invalid,
    NotAuthorized,
}

/// The state of one connection after CONNACK.
pub(crate) struct Dispatcher<V: Dialect> {
    pub(super) dialect: V,
    pub(super) io: Transport,
    pub(super) conn: Rc<Conn>,
    wake: Arc<Notify>,
    /// Resolves when the broker closes the connection (taken over, revoked, shutting down).
    kick: oneshot::Receiver<Kick>,
    keep_alive: KeepAlive,
    /// How many QoS 1/2 messages may wait for the client's acknowledgement.
    max_inflight: usize,
    /// Packet ids of the client's packets in handling: reusing one is a protocol error
    /// [MQTT-2.3.1-2].
    busy_ids: HashSet<NonZeroU16>,
    /// Packets in handling, in arrival order.
    handling: InOrder<Handling<V::Answer>>,
    /// Answers held back (durability, or an earlier answer held back), in order.
    answers: InOrder<Waiting<V::Answer>>,
    /// A PUBLISH whose payload is still coming in chunks (boxed: a 5.0 header is large, and
    /// rare).
    partial: Option<Box<(V::Publish, BytesMut)>>,
    /// QoS 1/2 messages sent and not acknowledged yet.
    unacknowledged: usize,
    /// The session's queue was found empty; woken by `wake`.
    queue_drained: bool,
    /// False once the client sent DISCONNECT or its side of the connection closed.
    pub(super) reading: bool,
    /// Not read from because of the node's bound on waiting packets (counted once per pause).
    paused: bool,
    tally: Tally,
}

/// What the dispatcher waits for next.
enum Event<V: Dialect> {
    Kicked(Option<Kick>),
    Handled(Handled<V::Answer>),
    Answer(Result<Answer<V::Answer>, Closing>),
    Packet(Result<<V::Codec as Decoder>::Item, RecvError<V::Codec>>),
    /// The socket took what was waiting (false: the connection is gone).
    Flushed(bool),
    /// The client was silent for longer than its keep-alive.
    Silent,
    Woken,
    Send,
}

impl<V: Dialect> Dispatcher<V> {
    /// The dispatcher of a connection whose CONNACK went out; `keep_alive` is the client's
    /// keep alive in force (zero: none), `max_inflight` how many QoS 1/2 messages it is sent
    /// before it acknowledges them.
    pub(crate) fn new(
        dialect: V,
        io: Transport,
        opened: Opened,
        keep_alive: Seconds,
        max_inflight: u16,
    ) -> Box<Dispatcher<V>> {
        Box::new(Dispatcher {
            dialect,
            io,
            conn: Rc::new(opened.conn),
            wake: opened.wake,
            kick: opened.kick,
            keep_alive: KeepAlive::new(keep_alive),
            max_inflight: usize::from(max_inflight.max(1)),
            busy_ids: HashSet::new(),
            handling: InOrder::default(),
            answers: InOrder::default(),
            partial: None,
            unacknowledged: 0,
            queue_drained: false,
            reading: true,
            paused: false,
            tally: Tally::default(),
        })
    }

    /// Serves the connection until it ends.
    pub(crate) async fn serve(self: Box<Self>) {
        let conn = self.conn.clone();
        let ended = self.run().await;
        tracing::debug!(client_id = %conn.session.client_id, reason = ended, "connection closed");
        conn.finish();
    }

    /// Runs until the connection ends; returns why.
    async fn run(mut self: Box<Self>) -> &'static str {
        let mut turns = 0u8;
        let ended = loop {
            // Every few events the worker's other connections get their turn: a client whose
            // socket never runs dry (a publisher flooding) would otherwise keep the thread, and
            // the subscribers it publishes to would never be written to.
            turns += 1;
            if turns == TURNS {
                turns = 0;
                behind_others().await;
            }
            let backpressure = self.io.is_wr_backpressure();
            // A client that does not read what it is sent is not read from either (its
            // answers would pile up) until its socket takes more.
            let readable = !backpressure && self.may_read();
            let can_send = !self.queue_drained && !backpressure && self.has_credit();
            let (handling, answers) = (!self.handling.is_empty(), !self.answers.is_empty());
            let drained = self.queue_drained;
            let flushing = self.io.wants_flush();
            let timed = self.keep_alive.timer.is_some();
            let event: Event<V> = tokio::select! {
                biased;
                kicked = &mut self.kick => Event::Kicked(kicked.ok()),
                Some(handled) = self.handling.next(), if handling => {
                    Event::Handled(handled)
                }
                Some(answer) = self.answers.next(), if answers => {
                    Event::Answer(answer)
                }
                packet = poll_fn(|cx| self.io.poll_recv(self.dialect.codec(), cx)), if readable => {
                    Event::Packet(packet)
                }
                () = poll_fn(|cx| self.keep_alive.poll(cx)), if timed => Event::Silent,
                () = self.wake.notified(), if drained => Event::Woken,
                () = std::future::ready(()), if can_send => Event::Send,
                // Last: what the turns before wrote goes out in one write.
                flushed = poll_fn(|cx| self.io.poll_flush(cx)), if flushing => {
                    Event::Flushed(flushed.is_ok())
                }
                // No `else`: the kick branch is always enabled.
            };
            let kicked = matches!(event, Event::Kicked(_));
            let step = match event {
                Event::Kicked(Some(kick)) => {
                    tracing::debug!(client_id = %self.conn.session.client_id, ?kick, "connection closed by the broker");
                    Err(Closing::kicked(kick))
                }
                Event::Kicked(None) => Err(Closing::gone("the session was closed")),
                Event::Handled(handled) => {
                    self.conn.broker().metrics.packets_pending.dec();
                    self.handled(handled)
                }
                Event::Answer(answer) => {
                    self.conn.broker().metrics.packets_pending.dec();
                    answer.and_then(|answer| self.write(answer))
                }
                Event::Packet(Ok(packet)) => {
                    self.keep_alive.heard = ntex::time::now();
                    self.packet(packet)
                }
                // Not read from until the socket takes more (next turn).
                Event::Packet(Err(RecvError::WriteBackpressure)) => Ok(()),
                // Packets already read are still handled (a client may publish and close).
                Event::Packet(Err(RecvError::PeerGone(_))) => {
                    self.reading = false;
                    Ok(())
                }
                Event::Packet(Err(err)) => Err(Closing::unreadable(&err)),
                Event::Flushed(true) => Ok(()),
                Event::Flushed(false) => Err(Closing::gone("the connection is gone")),
                Event::Silent => Err(Closing::unreadable::<V::Codec>(&RecvError::KeepAlive)),
                Event::Woken => {
                    self.queue_drained = false;
                    Ok(())
                }
                Event::Send => self.send_batch(),
            };
            if let Err(closing) = step {
                if closing.reason.is_some() {
                    tracing::debug!(client_id = %self.conn.session.client_id, why = closing.why, "closing the connection");
                }
                if self.dialect.closing(&self.io, &closing) && !kicked {
                    self.linger().await;
                }
                break closing.why;
            }
            if !self.reading && self.handling.is_empty() && self.answers.is_empty() {
                break "the client ended the connection";
            }
        };
        self.tally.flush(&self.conn.broker().metrics);
        self.settle_pending();
        // The session is let go before the socket closes: a client that saw its connection
        // end may count on its subscriptions being gone (a message published after is not
        // routed to its ended session, or a shared subscription's next member gets it).
        self.conn.finish();
        let _ = self.io.shutdown().await;
        ended
    }

    /// Reads (and drops) what the client still sends, until it closes or [`LINGER`] is up.
    async fn linger(&self) {
        let codec = self.dialect.codec();
        let drain = async {
            if poll_fn(|cx| self.io.poll_flush(cx)).await.is_ok() {
                while self.io.recv(codec).await.is_ok() {}
            }
        };
        let _ = ntex::time::timeout(LINGER, drain).await;
    }

    fn has_credit(&self) -> bool {
        self.unacknowledged < self.max_inflight
    }

    /// Whether the next packet may be read: none of this client's packets is waiting, or
    /// fewer than the receive maximum are (a 3.1.1 client is told none, and a 5.0 client may
    /// pipeline other packets beside its PUBLISHes) and the node holds fewer than its bound.
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

    fn packet(&mut self, item: <V::Codec as Decoder>::Item) -> Result<(), Closing> {
        match V::inbound(item) {
            Inbound::Publish(publish, payload) => {
                let size = V::payload_size(&publish) as usize;
                if payload.len() < size {
                    let mut whole = BytesMut::with_capacity(size);
                    whole.extend_from_slice(&payload);
                    self.partial = Some(Box::new((publish, whole)));
                    return Ok(());
                }
                V::publish(self, publish, payload)
            }
            Inbound::Chunk(chunk, done) => {
                let Some(mut partial) = self.partial.take() else {
                    return Err(Closing::new(
                        "a payload chunk without a PUBLISH",
                        DisconnectReasonCode::MalformedPacket,
                    ));
                };
                partial.1.extend_from_slice(&chunk);
                if done {
                    let (publish, whole) = *partial;
                    V::publish(self, publish, whole.freeze())
                } else {
                    self.partial = Some(partial);
                    Ok(())
                }
            }
            Inbound::Packet(packet) => V::control(self, packet),
        }
    }

    /// Takes a packet id for a packet in handling; false if it is still in use.
    pub(super) fn claim_id(&mut self, packet_id: NonZeroU16) -> bool {
        self.busy_ids.insert(packet_id)
    }

    /// How many of the client's packets with a packet id are being handled.
    pub(super) fn busy(&self) -> usize {
        self.busy_ids.len()
    }

    /// Queues the handling of a packet behind the earlier ones.
    pub(super) fn wait(&mut self, handling: Handling<V::Answer>) {
        self.conn.broker().metrics.packets_pending.inc();
        self.handling.push_back(handling);
    }

    /// Answers a packet once the earlier ones are.
    pub(super) fn respond(&mut self, answer: Answer<V::Answer>) -> Result<(), Closing> {
        if self.handling.is_empty() {
            self.answer(answer)
        } else {
            self.wait(Box::pin(std::future::ready(Handled::answer(answer))));
            Ok(())
        }
    }

    /// Answers a packet once the subscriptions have settled (see [`Conn::settled`]), and
    /// the earlier packets are answered.
    pub(super) fn respond_settled(&mut self, answer: Answer<V::Answer>) {
        let conn = self.conn.clone();
        self.wait(Box::pin(async move {
            conn.settled().await;
            Handled::answer(answer)
        }));
    }

    /// Subscribes to `full` at once (a PUBLISH read after the SUBSCRIBE is routed to it) with
    /// the options `options` makes of the QoS granted; retained messages to send after the
    /// SUBACK are added to `retained`.
    pub(super) fn subscribe_to(
        &self,
        full: &str,
        requested: QoS,
        options: impl FnOnce(QoS, ReadCheck) -> SubOptions,
        retained: &mut Vec<(String, SubOptions)>,
    ) -> Result<QoS, NotSubscribed> {
        let conn = &self.conn;
        let filter = SubscriptionFilter::parse(full, true).map_err(|_| NotSubscribed::Invalid)?;
        let read = conn
            .may_subscribe(&filter.filter)
            .ok_or(NotSubscribed::NotAuthorized)?;
        let qos = crate::message::min_qos(requested, conn.listener.config.max_qos());
        let opts = options(qos, read);
        let existed = conn
            .broker()
            .subscribe(&conn.session, full, filter.clone(), opts);
        if filter.group.is_none() && opts.wants_retained(existed) {
            retained.push((filter.filter, opts));
        }
        Ok(qos)
    }

    /// The SUBACK, and the retained messages that follow it, once the subscriptions settled.
    pub(super) fn subscribed(
        &mut self,
        suback: V::Answer,
        packet_id: NonZeroU16,
        retained: Vec<(String, SubOptions)>,
    ) {
        self.respond_settled(Answer {
            packet: Some(suback),
            frees: Some(packet_id),
            retained,
        });
    }

    /// Takes a client's message, checked by the dialect: the platform hook, then routing and
    /// the acknowledgement in arrival order. `resent`: the client flagged it sent before.
    pub(super) fn take(
        &mut self,
        message: Message,
        packet_id: Option<NonZeroU16>,
        resent: bool,
    ) -> Result<(), Closing> {
        let conn = &self.conn;
        let qos = message.qos;
        if resent && qos == QoS::AtLeastOnce {
            // QoS 1 allows duplicates: a resent message the broker had already taken (its
            // PUBACK lost with a connection or a node) is taken again. Counted, not hidden.
            conn.broker().metrics.resent_received.inc();
        }
        let durable_first = packet_id.is_some() && conn.broker().persists();
        let outcome = conn.admissible(&message);
        match conn.broker().hook() {
            Some(hook) if outcome == PublishOutcome::Accepted => {
                let conn = conn.clone();
                self.wait(Box::pin(async move {
                    let (outcome, taken) = conn.hand_over(hook, message).await;
                    let (taken, mut handled) =
                        published::<V>(&conn, packet_id, qos, outcome, taken, durable_first);
                    handled.route = taken.map(Box::new);
                    handled
                }));
                Ok(())
            }
            _ => {
                let taken = (outcome == PublishOutcome::Accepted).then_some(message);
                let (taken, mut handled) =
                    published::<V>(conn, packet_id, qos, outcome, taken, durable_first);
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
    fn handled(&mut self, mut handled: Handled<V::Answer>) -> Result<(), Closing> {
        let route = handled.route.take().map(|message| *message);
        self.settle(route, handled)
    }

    /// [`Dispatcher::handled`], with the message to route apart.
    fn settle(
        &mut self,
        route: Option<Message>,
        handled: Handled<V::Answer>,
    ) -> Result<(), Closing> {
        if let Some(closing) = handled.refused {
            return Err(closing);
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
                        Err(Closing::new(
                            "the broker cannot store the message",
                            DisconnectReasonCode::UnspecifiedError,
                        ))
                    }
                }
            }));
            return Ok(());
        }
        self.answer(handled.answer)
    }

    fn hold(&mut self, waiting: Waiting<V::Answer>) {
        self.conn.broker().metrics.packets_pending.inc();
        self.answers.push_back(waiting);
    }

    /// Writes an answer now, or after the answers held back before it.
    fn answer(&mut self, answer: Answer<V::Answer>) -> Result<(), Closing> {
        if self.answers.is_empty() {
            self.write(answer)
        } else {
            self.hold(Box::pin(std::future::ready(Ok(answer))));
            Ok(())
        }
    }

    fn write(&mut self, answer: Answer<V::Answer>) -> Result<(), Closing> {
        if let Some(id) = answer.frees {
            self.busy_ids.remove(&id);
        }
        if let Some(packet) = answer.packet
            && self
                .io
                .encode(V::encoded(packet), self.dialect.codec())
                .is_err()
        {
            return Err(Closing::new(
                "an answer could not be written",
                DisconnectReasonCode::ImplementationSpecificError,
            ));
        }
        for (filter, opts) in answer.retained {
            self.conn
                .broker()
                .deliver_retained(&self.conn.session, &filter, opts);
        }
        Ok(())
    }

    /// The client acknowledged a QoS 1 (PUBACK) or QoS 2 (PUBCOMP) message, or refused it.
    pub(super) fn acknowledged(&mut self, packet_id: NonZeroU16) {
        if self.conn.session.acknowledged(packet_id) {
            self.unacknowledged = self.unacknowledged.saturating_sub(1);
        }
    }

    /// The client has a QoS 2 message (PUBREC): it is released, and done at PUBCOMP.
    pub(super) fn received(&mut self, packet_id: NonZeroU16) -> Result<(), Closing> {
        self.respond(Answer::packet(V::release(packet_id), None))
    }

    /// Sends up to [`BATCH`] queued messages, as far as the client's credit and socket allow: a
    /// run of QoS 0 messages is taken under one lock, QoS 1/2 ones one by one (each takes credit).
    fn send_batch(&mut self) -> Result<(), Closing> {
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
                let outcome = if out.qos != QoS::AtMostOnce && out.packet_id.is_none() {
                    SendOutcome::Unsendable
                } else {
                    self.dialect.send(&self.io, &out, now)
                };
                match outcome {
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
                    SendOutcome::Closed => return Err(Closing::gone("the connection is gone")),
                }
            }
        }
        // Counted per turn: a subscriber whose queue never empties still shows what it sent.
        self.tally.flush(&self.conn.broker().metrics);
        Ok(())
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

/// How long a client may be silent, and when it was last heard from: one and a half times its
/// keep alive [MQTT-3.1.2-24] (5.0: [MQTT-3.1.2-22]). The timer is set again only when it goes
/// off: a packet just notes when it came.
struct KeepAlive {
    allowed: Duration,
    /// None when the client may be silent for any time.
    timer: Option<Sleep>,
    heard: Instant,
}

impl KeepAlive {
    fn new(keep_alive: Seconds) -> KeepAlive {
        let allowed = Duration::from_millis(u64::from(keep_alive.0) * 1500);
        KeepAlive {
            allowed,
            timer: (!keep_alive.is_zero()).then(|| ntex::time::sleep(allowed)),
            heard: ntex::time::now(),
        }
    }

    /// Ready when the client has been silent for longer than it may be.
    fn poll(&self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(timer) = &self.timer else {
            return Poll::Pending;
        };
        loop {
            ready!(timer.poll_elapsed(cx));
            let silent = ntex::time::now().saturating_duration_since(self.heard);
            if silent >= self.allowed {
                return Poll::Ready(());
            }
            timer.reset(Millis::from(self.allowed - silent));
        }
    }
}

/// Ready the second time it is polled: the task awaiting it goes to the back of its thread's
/// queue of ready tasks. (tokio's `yield_now` also waits for the thread's next look at its
/// sockets: a system call.)
fn behind_others() -> impl Future<Output = ()> {
    let mut waited = false;
    poll_fn(move |cx| {
        if waited {
            return Poll::Ready(());
        }
        waited = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
}

/// Futures that finish in the order they were queued. It holds a `FuturesOrdered` only while
/// it has some (boxed): one allocates as it is created, and is 64 bytes, which an idle
/// connection should not pay for.
struct InOrder<F: Future>(Option<Box<FuturesOrdered<F>>>);

impl<F: Future> Default for InOrder<F> {
    fn default() -> Self {
        InOrder(None)
    }
}

impl<F: Future> InOrder<F> {
    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |queue| queue.len())
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push_back(&mut self, future: F) {
        self.0
            .get_or_insert_with(|| Box::new(FuturesOrdered::new()))
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
fn published<V: Dialect>(
    conn: &Conn,
    packet_id: Option<NonZeroU16>,
    qos: QoS,
    outcome: PublishOutcome,
    taken: Option<Message>,
    durable_first: bool,
) -> (Option<Message>, Handled<V::Answer>) {
    match V::acknowledgement(conn, packet_id, qos, outcome) {
        Ok(packet) => {
            let answer = match packet {
                Some(packet) => Answer::packet(packet, packet_id),
                None => Answer::none(),
            };
            let handled = Handled {
                route: None,
                durable_first: durable_first && outcome == PublishOutcome::Accepted,
                answer,
                refused: None,
            };
            (taken, handled)
        }
        Err(closing) => {
            let handled = Handled {
                route: None,
                durable_first: false,
                answer: Answer::none(),
                refused: Some(closing),
            };
            (None, handled)
        }
    }
}

#[cfg(test)]
mod footprint {
    use super::*;
    use crate::connection::{v3, v5};

    fn future_size<A, F: FnOnce(A) -> Fut, Fut>(_: F) -> usize {
        std::mem::size_of::<Fut>()
    }

    /// What an idle connection holds for its life: the future serving it (its handshake
    /// was boxed and is gone) and its dispatcher. About half a KiB each at most: a whole
    /// message or CONNECT kept inline by accident (as partly moved values in an async fn are)
    /// costs every device.
    #[test]
    fn an_idle_connection_keeps_a_small_future_and_dispatcher() {
        let serving = future_size(crate::connection::Admitted::serve);
        assert!(serving <= 640, "serving is {serving} bytes");
        for (version, running, dispatcher) in [
            (
                "3.1.1",
                future_size(Dispatcher::<v3::V3>::serve),
                std::mem::size_of::<Dispatcher<v3::V3>>(),
            ),
            (
                "5.0",
                future_size(Dispatcher::<v5::V5>::serve),
                std::mem::size_of::<Dispatcher<v5::V5>>(),
            ),
        ] {
            assert!(
                running <= 512,
                "{version}: the dispatcher's loop is {running} bytes"
            );
            assert!(
                dispatcher <= 512,
                "{version}: the dispatcher is {dispatcher} bytes"
            );
        }
    }
}
