//! What the platform asks the broker nodes, on the bus: their clients, their retained messages
//! and their traffic, and what it has them do (close a client's connection, forget a retained
//! message).
//!
//! Every broker node subscribes to [`SUBJECT`]. The asker ([`ask`]) subscribes to a reply
//! subject of its own, names it in the request, and gathers the answers of the broker nodes the
//! node registry lists, for [`ANSWER_WAIT`] at most: a node that does not answer in time is
//! named in [`Gathered::silent`], so a partial view never passes for a whole one. In standalone
//! mode the bus is the node's own and the one broker answers.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::bus::{Bus, BusError};
use crate::kind::RoleKind;
use crate::kv::{Kv, KvError};
use crate::node::registered;

/// Where the broker nodes take requests.
pub const SUBJECT: &str = "admin.broker";
/// Below which askers receive answers (`admin.reply.<token>`).
const REPLY_PREFIX: &str = "admin.reply";
/// How long an asker waits for every broker node to answer.
pub const ANSWER_WAIT: Duration = Duration::from_secs(2);

/// A request to the broker nodes: what is asked, and where to answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Request {
    pub reply: String,
    pub ask: Ask,
}

/// What the broker nodes are asked. `tenant`: only that tenant's clients and messages (`None`:
/// every tenant's and the platform's).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "ask", rename_all = "snake_case")]
pub enum Ask {
    /// The sessions a node holds that match, the first `first` of them by client id (at most
    /// [`MOST_LISTED`]).
    Clients(ClientQuery),
    /// Close the connection of a client (its session stays, its will goes out).
    Disconnect {
        client_id: String,
        tenant: Option<i64>,
    },
    /// The retained messages whose topic matches `filter`, the first `first` of them by topic
    /// (at most [`MOST_LISTED`]).
    Retained(RetainedQuery),
    /// Forget the retained message of a topic.
    ForgetRetained { topic: String, tenant: Option<i64> },
    /// The node's connections and message rates.
    Traffic,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ClientQuery {
    pub tenant: Option<i64>,
    /// Part of the client id, the device id, the application's or the user's name.
    pub search: Option<String>,
    /// Only connected clients (`true`) or only sessions waiting for theirs (`false`).
    pub connected: Option<bool>,
    pub first: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RetainedQuery {
    pub tenant: Option<i64>,
    /// An MQTT topic filter (`#`: every topic not starting with `$`).
    pub filter: String,
    pub first: usize,
}

/// One node's answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Reply {
    pub node: String,
    pub answer: Answer,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum Answer {
    /// `total`: how many sessions match (`clients` holds the first of them).
    Clients {
        total: u64,
        clients: Vec<ClientInfo>,
    },
    /// Whether the node had the client connected (and closed its connection).
    Disconnected {
        found: bool,
    },
    /// `total`: how many retained messages match (`messages` holds the first of them).
    Retained {
        total: u64,
        messages: Vec<RetainedInfo>,
    },
    /// Whether the node had a retained message on the topic (it has none now).
    Forgot {
        found: bool,
    },
    Traffic(Traffic),
    /// The request cannot be answered as asked (a topic filter that is not one, say).
    Refused {
        error: String,
    },
}

/// A client's session on a broker node, and its connection if it has one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClientInfo {
    pub client_id: String,
    /// The node holding the session.
    pub node: String,
    pub connected: bool,
    /// The client's address (as the PROXY protocol header gave it, behind a load balancer);
    /// null while not connected.
    pub address: Option<String>,
    /// `3.1.1` or `5.0`; null while not connected.
    pub protocol: Option<String>,
    /// The MQTT listener it connected to; null while not connected.
    pub listener: Option<String>,
    /// When its connection signed in (RFC 3339); null while not connected.
    pub connected_at: Option<String>,
    /// Seconds (0: none); null while not connected.
    pub keep_alive: Option<u16>,
    /// `device`, `application` (an API key) or `user` (a username of the broker's
    /// configuration).
    pub kind: String,
    /// The device's id, the application's name or the username.
    pub name: Option<String>,
    /// The tenant's id (null: the platform's).
    pub tenant: Option<i64>,
    /// The tenant's name (the API fills it in).
    #[serde(default)]
    pub tenant_name: Option<String>,
    /// Its first [`SUBSCRIPTIONS_SHOWN`] subscriptions by filter.
    pub subscriptions: Vec<SubscriptionInfo>,
    /// How many subscriptions it has.
    pub subscription_count: u64,
    /// Messages waiting to be sent to it.
    pub queued: u64,
    /// Messages sent with QoS 1/2 and not acknowledged yet.
    pub inflight: u64,
    /// How long the session outlives its connection, in seconds (null: forever).
    pub session_expiry: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SubscriptionInfo {
    /// As subscribed (a shared subscription with its `$share/{group}/` prefix).
    pub filter: String,
    /// The maximum QoS granted.
    pub qos: u8,
}

/// A retained message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RetainedInfo {
    pub topic: String,
    pub qos: u8,
    /// The publisher's tenant (null: the platform's).
    pub tenant: Option<i64>,
    /// The tenant's name (the API fills it in).
    #[serde(default)]
    pub tenant_name: Option<String>,
    /// Payload size in bytes.
    pub size: u64,
    /// The payload's start as text ([`PREVIEW_BYTES`] at most), if it is UTF-8.
    pub text: Option<String>,
    /// Seconds until it expires (5.0 message expiry; null: never).
    pub expires_in: Option<u64>,
}

/// How much of a retained payload a listing shows.
pub const PREVIEW_BYTES: usize = 256;
/// How many of a client's subscriptions a listing shows (an answer must fit in one bus message:
/// NATS takes 1 MiB by default).
pub const SUBSCRIPTIONS_SHOWN: usize = 20;
/// The most clients or retained messages one node lists in an answer.
pub const MOST_LISTED: usize = 500;

/// A broker node's traffic: its connections, and its messages per second over the last few
/// seconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Traffic {
    pub node: String,
    pub connections: u64,
    /// Sessions held, connected or not.
    pub sessions: u64,
    pub retained: u64,
    pub messages_in_per_second: f64,
    pub messages_out_per_second: f64,
    pub bytes_in_per_second: f64,
    pub bytes_out_per_second: f64,
    /// Since the node started.
    pub messages_in: u64,
    pub messages_out: u64,
}

/// The answers gathered for one request.
#[derive(Debug, Default)]
pub struct Gathered {
    pub replies: Vec<Reply>,
    /// The broker nodes the registry lists that did not answer in time.
    pub silent: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("no broker node is running: start a node with the broker role, then try again")]
    NoBroker,
    #[error("cannot read the node registry: {0}")]
    Registry(#[from] KvError),
    #[error("cannot reach the broker nodes: {0}")]
    Bus(#[from] BusError),
}

/// Asks every broker node the registry lists, and gathers their answers (see the module).
pub async fn ask(bus: &dyn Bus, kv: &dyn Kv, ask: Ask) -> Result<Gathered, AskError> {
    let mut pending: BTreeSet<String> = registered(kv)
        .await?
        .into_iter()
        .filter(|r| r.running_roles.contains(&RoleKind::Broker))
        .map(|r| r.info.id)
        .collect();
    if pending.is_empty() {
        return Err(AskError::NoBroker);
    }
    let reply = reply_subject();
    // Subscribed before the request goes out: no answer can come before it.
    let mut answers = bus.subscribe(&reply).await?;
    let request = Request { reply, ask };
    let payload = serde_json::to_vec(&request).map_err(|e| BusError::Backend(e.to_string()))?;
    bus.publish(SUBJECT, Bytes::from(payload)).await?;
    let mut gathered = Gathered::default();
    let deadline = tokio::time::Instant::now() + ANSWER_WAIT;
    while !pending.is_empty() {
        let Ok(Some(message)) = tokio::time::timeout_at(deadline, answers.next()).await else {
            break;
        };
        match serde_json::from_slice::<Reply>(&message.payload) {
            // A node that registered since the registry was read answers too.
            Ok(reply) if !gathered.replies.iter().any(|r| r.node == reply.node) => {
                pending.remove(&reply.node);
                gathered.replies.push(reply);
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(%err, "a broker node's answer that cannot be read"),
        }
    }
    gathered.silent = pending.into_iter().collect();
    Ok(gathered)
}

/// A reply subject no other asker uses: this process, this moment, this request.
fn reply_subject() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{REPLY_PREFIX}.{}x{nanos:x}x{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Answers one request (as a broker node does it): `answer` turns the ask into this node's
/// answer, which goes to the asker's reply subject.
pub async fn answer(
    bus: &dyn Bus,
    node: &str,
    payload: &[u8],
    answer: impl FnOnce(Ask) -> Answer,
) -> Result<(), BusError> {
    let request: Request = match serde_json::from_slice(payload) {
        Ok(request) => request,
        Err(err) => {
            tracing::warn!(%err, "a broker request that cannot be read; not answered");
            return Ok(());
        }
    };
    let reply = Reply {
        node: node.to_string(),
        answer: answer(request.ask),
    };
    let payload = serde_json::to_vec(&reply).map_err(|e| BusError::Backend(e.to_string()))?;
    bus.publish(&request.reply, Bytes::from(payload)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_subjects_differ_and_are_valid() {
        let (a, b) = (reply_subject(), reply_subject());
        assert_ne!(a, b);
        assert!(crate::bus::validate_subject(&a).is_ok(), "{a}");
    }
}
