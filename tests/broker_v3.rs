//! The broker with MQTT 3.1.1 clients, through a real socket: what subscribers receive.

mod common;

use common::Broker;
use common::mqtt::{Client3, WAIT, options3};
use rumqttc::{ConnectReturnCode, LastWill, QoS, SubscribeReasonCode};

/// Asserts the next PUBLISH is `marker`: whatever a test expected *not* to arrive would have come
/// before it (a session's messages arrive in order).
async fn next_is_marker(client: &mut Client3, marker: &str) {
    let p = client.publish_received().await;
    assert_eq!(
        p.topic, marker,
        "received {p:?} where only the marker was expected"
    );
}

#[tokio::test]
async fn qos0_and_qos1_messages_reach_subscribers_with_their_payload() {
    let broker = Broker::start(&[]);
    let mut sub = Client3::start(broker.port(), "sub").await;
    assert_eq!(
        sub.subscribe("sensors/+/temp", QoS::AtLeastOnce).await,
        vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    let mut publisher = Client3::start(broker.port(), "pub").await;
    publisher
        .publish("sensors/a/temp", QoS::AtMostOnce, false, b"21.5")
        .await;
    publisher
        .publish_acked("sensors/b/temp", false, b"22.0")
        .await;

    let first = sub.publish_received().await;
    assert_eq!(
        (first.topic.as_str(), &first.payload[..]),
        ("sensors/a/temp", &b"21.5"[..])
    );
    assert_eq!(first.qos, QoS::AtMostOnce);
    assert!(!first.retain);
    let second = sub.publish_received().await;
    assert_eq!(
        (second.topic.as_str(), &second.payload[..]),
        ("sensors/b/temp", &b"22.0"[..])
    );
    assert_eq!(second.qos, QoS::AtLeastOnce);
}

#[tokio::test]
async fn qos2_is_delivered_exactly_once_and_downgraded_to_the_granted_qos() {
    let broker = Broker::start(&[]);
    let mut q2 = Client3::start(broker.port(), "q2").await;
    q2.subscribe("x/#", QoS::ExactlyOnce).await;
    let mut q1 = Client3::start(broker.port(), "q1").await;
    q1.subscribe("x/#", QoS::AtLeastOnce).await;
    let publisher = Client3::start(broker.port(), "pub").await;
    publisher
        .publish("x/1", QoS::ExactlyOnce, false, b"once")
        .await;
    publisher
        .publish("x/marker", QoS::AtMostOnce, false, b"")
        .await;

    let got = q2.publish_received().await;
    assert_eq!((got.topic.as_str(), got.qos), ("x/1", QoS::ExactlyOnce));
    next_is_marker(&mut q2, "x/marker").await;
    let got = q1.publish_received().await;
    assert_eq!((got.topic.as_str(), got.qos), ("x/1", QoS::AtLeastOnce));
    next_is_marker(&mut q1, "x/marker").await;
}

#[tokio::test]
async fn wildcards_follow_the_topic_rules() {
    let broker = Broker::start(&[]);
    let mut all = Client3::start(broker.port(), "all").await;
    all.subscribe("#", QoS::AtMostOnce).await;
    let mut one_level = Client3::start(broker.port(), "one").await;
    one_level.subscribe("a/+", QoS::AtMostOnce).await;

    let publisher = Client3::start(broker.port(), "pub").await;
    publisher
        .publish("a/b/c", QoS::AtMostOnce, false, b"deep")
        .await;
    publisher
        .publish("a/b", QoS::AtMostOnce, false, b"one")
        .await;

    assert_eq!(all.publish_received().await.topic, "a/b/c");
    assert_eq!(all.publish_received().await.topic, "a/b");
    // `a/+` skipped `a/b/c`.
    assert_eq!(one_level.publish_received().await.topic, "a/b");
}

#[tokio::test]
async fn overlapping_subscriptions_deliver_one_copy_at_the_highest_qos() {
    let broker = Broker::start(&[]);
    let mut sub = Client3::start(broker.port(), "sub").await;
    sub.subscribe("o/#", QoS::AtMostOnce).await;
    sub.subscribe("o/+", QoS::AtLeastOnce).await;
    let publisher = Client3::start(broker.port(), "pub").await;
    publisher
        .publish("o/x", QoS::AtLeastOnce, false, b"1")
        .await;
    publisher
        .publish("o/marker", QoS::AtMostOnce, false, b"")
        .await;
    let got = sub.publish_received().await;
    assert_eq!((got.topic.as_str(), got.qos), ("o/x", QoS::AtLeastOnce));
    next_is_marker(&mut sub, "o/marker").await;
}

#[tokio::test]
async fn retained_messages_are_set_replaced_and_deleted() {
    let broker = Broker::start(&[]);
    let mut publisher = Client3::start(broker.port(), "pub").await;
    publisher.publish_acked("r/state", true, b"v1").await;
    publisher.publish_acked("r/state", true, b"v2").await;
    publisher.publish_acked("r/gone", true, b"x").await;
    publisher.publish_acked("r/gone", true, b"").await;

    let mut late = Client3::start(broker.port(), "late").await;
    late.subscribe("r/#", QoS::AtLeastOnce).await;
    let got = late.publish_received().await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("r/state", &b"v2"[..])
    );
    assert!(got.retain, "a retained message is flagged as such");
    // A live message on the same topic is not flagged retained.
    publisher.publish_acked("r/state", true, b"v3").await;
    let live = late.publish_received().await;
    assert_eq!(&live.payload[..], b"v3");
    assert!(!live.retain);
}

#[tokio::test]
async fn a_persistent_session_keeps_subscriptions_and_queues_while_offline() {
    let broker = Broker::start(&[]);
    let mut opts = options3(broker.port(), "keeper");
    opts.set_clean_session(false);
    let (mut keeper, ack) = Client3::connect(opts.clone()).await.expect("connect");
    assert!(!ack.session_present);
    keeper.subscribe("q/#", QoS::AtLeastOnce).await;
    keeper.client.disconnect().await.expect("disconnect");
    assert!(!keeper.closed().await.is_empty());
    drop(keeper);

    let mut publisher = Client3::start(broker.port(), "pub").await;
    for i in 0..3 {
        publisher
            .publish_acked("q/x", false, format!("m{i}").as_bytes())
            .await;
    }
    assert_eq!(
        broker.metric("aos_broker_queued_messages"),
        3,
        "waiting for the client"
    );
    let (mut keeper, ack) = Client3::connect(opts).await.expect("reconnect");
    assert!(ack.session_present, "the session was kept");
    for i in 0..3 {
        let got = keeper.publish_received().await;
        assert_eq!(&got.payload[..], format!("m{i}").as_bytes());
    }
}

#[tokio::test]
async fn a_clean_session_forgets_the_previous_one() {
    let broker = Broker::start(&[]);
    let mut opts = options3(broker.port(), "forget");
    opts.set_clean_session(false);
    let (mut c, _) = Client3::connect(opts.clone()).await.expect("connect");
    c.subscribe("f/#", QoS::AtLeastOnce).await;
    c.client.disconnect().await.expect("disconnect");
    c.closed().await;
    drop(c);
    opts.set_clean_session(true);
    let (mut c, ack) = Client3::connect(opts).await.expect("connect clean");
    assert!(!ack.session_present);
    let publisher = Client3::start(broker.port(), "pub").await;
    publisher
        .publish("f/x", QoS::AtMostOnce, false, b"old subscription")
        .await;
    c.subscribe("marker", QoS::AtMostOnce).await;
    publisher
        .publish("marker", QoS::AtMostOnce, false, b"")
        .await;
    next_is_marker(&mut c, "marker").await;
}

#[tokio::test]
async fn the_will_is_sent_when_a_client_vanishes_but_not_after_disconnect() {
    let broker = Broker::start(&[]);
    let mut watcher = Client3::start(broker.port(), "watcher").await;
    watcher.subscribe("wills/#", QoS::AtLeastOnce).await;

    let mut polite = options3(broker.port(), "polite");
    polite.set_last_will(LastWill::new(
        "wills/polite",
        "gone",
        QoS::AtLeastOnce,
        false,
    ));
    let (mut polite, _) = Client3::connect(polite).await.expect("connect");
    polite.client.disconnect().await.expect("disconnect");
    polite.closed().await;

    let mut rude = options3(broker.port(), "rude");
    rude.set_last_will(LastWill::new(
        "wills/rude",
        "vanished",
        QoS::AtLeastOnce,
        false,
    ));
    let (rude, _) = Client3::connect(rude).await.expect("connect");
    // Dropping the client aborts its event loop: the socket closes without DISCONNECT.
    drop(rude);

    let got = watcher.publish_received().await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("wills/rude", &b"vanished"[..])
    );
}

#[tokio::test]
async fn a_second_connection_with_the_same_client_id_takes_over() {
    let broker = Broker::start(&[]);
    let mut first = Client3::start(broker.port(), "twin").await;
    let mut second = Client3::start(broker.port(), "twin").await;
    let err = first.closed().await;
    assert!(!err.is_empty());
    second.subscribe("t", QoS::AtMostOnce).await;
    second.publish("t", QoS::AtMostOnce, false, b"alive").await;
    assert_eq!(second.publish_received().await.payload.as_ref(), b"alive");
}

#[tokio::test]
async fn credentials_and_acl_are_enforced() {
    // Password "secret" for user "dev" (argon2id, low cost for the test).
    let hash = aos_auth_hash("secret");
    let broker = Broker::start(&[
        ("AOS_BROKER__AUTH__ALLOW_ANONYMOUS", "false"),
        (
            "AOS_BROKER__AUTH__USERS",
            &format!("[{{username=\"dev\",password_hash=\"{hash}\"}}]"),
        ),
        (
            "AOS_BROKER__AUTH__ACL",
            "[{permission=\"allow\",action=\"all\",topic=\"devices/%c/#\"}]",
        ),
        ("AOS_BROKER__AUTH__ACL_DEFAULT", "deny"),
    ]);
    let refused = Client3::connect(options3(broker.port(), "anon"))
        .await
        .err()
        .expect("refused");
    assert!(refused.contains("NotAuthorized"), "{refused}");

    let mut wrong = options3(broker.port(), "d1");
    wrong.set_credentials("dev", "wrong");
    let refused = Client3::connect(wrong).await.err().expect("refused");
    assert!(refused.contains("BadUserNamePassword"), "{refused}");

    let mut good = options3(broker.port(), "d1");
    good.set_credentials("dev", "secret");
    let (mut d1, ack) = Client3::connect(good).await.expect("connect");
    assert_eq!(ack.code, ConnectReturnCode::Success);
    assert_eq!(
        d1.subscribe("devices/d2/#", QoS::AtMostOnce).await,
        vec![SubscribeReasonCode::Failure],
        "another device's tree is refused"
    );
    assert_eq!(
        d1.subscribe("devices/d1/#", QoS::AtMostOnce).await,
        vec![SubscribeReasonCode::Success(QoS::AtMostOnce)]
    );
    // A refused publish is acknowledged and dropped (3.1.1 has no negative acknowledgement).
    d1.publish_acked("devices/d2/cmd", false, b"nope").await;
    d1.publish_acked("devices/d1/ok", false, b"yes").await;
    assert_eq!(d1.publish_received().await.topic, "devices/d1/ok");
}

fn aos_auth_hash(password: &str) -> String {
    aos_auth::password::hash_password(
        password,
        aos_auth::password::HashParams {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        },
    )
    .expect("hash")
}

#[tokio::test]
async fn a_malformed_packet_disconnects_only_its_sender() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let broker = Broker::start(&[]);
    let mut healthy = Client3::start(broker.port(), "healthy").await;
    healthy.subscribe("h", QoS::AtMostOnce).await;

    let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", broker.port()))
        .await
        .expect("connect");
    // CONNECT (3.1.1, clean session, keep alive 60, client id "bad").
    raw.write_all(&[
        0x10, 15, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 3, b'b', b'a', b'd',
    ])
    .await
    .expect("write");
    let mut connack = [0u8; 4];
    raw.read_exact(&mut connack).await.expect("CONNACK");
    assert_eq!(connack, [0x20, 2, 0, 0]);
    // PUBLISH with QoS 3 is malformed.
    raw.write_all(&[0x36, 5, 0, 1, b'h', 0, 1])
        .await
        .expect("write");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(WAIT, raw.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(_))),
        "the broker closed the malformed connection"
    );

    let publisher = Client3::start(broker.port(), "pub").await;
    publisher
        .publish("h", QoS::AtMostOnce, false, b"still here")
        .await;
    assert_eq!(
        healthy.publish_received().await.payload.as_ref(),
        b"still here"
    );
}

#[tokio::test]
async fn unacknowledged_messages_are_resent_with_dup_after_reconnect() {
    let broker = Broker::start(&[]);
    let mut opts = options3(broker.port(), "slowpoke");
    opts.set_clean_session(false);
    opts.set_manual_acks(true);
    let (mut c, _) = Client3::connect(opts.clone()).await.expect("connect");
    c.subscribe("redo", QoS::AtLeastOnce).await;
    let mut publisher = Client3::start(broker.port(), "pub").await;
    publisher.publish_acked("redo", false, b"again").await;
    let first = c.publish_received().await;
    assert!(!first.dup);
    // Never acknowledged: the connection goes away.
    drop(c);
    let (mut c, ack) = Client3::connect(opts).await.expect("reconnect");
    assert!(ack.session_present);
    let again = c.publish_received().await;
    assert_eq!(again.payload.as_ref(), b"again");
    assert!(again.dup, "a resend is flagged DUP");
    assert_eq!(again.pkid, first.pkid, "with its packet identifier");
}

#[tokio::test]
async fn a_publishers_messages_arrive_in_the_order_it_sent_them() {
    let broker = Broker::start(&[
        ("AOS_BROKER__MAX_QUEUED_MESSAGES", "1000000"),
        ("AOS_BROKER__MAX_QUEUED_BYTES", "1000000000"),
    ]);
    let mut sub = Client3::start(broker.port(), "sub").await;
    sub.subscribe("seq/#", QoS::AtLeastOnce).await;
    let mut publisher = Client3::start(broker.port(), "pub").await;
    let total = 30_000u32;
    for i in 0..total {
        // Alternating QoS and two topics: the order holds per publisher and topic.
        let qos = if i % 3 == 0 {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        };
        let topic = if i % 2 == 0 { "seq/a" } else { "seq/b" };
        publisher.publish(topic, qos, false, &i.to_be_bytes()).await;
    }
    publisher.publish_acked("seq/end", false, b"").await;
    let mut last = [None::<u32>; 2];
    loop {
        let p = sub.publish_received().await;
        if p.topic == "seq/end" {
            break;
        }
        let n = u32::from_be_bytes(p.payload[..4].try_into().expect("4 bytes"));
        let slot = usize::from(p.topic == "seq/b");
        if let Some(previous) = last[slot] {
            assert!(
                n > previous,
                "{} arrived after {previous} on {}",
                n,
                p.topic
            );
        }
        last[slot] = Some(n);
    }
    assert_eq!(
        last,
        [Some(total - 2), Some(total - 1)],
        "nothing lost at the end"
    );
}

/// A subscriber gets several QoS 2 messages before it answers any (up to the broker's in-flight
/// limit): each PUBREC is answered with PUBREL under its packet id, and once each exchange is
/// completed with PUBCOMP nothing is sent again.
#[tokio::test]
async fn several_qos2_messages_are_in_flight_at_once_and_each_completes() {
    use common::mqtt::{connect_packet, read_packet};
    use tokio::io::AsyncWriteExt;
    const MESSAGES: usize = 5;
    let broker = Broker::start(&[]);
    let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", broker.port()))
        .await
        .expect("connect");
    raw.write_all(&connect_packet("q2-reader", None, true))
        .await
        .expect("CONNECT");
    assert_eq!(read_packet(&mut raw).await, (0x20, vec![0, 0]), "CONNACK");
    // SUBSCRIBE q2/# at QoS 2 under packet id 1.
    raw.write_all(&[0x82, 9, 0, 1, 0, 4, b'q', b'2', b'/', b'#', 2])
        .await
        .expect("SUBSCRIBE");
    assert_eq!(read_packet(&mut raw).await, (0x90, vec![0, 1, 2]), "SUBACK");

    let publisher = Client3::start(broker.port(), "q2-writer").await;
    for n in 0..MESSAGES {
        publisher
            .publish("q2/x", QoS::ExactlyOnce, false, format!("m{n}").as_bytes())
            .await;
    }
    // All of them arrive before the subscriber answers any.
    let mut ids = Vec::new();
    for n in 0..MESSAGES {
        let (header, body) = read_packet(&mut raw).await;
        assert_eq!(header, 0x34, "a QoS 2 PUBLISH");
        let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
        assert_eq!(&body[2..2 + topic_len], b"q2/x");
        ids.push([body[2 + topic_len], body[3 + topic_len]]);
        assert_eq!(&body[4 + topic_len..], format!("m{n}").as_bytes());
    }
    let distinct: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), MESSAGES, "each in flight under its own id");
    for id in &ids {
        raw.write_all(&[0x50, 2, id[0], id[1]])
            .await
            .expect("PUBREC");
        assert_eq!(
            read_packet(&mut raw).await,
            (0x62, id.to_vec()),
            "PUBREL for the same id"
        );
        raw.write_all(&[0x70, 2, id[0], id[1]])
            .await
            .expect("PUBCOMP");
    }
    // Nothing is sent again: the next packet is a later message.
    publisher
        .publish("q2/end", QoS::AtMostOnce, false, b"end")
        .await;
    let (header, body) = read_packet(&mut raw).await;
    assert_eq!(header, 0x30, "a QoS 0 PUBLISH, nothing resent");
    assert_eq!(&body[2..8], b"q2/end");
}
