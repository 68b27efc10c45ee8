//! Bad input from one client — malformed packets and protocol violations, sent as raw bytes —
//! closes that client's connection (5.0: with the reason code the specification names) and
//! nothing else: the broker keeps serving everyone.

mod common;

use std::time::Duration;

use common::Broker;
use common::mqtt::{Client3, WAIT};
use rumqttc::QoS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn connect_packet(version: u8, client_id: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', version, 0x02, 0, 60];
    if version == 5 {
        body.push(0); // no properties
    }
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    packet
}

async fn raw(broker: &Broker) -> TcpStream {
    TcpStream::connect(("127.0.0.1", broker.port()))
        .await
        .expect("connect")
}

/// Connects and reads the CONNACK.
async fn connected(broker: &Broker, version: u8, client_id: &str) -> TcpStream {
    let mut stream = raw(broker).await;
    stream
        .write_all(&connect_packet(version, client_id))
        .await
        .expect("CONNECT");
    let (header, body) = read_packet(&mut stream).await.expect("CONNACK");
    assert_eq!(header, 0x20);
    assert_eq!(body[1], 0, "accepted");
    stream
}

/// One packet (first byte, body), or `None` once the broker has closed the connection.
async fn read_packet(stream: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let read = async {
        let header = stream.read_u8().await.ok()?;
        let (mut len, mut shift) = (0usize, 0);
        loop {
            let byte = stream.read_u8().await.ok()?;
            len |= usize::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        let mut body = vec![0; len];
        stream.read_exact(&mut body).await.ok()?;
        Some((header, body))
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("the broker answers or closes in time")
}

/// Reads until the connection closes; returns the 5.0 DISCONNECT reason code if one came.
async fn closed(stream: &mut TcpStream) -> Option<u8> {
    let mut reason = None;
    while let Some((header, body)) = read_packet(stream).await {
        if header == 0xE0 {
            reason = Some(body.first().copied().unwrap_or(0));
        }
    }
    reason
}

/// A 5.0 client sending `packet` is disconnected with an error reason code.
async fn refused_with_disconnect(broker: &Broker, client_id: &str, packet: &[u8]) {
    let mut v5 = connected(broker, 5, client_id).await;
    v5.write_all(packet).await.expect("write");
    let reason = closed(&mut v5).await.expect("a DISCONNECT");
    assert!(reason >= 0x80, "reason {reason:#x}");
}

/// The broker still routes messages between well-behaved clients.
async fn still_serving(broker: &Broker) {
    let mut sub = Client3::start(broker.port(), "still-sub").await;
    sub.subscribe("alive", QoS::AtMostOnce).await;
    let publisher = Client3::start(broker.port(), "still-pub").await;
    publisher
        .publish("alive", QoS::AtMostOnce, false, b"yes")
        .await;
    assert_eq!(sub.publish_received().await.payload.as_ref(), b"yes");
}

#[tokio::test]
async fn a_packet_before_connect_closes_the_connection_without_connack() {
    let broker = Broker::start(&[]);
    let mut stream = raw(&broker).await;
    stream
        .write_all(&[0x30, 5, 0, 1, b't', b'h', b'i'])
        .await
        .expect("PUBLISH");
    assert_eq!(read_packet(&mut stream).await, None);
    still_serving(&broker).await;
}

#[tokio::test]
async fn a_second_connect_is_a_protocol_violation() {
    let broker = Broker::start(&[]);
    let mut v3 = connected(&broker, 4, "again3").await;
    v3.write_all(&connect_packet(4, "again3"))
        .await
        .expect("CONNECT");
    assert_eq!(
        closed(&mut v3).await,
        None,
        "3.1.1: the connection is closed"
    );

    let mut v5 = connected(&broker, 5, "again5").await;
    v5.write_all(&connect_packet(5, "again5"))
        .await
        .expect("CONNECT");
    assert_eq!(
        closed(&mut v5).await,
        Some(0x82),
        "5.0: DISCONNECT protocol error"
    );
    still_serving(&broker).await;
}

#[tokio::test]
async fn a_wildcard_in_a_publish_topic_closes_the_connection() {
    let broker = Broker::start(&[]);
    let mut v3 = connected(&broker, 4, "wild3").await;
    v3.write_all(&[0x30, 5, 0, 3, b'a', b'/', b'#'])
        .await
        .expect("PUBLISH");
    closed(&mut v3).await;

    refused_with_disconnect(&broker, "wild5", &[0x30, 6, 0, 3, b'a', b'/', b'+', 0]).await;
    still_serving(&broker).await;
}

#[tokio::test]
async fn invalid_utf8_in_a_topic_is_malformed() {
    let broker = Broker::start(&[]);
    refused_with_disconnect(&broker, "utf8", &[0x30, 6, 0, 3, b'a', 0xff, 0xfe, 0]).await;
    still_serving(&broker).await;
}

#[tokio::test]
async fn exceeding_the_receive_maximum_is_answered_with_0x93() {
    let broker = Broker::start(&[("AOS_BROKER__RECEIVE_MAXIMUM", "3")]);
    let mut v5 = connected(&broker, 5, "greedy").await;
    // QoS 2 publishes whose PUBREL never comes: each one stays counted.
    for id in 1..=4u8 {
        v5.write_all(&[0x34, 7, 0, 1, b'g', 0, id, 0, b'x'])
            .await
            .expect("PUBLISH");
    }
    assert_eq!(closed(&mut v5).await, Some(0x93));
    still_serving(&broker).await;
}

#[tokio::test]
async fn a_silent_client_is_dropped_after_one_and_a_half_keep_alives_and_its_will_sent() {
    let broker = Broker::start(&[]);
    let mut watcher = Client3::start(broker.port(), "watcher").await;
    watcher.subscribe("gone", QoS::AtMostOnce).await;
    // CONNECT 3.1.1 with keep alive 1 s and a will on `gone`.
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x06, 0, 1];
    body.extend_from_slice(&[0, 6]);
    body.extend_from_slice(b"silent");
    body.extend_from_slice(&[0, 4]);
    body.extend_from_slice(b"gone");
    body.extend_from_slice(&[0, 3]);
    body.extend_from_slice(b"bye");
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    let mut stream = raw(&broker).await;
    stream.write_all(&packet).await.expect("CONNECT");
    let started = std::time::Instant::now();
    read_packet(&mut stream).await.expect("CONNACK");
    closed(&mut stream).await;
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "closed after {:?}",
        started.elapsed()
    );
    assert_eq!(watcher.publish_received().await.payload.as_ref(), b"bye");
}

#[tokio::test]
async fn a_subscriber_that_does_not_read_blocks_nobody_and_its_overflow_is_counted() {
    let broker = Broker::start(&[
        ("AOS_BROKER__MAX_QUEUED_MESSAGES", "100"),
        ("AOS_BROKER__MAX_QUEUED_BYTES", "1000000"),
    ]);
    // A raw subscriber that never reads after its SUBACK.
    let mut stalled = connected(&broker, 4, "stalled").await;
    stalled
        .write_all(&[0x82, 10, 0, 1, 0, 5, b'f', b'l', b'o', b'o', b'd', 0])
        .await
        .expect("SUBSCRIBE");
    let (header, _) = read_packet(&mut stalled).await.expect("SUBACK");
    assert_eq!(header, 0x90);

    let mut healthy = Client3::start(broker.port(), "healthy").await;
    healthy.subscribe("other", QoS::AtLeastOnce).await;
    let mut publisher = Client3::start(broker.port(), "flooder").await;
    let payload = vec![7u8; 1024];
    for _ in 0..20_000 {
        publisher
            .publish("flood", QoS::AtMostOnce, false, &payload)
            .await;
    }
    // The publisher is still acknowledged promptly, and others still get their messages.
    publisher.publish_acked("other", false, b"unaffected").await;
    assert_eq!(
        healthy.publish_received().await.payload.as_ref(),
        b"unaffected"
    );
    assert!(
        broker.metric("aos_broker_dropped_queue_full_total") > 0,
        "the stalled subscriber's overflow is counted"
    );
    drop(stalled);
}

#[tokio::test]
async fn max_connections_holds() {
    let broker = Broker::start(&[("AOS_BROKER__MAX_CONNECTIONS", "2")]);
    let _a = Client3::start(broker.port(), "a").await;
    let b = Client3::start(broker.port(), "b").await;
    let refused = Client3::connect(common::mqtt::options3(broker.port(), "c"))
        .await
        .err()
        .expect("a third connection is refused");
    assert!(refused.contains("ServiceUnavailable"), "{refused}");
    let v5 = common::mqtt::Client5::connect(common::mqtt::options5(broker.port(), "c5"))
        .await
        .err()
        .expect("refused for 5.0 too");
    assert!(v5.contains("ServerBusy"), "{v5}");
    // A slot frees once a client leaves.
    drop(b);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if Client3::connect(common::mqtt::options3(broker.port(), "c"))
            .await
            .is_ok()
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the slot never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
