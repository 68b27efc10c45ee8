//! Answers to a client's packets that finish after ntex-mqtt's dispatcher has moved on (see
//! `guard`): written to the connection in the order the packets arrived, like the dispatcher's
//! own answers, and a failure handed back to the dispatcher, which closes the connection.
//!
//! The packets waiting here are the node's memory under overload (a pending PUBLISH holds its
//! decoded packet and its handling), so they are bounded twice: per connection, and per node
//! (`broker.max_pending_packets`, counted across connections and threads in a shared gauge).
//! Past the node's bound a connection that has packets waiting is not read from until they are
//! answered; one with none waiting is, so clients whose packets are handled at once (QoS 0
//! routing, PINGREQ) are not held up by those waiting for the queue.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::task::Poll;

use ntex::channel::condition::Condition;
use ntex::codec::Encoder;
use ntex::io::IoRef;
use ntex::task::LocalWaker;
use ntex_mqtt::ProtocolError;
use ntex_mqtt::error::{DispatcherError, EncodeError};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

/// How many answers may wait before the client's next packet is read: as many as a client can
/// have packet ids for. (A 5.0 client keeps within the receive maximum; a 3.1.1 client has no
/// such limit, and QoS 0 publishes behind a waiting answer have no packet id.)
const WAITING_ANSWERS: usize = u16::MAX as usize;

/// The node-wide bound on waiting packets.
pub(crate) struct NodeBound {
    /// Packets waiting on the whole node (the `broker_packets_pending` gauge).
    pub waiting: Gauge,
    pub limit: usize,
    /// Counts the pauses the bound causes.
    pub paused: Counter,
}

impl NodeBound {
    fn reached(&self) -> bool {
        usize::try_from(self.waiting.get()).unwrap_or(0) >= self.limit
    }
}

pub(crate) struct Replies<C: Encoder, E> {
    io: IoRef,
    codec: C,
    node: NodeBound,
    /// Not read from because of the node's bound (counted once per pause).
    paused: Cell<bool>,
    /// Answers in packet order, from the oldest one not yet written: `None` while its packet is
    /// still being handled.
    queue: RefCell<VecDeque<Option<Option<C::Item>>>>,
    /// The number of the queue's front (packets are numbered as they are queued).
    front: Cell<u64>,
    /// Woken when an answer leaves the queue.
    room: LocalWaker,
    /// A failure for the dispatcher, taken by the guard's `poll`.
    failure: Cell<Option<DispatcherError<E>>>,
    stopping: Cell<bool>,
    stopped: Condition,
}

impl<C: Encoder<Error = EncodeError>, E> Replies<C, E> {
    pub(crate) fn new(io: IoRef, codec: C, node: NodeBound) -> Self {
        Replies {
            io,
            codec,
            node,
            paused: Cell::new(false),
            queue: RefCell::default(),
            front: Cell::new(0),
            room: LocalWaker::new(),
            failure: Cell::new(None),
            stopping: Cell::new(false),
            stopped: Condition::new(),
        }
    }

    /// No answer is waiting: the next one can go straight out.
    pub(crate) fn is_idle(&self) -> bool {
        self.queue.borrow().is_empty()
    }

    /// Takes a place for the answer of the packet being handled; returns its number.
    pub(crate) fn reserve(&self) -> u64 {
        let mut queue = self.queue.borrow_mut();
        queue.push_back(None);
        self.node.waiting.inc();
        self.front.get() + queue.len() as u64 - 1
    }

    /// The packet numbered `place` has been handled: its answer is written once every earlier
    /// one has been; an error closes the connection at once.
    pub(crate) fn settle(&self, place: u64, answer: Result<Option<C::Item>, DispatcherError<E>>) {
        let answer = answer.unwrap_or_else(|err| {
            self.fail(err);
            None
        });
        let mut queue = self.queue.borrow_mut();
        let Some(slot) = place
            .checked_sub(self.front.get())
            .and_then(|index| usize::try_from(index).ok())
            .and_then(|index| queue.get_mut(index))
        else {
            return;
        };
        *slot = Some(answer);
        let mut written = false;
        while let Some(Some(_)) = queue.front() {
            if let Some(Some(Some(item))) = queue.pop_front()
                && let Err(err) = self.io.encode(item, &self.codec)
            {
                self.fail(ProtocolError::Encode(err).into());
            }
            self.front.set(self.front.get() + 1);
            self.node.waiting.dec();
            written = true;
        }
        if written {
            self.room.wake();
        }
    }

    fn fail(&self, err: DispatcherError<E>) {
        // The first failure is the one reported.
        let first = self.failure.take();
        self.failure.set(first.or(Some(err)));
        self.io.notify_dispatcher();
    }

    /// The failure to hand to the dispatcher, if any.
    pub(crate) fn take_failure(&self) -> Result<(), DispatcherError<E>> {
        match self.failure.take() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// Waits until the client's next packet may be read: none of its packets is waiting, or
    /// fewer than [`WAITING_ANSWERS`] are and the node holds fewer than its bound.
    pub(crate) async fn room(&self) {
        poll_fn(|cx| {
            let waiting = self.queue.borrow().len();
            if waiting == 0 || (waiting < WAITING_ANSWERS && !self.node.reached()) {
                self.paused.set(false);
                return Poll::Ready(());
            }
            if waiting < WAITING_ANSWERS && !self.paused.replace(true) {
                self.node.paused.inc();
            }
            // Woken when one of its own answers goes out.
            self.room.register(cx.waker());
            Poll::Pending
        })
        .await;
    }

    /// The connection is closing: packets still being handled are dropped.
    pub(crate) fn stop(&self) {
        self.stopping.set(true);
        self.stopped.notify();
    }

    pub(crate) async fn stopped(&self) {
        let stopped = self.stopped.wait();
        if !self.stopping.get() {
            stopped.await;
        }
    }
}

impl<C: Encoder, E> Drop for Replies<C, E> {
    fn drop(&mut self) {
        // Packets of a closed connection no longer wait.
        let left = self.queue.get_mut().len();
        self.node
            .waiting
            .dec_by(i64::try_from(left).unwrap_or(i64::MAX));
    }
}
