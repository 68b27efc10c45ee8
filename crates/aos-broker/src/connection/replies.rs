//! Answers to a client's packets that finish after ntex-mqtt's dispatcher has moved on (see
//! `guard`): written to the connection in the order the packets arrived, like the dispatcher's
//! own answers, and a failure handed back to the dispatcher, which closes the connection.

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

/// How many answers may wait before the client's next packet is read: as many as a client can
/// have packet ids for. (A 5.0 client keeps within the receive maximum; a 3.1.1 client has no
/// such limit, and QoS 0 publishes behind a waiting answer have no packet id.)
const WAITING_ANSWERS: usize = u16::MAX as usize;

pub(crate) struct Replies<C: Encoder, E> {
    io: IoRef,
    codec: C,
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
    pub(crate) fn new(io: IoRef, codec: C) -> Self {
        Replies {
            io,
            codec,
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

    /// Waits until fewer than [`WAITING_ANSWERS`] answers are waiting.
    pub(crate) async fn room(&self) {
        poll_fn(|cx| {
            if self.queue.borrow().len() < WAITING_ANSWERS {
                Poll::Ready(())
            } else {
                self.room.register(cx.waker());
                Poll::Pending
            }
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
