//! The PROXY protocol, version 2, on a listener behind a load balancer (HAProxy
//! `send-proxy-v2`): the balancer sends a binary header first that names the client's own
//! address, which the connection reports from then on — in logs, to the ACL, in the client list.
//! A listener that expects it refuses a connection without it (anyone could otherwise claim any
//! address); a `LOCAL` header (the balancer's own health check) keeps the socket's address.

use std::any::{Any, TypeId};
use std::io;
use std::net::SocketAddr;

use ntex::codec::Decoder;
use ntex::io::types::PeerAddr;
use ntex::io::{Filter, FilterBuf, FilterLayer, Io, Layer};
use ntex::service::{ServiceFactory, fn_service};
use ntex::time::{Seconds, timeout};
use ntex::util::BytesMut;
use ppp::v2::{self, Addresses, ParseError};

/// A connection's client address, as the balancer named it.
#[derive(Debug)]
pub(crate) struct Proxied {
    peer: Option<SocketAddr>,
}

impl FilterLayer for Proxied {
    fn query(&self, id: TypeId) -> Option<Box<dyn Any>> {
        if id == TypeId::of::<PeerAddr>() {
            return self
                .peer
                .map(|peer| Box::new(PeerAddr(peer)) as Box<dyn Any>);
        }
        None
    }

    fn process_read_buf(&self, buf: &FilterBuf<'_>) -> io::Result<()> {
        buf.with_read_buffers(|src, dst| {
            if let Some(src) = src.take() {
                dst.extend_from_slice(&src);
            }
        });
        Ok(())
    }

    fn process_write_buf(&self, buf: &FilterBuf<'_>) -> io::Result<()> {
        buf.with_write_buffers(|src, dst| src.move_to(dst));
        Ok(())
    }
}

/// Reads the PROXY header of a connection (within `within`), then hands the connection on,
/// reporting the client address it names.
pub(crate) fn accept<F: Filter, Cfg, E: From<io::Error> + 'static>(
    within: Seconds,
) -> impl ServiceFactory<Io<F>, Cfg, Response = Io<Layer<Proxied, F>>, Error = E, InitError = ()> {
    fn_service(move |io: Io<F>| async move {
        let peer = match timeout(within, read_header(&io)).await {
            Ok(read) => read?,
            Err(()) => {
                return Err(E::from(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no PROXY protocol header in time",
                )));
            }
        };
        Ok(io.add_filter(Proxied { peer }))
    })
}

/// The client address of the header at the start of the connection (`None`: a `LOCAL`
/// header, or an address that is not IP), taken out of what was read.
async fn read_header<F>(io: &Io<F>) -> io::Result<Option<SocketAddr>> {
    loop {
        if let Some(parsed) = io.with_read_buf(|buf| Header.decode(buf)).transpose() {
            return parsed;
        }
        if io.read_notify().await?.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before its PROXY protocol header",
            ));
        }
    }
}

/// The PROXY protocol v2 header, as a codec: its item is the client address it names (`None`:
/// a `LOCAL` header, or an address that is not IP), and it takes the header out of the buffer.
pub(crate) struct Header;

impl Decoder for Header {
    type Item = Option<SocketAddr>;
    type Error = io::Error;

    fn decode(&self, buf: &mut BytesMut) -> io::Result<Option<Option<SocketAddr>>> {
        match v2::Header::try_from(&buf[..]) {
            Ok(header) => {
                let peer = match header.addresses {
                    Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                    Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                    Addresses::Unspecified | Addresses::Unix(_) => None,
                };
                let _ = buf.split_to(header.len());
                Ok(Some(peer))
            }
            Err(ParseError::Incomplete(_) | ParseError::Partial(..)) => Ok(None),
            Err(err) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("not a PROXY protocol v2 header: {err}"),
            )),
        }
    }
}
