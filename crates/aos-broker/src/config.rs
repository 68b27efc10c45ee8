use std::net::SocketAddr;
use std::time::Duration;

use ntex_mqtt::QoS;
use serde::{Deserialize, Serialize};

pub use aos_core::tls::TlsConfig;

use crate::auth::AuthConfig;

/// How a listener carries MQTT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// MQTT over TCP.
    #[default]
    Tcp,
    /// MQTT over TLS.
    Tls,
    /// MQTT over WebSocket (subprotocol `mqtt`).
    Ws,
    /// MQTT over WebSocket over TLS.
    Wss,
}

/// An extra listener (`[[broker.listeners]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Names the listener in logs and metrics.
    pub name: String,
    pub bind: SocketAddr,
    #[serde(default)]
    pub transport: Transport,
    /// Required for `tls` and `wss`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// WebSocket path (`ws`, `wss`).
    #[serde(default = "default_ws_path")]
    pub path: String,
    /// Connections this listener accepts (within the broker's `max_connections`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// Whether every connection starts with a PROXY protocol v2 header (behind HAProxy
    /// `send-proxy-v2`); those without one are refused.
    #[serde(default)]
    pub proxy_protocol: bool,
}

fn default_ws_path() -> String {
    "/mqtt".into()
}

/// The `[broker]` configuration section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// Address of the main MQTT (TCP) listener, named `mqtt`; it accepts 3.1.1 and 5.0 clients.
    pub listen: SocketAddr,
    /// Whether connections to the main listener start with a PROXY protocol v2 header.
    pub proxy_protocol: bool,
    /// More listeners: TLS, WebSocket, more TCP ports.
    pub listeners: Vec<ListenerConfig>,
    /// Threads serving MQTT connections; 0: one per CPU core.
    pub workers: usize,
    /// How long open connections may take to finish when the node stops (or the role is
    /// switched off): clients are disconnected at `drain_rate` within it, the rest at its end.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Clients disconnected per second when the broker stops (5.0: DISCONNECT 0x8B), so that
    /// they reconnect to other nodes without a thundering herd; 0: all at once.
    pub drain_rate: u32,
    /// Open connections the broker accepts (all listeners); beyond it CONNECT is refused (server
    /// unavailable / server busy).
    pub max_connections: usize,
    /// Largest packet accepted from a client, in bytes (5.0: announced in CONNACK). A larger
    /// packet disconnects the client.
    pub max_packet_size: u32,
    /// Highest QoS granted to subscriptions and accepted in PUBLISH (0, 1 or 2).
    pub max_qos: u8,
    /// Longest keep alive a 5.0 client gets; asking for more (or for none) is answered with this
    /// server keep alive.
    pub max_keepalive: u16,
    /// QoS 1/2 messages a 5.0 client may have unacknowledged towards the broker (receive maximum);
    /// a 3.1.1 client is not read from while this many of its packets wait to be answered.
    pub receive_maximum: u16,
    /// QoS 1/2 messages the broker sends a client before waiting for acknowledgements (also
    /// bounded by the client's receive maximum).
    pub max_inflight: u16,
    /// Client packets a node holds while they are handled (waiting for the acquisition queue,
    /// the store, or an earlier packet of their connection). Beyond it, a connection with a
    /// packet pending is not read from until its packets are answered: publishers slow down
    /// instead of the node's memory growing (each pending PUBLISH costs a few KiB plus its
    /// payload).
    pub max_pending_packets: usize,
    /// Topic aliases a 5.0 client may use.
    pub max_topic_alias: u16,
    /// Topic aliases the broker assigns to the topics it sends a 5.0 client that accepts them
    /// (at most the client's own Topic Alias Maximum): later messages on such a topic carry a
    /// two-byte alias instead of the name. 0: none.
    pub server_topic_aliases: u16,
    /// Messages a session may have queued (connected or not); more are dropped and counted.
    pub max_queued_messages: usize,
    /// Bytes (topic + payload) a session may have queued; more are dropped and counted.
    pub max_queued_bytes: usize,
    /// Longest a disconnected session is kept: caps the 5.0 session expiry interval and is the
    /// expiry of 3.1.1 sessions with clean session 0.
    #[serde(with = "humantime_serde")]
    pub max_session_expiry: Duration,
    /// Whether clients may publish retained messages.
    pub retain_available: bool,
    /// Whether retained messages, persistent sessions (subscriptions and queued QoS 1/2
    /// messages) and inbound QoS 2 state are kept in the node's state store, surviving restarts
    /// and crashes. Off: they live in memory only.
    pub persistence: bool,
    pub auth: AuthConfig,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 1883)),
            proxy_protocol: false,
            listeners: Vec::new(),
            workers: 0,
            drain_timeout: Duration::from_secs(5),
            drain_rate: 1000,
            max_connections: 100_000,
            max_packet_size: 1024 * 1024,
            max_qos: 2,
            max_keepalive: 600,
            receive_maximum: 128,
            max_inflight: 1000,
            max_pending_packets: 16_384,
            max_topic_alias: 32,
            server_topic_aliases: 0,
            max_queued_messages: 1000,
            max_queued_bytes: 16 * 1024 * 1024,
            max_session_expiry: Duration::from_secs(7 * 24 * 3600),
            retain_available: true,
            persistence: true,
            auth: AuthConfig::default(),
        }
    }
}

impl BrokerConfig {
    pub fn max_qos(&self) -> QoS {
        match self.max_qos {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            _ => QoS::ExactlyOnce,
        }
    }
}

impl BrokerConfig {
    /// Its listeners, as a node reports them.
    pub fn listener_infos(&self) -> Vec<aos_core::node::ListenerInfo> {
        let info =
            |name: &str, transport: Transport, address: SocketAddr| aos_core::node::ListenerInfo {
                role: "broker".into(),
                name: name.to_string(),
                protocol: match transport {
                    Transport::Tcp => "mqtt",
                    Transport::Tls => "mqtt+tls",
                    Transport::Ws => "mqtt+ws",
                    Transport::Wss => "mqtt+wss",
                }
                .into(),
                address: address.to_string(),
            };
        std::iter::once(info("mqtt", Transport::Tcp, self.listen))
            .chain(
                self.listeners
                    .iter()
                    .map(|l| info(&l.name, l.transport, l.bind)),
            )
            .collect()
    }
}
