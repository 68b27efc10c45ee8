//! A lean MQTT client (3.1.1 and 5.0) for the load generator: just the packets a benchmark
//! needs, written in batches straight to the socket, so that the tool costs far less CPU than
//! the brokers it measures and adds no queueing of its own to the latencies.

use std::time::Duration;

use anyhow::{Context, bail};
use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Protocol {
    #[value(name = "3.1.1")]
    V311,
    #[value(name = "5.0")]
    V5,
}

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct Target {
    pub host: String,
    pub port: u16,
    /// Where subscribers connect (another node of a cluster, or `port`).
    pub subscriber_port: u16,
    pub protocol: Protocol,
    /// Sent in every CONNECT, when given.
    pub username: Option<String>,
    pub password: Option<String>,
    /// Subscribers connect with a persistent session (clean session 0; 5.0: expiry 1 hour).
    pub persistent_subscribers: bool,
}

impl Target {
    /// The target of the subscribers' connections.
    pub fn for_subscribers(&self) -> Target {
        Target {
            port: self.subscriber_port,
            ..self.clone()
        }
    }
}

/// Keep alive announced in CONNECT: longer than any run, so no PINGREQ is needed.
const KEEP_ALIVE_SECS: u16 = 600;

/// MQTT control packet types (the high nibble of the first byte).
pub mod kind {
    pub const CONNACK: u8 = 2;
    pub const PUBLISH: u8 = 3;
    pub const PUBACK: u8 = 4;
    pub const PUBREC: u8 = 5;
    pub const PUBREL: u8 = 6;
    pub const PUBCOMP: u8 = 7;
    pub const SUBACK: u8 = 9;
}

fn put_var_int(out: &mut BytesMut, mut n: usize) {
    loop {
        let byte = (n % 128) as u8;
        n /= 128;
        if n == 0 {
            out.put_u8(byte);
            return;
        }
        out.put_u8(byte | 0x80);
    }
}

/// A variable byte integer at the start of `buf`: (value, bytes used), or None if incomplete.
fn var_int(buf: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0usize;
    for (i, byte) in buf.iter().take(4).enumerate() {
        value |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

fn put_str(out: &mut BytesMut, s: &str) {
    out.put_u16(s.len() as u16);
    out.put_slice(s.as_bytes());
}

/// Appends one packet: `first` byte, then `body` written by the closure into a scratch buffer.
fn put_packet(out: &mut BytesMut, first: u8, body: impl FnOnce(&mut BytesMut)) {
    let mut scratch = BytesMut::new();
    body(&mut scratch);
    out.put_u8(first);
    put_var_int(out, scratch.len());
    out.put_slice(&scratch);
}

/// Appends a PUBLISH (`packet_id` is ignored at QoS 0).
pub fn put_publish(
    out: &mut BytesMut,
    protocol: Protocol,
    topic: &str,
    qos: u8,
    packet_id: u16,
    payload: &[u8],
) {
    let len = 2
        + topic.len()
        + if qos > 0 { 2 } else { 0 }
        + usize::from(protocol == Protocol::V5)
        + payload.len();
    out.reserve(len + 5);
    out.put_u8(0x30 | (qos << 1));
    put_var_int(out, len);
    put_str(out, topic);
    if qos > 0 {
        out.put_u16(packet_id);
    }
    if protocol == Protocol::V5 {
        out.put_u8(0); // no properties
    }
    out.put_slice(payload);
}

/// Appends a PUBACK, PUBREC, PUBREL or PUBCOMP (reason "success", which 5.0 lets us omit).
pub fn put_ack(out: &mut BytesMut, kind: u8, packet_id: u16) {
    out.put_u8((kind << 4) | if kind == kind::PUBREL { 0x02 } else { 0 });
    out.put_u8(2);
    out.put_u16(packet_id);
}

/// A received PUBLISH: its QoS, packet id (0 at QoS 0) and payload.
pub struct Publish<'a> {
    pub qos: u8,
    pub packet_id: u16,
    pub payload: &'a [u8],
}

pub fn parse_publish(first: u8, body: &[u8], protocol: Protocol) -> Option<Publish<'_>> {
    let qos = (first >> 1) & 3;
    let topic_len = usize::from(u16::from_be_bytes(body.get(..2)?.try_into().ok()?));
    let mut at = 2 + topic_len;
    let mut packet_id = 0;
    if qos > 0 {
        packet_id = u16::from_be_bytes(body.get(at..at + 2)?.try_into().ok()?);
        at += 2;
    }
    if protocol == Protocol::V5 {
        let (props, used) = var_int(body.get(at..)?)?;
        at += used + props;
    }
    Some(Publish {
        qos,
        packet_id,
        payload: body.get(at..)?,
    })
}

/// The packet id carried by an acknowledgement packet.
pub fn ack_id(body: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(body.get(..2)?.try_into().ok()?))
}

/// The reading side of a connection: bytes in, whole packets out.
pub struct Reader {
    half: OwnedReadHalf,
    buf: BytesMut,
}

impl Reader {
    /// Reads what has arrived (cancel-safe: nothing is lost if the future is dropped);
    /// false when the broker closed the connection.
    pub async fn fill(&mut self) -> std::io::Result<bool> {
        self.buf.reserve(64 * 1024);
        Ok(self.half.read_buf(&mut self.buf).await? > 0)
    }

    /// Hands every complete packet read so far to `on_packet` (first byte, body).
    pub fn packets(&mut self, mut on_packet: impl FnMut(u8, &[u8])) {
        loop {
            let Some((len, used)) = self.buf.get(1..).and_then(var_int) else {
                return;
            };
            let total = 1 + used + len;
            if self.buf.len() < total {
                return;
            }
            on_packet(self.buf[0], &self.buf[1 + used..total]);
            self.buf.advance(total);
        }
    }

    /// Waits for the next packet of `want` kind, skipping others.
    async fn expect(&mut self, want: u8, what: &str) -> anyhow::Result<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let mut found = None;
            self.packets(|first, body| {
                if found.is_none() && first >> 4 == want {
                    found = Some(body.to_vec());
                }
            });
            if let Some(body) = found {
                return Ok(body);
            }
            match tokio::time::timeout_at(deadline, self.fill()).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => bail!("the broker closed the connection before {what}"),
                Ok(Err(err)) => return Err(err).context(format!("reading {what}")),
                Err(_) => bail!("no {what} within 30 s"),
            }
        }
    }
}

/// An open MQTT connection, split for a reading and a writing side.
pub struct Connection {
    pub reader: Reader,
    pub writer: OwnedWriteHalf,
    pub protocol: Protocol,
}

impl Connection {
    /// Connects (with a clean session unless `persistent`) and waits for a successful CONNACK.
    pub async fn open(
        target: &Target,
        client_id: &str,
        persistent: bool,
    ) -> anyhow::Result<Connection> {
        let stream = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .with_context(|| {
                format!(
                    "cannot reach a broker at {}:{} ({client_id})",
                    target.host, target.port
                )
            })?;
        stream.set_nodelay(true)?;
        let (half, writer) = stream.into_split();
        let mut connection = Connection {
            reader: Reader {
                half,
                buf: BytesMut::new(),
            },
            writer,
            protocol: target.protocol,
        };
        let v5 = target.protocol == Protocol::V5;
        let mut out = BytesMut::new();
        put_packet(&mut out, 0x10, |b| {
            put_str(b, "MQTT");
            b.put_u8(if v5 { 5 } else { 4 });
            // Clean session / clean start, and the username and password flags.
            let credentials = match (&target.username, &target.password) {
                (Some(_), Some(_)) => 0xc0,
                (Some(_), None) => 0x80,
                _ => 0,
            };
            b.put_u8(if persistent { 0 } else { 0x02 } | credentials);
            b.put_u16(KEEP_ALIVE_SECS);
            match (v5, persistent) {
                // Properties: Session Expiry Interval (0x11) of one hour.
                (true, true) => {
                    b.put_u8(5);
                    b.put_u8(0x11);
                    b.put_u32(3600);
                }
                (true, false) => b.put_u8(0),
                (false, _) => {}
            }
            put_str(b, client_id);
            if let Some(username) = &target.username {
                put_str(b, username);
                if let Some(password) = &target.password {
                    put_str(b, password);
                }
            }
        });
        connection.writer.write_all(&out).await?;
        let connack = connection
            .reader
            .expect(kind::CONNACK, "CONNACK")
            .await
            .with_context(|| format!("client {client_id}"))?;
        match connack.get(1) {
            Some(0) => Ok(connection),
            Some(code) => bail!("client {client_id}: CONNACK refused the connection ({code:#04x})"),
            None => bail!("client {client_id}: malformed CONNACK"),
        }
    }

    /// Subscribes to `filter` and waits for the SUBACK granting it.
    pub async fn subscribe(&mut self, filter: &str, qos: u8) -> anyhow::Result<()> {
        let v5 = self.protocol == Protocol::V5;
        let mut out = BytesMut::new();
        put_packet(&mut out, 0x82, |b| {
            b.put_u16(1);
            if v5 {
                b.put_u8(0);
            }
            put_str(b, filter);
            b.put_u8(qos);
        });
        self.writer.write_all(&out).await?;
        let suback = self.reader.expect(kind::SUBACK, "SUBACK").await?;
        let skip = if v5 {
            let (props, used) = var_int(suback.get(2..).unwrap_or_default()).unwrap_or((0, 1));
            2 + used + props
        } else {
            2
        };
        match suback.get(skip) {
            Some(code) if *code < 0x80 => Ok(()),
            Some(code) => bail!("subscription to {filter} refused ({code:#04x})"),
            None => bail!("malformed SUBACK for {filter}"),
        }
    }

    /// Sends DISCONNECT (best effort: the run is over either way).
    pub async fn disconnect(mut self) {
        let _ = self.writer.write_all(&[0xe0, 0]).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_round_trips_on_both_versions() {
        for protocol in [Protocol::V311, Protocol::V5] {
            for qos in 0..=2 {
                let mut out = BytesMut::new();
                put_publish(&mut out, protocol, "a/b", qos, 7, b"payload");
                let (len, used) = var_int(&out[1..]).expect("length");
                assert_eq!(out.len(), 1 + used + len);
                let p = parse_publish(out[0], &out[1 + used..], protocol).expect("parses");
                assert_eq!((p.qos, p.payload), (qos, &b"payload"[..]));
                assert_eq!(p.packet_id, if qos > 0 { 7 } else { 0 });
            }
        }
    }

    #[test]
    fn var_int_handles_multi_byte_lengths() {
        let mut out = BytesMut::new();
        put_var_int(&mut out, 321_000);
        assert_eq!(var_int(&out), Some((321_000, 3)));
        assert_eq!(var_int(&out[..2]), None);
    }
}
