//! The hand-off to the platform: a QoS 1 publisher is acknowledged only once the hook has taken
//! the message — here into a real durable queue — and a full queue pushes back on publishers
//! instead of growing.

use std::sync::Arc;
use std::time::Duration;

use aos_broker::BrokerRole;
use aos_broker::auth::Principal;
use aos_broker::broker::{HookError, PublishHook};
use aos_broker::message::Message;
use aos_core::bus::MemoryBus;
use aos_core::config::{ConfigSources, Settings};
use aos_core::extensions::Extensions;
use aos_core::kv::MemoryKv;
use aos_core::net::NetHost;
use aos_core::node::NodeParts;
use aos_core::queue::disk::DiskQueueConfig;
use aos_core::queue::{DiskQueue, QueueError, QueueOptions, WorkQueue};
use aos_core::state::MemoryState;
use aos_core::{Metrics, Node, NodeInfo, RoleKind};
use async_trait::async_trait;
use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAck, PubAckReason};

const QUEUE: &str = "acquisition";

struct QueueHook(Arc<DiskQueue>);

#[async_trait]
impl PublishHook for QueueHook {
    async fn accept(&self, _: &Principal, message: &Message) -> Result<(), HookError> {
        match self
            .0
            .push(QUEUE, Bytes::copy_from_slice(&message.payload))
            .await
        {
            Ok(_) => Ok(()),
            Err(QueueError::Full(why)) => Err(HookError::Busy(why)),
            Err(err) => Err(HookError::Failed(err.to_string())),
        }
    }
}

struct Embedded {
    node: Node,
    queue: Arc<DiskQueue>,
    port: u16,
    _dir: tempfile::TempDir,
}

/// A node running only the broker, embedded in this test, with the queue hook installed.
async fn embedded(max_bytes: u64) -> Embedded {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let settings = Settings::load(
        // This test is about the hand-off, not access control: open the broker explicitly.
        &ConfigSources::default()
            .with_override("broker.listen", format!("127.0.0.1:{port}"))
            .with_override("broker.auth.allow_anonymous", true)
            .with_override("broker.auth.acl_default", "allow"),
    )
    .expect("settings");
    let dir = tempfile::tempdir().expect("tempdir");
    let metrics = Metrics::default();
    let mut queue_config = DiskQueueConfig::new(dir.path());
    queue_config.max_bytes = max_bytes;
    let queue = Arc::new(DiskQueue::open(queue_config, &metrics).expect("queue"));
    queue
        .declare(QUEUE, QueueOptions::default())
        .await
        .expect("declare");
    let role = Arc::new(BrokerRole::new());
    let node = Node::new(NodeParts {
        info: NodeInfo::new(
            "embedded".into(),
            vec![RoleKind::Broker],
            vec![RoleKind::Broker],
            String::new(),
        ),
        settings: Arc::new(settings),
        bus: Arc::new(MemoryBus::new(&metrics)),
        queue: queue.clone(),
        kv: Arc::new(MemoryKv::new()),
        state: Arc::new(MemoryState::new()),
        metrics,
        net: Arc::new(NetHost::start().expect("network thread")),
        extensions: Extensions::default(),
        roles: vec![role.clone()],
        switchable: Vec::new(),
        spare: Vec::new(),
    });
    node.start().await.expect("start");
    role.broker()
        .expect("running")
        .set_hook(Arc::new(QueueHook(queue.clone())));
    Embedded {
        node,
        queue,
        port,
        _dir: dir,
    }
}

async fn puback(eventloop: &mut rumqttc::v5::EventLoop) -> PubAck {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), eventloop.poll())
            .await
            .expect("an event in time")
            .expect("connection alive");
        if let rumqttc::v5::Event::Incoming(Packet::PubAck(ack)) = event {
            return ack;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_is_acknowledged_after_the_hook_queued_it_and_a_full_queue_pushes_back() {
    let node = embedded(64).await;
    let options = rumqttc::v5::MqttOptions::new("device", "127.0.0.1", node.port);
    let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 10);
    let topic = "devices/1/telemetry";
    client
        .publish(topic, QoS::AtLeastOnce, false, vec![1u8; 40])
        .await
        .expect("publish");
    assert_eq!(puback(&mut eventloop).await.reason, PubAckReason::Success);
    // Acknowledged means queued: the item is there, without waiting.
    let queued = node
        .queue
        .pull(QUEUE, 10, Duration::ZERO)
        .await
        .expect("pull");
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].payload, Bytes::from(vec![1u8; 40]));

    // The queue holds at most 64 bytes: the next publish is pushed back, not buffered.
    client
        .publish(topic, QoS::AtLeastOnce, false, vec![2u8; 40])
        .await
        .expect("publish");
    assert_eq!(
        puback(&mut eventloop).await.reason,
        PubAckReason::QuotaExceeded
    );

    // Once the consumer catches up, messages flow again.
    node.queue.ack(QUEUE, &[queued[0].id]).await.expect("ack");
    client
        .publish(topic, QoS::AtLeastOnce, false, vec![3u8; 40])
        .await
        .expect("publish");
    assert_eq!(puback(&mut eventloop).await.reason, PubAckReason::Success);

    node.node.stop(Duration::from_secs(5)).await;
    node.queue.close().await.expect("close");
}
