//! The broker's state survives `kill -9`: retained messages (and their deletion), persistent
//! sessions with their subscriptions and queued messages (3.1.1 and 5.0, properties included),
//! and the inbound QoS 2 exchange of a persistent session, whose resent PUBLISH is stored once.

mod common;

use std::collections::BTreeSet;

use common::mqtt::{
    Client3, Client5, assert_kept, connect_packet, kept_properties, options3, options5,
    publish_packet, read_packet,
};
use common::platform::{access_token, ledger_numbers, storage, wait_logged};
use common::{Aos, Broker, cli_ok};
use rumqttc::v5::mqttbytes::v5::SubscribeProperties;
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn retained_and_queued_messages_survive_kill_9_on_3_1_1() {
    use rumqttc::QoS;
    let mut broker = Broker::start(&[]);
    let mut options = options3(broker.port(), "keeper");
    options.set_clean_session(false);
    let (mut keeper, _) = Client3::connect(options).await.expect("connect");
    keeper.subscribe("q/#", QoS::AtLeastOnce).await;
    keeper.client.disconnect().await.expect("disconnect");
    keeper.closed().await;

    let mut publisher = Client3::start(broker.port(), "publisher").await;
    publisher.publish_acked("r/kept", true, b"kept").await;
    publisher.publish_acked("r/gone", true, b"soon gone").await;
    publisher.publish_acked("r/gone", true, b"").await;
    for n in 1..=3 {
        publisher
            .publish_acked(&format!("q/{n}"), false, format!("m{n}").as_bytes())
            .await;
    }
    drop(publisher);

    broker.crash_and_restart();

    let mut reader = Client3::start(broker.port(), "reader").await;
    reader.subscribe("r/#", QoS::AtLeastOnce).await;
    let kept = reader.publish_received().await;
    assert_eq!(
        (&kept.topic[..], &kept.payload[..]),
        ("r/kept", &b"kept"[..])
    );
    assert!(kept.retain, "delivered as retained");
    // A live message after it: the deleted retained message did not come back in between.
    reader.publish_acked("r/live", false, b"live").await;
    assert_eq!(&reader.publish_received().await.payload[..], b"live");

    let mut options = options3(broker.port(), "keeper");
    options.set_clean_session(false);
    let (mut keeper, connack) = Client3::connect(options).await.expect("reconnect");
    assert!(connack.session_present, "the session survived");
    for n in 1..=3 {
        let queued = keeper.publish_received().await;
        assert_eq!(
            (&queued.topic[..], &queued.payload[..]),
            (format!("q/{n}").as_str(), format!("m{n}").as_bytes()),
            "queued messages in order"
        );
    }
    // Its subscription is back too: a new message reaches it.
    let mut publisher = Client3::start(broker.port(), "publisher").await;
    publisher.publish_acked("q/4", false, b"m4").await;
    assert_eq!(&keeper.publish_received().await.payload[..], b"m4");
}

#[tokio::test]
async fn a_5_0_session_keeps_its_subscription_options_and_message_properties() {
    use rumqttc::v5::mqttbytes::QoS;
    let mut broker = Broker::start(&[]);
    let session = |port| {
        let mut options = options5(port, "keeper5");
        options.set_clean_start(false);
        options.set_session_expiry_interval(Some(3600));
        options
    };
    let (keeper, _) = Client5::connect(session(broker.port()))
        .await
        .expect("connect");
    keeper
        .client
        .subscribe_with_properties(
            "v5/#",
            QoS::ExactlyOnce,
            SubscribeProperties {
                id: Some(7),
                user_properties: Vec::new(),
            },
        )
        .await
        .expect("subscribe");
    let mut keeper = keeper;
    keeper.suback().await;
    keeper.client.disconnect().await.expect("disconnect");
    keeper.disconnected().await;

    let mut publisher = Client5::start(broker.port(), "publisher5").await;
    publisher
        .client
        .publish_with_properties("v5/a", QoS::ExactlyOnce, false, "two", kept_properties())
        .await
        .expect("publish");
    // QoS 2 completes with PUBCOMP; a QoS 1 message after it is acknowledged once both are
    // stored.
    publisher
        .client
        .publish("v5/b", QoS::AtLeastOnce, false, "one")
        .await
        .expect("publish");
    publisher.puback().await;
    drop(publisher);

    broker.crash_and_restart();

    let (mut keeper, connack) = Client5::connect(session(broker.port()))
        .await
        .expect("reconnect");
    assert!(connack.session_present, "the session survived");
    let first = keeper.publish_received().await;
    assert_eq!(
        (&first.topic[..], &first.payload[..]),
        (&b"v5/a"[..], &b"two"[..])
    );
    assert_eq!(first.qos, QoS::ExactlyOnce);
    let props = first.properties.expect("properties");
    assert_eq!(props.subscription_identifiers, vec![7]);
    assert_kept(&props);
    let second = keeper.publish_received().await;
    assert_eq!(&second.payload[..], b"one");
}

/// Opens a raw connection, sends `connect` and returns the connection and its CONNACK.
async fn raw_connect(port: u16, connect: &[u8]) -> (tokio::net::TcpStream, (u8, Vec<u8>)) {
    let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    raw.write_all(connect).await.expect("CONNECT");
    let connack = read_packet(&mut raw).await;
    (raw, connack)
}

#[tokio::test]
async fn a_qos2_message_resent_after_a_crash_is_stored_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    cli_ok(dir.path(), &["tenant", "add", "acme"]);
    cli_ok(dir.path(), &["class", "add", "sensor", "--tenant", "acme"]);
    cli_ok(
        dir.path(),
        &[
            "device", "add", "d-1", "--tenant", "acme", "--class", "sensor",
        ],
    );
    let token = access_token(dir.path(), "d-1", "acme");
    let connect = connect_packet("d-1", Some(("d-1", &token)), false);
    let publish = publish_packet(0x34, "aos/d-1/telemetry", 7, r#"{"seq": 1}"#);

    let mut node = Aos::new(dir.path(), &["run"]).spawn();
    node.wait_ready();
    let (mut device, connack) = raw_connect(node.ports.mqtt, &connect).await;
    assert_eq!(connack, (0x20, vec![0, 0]), "CONNACK");
    device.write_all(&publish).await.expect("PUBLISH");
    // PUBREC: the broker has the message. The device never sees it: the node dies now.
    assert_eq!(read_packet(&mut device).await, (0x50, vec![0, 7]), "PUBREC");
    node.signal(libc::SIGKILL);
    node.wait_exit(common::PATIENCE).expect("killed");
    drop(device);

    let mut node = Aos::new(dir.path(), &["run"]).spawn();
    node.wait_ready();
    let (mut device, connack) = raw_connect(node.ports.mqtt, &connect).await;
    assert_eq!(connack, (0x20, vec![1, 0]), "CONNACK, session present");
    // As the device would: the unacknowledged QoS 2 PUBLISH again, flagged DUP.
    let mut again = publish.clone();
    again[0] |= 0x08;
    device.write_all(&again).await.expect("PUBLISH DUP");
    assert_eq!(read_packet(&mut device).await, (0x50, vec![0, 7]), "PUBREC");
    device.write_all(&[0x62, 2, 0, 7]).await.expect("PUBREL");
    assert_eq!(
        read_packet(&mut device).await,
        (0x70, vec![0, 7]),
        "PUBCOMP"
    );
    // A later message marks when everything before it has been taken.
    let later = publish_packet(0x32, "aos/d-1/telemetry", 8, r#"{"seq": 2}"#);
    device.write_all(&later).await.expect("PUBLISH");
    assert_eq!(read_packet(&mut device).await, (0x40, vec![0, 8]), "PUBACK");

    let storage = storage(dir.path()).await;
    wait_logged(&storage, 2).await;
    let rows = ledger_numbers(&storage, "seq").await;
    let values: BTreeSet<i64> = rows.iter().copied().collect();
    assert_eq!(values, BTreeSet::from([1, 2]));
    assert_eq!(rows.len(), 2, "the resent QoS 2 message is stored once");
}

/// A publisher that keeps many QoS 1 messages in flight to a persistent subscriber: with
/// acknowledgements held back for the disk, every message still arrives once and in the order
/// it was sent, and the PUBACKs come back in that order too (MQTT 3.1.1 §4.6).
#[tokio::test]
async fn a_pipelined_qos1_stream_to_a_persistent_session_keeps_its_order() {
    use rumqttc::QoS;
    use tokio::io::AsyncReadExt;
    const MESSAGES: u32 = 20_000;
    const WINDOW: u32 = 1_000;
    let broker = Broker::start(&[]);
    let mut options = options3(broker.port(), "ordered-reader");
    options.set_clean_session(false);
    options.set_inflight(1000);
    let (mut reader, _) = Client3::connect(options).await.expect("connect");
    reader.subscribe("seq/#", QoS::AtLeastOnce).await;

    let connect = connect_packet("ordered-writer", None, true);
    let (writer, connack) = raw_connect(broker.port(), &connect).await;
    assert_eq!(connack, (0x20, vec![0, 0]), "CONNACK");
    let (mut from_broker, mut to_broker) = writer.into_split();
    let sending = tokio::spawn(async move {
        // Packet ids cycle through 1..=WINDOW; a new one goes out only once its previous use
        // was acknowledged, so the window is never exceeded.
        let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel::<u16>();
        let acks = tokio::spawn(async move {
            let mut expected = 1u32;
            let mut buf = Vec::new();
            let mut chunk = [0u8; 65536];
            while expected <= MESSAGES {
                let n = from_broker.read(&mut chunk).await.expect("read PUBACKs");
                assert!(n > 0, "the broker closed the connection");
                buf.extend_from_slice(&chunk[..n]);
                let mut at = 0;
                while buf.len() >= at + 4 {
                    assert_eq!(&buf[at..at + 2], &[0x40, 2], "a PUBACK");
                    let id = u16::from_be_bytes([buf[at + 2], buf[at + 3]]);
                    let want = ((expected - 1) % WINDOW + 1) as u16;
                    assert_eq!(id, want, "PUBACKs in the order of the PUBLISHes");
                    acked_tx.send(id).expect("acked");
                    expected += 1;
                    at += 4;
                }
                buf.drain(..at);
            }
        });
        let mut batch = Vec::new();
        for seq in 0..MESSAGES {
            if seq >= WINDOW {
                acked_rx.recv().await.expect("an acknowledgement");
            }
            let id = (seq % WINDOW + 1) as u16;
            batch.extend(publish_packet(0x32, "seq/a", id, &format!("{seq:08}")));
            if batch.len() > 16 * 1024 || seq + 1 == MESSAGES {
                to_broker.write_all(&batch).await.expect("PUBLISH");
                batch.clear();
            }
        }
        acks.await.expect("every PUBACK, in order");
        to_broker
    });

    for expected in 0..MESSAGES {
        let received = reader.publish_received().await;
        let seq: u32 = std::str::from_utf8(&received.payload)
            .expect("utf-8")
            .parse()
            .expect("a sequence number");
        assert_eq!(seq, expected, "delivered in the order published");
    }
    let _to_broker = sending.await.expect("publisher");
}

/// 5.0 clients that sent no client id keep sessions under the ids the broker assigned; after a
/// restart, new such clients get other ids, not those sessions.
#[tokio::test]
async fn an_assigned_client_id_is_not_assigned_again_after_a_restart() {
    use rumqttc::v5::mqttbytes::QoS;
    const CLIENTS: usize = 6;
    let mut broker = Broker::start(&[]);
    let connect = |port| async move {
        let mut options = options5(port, "");
        options.set_clean_start(false);
        options.set_session_expiry_interval(Some(3600));
        let (client, ack) = Client5::connect(options).await.expect("connect");
        let assigned = ack
            .properties
            .as_ref()
            .and_then(|p| p.assigned_client_identifier.clone())
            .expect("an assigned client id");
        (client, assigned, ack.session_present)
    };
    let mut before = BTreeSet::new();
    for _ in 0..CLIENTS {
        let (mut client, assigned, _) = connect(broker.port()).await;
        client.subscribe("kept/#", QoS::AtLeastOnce).await;
        before.insert(assigned);
    }
    broker.crash_and_restart();
    for _ in 0..CLIENTS {
        let (_client, assigned, present) = connect(broker.port()).await;
        assert!(
            !before.contains(&assigned) && !present,
            "{assigned} assigned again, its session present: {present}"
        );
    }
}
