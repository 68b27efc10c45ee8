//! The byte stream of one MQTT connection, as its dispatcher reads and writes it.
//!
//! A plain TCP connection is the broker's own: the one task serving the connection reads and
//! writes its socket, and holds a buffer only while bytes wait in it. ntex-io, which TLS and
//! WebSocket connections run on (it does those protocols), keeps two I/O tasks, two page queues
//! and its own state per socket: more than an idle device's session costs.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::task::{Context, Poll, ready};

use ntex::codec::{Decoder, Encoder};
use ntex::io::{IoBoxed, RecvError};
use ntex::time::{Seconds, timeout};
use ntex::util::{BytePageSize, BytePages, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Unwritten bytes from which a connection is not keeping up: it is neither read from nor sent
/// more until its socket takes them.
const WRITE_HIGH: usize = 16 * 1024;
/// Pages written by one system call at most.
const WRITE_SLICES: usize = 16;
/// Room a read needs at least in the read buffer; below it, the buffer grows.
const READ_ROOM: usize = 512;
/// How long what is still unwritten may take to go out when the connection closes.
const CLOSE_FLUSH: Seconds = Seconds(1);

/// A connection's byte stream.
pub(crate) enum Transport {
    /// A plain TCP socket, read and written by the connection's own task.
    Tcp(Tcp),
    /// An ntex-io stack (TLS, WebSocket), with I/O tasks of its own.
    Stacked(IoBoxed),
}

/// A plain TCP connection.
pub(crate) struct Tcp {
    stream: TcpStream,
    /// The client's address: the socket's peer, or the one a PROXY protocol header named.
    peer: Option<SocketAddr>,
    /// Bytes read and not decoded yet; no buffer while there are none.
    read: RefCell<Option<BytesMut>>,
    /// Bytes encoded and not written yet; no buffer while there are none.
    write: RefCell<Option<BytePages>>,
    /// The client closed its side of the connection.
    eof: Cell<bool>,
    /// What is buffered waited behind the thread's other ready tasks, and they added nothing.
    waited: Cell<bool>,
}

impl Tcp {
    /// A TCP connection just accepted from `peer`.
    pub(crate) fn new(stream: TcpStream, peer: SocketAddr) -> Tcp {
        Tcp {
            stream,
            peer: Some(peer),
            read: RefCell::new(None),
            write: RefCell::new(None),
            eof: Cell::new(false),
            waited: Cell::new(false),
        }
    }

    /// The client's address is `peer`, as a PROXY protocol header named it.
    pub(crate) fn set_peer(&mut self, peer: SocketAddr) {
        self.peer = Some(peer);
    }

    /// The next item `codec` decodes from what the client sent; what it does not take stays.
    pub(crate) fn poll_recv<C: Decoder>(
        &self,
        codec: &C,
        cx: &mut Context<'_>,
    ) -> Poll<Result<C::Item, RecvError<C>>> {
        loop {
            match self.decode(codec) {
                Ok(Some(item)) => return Poll::Ready(Ok(item)),
                Ok(None) => {}
                Err(err) => return Poll::Ready(Err(RecvError::Decoder(err))),
            }
            if self.eof.get() {
                return Poll::Ready(Err(RecvError::PeerGone(None)));
            }
            if let Err(err) = ready!(self.stream.poll_read_ready(cx)) {
                return Poll::Ready(Err(RecvError::PeerGone(Some(err))));
            }
            let mut slot = self.read.borrow_mut();
            let buf = slot.get_or_insert_with(|| BytesMut::with_page_size(BytePageSize::Size16));
            if buf.capacity() - buf.len() < READ_ROOM {
                buf.reserve(BytePageSize::Size16.capacity());
            }
            match self.stream.try_read_buf(buf) {
                Ok(0) => self.eof.set(true),
                Ok(_) => {}
                // Readiness is cleared: the next poll waits for the socket.
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => return Poll::Ready(Err(RecvError::PeerGone(Some(err)))),
            }
        }
    }

    /// Decodes from the read buffer, which is let go once empty.
    fn decode<C: Decoder>(&self, codec: &C) -> Result<Option<C::Item>, C::Error> {
        let mut slot = self.read.borrow_mut();
        let Some(buf) = slot.as_mut() else {
            return Ok(None);
        };
        let decoded = if buf.is_empty() {
            Ok(None)
        } else {
            codec.decode(buf)
        };
        if buf.is_empty() {
            *slot = None;
        }
        decoded
    }

    fn with_write<R>(&self, f: impl FnOnce(&mut BytePages) -> R) -> R {
        self.waited.set(false);
        f(self
            .write
            .borrow_mut()
            .get_or_insert_with(BytePages::default))
    }

    fn unwritten(&self) -> usize {
        self.write.borrow().as_ref().map_or(0, BytePages::len)
    }

    /// Writes what is buffered; ready once all of it is written (the buffer let go).
    ///
    /// Unless there is much of it, it first waits behind the thread's other ready tasks, which
    /// may add to it (a subscriber's next messages, the PUBACKs of a publisher's next
    /// PUBLISHes): one write for many packets, on both sides of the socket, is where the CPU
    /// of a busy broker and its clients goes.
    fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let unwritten = self.unwritten();
        if (1..WRITE_HIGH).contains(&unwritten) && !self.waited.replace(true) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        loop {
            let mut slot = self.write.borrow_mut();
            let Some(pages) = slot.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            if pages.is_empty() {
                *slot = None;
                return Poll::Ready(Ok(()));
            }
            ready!(self.stream.poll_write_ready(cx))?;
            let written = {
                let mut slices = [io::IoSlice::new(&[]); WRITE_SLICES];
                let mut count = 0;
                for (slice, page) in slices.iter_mut().zip(pages.iter()) {
                    *slice = io::IoSlice::new(page);
                    count += 1;
                }
                self.stream.try_write_vectored(&slices[..count])
            };
            match written {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => pages.advance_to(n),
                // Readiness is cleared: the next poll waits for the socket.
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => return Poll::Ready(Err(err)),
            }
        }
    }
}

impl Transport {
    /// The next item `codec` decodes; what it does not take stays for the next codec.
    pub(crate) fn poll_recv<C: Decoder>(
        &self,
        codec: &C,
        cx: &mut Context<'_>,
    ) -> Poll<Result<C::Item, RecvError<C>>> {
        match self {
            Transport::Tcp(tcp) => tcp.poll_recv(codec, cx),
            Transport::Stacked(io) => io.poll_recv(codec, cx),
        }
    }

    /// Reads the next item, waiting for it.
    pub(crate) async fn recv<C: Decoder>(&self, codec: &C) -> Result<C::Item, RecvError<C>> {
        poll_fn(|cx| self.poll_recv(codec, cx)).await
    }

    /// Encodes `item` into the write buffer.
    pub(crate) fn encode<C: Encoder>(&self, item: C::Item, codec: &C) -> Result<(), C::Error> {
        match self {
            Transport::Tcp(tcp) => tcp.with_write(|pages| codec.encodev(item, pages)),
            Transport::Stacked(io) => io.encode(item, codec),
        }
    }

    /// Adds bytes encoded before (a PUBLISH shared by its subscribers) to the write buffer.
    pub(crate) fn write_bytes(&self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Transport::Tcp(tcp) => {
                tcp.with_write(|pages| pages.extend_from_slice(bytes));
                Ok(())
            }
            Transport::Stacked(io) => io.encode_slice(bytes),
        }
    }

    /// Whether the client is not taking what it is sent fast enough.
    pub(crate) fn is_wr_backpressure(&self) -> bool {
        match self {
            Transport::Tcp(tcp) => tcp.unwritten() >= WRITE_HIGH,
            Transport::Stacked(io) => io.is_wr_backpressure(),
        }
    }

    /// Whether the dispatcher has to write out what it buffered (ntex-io writes on its own,
    /// and is waited for only when it falls behind).
    pub(crate) fn wants_flush(&self) -> bool {
        match self {
            Transport::Tcp(tcp) => tcp.unwritten() > 0,
            Transport::Stacked(io) => io.is_wr_backpressure(),
        }
    }

    /// Writes what is buffered; ready once the socket took it.
    pub(crate) fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Transport::Tcp(tcp) => tcp.poll_flush(cx),
            Transport::Stacked(io) => io.poll_flush(cx, false),
        }
    }

    /// Closes the connection: what is buffered is written first (for at most a second).
    pub(crate) async fn shutdown(&mut self) {
        match self {
            Transport::Tcp(tcp) => {
                let _ = timeout(CLOSE_FLUSH, poll_fn(|cx| tcp.poll_flush(cx))).await;
                let _ = tcp.stream.shutdown().await;
            }
            Transport::Stacked(io) => {
                io.close();
                let _ = io.shutdown().await;
            }
        }
    }

    /// The client's address, if known.
    pub(crate) fn peer_addr(&self) -> Option<SocketAddr> {
        match self {
            Transport::Tcp(tcp) => tcp.peer,
            Transport::Stacked(io) => io.query::<ntex::io::types::PeerAddr>().get().map(|a| a.0),
        }
    }

    /// The fingerprint of the client certificate a TLS listener verified, if the client sent
    /// one.
    pub(crate) fn peer_certificate(&self) -> Option<String> {
        match self {
            Transport::Tcp(_) => None,
            Transport::Stacked(io) => io
                .query::<ntex_tls::rustls::PeerCert<'static>>()
                .as_ref()
                .map(|cert| aos_auth::secret::certificate_fingerprint(&cert.0)),
        }
    }
}
