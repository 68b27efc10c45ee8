//! Broker metrics, registered on the node's `/metrics`.

use ntex_mqtt::QoS;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use aos_core::Metrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QosLabel {
    pub qos: u8,
}

/// A counter per QoS, each created with the family: counting is one atomic add, where a
/// family's lookup hashes the label under a lock (per message, that showed in profiles).
#[derive(Clone)]
pub struct ByQos {
    family: Family<QosLabel, Counter>,
    counters: [Counter; 3],
}

impl Default for ByQos {
    fn default() -> Self {
        let family = Family::<QosLabel, Counter>::default();
        let counters = [0, 1, 2].map(|qos| family.get_or_create(&QosLabel { qos }).clone());
        ByQos { family, counters }
    }
}

impl ByQos {
    /// The counter of `qos`.
    pub fn of(&self, qos: QoS) -> &Counter {
        &self.counters[qos as usize]
    }

    /// Adds `counts`, indexed by QoS.
    pub fn add(&self, counts: [u64; 3]) {
        for (counter, count) in self.counters.iter().zip(counts) {
            if count > 0 {
                counter.inc_by(count);
            }
        }
    }

    /// What all three counted.
    pub fn total(&self) -> u64 {
        self.counters.iter().map(Counter::get).sum()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabel {
    pub listener: String,
}

#[derive(Clone, Default)]
pub struct BrokerMetrics {
    pub connections: Family<ListenerLabel, Gauge>,
    pub connections_accepted: Family<ListenerLabel, Counter>,
    pub connections_refused: Family<ListenerLabel, Counter>,
    pub sessions: Gauge,
    pub subscriptions: Gauge,
    pub retained: Gauge,
    pub takeovers: Counter,
    pub messages_received: ByQos,
    pub messages_sent: ByQos,
    pub bytes_received: Counter,
    pub bytes_sent: Counter,
    /// Messages dropped because a session's queue was full.
    pub dropped_queue_full: Counter,
    /// Messages dropped because they expired before they could be sent.
    pub dropped_expired: Counter,
    /// Messages dropped because they exceed the receiving client's maximum packet size.
    pub dropped_oversize: Counter,
    /// Publishes and subscriptions refused by the ACL.
    pub denied: Counter,
    /// QoS 1 PUBLISH packets a client sent again (DUP): each may duplicate one already taken.
    pub resent_received: Counter,
    /// Client packets being handled after their connection's dispatcher moved on (waiting for
    /// the queue, the store, or an earlier packet of their connection).
    pub packets_pending: Gauge,
    /// Times a connection was not read from because the node held `max_pending_packets`.
    pub reads_paused: Counter,
    /// Messages for the other broker nodes of a cluster that the bus could not take in time.
    pub cluster_dropped: Counter,
    pub cluster_stored: Counter,
    pub cluster_sessions: Gauge,
    pub orphan_wills: Counter,
    /// Messages waiting in session queues, and sent but not yet acknowledged.
    pub session_queues: crate::session::QueueGauges,
}

impl BrokerMetrics {
    pub fn register(&self, metrics: &Metrics) {
        let m = metrics;
        m.register(
            "broker_connections",
            "Open MQTT connections, by listener",
            self.connections.clone(),
        );
        m.register(
            "broker_connections_accepted",
            "MQTT connections accepted (CONNACK success), by listener",
            self.connections_accepted.clone(),
        );
        m.register(
            "broker_connections_refused",
            "MQTT connections refused at CONNECT, by listener",
            self.connections_refused.clone(),
        );
        m.register(
            "broker_sessions",
            "Sessions held (connected or not)",
            self.sessions.clone(),
        );
        m.register(
            "broker_subscriptions",
            "Subscriptions held",
            self.subscriptions.clone(),
        );
        m.register(
            "broker_retained_messages",
            "Retained messages held",
            self.retained.clone(),
        );
        m.register(
            "broker_session_takeovers",
            "Sessions taken over by a new connection",
            self.takeovers.clone(),
        );
        m.register(
            "broker_messages_received",
            "PUBLISH packets received, by QoS",
            self.messages_received.family.clone(),
        );
        m.register(
            "broker_resent_received",
            "QoS 1 PUBLISH packets clients sent again (DUP set); each may duplicate a message already taken",
            self.resent_received.clone(),
        );
        m.register(
            "broker_packets_pending",
            "Client packets being handled, waiting for the queue, the store or an earlier packet of their connection",
            self.packets_pending.clone(),
        );
        m.register(
            "broker_reads_paused",
            "Times a connection with packets pending was not read from because the node held broker.max_pending_packets",
            self.reads_paused.clone(),
        );
        m.register(
            "broker_cluster_dropped",
            "Messages for the other broker nodes that the bus could not take in time (dropped: delivery between nodes is at most once)",
            self.cluster_dropped.clone(),
        );
        m.register(
            "broker_cluster_stored",
            "Copies of messages stored for persistent sessions other broker nodes hold, before the publisher was acknowledged",
            self.cluster_stored.clone(),
        );
        m.register(
            "broker_cluster_sessions",
            "Persistent sessions with QoS 1/2 subscriptions that other broker nodes hold, known here",
            self.cluster_sessions.clone(),
        );
        m.register(
            "broker_orphan_wills",
            "Wills of clients whose broker node died, published by this node",
            self.orphan_wills.clone(),
        );
        m.register(
            "broker_messages_sent",
            "PUBLISH packets sent, by QoS",
            self.messages_sent.family.clone(),
        );
        m.register(
            "broker_bytes_received",
            "Payload bytes received",
            self.bytes_received.clone(),
        );
        m.register(
            "broker_bytes_sent",
            "Payload bytes sent",
            self.bytes_sent.clone(),
        );
        m.register(
            "broker_dropped_queue_full",
            "Messages dropped because a session queue was full",
            self.dropped_queue_full.clone(),
        );
        m.register(
            "broker_dropped_expired",
            "Messages dropped because their message expiry passed",
            self.dropped_expired.clone(),
        );
        m.register(
            "broker_dropped_oversize",
            "Messages dropped because they exceed the receiving client's maximum packet size",
            self.dropped_oversize.clone(),
        );
        m.register(
            "broker_queued_messages",
            "Messages waiting in session queues (all sessions)",
            self.session_queues.queued.clone(),
        );
        m.register(
            "broker_inflight_messages",
            "QoS 1/2 messages sent and not yet acknowledged (all sessions)",
            self.session_queues.inflight.clone(),
        );
        m.register(
            "broker_resent",
            "QoS 1/2 messages sent again, flagged DUP, to a client that reconnected (to this node or, after a takeover, from another)",
            self.session_queues.resent.clone(),
        );
        m.register(
            "broker_denied",
            "Publishes and subscriptions refused by the ACL",
            self.denied.clone(),
        );
    }
}
