//! Failure drills of the cluster broker, as an operator runs it: three broker nodes behind
//! HAProxy (the shipped configuration), a three-server NATS cluster, 200 devices publishing QoS 1
//! with wills, and an application with a persistent session receiving everything.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::Shared;
use common::haproxy::Haproxy;
use common::mqtt::{Client5, connect_packet_with_will, publish_packet};
use common::{AosProcess, PATIENCE, Ports};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const DEVICES: u32 = 200;
/// Each device publishes this often.
const PERIOD: Duration = Duration::from_secs(1);

/// A broker node behind the balancer, its queues and state replicated on the three servers;
/// on `ports` if given (a node started again where one died), else free ones.
fn node(shared: &Shared, ports: Option<Ports>) -> AosProcess {
    let mut aos = shared.aos(&["run", "--roles", "broker"]);
    if let Some(ports) = ports {
        aos = aos.on_ports(ports);
    }
    let mut node = aos
        .env("AOS_BROKER__AUTH__ALLOW_ANONYMOUS", "true")
        .env("AOS_BROKER__AUTH__ACL_DEFAULT", "allow")
        .env("AOS_BROKER__PROXY_PROTOCOL", "true")
        .env("AOS_CLUSTER__REPLICAS", "3")
        .spawn();
    node.wait_ready();
    node
}

/// What the devices saw.
#[derive(Default)]
struct Fleet {
    /// Messages acknowledged to each device (their numbers).
    acked: BTreeMap<u32, BTreeSet<u32>>,
    /// The longest a device was without a connection, and how many times one was lost.
    longest_gap: Duration,
    reconnects: u32,
}

/// One MQTT packet (first byte, body), or the error that ended the connection.
async fn next_packet(stream: &mut TcpStream) -> io::Result<(u8, Vec<u8>)> {
    let header = stream.read_u8().await?;
    let (mut len, mut shift) = (0usize, 0);
    loop {
        let byte = stream.read_u8().await?;
        len |= usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    let mut body = vec![0; len];
    stream.read_exact(&mut body).await?;
    Ok((header, body))
}

/// Connects device `i` through the balancer (a clean session with a will); `Err` if refused.
async fn connect(i: u32, port: u16) -> io::Result<TcpStream> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(&connect_packet_with_will(
            &format!("dev-{i}"),
            &format!("devices/{i}/status"),
            "offline",
        ))
        .await?;
    match tokio::time::timeout(Duration::from_secs(5), next_packet(&mut stream)).await {
        Ok(Ok((0x20, ack))) if ack.get(1) == Some(&0) => Ok(stream),
        other => Err(io::Error::other(format!("no CONNACK: {other:?}"))),
    }
}

/// Device `i`: publishes QoS 1 `devices/<i>/data` with its message number, one at a time,
/// through the balancer, until `stop`; a lost connection is made again and the message not yet
/// acknowledged sent again (at least once). Ends with DISCONNECT (its will is discarded).
async fn device(i: u32, port: u16, fleet: Arc<Mutex<Fleet>>, stop: CancellationToken) {
    let mut next = 0u32;
    let mut lost_at: Option<Instant> = None;
    loop {
        let mut stream = match connect(i, port).await {
            Ok(stream) => stream,
            Err(_) => {
                lost_at.get_or_insert_with(Instant::now);
                // Pacing between attempts, not synchronisation.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Some(at) = lost_at.take() {
            let mut fleet = fleet.lock().unwrap_or_else(|e| e.into_inner());
            fleet.longest_gap = fleet.longest_gap.max(at.elapsed());
            fleet.reconnects += 1;
        }
        loop {
            if stop.is_cancelled() {
                let _ = stream.write_all(&[0xE0, 0]).await;
                return;
            }
            let id = u16::try_from(next % 60_000 + 1).unwrap_or(1);
            let sent = stream
                .write_all(&publish_packet(
                    0x32,
                    &format!("devices/{i}/data"),
                    id,
                    &next.to_string(),
                ))
                .await;
            let acked = match sent {
                // A PUBACK waits while NATS elects new leaders: patience, not a reconnection.
                Ok(()) => tokio::time::timeout(PATIENCE, next_packet(&mut stream))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .is_some_and(|(header, body)| header == 0x40 && body[..] == id.to_be_bytes()),
                Err(_) => false,
            };
            if !acked {
                lost_at = Some(Instant::now());
                break;
            }
            fleet
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .acked
                .entry(i)
                .or_default()
                .insert(next);
            next += 1;
            tokio::time::sleep(PERIOD).await;
        }
    }
}

/// What the application received.
#[derive(Default)]
struct Received {
    /// Copies of each device's messages, by number.
    data: BTreeMap<(u32, u32), u32>,
    /// Devices whose will came.
    wills: BTreeSet<u32>,
}

/// The application: a persistent 5.0 session subscribed to every device's topics, through the
/// balancer, connecting again whenever its connection is lost.
async fn application(port: u16, received: Arc<Mutex<Received>>, stop: CancellationToken) {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::Packet;
    let mut subscribed = false;
    while !stop.is_cancelled() {
        let mut options = common::mqtt::options5(port, "app");
        options.set_clean_start(false);
        options.set_session_expiry_interval(Some(600));
        // Acknowledged once counted: what the broker took as delivered, the application has.
        options.set_manual_acks(true);
        let Ok((mut app, _)) = Client5::connect(options).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if !subscribed {
            app.subscribe("devices/#", QoS::AtLeastOnce).await;
            subscribed = true;
        }
        loop {
            let packet = tokio::select! {
                _ = stop.cancelled() => return,
                packet = app.next() => packet,
            };
            let publish = match packet {
                Ok(Packet::Publish(publish)) => publish,
                Ok(_) => continue,
                // "Nothing within 10 s" is a quiet moment, not a lost connection.
                Err(err) if err.starts_with("nothing received") => continue,
                Err(_) => break,
            };
            record(&publish, &received);
            if app.client.ack(&publish).await.is_err() {
                break;
            }
        }
    }
}

/// Counts a message the application received: a device's data (by its number) or its will.
fn record(publish: &rumqttc::v5::mqttbytes::v5::Publish, received: &Mutex<Received>) {
    let topic = String::from_utf8_lossy(&publish.topic);
    let payload = String::from_utf8_lossy(&publish.payload);
    let mut levels = topic.split('/').skip(1);
    let (Some(i), Some(kind)) = (levels.next(), levels.next()) else {
        return;
    };
    let Ok(i) = i.parse::<u32>() else { return };
    let mut received = received.lock().unwrap_or_else(|e| e.into_inner());
    match (kind, payload.parse::<u32>()) {
        ("data", Ok(n)) => *received.data.entry((i, n)).or_default() += 1,
        ("status", _) => {
            received.wills.insert(i);
        }
        _ => {}
    }
}

/// The node the application's session is on (the last to log its connection).
fn holder_of_app(nodes: &[AosProcess]) -> usize {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(index) = nodes.iter().position(|n| {
            n.stderr()
                .lines()
                .any(|l| l.contains("client connected") && l.contains("client_id=app "))
        }) {
            return index;
        }
        assert!(Instant::now() < deadline, "no node took the application");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until every device had `more` messages acknowledged beyond what it had at `since`.
async fn progress(fleet: &Mutex<Fleet>, since: &BTreeMap<u32, usize>, more: usize, what: &str) {
    let deadline = Instant::now() + PATIENCE * 2;
    loop {
        let behind = {
            let fleet = fleet.lock().unwrap_or_else(|e| e.into_inner());
            (0..DEVICES)
                .filter(|i| {
                    let now = fleet.acked.get(i).map_or(0, BTreeSet::len);
                    now < since.get(i).copied().unwrap_or(0) + more
                })
                .count()
        };
        if behind == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{behind} devices made no progress {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn counts(fleet: &Mutex<Fleet>) -> BTreeMap<u32, usize> {
    let fleet = fleet.lock().unwrap_or_else(|e| e.into_inner());
    fleet.acked.iter().map(|(i, a)| (*i, a.len())).collect()
}

/// Devices and the application at work through the balancer.
struct Drill {
    /// Stops the devices.
    stop: CancellationToken,
    /// Stops the application.
    app_stop: CancellationToken,
    fleet: Arc<Mutex<Fleet>>,
    received: Arc<Mutex<Received>>,
    devices: Vec<tokio::task::JoinHandle<()>>,
    app: tokio::task::JoinHandle<()>,
}

/// What a drill ends with.
struct Outcome {
    acked: usize,
    /// Acknowledged to a device and never received by the application.
    missing: Vec<(u32, u32)>,
    duplicates: u32,
    fleet: Fleet,
    wills: BTreeSet<u32>,
}

impl Drill {
    /// Starts the application, then (once every node but its own knows its session) the
    /// devices; returns with each device publishing, and the index of the application's node.
    async fn start(port: u16, nodes: &[AosProcess]) -> (Drill, usize) {
        let (stop, app_stop) = (CancellationToken::new(), CancellationToken::new());
        let received = Arc::new(Mutex::new(Received::default()));
        let app = tokio::spawn(application(port, received.clone(), app_stop.clone()));
        let holder = holder_of_app(nodes);
        for (index, node) in nodes.iter().enumerate() {
            if index != holder {
                node.wait_metric("aos_broker_cluster_sessions", 1);
            }
        }
        let fleet = Arc::new(Mutex::new(Fleet::default()));
        let devices = (0..DEVICES)
            .map(|i| tokio::spawn(device(i, port, fleet.clone(), stop.clone())))
            .collect();
        let drill = Drill {
            stop,
            app_stop,
            fleet,
            received,
            devices,
            app,
        };
        drill.progress("at the start").await;
        (drill, holder)
    }

    /// Waits until every device had three more messages acknowledged.
    async fn progress(&self, what: &str) {
        let before = counts(&self.fleet);
        progress(&self.fleet, &before, 3, what).await;
    }

    /// Stops the devices, then waits (up to twice PATIENCE) for the application, still
    /// connected as it was, to receive everything acknowledged (what the bus lost on the way
    /// included), and the wills of devices `wills_of`.
    async fn finish(self, wills_of: &BTreeSet<u32>) -> Outcome {
        self.stop.cancel();
        for device in self.devices {
            device.await.expect("device");
        }
        let fleet = Arc::try_unwrap(self.fleet)
            .ok()
            .expect("devices done")
            .into_inner()
            .unwrap_or_else(|e| e.into_inner());
        let acked: BTreeSet<(u32, u32)> = fleet
            .acked
            .iter()
            .flat_map(|(i, ns)| ns.iter().map(move |n| (*i, *n)))
            .collect();
        let deadline = Instant::now() + PATIENCE * 2;
        let missing = loop {
            let (missing, wills_in): (Vec<(u32, u32)>, bool) = {
                let received = self.received.lock().unwrap_or_else(|e| e.into_inner());
                let missing = acked
                    .iter()
                    .filter(|k| !received.data.contains_key(k))
                    .copied()
                    .collect();
                (missing, wills_of.is_subset(&received.wills))
            };
            if (missing.is_empty() && wills_in) || Instant::now() >= deadline {
                break missing;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        self.app_stop.cancel();
        let _ = self.app.await;
        let received = self.received.lock().unwrap_or_else(|e| e.into_inner());
        Outcome {
            acked: acked.len(),
            missing,
            duplicates: received.data.values().map(|c| c - 1).sum(),
            fleet,
            wills: received.wills.clone(),
        }
    }
}

impl Outcome {
    fn assert_nothing_lost(&self) {
        assert!(
            self.missing.is_empty(),
            "acknowledged and never received: {:?}",
            self.missing
        );
        assert!(
            self.fleet.longest_gap < Duration::from_secs(5),
            "a device was without a connection for {:?}",
            self.fleet.longest_gap
        );
    }
}

/// The number of messages the nodes sent again flagged DUP.
fn resent(nodes: &[&AosProcess]) -> u64 {
    nodes
        .iter()
        .map(|n| n.metric("aos_broker_resent_total"))
        .sum()
}

/// Three servers of NATS, three broker nodes, HAProxy in front; `None` (after a loud message)
/// when a service is missing outside CI.
fn deployment() -> Option<(Shared, Vec<AosProcess>, Haproxy)> {
    let shared = Shared::start_replicated()?;
    let nodes = vec![
        node(&shared, None),
        node(&shared, None),
        node(&shared, None),
    ];
    let balancer = Haproxy::start(&nodes.iter().collect::<Vec<_>>())?;
    Some((shared, nodes, balancer))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_node_and_a_nats_server_die_and_nothing_acknowledged_is_lost() {
    let Some((mut shared, mut nodes, balancer)) = deployment() else {
        return;
    };
    let (drill, holder) = Drill::start(balancer.mqtt, &nodes).await;

    // kill -9 of the node holding the application's session.
    let on_victim: BTreeSet<u32> = (0..DEVICES)
        .filter(|i| {
            nodes[holder].stderr().lines().any(|l| {
                l.contains("client connected") && l.contains(&format!("client_id=dev-{i} "))
            })
        })
        .collect();
    nodes[holder].signal(libc::SIGKILL);
    nodes[holder].wait_exit(PATIENCE).expect("killed");
    drill.progress("after the broker node died").await;

    // kill -9 of a NATS server.
    shared.nats.kill(0);
    drill.progress("after a NATS server died").await;

    // Both come back; the new node takes connections.
    shared.nats.restart(0);
    let rejoined = node(&shared, Some(nodes[holder].ports));
    // Once the balancer's checks find it up, it takes new clients (it has the fewest).
    let deadline = Instant::now() + PATIENCE;
    let mut newcomers = Vec::new();
    while !rejoined.stderr().contains("client connected") {
        assert!(
            Instant::now() < deadline,
            "the restarted node takes no connections"
        );
        if let Ok(stream) = connect(DEVICES + newcomers.len() as u32, balancer.mqtt).await {
            newcomers.push(stream);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let outcome = drill.finish(&on_victim).await;
    let live: Vec<&AosProcess> = (0..nodes.len())
        .filter(|i| *i != holder)
        .map(|i| &nodes[i])
        .chain([&rejoined])
        .collect();
    println!(
        "failover: {DEVICES} devices, {} messages acknowledged, {} lost, {} duplicates ({} sent \
         again flagged DUP); {} reconnections, the longest {:.1} s; wills of the dead node's {} \
         devices received: {}",
        outcome.acked,
        outcome.missing.len(),
        outcome.duplicates,
        resent(&live),
        outcome.fleet.reconnects,
        outcome.fleet.longest_gap.as_secs_f64(),
        on_victim.len(),
        on_victim.intersection(&outcome.wills).count(),
    );
    outcome.assert_nothing_lost();
    assert!(
        on_victim.is_subset(&outcome.wills),
        "wills missing: {:?}",
        on_victim.difference(&outcome.wills).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_broker_node_restarted_in_turn_loses_nothing_acknowledged() {
    let Some((shared, mut nodes, balancer)) = deployment() else {
        return;
    };
    let (drill, _) = Drill::start(balancer.mqtt, &nodes).await;
    // As docs/operations.md says: one node at a time, SIGTERM (it drains), start it again on
    // its address, wait until the devices are all publishing, then the next.
    for (index, place) in nodes.iter_mut().enumerate() {
        place.signal(libc::SIGTERM);
        let status = place.wait_exit(PATIENCE).expect("stopped");
        assert!(status.success(), "node {index} stopped with {status}");
        *place = node(&shared, Some(place.ports));
        drill
            .progress(&format!("after node {index} restarted"))
            .await;
    }
    let outcome = drill.finish(&BTreeSet::new()).await;
    println!(
        "rolling restart: {DEVICES} devices, {} messages acknowledged, {} lost, {} duplicates \
         ({} sent again flagged DUP); {} reconnections, the longest {:.1} s",
        outcome.acked,
        outcome.missing.len(),
        outcome.duplicates,
        resent(&nodes.iter().collect::<Vec<_>>()),
        outcome.fleet.reconnects,
        outcome.fleet.longest_gap.as_secs_f64(),
    );
    outcome.assert_nothing_lost();
}
