//! Embeds the broker role alone in another program: its own MQTT listener, and an in-process
//! publish hook that sees every message the broker accepts (here: prints it). A QoS 1/2
//! publisher is acknowledged once the hook has taken the message.
//!
//! What the broker needs from its host: a node ([`Node`]) with its settings (at least
//! `broker.listen`, and what access the broker allows), the seams opened by
//! `aos_seams::open` (the state store keeps retained messages and persistent sessions;
//! `memory:` keeps them only while the program runs) and a network thread ([`NetHost`]). Without
//! a device directory among the node's extensions it authenticates from its own configuration
//! only (`[broker.auth]`).
//!
//! ```sh
//! cargo run -p aos-broker --example embedded_broker -- 127.0.0.1:1884
//! mosquitto_pub -p 1884 -t hello -m world -q 1
//! ```

use std::path::Path;
use std::sync::Arc;

use aos_broker::BrokerRole;
use aos_broker::auth::Principal;
use aos_broker::broker::{HookError, PublishHook};
use aos_broker::message::Message;
use aos_core::config::{ConfigSources, Settings};
use aos_core::extensions::Extensions;
use aos_core::net::NetHost;
use aos_core::node::NodeParts;
use aos_core::{Metrics, Node, NodeInfo, RoleKind};
use async_trait::async_trait;
use tokio::sync::mpsc;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The program's own use of what devices publish: every accepted message goes to `seen`.
struct Forward {
    seen: mpsc::UnboundedSender<(String, Vec<u8>)>,
}

#[async_trait]
impl PublishHook for Forward {
    async fn accept(&self, _publisher: &Principal, message: &Message) -> Result<(), HookError> {
        self.seen
            .send((message.topic.to_string(), message.payload.to_vec()))
            .map_err(|_| HookError::Failed("the program stopped listening".into()))
    }
}

/// A running embedded broker.
struct Embedded {
    node: Node,
    seams: aos_seams::Seams,
    net: Arc<NetHost>,
}

/// Starts a node that runs only the broker on `listen` (anonymous clients, every topic allowed:
/// a demo), its files under `dir`, and installs the hook.
async fn start(
    listen: &str,
    dir: &Path,
    seen: mpsc::UnboundedSender<(String, Vec<u8>)>,
) -> Result<Embedded, Error> {
    let settings = Settings::load(
        &ConfigSources::default()
            .with_override("node.data_dir", dir.display().to_string())
            .with_override("state.url", "memory:")
            .with_override("broker.listen", listen)
            .with_override("broker.auth.allow_anonymous", true)
            .with_override("broker.auth.acl_default", "allow"),
    )?;
    let metrics = Metrics::default();
    let seams = aos_seams::open(settings.core(), "embedded", &metrics).await?;
    let net = Arc::new(NetHost::start()?);
    let role = Arc::new(BrokerRole::new());
    let node = Node::new(NodeParts {
        info: NodeInfo::new(
            "embedded".into(),
            vec![RoleKind::Broker],
            vec![RoleKind::Broker],
            String::new(),
        ),
        settings: Arc::new(settings),
        bus: seams.bus.clone(),
        queue: seams.queue.clone(),
        kv: seams.kv.clone(),
        state: seams.state.clone(),
        metrics,
        net: net.clone(),
        extensions: Extensions::default(),
        roles: vec![role.clone()],
        switchable: Vec::new(),
        spare: Vec::new(),
    });
    node.start()
        .await
        .map_err(|(role, err)| format!("the {role} role cannot start: {err}"))?;
    role.broker()
        .ok_or("the broker is not running")?
        .set_hook(Arc::new(Forward { seen }));
    Ok(Embedded { node, seams, net })
}

impl Embedded {
    /// Stops the broker, then closes the seams and the network thread.
    async fn stop(self) {
        self.node.stop(std::time::Duration::from_secs(5)).await;
        for problem in self.seams.close().await {
            eprintln!("{problem}");
        }
        let net = self.net;
        let _ = tokio::task::spawn_blocking(move || net.stop()).await;
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:1884".into());
    let dir = tempfile::tempdir()?;
    let (seen, mut messages) = mpsc::unbounded_channel();
    let broker = start(&listen, dir.path(), seen).await?;
    println!("MQTT on {listen}; Ctrl-C stops");
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            Some((topic, payload)) = messages.recv() => {
                println!("{topic}: {}", String::from_utf8_lossy(&payload));
            }
        }
    }
    broker.stop().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    use tokio::sync::mpsc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_hook_has_a_message_before_its_publisher_is_acknowledged() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let dir = tempfile::tempdir().expect("tempdir");
        let (seen, mut messages) = mpsc::unbounded_channel();
        let broker = super::start(&format!("127.0.0.1:{port}"), dir.path(), seen)
            .await
            .expect("start");

        let (client, mut events) =
            AsyncClient::new(MqttOptions::new("example", "127.0.0.1", port), 10);
        client
            .publish("hello", QoS::AtLeastOnce, false, "world")
            .await
            .expect("publish");
        let acknowledged = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Event::Incoming(Packet::PubAck(_)) = events.poll().await.expect("alive") {
                    return;
                }
            }
        });
        acknowledged.await.expect("PUBACK in time");
        assert_eq!(
            messages.try_recv().expect("taken before the PUBACK"),
            ("hello".to_string(), b"world".to_vec())
        );
        broker.stop().await;
    }
}
