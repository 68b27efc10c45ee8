//! Distributed mode: several `aos` processes on one NATS and one PostgreSQL database form one
//! platform — each node sees the others, broker-only nodes hand device messages to the shared
//! queue, worker nodes share the work, and losing a worker loses nothing.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use aos_storage::entity::ledger;
use common::api::{PASSWORD, call};
use common::cable::Cable;
use common::cluster::Shared;
use common::mqtt::{
    Client3, Client5, assert_kept, connect_packet, kept_properties, options3, publish_packet,
};
use common::platform::printed;
use common::{AosProcess, PATIENCE};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// Tenant `acme`, class `sensor`, device `d-1`; returns the device's access token.
fn acme(shared: &Shared) -> String {
    shared.cli(&["tenant", "add", "acme"]);
    shared.cli(&["class", "add", "sensor", "--tenant", "acme"]);
    shared.cli(&[
        "device", "add", "d-1", "--tenant", "acme", "--class", "sensor",
    ]);
    let out = shared.cli(&["device", "credentials", "d-1", "--tenant", "acme"]);
    printed(&out, "access token: ")
}

/// The device connected to `broker` with a persistent session.
async fn device(broker: &AosProcess, token: &str) -> Client3 {
    let mut options = options3(broker.ports.mqtt, "d-1");
    options.set_credentials("d-1", token);
    options.set_clean_session(false);
    options.set_inflight(100);
    let (client, _) = Client3::connect(options)
        .await
        .expect("the device connects");
    client
}

/// Publishes `n` QoS 1 telemetry messages `{"n": i}`, each acknowledged.
async fn publish(device: &mut Client3, from: u32, n: u32) {
    for i in from..from + n {
        device
            .publish_acked(
                "aos/d-1/telemetry",
                false,
                format!(r#"{{"n": {i}}}"#).as_bytes(),
            )
            .await;
    }
}

/// Ledger rows of attribute `n`, counted in the shared database.
async fn stored(shared: &Shared) -> u64 {
    let storage = shared.storage().await;
    let rows = ledger::Entity::find()
        .filter(ledger::Column::Attribute.eq("n"))
        .count(storage.db())
        .await
        .expect("count");
    storage.close().await.ok();
    rows
}

/// Waits until the shared ledger holds `want` rows of `n`.
async fn wait_stored(shared: &Shared, want: u64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let rows = stored(shared).await;
        if rows >= want {
            assert_eq!(rows, want, "each message stored once");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{rows} of {want} messages stored in time"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sign_in(web: &AosProcess) -> String {
    common::api::access_token(web.ports.http, "admin", PASSWORD)
}

/// The nodes `/api/nodes` of `web` lists, with whether each is live and its running roles.
fn nodes(web: &AosProcess, token: &str) -> Vec<(String, bool, Vec<String>)> {
    let (status, body) = call(web.ports.http, "GET", "/api/nodes", Some(token), None);
    assert_eq!(status, 200, "{body}");
    body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|n| {
            let roles = n["running_roles"]
                .as_array()
                .map(|r| {
                    r.iter()
                        .filter_map(Value::as_str)
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            (
                n["id"].as_str().unwrap_or_default().to_string(),
                n["live"].as_bool().unwrap_or(false),
                roles,
            )
        })
        .collect()
}

fn node_id(node: &AosProcess) -> String {
    let (_, body) = common::http_get(node.ports.admin, "/node").expect("GET /node");
    let info: Value = serde_json::from_str(&body).expect("JSON");
    info["id"].as_str().expect("id").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_see_each_other_and_share_the_work() {
    let Some(shared) = Shared::start() else {
        return;
    };
    let token = acme(&shared);
    let mut broker = shared
        .aos(&["run", "--roles", "broker"])
        .env("AOS_NODE__SWITCHABLE_ROLES", "worker")
        .spawn();
    broker.wait_ready();
    let worker = shared.node("worker");
    let web = shared.node("worker,web");

    // Every node is listed, live, with its roles, by the one web node.
    let admin = sign_in(&web);
    let ids = [node_id(&broker), node_id(&worker), node_id(&web)];
    let deadline = Instant::now() + PATIENCE;
    loop {
        let listed = nodes(&web, &admin);
        let live: Vec<&(String, bool, Vec<String>)> = listed
            .iter()
            .filter(|(id, live, _)| *live && ids.contains(id))
            .collect();
        if live.len() == 3 {
            let roles_of = |id: &str| {
                live.iter()
                    .find(|(i, _, _)| i == id)
                    .map(|(_, _, r)| r.join(","))
                    .unwrap_or_default()
            };
            assert_eq!(roles_of(&ids[0]), "broker");
            assert_eq!(roles_of(&ids[1]), "worker");
            assert_eq!(roles_of(&ids[2]), "worker,web");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every node listed live: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The same from the command line, and from any node's admin listener.
    let status = shared.cli(&["status"]);
    for id in &ids {
        let line = status
            .lines()
            .find(|l| l.starts_with(id.as_str()))
            .unwrap_or_else(|| panic!("{id} in {status}"));
        assert!(line.contains(" live "), "{line}");
        assert!(line.contains(" ready "), "{line}");
    }
    let (_, cluster) = common::http_get(broker.ports.admin, "/cluster").expect("GET /cluster");
    let cluster: Value = serde_json::from_str(&cluster).expect("JSON");
    assert_eq!(
        cluster["nodes"].as_array().map(Vec::len),
        Some(3),
        "{cluster}"
    );

    // The broker-only node hands device messages to the shared queue; both workers take part.
    let mut device = device(&broker, &token).await;
    publish(&mut device, 0, 1500).await;
    wait_stored(&shared, 1500, PATIENCE).await;
    let processed = |node: &AosProcess| node.metric("aos_worker_processed_messages_total");
    let (first, second) = (processed(&worker), processed(&web));
    assert_eq!(first + second, 1500, "each message processed once");
    assert!(
        first > 0 && second > 0,
        "the work is spread over both workers: {first} / {second}"
    );

    // A role switched on through the web node runs on the broker node.
    let (status, body) = call(
        web.ports.http,
        "PUT",
        &format!("/api/nodes/{}/roles/worker", ids[0]),
        Some(&admin),
        Some(r#"{"enabled": true}"#),
    );
    assert_eq!(status, 202, "{body}");
    let deadline = Instant::now() + PATIENCE;
    while !nodes(&web, &admin)
        .iter()
        .any(|(id, _, roles)| id == &ids[0] && roles.contains(&"worker".to_string()))
    {
        assert!(
            Instant::now() < deadline,
            "the switch did not reach the broker node"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A node that stops is shown down.
    drop(worker);
    let deadline = Instant::now() + PATIENCE;
    while nodes(&web, &admin)
        .iter()
        .any(|(id, live, _)| id == &ids[1] && *live)
    {
        assert!(Instant::now() < deadline, "a killed node still shown live");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_batch_loses_nothing() {
    let Some(shared) = Shared::start() else {
        return;
    };
    let token = acme(&shared);
    let broker = shared.node("broker");
    // A short visibility timeout: what the killed worker held comes back quickly.
    let mut doomed = shared
        .aos(&["run", "--roles", "worker"])
        .env("AOS_QUEUE__VISIBILITY_TIMEOUT", "2s")
        .spawn();
    doomed.wait_ready();
    let mut device = device(&broker, &token).await;
    publish(&mut device, 0, 500).await;
    // Killed while it works through them (some stored, some not).
    let deadline = Instant::now() + PATIENCE;
    while stored(&shared).await == 0 {
        assert!(Instant::now() < deadline, "the worker stored nothing");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    doomed.signal(libc::SIGKILL);
    doomed.wait_exit(PATIENCE).expect("killed");
    publish(&mut device, 500, 500).await;
    let survivor = shared
        .aos(&["run", "--roles", "worker"])
        .env("AOS_QUEUE__VISIBILITY_TIMEOUT", "2s")
        .spawn();
    let mut survivor = survivor;
    survivor.wait_ready();
    // Everything acknowledged to the device is stored, each message once.
    wait_stored(&shared, 1000, PATIENCE * 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_node_refuses_a_database_another_node_uses() {
    let Some(shared) = Shared::start() else {
        return;
    };
    let web = shared.node("web");
    let other = node_id(&web);
    let (status, _, stderr) = shared
        .aos(&["run"])
        .env("AOS_CLUSTER__MODE", "standalone")
        .output();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("another node uses this database now ({other})")),
        "names the other node: {stderr}"
    );
    assert!(stderr.contains("cluster.ignore_other_nodes"), "{stderr}");
}

/// A field of device `d-1` as the API of `web` shows it.
fn shown(web: &AosProcess, token: &str, field: &str) -> String {
    let (code, body) = call(web.ports.http, "GET", "/api/devices/d-1", Some(token), None);
    assert_eq!(code, 200, "{body}");
    body[field].as_str().unwrap_or_default().to_string()
}

fn status(web: &AosProcess, token: &str) -> String {
    shown(web, token, "status")
}

async fn wait_status(web: &AosProcess, token: &str, want: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let now = status(web, token);
        if now == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the device stayed {now}, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_belongs_to_the_node_holding_the_session() {
    let Some(shared) = Shared::start() else {
        return;
    };
    let token = acme(&shared);
    let out = shared.cli(&[
        "user", "add", "olga", "--tenant", "acme", "--role", "operator",
    ]);
    let password = printed(&out, "password: ");
    let web = shared.node("worker,web");
    let olga = common::api::access_token(web.ports.http, "olga", &password);
    let first = shared.node("broker");
    let mut second = shared.node("broker");

    let old = device(&first, &token).await;
    wait_status(&web, &olga, "online", PATIENCE).await;
    let seen_first = shown(&web, &olga, "last_seen");
    // The device comes back through the other broker node before the first one notices it
    // left (recorded once its last-seen time moves on); the first connection's end, reported
    // last, changes nothing.
    let new = device(&second, &token).await;
    let deadline = Instant::now() + PATIENCE;
    while shown(&web, &olga, "last_seen") == seen_first {
        assert!(
            Instant::now() < deadline,
            "the second session was never recorded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(old);
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        assert_eq!(
            status(&web, &olga),
            "online",
            "a late disconnect flipped it"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The node holding the session dies: the device is offline once its registration expires
    // (three 1 s heartbeats here), without any disconnect report.
    second.signal(libc::SIGKILL);
    second.wait_exit(PATIENCE).expect("killed");
    wait_status(&web, &olga, "offline", Duration::from_secs(15)).await;
    drop(new);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_people_rely_on_is_the_same_on_every_node() {
    let Some(shared) = Shared::start() else {
        return;
    };
    let token = acme(&shared);
    let out = shared.cli(&[
        "user",
        "add",
        "olga",
        "--tenant",
        "acme",
        "--role",
        "tenant administrator",
    ]);
    let password = printed(&out, "password: ");
    let throttled = |roles: &str| {
        let mut node = shared
            .aos(&["run", "--roles", roles])
            .env("AOS_AUTH__SIGN_IN__MAX_FAILURES", "3")
            .spawn();
        node.wait_ready();
        node
    };
    let front = throttled("web");
    let back = throttled("worker,web");
    let broker = shared.node("broker");

    // A token from one web node works on another (the cluster keeps one token key).
    let olga = common::api::access_token(front.ports.http, "olga", &password);
    let (status, body) = call(back.ports.http, "GET", "/api/devices", Some(&olga), None);
    assert_eq!(status, 200, "{body}");

    // A value stored by the worker on one node reaches a browser watching another node.
    let updates = common::api::live(front.ports.http, &olga);
    let mut device = device(&broker, &token).await;
    publish(&mut device, 0, 1).await;
    common::api::wait_live(&updates, "value", |v| {
        v["device"] == "d-1" && v["attribute"] == "n"
    });

    // An interpreter set through one node applies on the worker of another at once, not when
    // its cache (a minute) ages: it had the tenant's interpreters cached from the value above.
    let (status, body) = call(
        front.ports.http,
        "PUT",
        "/api/interpreters/n",
        Some(&olga),
        Some(r#"{"expression": "value * 10"}"#),
    );
    assert_eq!(status, 200, "{body}");
    let changed = Instant::now();
    let mut i = 1;
    loop {
        publish(&mut device, i, 1).await;
        let data = common::api::wait_live(&updates, "value", |v| v["device"] == "d-1");
        if data["value"].as_f64() == Some(f64::from(i * 10)) {
            break;
        }
        assert!(
            changed.elapsed() < Duration::from_secs(20),
            "the new interpreter was not applied before the worker's cache aged"
        );
        i += 1;
    }

    // Failed sign-ins count on every node: three on one hold the account back on the other.
    for _ in 0..3 {
        let (status, _) = call(
            front.ports.http,
            "POST",
            "/api/auth/sign-in",
            None,
            Some(r#"{"login": "olga", "password": "not the password"}"#),
        );
        assert_eq!(status, 401);
    }
    let body = serde_json::json!({"login": "olga", "password": password}).to_string();
    let (status, refusal) = call(
        back.ports.http,
        "POST",
        "/api/auth/sign-in",
        None,
        Some(&body),
    );
    assert_eq!(status, 429, "{refusal}");

    // The broker view asks every broker node, from any web node: the device's connection is
    // listed (by the node holding it, as a second broker node answers too), and closed.
    let second = shared.node("broker");
    let (status, page) = call(
        front.ports.http,
        "GET",
        "/api/broker/clients",
        Some(&olga),
        None,
    );
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"][0]["client_id"], "d-1", "{page}");
    assert_eq!(
        page["items"][0]["node"],
        node_id(&broker).as_str(),
        "{page}"
    );
    assert_eq!(page["silent"], serde_json::json!([]), "{page}");
    let admin = sign_in(&back);
    let (_, traffic) = call(
        back.ports.http,
        "GET",
        "/api/broker/traffic",
        Some(&admin),
        None,
    );
    let mut answered: Vec<&str> = traffic["nodes"]
        .as_array()
        .map(|n| n.iter().filter_map(|n| n["node"].as_str()).collect())
        .unwrap_or_default();
    answered.sort_unstable();
    let mut brokers = [node_id(&broker), node_id(&second)];
    brokers.sort_unstable();
    assert_eq!(answered, brokers, "{traffic}");
    let (status, done) = call(
        back.ports.http,
        "POST",
        "/api/broker/clients/disconnect",
        Some(&olga),
        Some(r#"{"client_id": "d-1"}"#),
    );
    assert_eq!(status, 200, "{done}");
    let closed = device.closed().await;
    assert!(
        !closed.contains("nothing received"),
        "d-1 stays connected: {closed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_a_broker_node_and_a_nats_server_dying() {
    // Three NATS servers, every queue replicated on all three: a quorum of two keeps it.
    let Some(mut shared) = Shared::start_replicated() else {
        return;
    };
    let token = acme(&shared);
    let replicated = |shared: &Shared, roles: &str| {
        let mut node = shared
            .aos(&["run", "--roles", roles])
            .env("AOS_CLUSTER__REPLICAS", "3")
            .spawn();
        node.wait_ready();
        node
    };
    let mut broker = replicated(&shared, "broker");
    let mut device = device(&broker, &token).await;
    // Acknowledged to the device, then no worker yet: they wait in the queue.
    publish(&mut device, 0, 300).await;
    drop(device);
    broker.signal(libc::SIGKILL);
    broker.wait_exit(PATIENCE).expect("killed");
    // The server that leads the queue's stream dies too.
    let leader = shared.queue_leader("acquisition").await;
    shared.nats.kill(leader);
    // A worker started now, on the two servers left, stores every one of them, once.
    let _worker = replicated(&shared, "worker");
    wait_stored(&shared, 300, PATIENCE * 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_node_holds_a_bounded_number_of_publishes_while_its_queue_stalls() {
    use tokio::io::AsyncWriteExt;
    const SENT: u16 = 2000;
    let Some(shared) = Shared::start() else {
        return;
    };
    let token = acme(&shared);
    let node = shared
        .aos(&["run", "--roles", "broker,worker"])
        .env("AOS_BROKER__MAX_PENDING_PACKETS", "50");
    let mut node = node.spawn();
    node.wait_ready();
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", node.ports.mqtt))
        .await
        .expect("connect");
    let (mut from_broker, mut to_broker) = stream.into_split();
    to_broker
        .write_all(&connect_packet("d-1", Some(("d-1", &token)), true))
        .await
        .expect("CONNECT");
    let (header, body) = common::mqtt::read_packet(&mut from_broker).await;
    assert_eq!((header, body), (0x20, vec![0, 0]), "CONNACK accepted");

    // The queue stalls (NATS stopped, not killed: it resumes with all it had) while a device
    // that does not wait for acknowledgements sends publish after publish.
    let nats = shared.nats.pid(0).expect("the test NATS") as i32;
    // SAFETY: signals to the test's own NATS server.
    assert_eq!(unsafe { libc::kill(nats, libc::SIGSTOP) }, 0);
    let publishes: Vec<u8> = (1..=SENT)
        .flat_map(|id| {
            let payload = format!(r#"{{"n": {id}}}"#);
            publish_packet(0x32, "aos/d-1/telemetry", id, &payload)
        })
        .collect();
    let writer = tokio::spawn(async move {
        to_broker.write_all(&publishes).await.expect("PUBLISH");
        to_broker
    });
    // The node stops reading the device at its bound instead of taking all of them in.
    let deadline = Instant::now() + Duration::from_secs(3);
    while node.metric("aos_broker_reads_paused_total") == 0 {
        assert!(
            Instant::now() < deadline,
            "the node never stopped reading: {} packets pending",
            node.metric("aos_broker_packets_pending")
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pending = node.metric("aos_broker_packets_pending");
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(nats, libc::SIGCONT) }, 0);
    assert!(
        pending <= 50,
        "{pending} packets pending past the bound of 50"
    );

    // Once the queue is back, every publish is acknowledged, in order, and stored once.
    for id in 1..=SENT {
        let (header, body) = common::mqtt::read_packet(&mut from_broker).await;
        assert_eq!(
            (header, body),
            (0x40, id.to_be_bytes().to_vec()),
            "PUBACK {id}"
        );
    }
    let _to_broker = writer.await.expect("the writer");
    wait_stored(&shared, u64::from(SENT), PATIENCE).await;
}

/// A broker-only node open to anonymous clients with every topic allowed.
fn open_broker(shared: &Shared) -> AosProcess {
    let mut node = shared
        .aos(&["run", "--roles", "broker"])
        .env("AOS_BROKER__AUTH__ALLOW_ANONYMOUS", "true")
        .env("AOS_BROKER__AUTH__ACL_DEFAULT", "allow")
        .spawn();
    node.wait_ready();
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_published_on_one_broker_node_reaches_subscribers_on_another() {
    use rumqttc::v5::mqttbytes::QoS;
    let Some(shared) = Shared::start() else {
        return;
    };
    let token = acme(&shared);
    let (a, b) = (open_broker(&shared), open_broker(&shared));

    // On B: overlapping filters of one client, topics NATS subjects cannot carry as they are.
    let mut subscriber = Client5::start(b.ports.mqtt, "subscriber").await;
    for (filter, qos) in [
        ("a/+/c", QoS::AtLeastOnce),
        ("x/#", QoS::AtMostOnce),
        ("e//m.p t*y/>", QoS::AtLeastOnce),
        ("#", QoS::AtMostOnce),
    ] {
        subscriber.subscribe(filter, qos).await;
    }

    // On A: a device of tenant acme first (anonymous clients get no tenant's traffic), then
    // the platform's messages, in order.
    let mut device = device(&a, &token).await;
    publish(&mut device, 0, 1).await;
    let publisher = Client5::start(a.ports.mqtt, "publisher").await;
    publisher
        .client
        .publish_with_properties("a/b/c", QoS::AtLeastOnce, true, "1", kept_properties())
        .await
        .expect("publish");
    for (topic, payload) in [("x", "2"), ("e//m.p t*y/>", "3"), ("a//c", "4"), ("z", "5")] {
        publisher
            .client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .expect("publish");
    }

    // Each message once (overlapping filters and NATS copies notwithstanding), with the higher
    // QoS of the matching subscriptions capped by the publish's, properties intact,
    // the retain flag cleared (not retain-as-published); the device's message never.
    let mut received = Vec::new();
    while received.len() < 5 {
        let message = subscriber.publish_received().await;
        if &message.payload[..] == b"1" {
            assert_kept(message.properties.as_ref().expect("properties"));
            assert!(!message.retain, "a live message, not retain-as-published");
        }
        received.push((
            String::from_utf8_lossy(&message.topic).to_string(),
            String::from_utf8_lossy(&message.payload).to_string(),
            message.qos,
        ));
    }
    let want = [
        ("a/b/c", "1", QoS::AtLeastOnce),
        ("x", "2", QoS::AtMostOnce),
        ("e//m.p t*y/>", "3", QoS::AtLeastOnce),
        ("a//c", "4", QoS::AtLeastOnce),
        ("z", "5", QoS::AtMostOnce),
    ]
    .map(|(t, p, q)| (t.to_string(), p.to_string(), q));
    // MQTT orders messages per topic; these are on five.
    received.sort_by(|x, y| x.1.cmp(&y.1));
    assert_eq!(received, want);
    // Nothing more: no copy, and not the device's message.
    publisher
        .client
        .publish("z", QoS::AtMostOnce, false, "6")
        .await
        .expect("publish");
    let last = subscriber.publish_received().await;
    assert_eq!(&last.payload[..], b"6", "one copy of each, then the next");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_id_connected_on_another_broker_node_takes_the_connection_over() {
    let Some(shared) = Shared::start() else {
        return;
    };
    let token = acme(&shared);
    let (a, b) = (open_broker(&shared), open_broker(&shared));
    // The device on A; someone else connecting with its id on B is refused (as on one node:
    // the device's session is the cluster's).
    let mut device = device(&a, &token).await;
    let refused = Client5::connect(common::mqtt::options5(b.ports.mqtt, "d-1")).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|err| err.contains("NotAuthorized")),
        "{:?}",
        refused.map(|(_, ack)| ack)
    );
    // An application's client id connected on B after A: A's connection is closed (0x8E); the
    // device's stays.
    let mut app = Client5::start(a.ports.mqtt, "app-1").await;
    let _app_again = Client5::start(b.ports.mqtt, "app-1").await;
    let ended = app.disconnected().await;
    assert!(ended.contains("SessionTakenOver"), "{ended}");
    publish(&mut device, 0, 1).await;
    assert_eq!(a.metric("aos_broker_session_takeovers_total"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_subscription_gives_each_message_to_one_member_on_any_node() {
    use rumqttc::v5::mqttbytes::QoS;
    const SENT: usize = 40;
    let Some(shared) = Shared::start() else {
        return;
    };
    let (a, b) = (open_broker(&shared), open_broker(&shared));
    let mut members = Vec::new();
    for (node, id) in [(&a, "member-a"), (&b, "member-b")] {
        let mut member = Client5::start(node.ports.mqtt, id).await;
        member.subscribe("$share/g/work/#", QoS::AtLeastOnce).await;
        members.push(member);
    }
    let mut everything = Client5::start(b.ports.mqtt, "everything").await;
    everything.subscribe("work/#", QoS::AtLeastOnce).await;

    let publisher = Client5::start(a.ports.mqtt, "publisher").await;
    for i in 0..SENT {
        publisher
            .client
            .publish(format!("work/{i}"), QoS::AtLeastOnce, false, i.to_string())
            .await
            .expect("publish");
    }
    // The plain subscriber gets every message; the members between them each message once,
    // both some (the bus picks a node per message).
    for _ in 0..SENT {
        everything.publish_received().await;
    }
    let text =
        |m: rumqttc::v5::mqttbytes::v5::Publish| String::from_utf8_lossy(&m.payload).to_string();
    let (mut on_b, mut on_a) = (members.pop().expect("b"), members.pop().expect("a"));
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    while got_a.len() + got_b.len() < SENT {
        tokio::select! {
            m = on_a.publish_received() => got_a.push(text(m)),
            m = on_b.publish_received() => got_b.push(text(m)),
        }
    }
    assert!(
        !got_a.is_empty() && !got_b.is_empty(),
        "one member got all: {got_a:?} {got_b:?}"
    );
    let mut all: Vec<usize> = got_a
        .iter()
        .chain(&got_b)
        .map(|p| p.parse().expect("a number"))
        .collect();
    all.sort_unstable();
    assert_eq!(all, (0..SENT).collect::<Vec<_>>(), "each message once");
}

/// A persistent 5.0 session of client id `app` on `port`.
fn persistent_app(port: u16) -> rumqttc::v5::MqttOptions {
    let mut options = common::mqtt::options5(port, "app");
    options.set_clean_start(false);
    options.set_session_expiry_interval(Some(600));
    options
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_retained_messages_are_the_same_on_every_broker_node() {
    use rumqttc::v5::mqttbytes::QoS;
    let Some(shared) = Shared::start() else {
        return;
    };
    let (a, mut b) = (open_broker(&shared), open_broker(&shared));
    let publisher = Client5::start(a.ports.mqtt, "publisher").await;

    // A persistent session on A, subscribed, then offline with a message waiting for it.
    let (mut app, ack) = Client5::connect(persistent_app(a.ports.mqtt))
        .await
        .expect("connect");
    assert!(!ack.session_present);
    app.subscribe("jobs/#", QoS::AtLeastOnce).await;
    app.client.disconnect().await.expect("disconnect");
    app.disconnected().await;
    publisher
        .client
        .publish("jobs/1", QoS::AtLeastOnce, false, "1")
        .await
        .expect("publish");
    a.wait_metric("aos_broker_queued_messages", 1);

    // A retained message set on A is read on B; deleted on B, it is gone on A.
    publisher
        .client
        .publish("state/x", QoS::AtLeastOnce, true, "on")
        .await
        .expect("publish");
    b.wait_metric("aos_broker_retained_messages", 1);
    let mut reader = Client5::start(b.ports.mqtt, "reader").await;
    reader.subscribe("state/#", QoS::AtLeastOnce).await;
    let retained = reader.publish_received().await;
    assert_eq!((&retained.payload[..], retained.retain), (&b"on"[..], true));
    reader
        .client
        .publish("state/x", QoS::AtLeastOnce, true, "")
        .await
        .expect("publish");
    a.wait_metric("aos_broker_retained_messages", 0);

    // The client comes back on B: its session is there, with the message queued on A.
    let (mut app, ack) = Client5::connect(persistent_app(b.ports.mqtt))
        .await
        .expect("connect");
    assert!(ack.session_present, "the session moved to B");
    assert_eq!(&app.publish_received().await.payload[..], b"1");
    a.wait_metric("aos_broker_sessions", 1);
    publisher
        .client
        .publish("jobs/2", QoS::AtLeastOnce, false, "2")
        .await
        .expect("publish");
    assert_eq!(&app.publish_received().await.payload[..], b"2");

    // B dies; on A again, the session is whole: its subscription routes A's messages.
    b.signal(libc::SIGKILL);
    b.wait_exit(PATIENCE).expect("killed");
    drop(app);
    let (mut app, ack) = Client5::connect(persistent_app(a.ports.mqtt))
        .await
        .expect("connect");
    assert!(ack.session_present, "the session survived its node");
    publisher
        .client
        .publish("jobs/3", QoS::AtLeastOnce, false, "3")
        .await
        .expect("publish");
    // Message 2 may come again first, flagged DUP: B may have died before its PUBACK was stored.
    // Counted, too.
    let mut next = app.publish_received().await;
    let mut resent = 0;
    if &next.payload[..] == b"2" {
        assert!(next.dup, "a message sent again is flagged DUP");
        resent += 1;
        next = app.publish_received().await;
    }
    assert_eq!(&next.payload[..], b"3");
    assert_eq!(a.metric("aos_broker_resent_total"), resent);
}

/// The number a message of [`publish_jobs`] carries.
fn job(message: &rumqttc::v5::mqttbytes::v5::Publish) -> u32 {
    String::from_utf8_lossy(&message.payload)
        .parse()
        .expect("a number")
}

/// Publishes QoS 1 `jobs/<i>` with payload `i` for each `i` in `range`, each acknowledged.
async fn publish_jobs(publisher: &mut Client5, range: std::ops::RangeInclusive<u32>) {
    use rumqttc::v5::mqttbytes::QoS;
    for i in range {
        publisher
            .client
            .publish(format!("jobs/{i}"), QoS::AtLeastOnce, false, i.to_string())
            .await
            .expect("publish");
        publisher.puback().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_acknowledged_for_a_persistent_session_survive_the_death_of_its_node() {
    use rumqttc::v5::mqttbytes::QoS;
    const SENT: u32 = 60;
    let Some(shared) = Shared::start() else {
        return;
    };
    let (a, mut b) = (open_broker(&shared), open_broker(&shared));
    // The application's persistent session on B; A knows of it.
    let (mut app, _) = Client5::connect(persistent_app(b.ports.mqtt))
        .await
        .expect("connect");
    app.subscribe("jobs/#", QoS::AtLeastOnce).await;
    a.wait_metric("aos_broker_cluster_sessions", 1);

    // Devices publish on A while B lives, and on after B was killed: every message A
    // acknowledged is kept for the application, whatever B had done with it.
    let mut publisher = Client5::start(a.ports.mqtt, "publisher").await;
    publish_jobs(&mut publisher, 1..=SENT / 2).await;
    b.signal(libc::SIGKILL);
    b.wait_exit(PATIENCE).expect("killed");
    // What the application received from B before it died.
    let mut got = std::collections::BTreeSet::new();
    while let Ok(packet) = app.next().await {
        if let rumqttc::v5::mqttbytes::v5::Packet::Publish(message) = packet {
            got.insert(job(&message));
        }
    }
    publish_jobs(&mut publisher, SENT / 2 + 1..=SENT).await;

    // The application comes back on A: everything, a message it may have had already flagged
    // DUP (and counted).
    let (mut app, ack) = Client5::connect(persistent_app(a.ports.mqtt))
        .await
        .expect("connect");
    assert!(ack.session_present);
    let mut duplicates = 0;
    while got.len() < SENT as usize {
        let message = app.publish_received().await;
        let n = job(&message);
        if !got.insert(n) {
            assert!(
                message.dup,
                "message {n} came twice, the second time not flagged DUP"
            );
            duplicates += 1;
        }
    }
    assert_eq!(got, (1..=SENT).collect());
    let resent = a.metric("aos_broker_resent_total");
    println!(
        "{SENT} messages acknowledged, every one delivered; {duplicates} duplicates, {resent} sent flagged DUP"
    );
    assert!(resent >= duplicates);
}

/// [`persistent_app`] acknowledging each message itself once it has it.
async fn careful_app(port: u16) -> (Client5, bool) {
    let mut options = persistent_app(port);
    options.set_manual_acks(true);
    let (app, ack) = Client5::connect(options).await.expect("connect");
    (app, ack.session_present)
}

/// The next message the application receives (its topic and number), acknowledged; `None` once
/// nothing came for a while.
async fn take(app: &mut Client5) -> Option<(String, u32)> {
    loop {
        match app.next().await {
            Ok(rumqttc::v5::mqttbytes::v5::Packet::Publish(message)) => {
                app.client.ack(&message).await.expect("ack");
                let topic = String::from_utf8_lossy(&message.topic).to_string();
                return Some((topic, job(&message)));
            }
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_moving_between_nodes_misses_nothing_their_publishers_acknowledged() {
    use rumqttc::v5::mqttbytes::QoS;
    const MOVES: usize = 6;
    let Some(shared) = Shared::start() else {
        return;
    };
    let nodes = [open_broker(&shared), open_broker(&shared)];
    let ports = [nodes[0].ports.mqtt, nodes[1].ports.mqtt];
    let (mut app, _) = careful_app(ports[0]).await;
    app.subscribe("jobs/#", QoS::AtLeastOnce).await;
    nodes[1].wait_metric("aos_broker_cluster_sessions", 1);

    // A publisher on each node, one acknowledged message after another: whichever node the
    // application leaves, a device publishes through it as it goes.
    let stop = CancellationToken::new();
    let publishers: Vec<_> = ports
        .iter()
        .enumerate()
        .map(|(n, &port)| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut publisher = Client5::start(port, &format!("publisher-{n}")).await;
                let mut sent = 0;
                while !stop.is_cancelled() {
                    sent += 1;
                    publisher
                        .client
                        .publish(
                            format!("jobs/{n}"),
                            QoS::AtLeastOnce,
                            false,
                            sent.to_string(),
                        )
                        .await
                        .expect("publish");
                    publisher.puback().await;
                }
                sent
            })
        })
        .collect();
    let mut got = BTreeSet::new();
    for moved in 1..=MOVES {
        for _ in 0..20 {
            got.insert(
                take(&mut app)
                    .await
                    .expect("messages while the publishers publish"),
            );
        }
        // Gone without a word; what was in flight stays in the session.
        drop(app);
        let present;
        (app, present) = careful_app(ports[moved % 2]).await;
        assert!(present, "the session moved");
    }
    stop.cancel();
    let mut acknowledged = BTreeSet::new();
    for (n, publisher) in publishers.into_iter().enumerate() {
        let sent = publisher.await.expect("publisher");
        acknowledged.extend((1..=sent).map(|i| (format!("jobs/{n}"), i)));
    }
    while !acknowledged.is_subset(&got) {
        let Some(message) = take(&mut app).await else {
            break;
        };
        got.insert(message);
    }
    let missing: Vec<_> = acknowledged.difference(&got).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages never came: {missing:?}",
        missing.len(),
        acknowledged.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_gets_what_the_bus_lost_while_its_nodes_link_to_nats_was_down() {
    use rumqttc::v5::mqttbytes::QoS;
    let Some(shared) = Shared::start() else {
        return;
    };
    let server = shared.nats.urls[0]
        .rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .expect("a NATS port");
    let cable = Cable::to(server).await;
    let mut a = shared
        .aos(&["run", "--roles", "broker"])
        .env("AOS_BROKER__AUTH__ALLOW_ANONYMOUS", "true")
        .env("AOS_BROKER__AUTH__ACL_DEFAULT", "allow")
        .env(
            "AOS_CLUSTER__NATS_URL",
            format!("nats://127.0.0.1:{}", cable.port),
        )
        .spawn();
    a.wait_ready();
    let b = open_broker(&shared);
    let (mut app, _) = careful_app(a.ports.mqtt).await;
    app.subscribe("jobs/#", QoS::AtLeastOnce).await;
    b.wait_metric("aos_broker_cluster_sessions", 1);
    let mut publisher = Client5::start(b.ports.mqtt, "publisher").await;
    publish_jobs(&mut publisher, 1..=5).await;

    // A's link to NATS fails while B acknowledges messages for the application: B stored
    // them for its session, and their live copies went nowhere.
    cable.cut();
    publish_jobs(&mut publisher, 6..=20).await;
    cable.mend();

    // The application, connected to A throughout, gets every one.
    let mut got = BTreeSet::new();
    while got.len() < 20 {
        let Some((_, n)) = take(&mut app).await else {
            break;
        };
        got.insert(n);
    }
    assert_eq!(got, (1..=20).collect());
}

/// Kills broker `node` (`kill -9`) once what it staged so far (its clients' wills) is stored: a
/// SUBACK of a persistent session waits for that.
async fn kill_once_stored(node: &mut AosProcess) {
    let (mut flush, _) = Client5::connect(persistent_app(node.ports.mqtt))
        .await
        .expect("connect");
    flush
        .subscribe("flush", rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
        .await;
    node.signal(libc::SIGKILL);
    node.wait_exit(PATIENCE).expect("killed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wills_of_a_dead_nodes_clients_are_published_once_by_a_surviving_node() {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::LastWill;
    let Some(shared) = Shared::start() else {
        return;
    };
    let (a, mut b) = (open_broker(&shared), open_broker(&shared));
    let mut watcher = Client5::start(a.ports.mqtt, "watcher").await;
    watcher.subscribe("wills/#", QoS::AtLeastOnce).await;
    // Two clients with wills on B; one leaves politely first (its will is gone with it).
    let mut clients = Vec::new();
    for id in ["rude", "polite"] {
        let mut options = common::mqtt::options5(b.ports.mqtt, id);
        options.set_last_will(LastWill::new(
            format!("wills/{id}"),
            "gone",
            QoS::AtLeastOnce,
            false,
            None,
        ));
        clients.push(Client5::connect(options).await.expect("connect").0);
    }
    let mut polite = clients.pop().expect("polite");
    polite.client.disconnect().await.expect("disconnect");
    polite.disconnected().await;
    // B has let go of its will (its session went), and stored that.
    b.wait_metric("aos_broker_sessions", 1);
    kill_once_stored(&mut b).await;
    let will = watcher.publish_received().await;
    assert_eq!(
        (&will.topic[..], &will.payload[..]),
        (&b"wills/rude"[..], &b"gone"[..])
    );
    // Once: nothing more comes before a message published after it.
    let publisher = Client5::start(a.ports.mqtt, "publisher").await;
    a.wait_metric("aos_broker_orphan_wills_total", 1);
    publisher
        .client
        .publish("wills/marker", QoS::AtLeastOnce, false, "after")
        .await
        .expect("publish");
    let next = watcher.publish_received().await;
    assert_eq!(&next.topic[..], b"wills/marker", "the will came once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_dies_soon_after_it_started_leaves_its_clients_wills_to_the_others() {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::LastWill;
    let Some(shared) = Shared::start() else {
        return;
    };
    // The first node looks for dead nodes before its own registration is in the registry (it
    // registers once its roles run): it must not take itself for one and drop its mark.
    let mut first = open_broker(&shared);
    let second = open_broker(&shared);
    let mut watcher = Client5::start(second.ports.mqtt, "watcher").await;
    watcher.subscribe("wills/#", QoS::AtLeastOnce).await;
    let mut options = common::mqtt::options5(first.ports.mqtt, "young");
    options.set_last_will(LastWill::new(
        "wills/young",
        "gone",
        QoS::AtLeastOnce,
        false,
        None,
    ));
    let (_client, _) = Client5::connect(options).await.expect("connect");
    kill_once_stored(&mut first).await;
    let will = watcher.publish_received().await;
    assert_eq!(
        (&will.topic[..], &will.payload[..]),
        (&b"wills/young"[..], &b"gone"[..])
    );
}

/// A broker node behind a load balancer: its main listener expects the PROXY protocol.
fn proxied_broker(shared: &Shared) -> AosProcess {
    let mut node = shared
        .aos(&["run", "--roles", "broker"])
        .env("AOS_BROKER__AUTH__ALLOW_ANONYMOUS", "true")
        .env("AOS_BROKER__AUTH__ACL_DEFAULT", "allow")
        .env("AOS_BROKER__PROXY_PROTOCOL", "true")
        .spawn();
    node.wait_ready();
    node
}

/// Sends a 3.1.1 CONNECT for `client_id` on `stream`; returns the CONNACK's return code, or
/// `None` when the connection was closed instead.
async fn raw_connect(stream: &mut tokio::net::TcpStream, client_id: &str) -> Option<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(&connect_packet(client_id, None, true))
        .await
        .ok()?;
    let mut ack = [0u8; 4];
    match tokio::time::timeout(PATIENCE, stream.read_exact(&mut ack)).await {
        Ok(Ok(_)) if ack[0] == 0x20 => Some(ack[3]),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_haproxy_brokers_see_each_clients_own_address() {
    let Some(shared) = Shared::start() else {
        return;
    };
    let (a, b) = (proxied_broker(&shared), proxied_broker(&shared));
    let Some(balancer) = common::haproxy::Haproxy::start(&[&a, &b]) else {
        return;
    };
    // Through the balancer (once its checks found the nodes up): connected, and the node that
    // took the client logs the client's own address, not the balancer's.
    let deadline = Instant::now() + PATIENCE;
    let (stream, code) = loop {
        if let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", balancer.mqtt)).await
            && let Some(code) = raw_connect(&mut stream, "behind").await
        {
            break (stream, code);
        }
        assert!(
            Instant::now() < deadline,
            "the balancer never passed a client on"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(code, 0, "connection accepted");
    let own = format!("peer=Some({})", stream.local_addr().expect("local address"));
    let deadline = Instant::now() + PATIENCE;
    while ![&a, &b].iter().any(|node| {
        node.stderr()
            .lines()
            .any(|l| l.contains("client connected") && l.contains("behind") && l.contains(&own))
    }) {
        assert!(
            Instant::now() < deadline,
            "no node logged {own}: {}\n{}",
            a.stderr(),
            b.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A client that bypasses the balancer cannot claim an address: it is not served.
    let mut direct = tokio::net::TcpStream::connect(("127.0.0.1", a.ports.mqtt))
        .await
        .expect("connect");
    assert_eq!(raw_connect(&mut direct, "direct").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sessions_of_a_dead_node_expire_as_their_expiry_says() {
    use rumqttc::v5::mqttbytes::QoS;
    let Some(shared) = Shared::start() else {
        return;
    };
    let (a, mut b) = (open_broker(&shared), open_broker(&shared));
    // Two persistent sessions connected to B: one kept 2 s after its connection ends, one 10
    // minutes.
    let mut clients = Vec::new();
    for (id, expiry) in [("brief", 2), ("app", 600)] {
        let mut options = common::mqtt::options5(b.ports.mqtt, id);
        options.set_clean_start(false);
        options.set_session_expiry_interval(Some(expiry));
        let (mut client, _) = Client5::connect(options).await.expect("connect");
        client.subscribe("jobs/#", QoS::AtLeastOnce).await;
        clients.push(client);
    }
    a.wait_metric("aos_broker_cluster_sessions", 2);

    // B dies with both connected: the brief one ends once B's death is seen and 2 s passed.
    b.signal(libc::SIGKILL);
    b.wait_exit(PATIENCE).expect("killed");
    a.wait_metric("aos_broker_cluster_sessions", 1);
    let mut brief = common::mqtt::options5(a.ports.mqtt, "brief");
    brief.set_clean_start(false);
    let (_, ack) = Client5::connect(brief).await.expect("connect");
    assert!(!ack.session_present, "the brief session expired");
    let (_, ack) = Client5::connect(persistent_app(a.ports.mqtt))
        .await
        .expect("connect");
    assert!(ack.session_present, "the long one is kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_subscription_of_a_persistent_session_keeps_what_was_acknowledged_for_it() {
    use rumqttc::v5::mqttbytes::QoS;
    const SENT: u32 = 20;
    let Some(shared) = Shared::start() else {
        return;
    };
    let (a, mut b) = (open_broker(&shared), open_broker(&shared));
    // Two members of one shared subscription: the application's persistent session on B, and a
    // clean one on A.
    let (mut app, _) = Client5::connect(persistent_app(b.ports.mqtt))
        .await
        .expect("connect");
    app.subscribe("$share/workers/jobs/#", QoS::AtLeastOnce)
        .await;
    let mut helper = Client5::start(a.ports.mqtt, "helper").await;
    helper
        .subscribe("$share/workers/jobs/#", QoS::AtLeastOnce)
        .await;

    // While both live, each message goes to one of them.
    let mut publisher = Client5::start(a.ports.mqtt, "publisher").await;
    publish_jobs(&mut publisher, 1..=SENT).await;
    let (mut to_app, mut to_helper) = (Vec::new(), Vec::new());
    while to_app.len() + to_helper.len() < SENT as usize {
        tokio::select! {
            m = app.publish_received() => to_app.push(job(&m)),
            m = helper.publish_received() => to_helper.push(job(&m)),
        }
    }
    assert!(
        !to_app.is_empty() && !to_helper.is_empty(),
        "one member got all: {to_app:?} {to_helper:?}"
    );
    let mut got: Vec<u32> = to_app.into_iter().chain(to_helper).collect();
    got.sort_unstable();
    assert_eq!(got, (1..=SENT).collect::<Vec<_>>(), "each message once");

    // The application's node dies, and the helper leaves: what A acknowledges now is kept for
    // the application's session, which it finds on A.
    b.signal(libc::SIGKILL);
    b.wait_exit(PATIENCE).expect("killed");
    drop(app);
    helper.client.disconnect().await.expect("disconnect");
    helper.disconnected().await;
    publish_jobs(&mut publisher, SENT + 1..=2 * SENT).await;
    let (mut app, ack) = Client5::connect(persistent_app(a.ports.mqtt))
        .await
        .expect("connect");
    assert!(ack.session_present);
    let mut later = std::collections::BTreeSet::new();
    while later.len() < SENT as usize {
        let n = job(&app.publish_received().await);
        // Earlier ones B had not seen acknowledged may come again (flagged DUP).
        if n > SENT {
            later.insert(n);
        }
    }
    assert_eq!(later, (SENT + 1..=2 * SENT).collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_broker_node_knows_a_persistent_subscription_once_it_is_acknowledged() {
    use rumqttc::v5::mqttbytes::QoS;
    const ROUNDS: u64 = 50;
    let Some(shared) = Shared::start() else {
        return;
    };
    let (a, b) = (open_broker(&shared), open_broker(&shared));
    let (mut app, _) = Client5::connect(persistent_app(b.ports.mqtt))
        .await
        .expect("connect");
    let mut publisher = Client5::start(a.ports.mqtt, "publisher").await;
    // A message published on A the moment a subscription on B is acknowledged is stored for
    // it by A before A acknowledges it — every time.
    for round in 0..ROUNDS {
        let topic = format!("fresh/{round}");
        app.subscribe(&topic, QoS::AtLeastOnce).await;
        publisher
            .client
            .publish(topic, QoS::AtLeastOnce, false, round.to_string())
            .await
            .expect("publish");
        publisher.puback().await;
    }
    assert_eq!(a.metric("aos_broker_cluster_stored_total"), ROUNDS);
}
