//! What broker nodes tell one another on the bus.
//!
//! A routed message: who sent it (the sender's incarnation and a sequence number, to
//! drop copies), the client ids of the persistent sessions the sender stored it for, the shared
//! subscriptions it served itself and the members it sends to directly, then the
//! message as the broker's store writes it (`persist`: tenant, QoS,
//! retain flag, 5.0 properties, and the expiry as a wall-clock time — the nodes' clocks are
//! assumed synchronised, as NTP keeps them, to well within the second an expiry counts in).

use std::time::Instant;

use bytes::Bytes;

use aos_core::access::Identity;

use crate::message::Message;
use crate::persist::{self, Reader};

const VERSION: u8 = 1;
/// Routed messages carry the sessions they were stored for since version 2, the shared
/// subscriptions their sender served since version 3.
const ROUTED_VERSION: u8 = 3;

/// A client connected on a node: a connection of its client id elsewhere, if older, is taken
/// over.
#[derive(Debug, PartialEq, Eq)]
pub struct Connected {
    pub sender: String,
    pub client_id: String,
    /// When the connection signed in (milliseconds since the Unix epoch).
    pub signed_in_at_ms: i64,
    /// The device it signed in as, if a device (a device's session is taken over only by it).
    pub device: Option<(String, i64)>,
}

impl Connected {
    pub fn device_of(identity: Option<&Identity>) -> Option<(String, i64)> {
        match identity {
            Some(Identity::Device { uid, tenant }) => Some((uid.clone(), *tenant)),
            _ => None,
        }
    }

    pub fn encode(&self) -> Bytes {
        let mut buf = Vec::with_capacity(64 + self.client_id.len());
        buf.push(VERSION);
        persist::put(&mut buf, self.sender.as_bytes());
        persist::put(&mut buf, self.client_id.as_bytes());
        buf.extend_from_slice(&self.signed_in_at_ms.to_le_bytes());
        match &self.device {
            Some((uid, tenant)) => {
                buf.push(1);
                persist::put(&mut buf, uid.as_bytes());
                buf.extend_from_slice(&tenant.to_le_bytes());
            }
            None => buf.push(0),
        }
        Bytes::from(buf)
    }

    pub fn decode(body: &[u8]) -> Option<Connected> {
        let mut r = Reader::new(body);
        if r.u8()? != VERSION {
            return None;
        }
        let sender = r.text()?.to_string();
        let client_id = r.text()?.to_string();
        let signed_in_at_ms = r.i64()?;
        let device = match r.u8()? {
            0 => None,
            1 => Some((r.text()?.to_string(), r.i64()?)),
            _ => return None,
        };
        r.is_empty().then_some(Connected {
            sender,
            client_id,
            signed_in_at_ms,
            device,
        })
    }
}

/// A node asks the holder of a session to let go of it (`to`: the holder), or the holder
/// answers that it did (`to`: the node that asked).
#[derive(Debug, PartialEq, Eq)]
pub struct Handover {
    pub sender: String,
    pub client_id: String,
    pub to: String,
}

impl Handover {
    pub fn encode(&self) -> Bytes {
        let mut buf =
            Vec::with_capacity(16 + self.sender.len() + self.client_id.len() + self.to.len());
        buf.push(VERSION);
        for text in [&self.sender, &self.client_id, &self.to] {
            persist::put(&mut buf, text.as_bytes());
        }
        Bytes::from(buf)
    }

    pub fn decode(body: &[u8]) -> Option<Handover> {
        let mut r = Reader::new(body);
        if r.u8()? != VERSION {
            return None;
        }
        let handover = Handover {
            sender: r.text()?.to_string(),
            client_id: r.text()?.to_string(),
            to: r.text()?.to_string(),
        };
        r.is_empty().then_some(handover)
    }
}

/// A node asks the others to tell it once they saw version `version` of the record of the
/// session of `client_id` (`to` empty), or one answers that it did (`to`: the node that asked).
#[derive(Debug, PartialEq, Eq)]
pub struct Known {
    pub sender: String,
    pub client_id: String,
    pub version: u64,
    pub to: String,
}

impl Known {
    pub fn encode(&self) -> Bytes {
        let mut buf =
            Vec::with_capacity(24 + self.sender.len() + self.client_id.len() + self.to.len());
        buf.push(VERSION);
        for text in [&self.sender, &self.client_id, &self.to] {
            persist::put(&mut buf, text.as_bytes());
        }
        buf.extend_from_slice(&self.version.to_le_bytes());
        Bytes::from(buf)
    }

    pub fn decode(body: &[u8]) -> Option<Known> {
        let mut r = Reader::new(body);
        if r.u8()? != VERSION {
            return None;
        }
        let (sender, client_id, to) = (r.text()?, r.text()?, r.text()?);
        let known = Known {
            sender: sender.to_string(),
            client_id: client_id.to_string(),
            to: to.to_string(),
            version: u64::from_le_bytes(r.take(8)?.try_into().ok()?),
        };
        r.is_empty().then_some(known)
    }
}

/// A message as another node routed it.
pub struct Routed {
    pub origin: Origin,
    pub message: Message,
}

/// Which node routed a message, and what it did with it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Origin {
    pub sender: String,
    pub seq: u64,
    /// The persistent sessions (held by other nodes) the sender stored it for before it
    /// acknowledged it.
    pub stored_for: Vec<String>,
    /// The shared subscriptions (their queue groups) the sender chose the member of itself:
    /// their members on other nodes do not take it from the bus.
    pub served: Vec<String>,
    /// Sent to the node holding these sessions, for their shared subscription alone (client
    /// id, the filter as subscribed), not for its subscriptions to the topic.
    pub members: Vec<(String, String)>,
}

fn put_texts<'a>(buf: &mut Vec<u8>, texts: impl ExactSizeIterator<Item = &'a String>) {
    buf.extend_from_slice(&(texts.len() as u32).to_le_bytes());
    for text in texts {
        persist::put(buf, text.as_bytes());
    }
}

fn texts(r: &mut Reader<'_>) -> Option<Vec<String>> {
    let count = u32::from_le_bytes(r.take(4)?.try_into().ok()?);
    (0..count).map(|_| Some(r.text()?.to_string())).collect()
}

pub fn encode(origin: &Origin, message: &Message) -> Bytes {
    let mut buf = Vec::with_capacity(64 + message.topic.len() + message.payload.len());
    buf.push(ROUTED_VERSION);
    persist::put(&mut buf, origin.sender.as_bytes());
    buf.extend_from_slice(&origin.seq.to_le_bytes());
    put_texts(&mut buf, origin.stored_for.iter());
    put_texts(&mut buf, origin.served.iter());
    buf.extend_from_slice(&(origin.members.len() as u32).to_le_bytes());
    for (client_id, filter) in &origin.members {
        persist::put(&mut buf, client_id.as_bytes());
        persist::put(&mut buf, filter.as_bytes());
    }
    persist::encode_message(&mut buf, message);
    Bytes::from(buf)
}

/// The routed message, or `None` if `body` is not one.
pub fn decode(body: &[u8]) -> Option<Routed> {
    let mut r = Reader::new(body);
    if r.u8()? != ROUTED_VERSION {
        return None;
    }
    let sender = r.text()?.to_string();
    let seq = u64::from_le_bytes(r.take(8)?.try_into().ok()?);
    let stored_for = texts(&mut r)?;
    let served = texts(&mut r)?;
    let count = u32::from_le_bytes(r.take(4)?.try_into().ok()?);
    let members = (0..count)
        .map(|_| Some((r.text()?.to_string(), r.text()?.to_string())))
        .collect::<Option<Vec<_>>>()?;
    let message = r.message(Instant::now(), persist::wall_ms())?;
    r.is_empty().then_some(Routed {
        origin: Origin {
            sender,
            seq,
            stored_for,
            served,
            members,
        },
        message,
    })
}

#[cfg(test)]
mod tests {
    use ntex_mqtt::QoS;

    use super::*;
    use crate::message::Properties;

    #[test]
    fn messages_round_trip_and_garbage_is_refused() {
        let mut message = Message::new(
            "a//b c",
            ntex::util::Bytes::from_static(b"\x00\xffpayload"),
            QoS::ExactlyOnce,
            true,
        )
        .with_expiry(std::num::NonZeroU32::new(60));
        message.tenant = Some(7);
        message.properties = Some(Box::new(Properties {
            payload_is_utf8: true,
            content_type: Some("text/plain".into()),
            response_topic: None,
            correlation_data: Some(ntex::util::Bytes::new()),
            user_properties: vec![("k".into(), "v".into()), ("k".into(), "".into())],
        }));
        let origin = Origin {
            sender: "n1-1".into(),
            seq: 42,
            stored_for: vec!["app".into(), "a.b".into()],
            served: vec!["share.g.a%2F%2B".into()],
            members: vec![("app".into(), "$share/g/a/+".into())],
        };
        let encoded = encode(&origin, &message);
        let routed = decode(&encoded).expect("decodes");
        assert_eq!(routed.origin, origin);
        let got = routed.message;
        assert_eq!(
            (&got.topic, &got.payload, got.qos, got.retain, got.tenant),
            (&message.topic, &message.payload, message.qos, true, Some(7))
        );
        assert_eq!(got.properties, message.properties);
        let left = got.remaining_expiry(Instant::now()).map(|e| e.get());
        assert!(matches!(left, Some(59..=60)), "{left:?}");
        for cut in [0, 1, 10, 20, encoded.len() - 1] {
            assert!(decode(&encoded[..cut]).is_none(), "cut at {cut}");
        }
        assert!(decode(b"\x09").is_none());
    }

    #[test]
    fn connections_round_trip() {
        let connected = Connected {
            sender: "n1-1".into(),
            client_id: "d-1".into(),
            signed_in_at_ms: 1_764_000_000_000,
            device: Some(("d-1".into(), 7)),
        };
        let encoded = connected.encode();
        assert_eq!(Connected::decode(&encoded), Some(connected));
        assert!(Connected::decode(&encoded[..encoded.len() - 1]).is_none());
        let handover = Handover {
            sender: "n2-1".into(),
            client_id: "app".into(),
            to: "n1-1".into(),
        };
        let encoded = handover.encode();
        assert_eq!(Handover::decode(&encoded), Some(handover));
        assert!(Handover::decode(&encoded[..encoded.len() - 1]).is_none());
        let known = Known {
            sender: "n2-1".into(),
            client_id: "app".into(),
            version: 1_764_000_000_000_123,
            to: String::new(),
        };
        let encoded = known.encode();
        assert_eq!(Known::decode(&encoded), Some(known));
        assert!(Known::decode(&encoded[..encoded.len() - 1]).is_none());
    }
}
