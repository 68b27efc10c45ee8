//! The broker with MQTT 5.0 clients, through a real socket: what subscribers receive, and the
//! reason codes of refusals.

mod common;

use bytes::Bytes;
use common::mqtt::{Client5, options5, read_packet};
use common::{Broker, PATIENCE};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnectReturnCode, DisconnectReasonCode, Filter, LastWill, LastWillProperties, Packet,
    PubAckReason, PublishProperties, RetainForwardRule, SubscribeProperties, SubscribeReasonCode,
};

/// Will properties with only a will delay (seconds).
fn will_delay(seconds: u32) -> LastWillProperties {
    LastWillProperties {
        delay_interval: Some(seconds),
        payload_format_indicator: None,
        message_expiry_interval: None,
        content_type: None,
        response_topic: None,
        correlation_data: None,
        user_properties: vec![],
    }
}

async fn next_is_marker(client: &mut Client5, marker: &str) {
    let p = client.publish_received().await;
    assert_eq!(
        p.topic,
        marker.as_bytes(),
        "received {p:?} where only the marker was expected"
    );
}

#[tokio::test]
async fn properties_pass_through_and_expiry_counts_down() {
    let broker = Broker::start(&[]);
    let mut sub = Client5::start(broker.port(), "sub").await;
    sub.subscribe("p/#", QoS::AtLeastOnce).await;
    let publisher = Client5::start(broker.port(), "pub").await;
    let props = PublishProperties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(3600),
        response_topic: Some("p/reply".into()),
        correlation_data: Some(Bytes::from_static(b"req-1")),
        user_properties: vec![
            ("site".into(), "north".into()),
            ("site".into(), "south".into()),
        ],
        content_type: Some("application/json".into()),
        ..Default::default()
    };
    publisher
        .client
        .publish_with_properties("p/x", QoS::AtLeastOnce, false, r#"{"t":1}"#, props)
        .await
        .expect("publish");
    let got = sub.publish_received().await;
    let p = got.properties.expect("properties");
    assert_eq!(p.payload_format_indicator, Some(1));
    assert_eq!(p.response_topic.as_deref(), Some("p/reply"));
    assert_eq!(p.correlation_data.as_deref(), Some(&b"req-1"[..]));
    assert_eq!(
        p.user_properties,
        vec![
            ("site".into(), "north".into()),
            ("site".into(), "south".into())
        ],
        "user properties keep their order"
    );
    assert_eq!(p.content_type.as_deref(), Some("application/json"));
    let expiry = p.message_expiry_interval.expect("expiry forwarded");
    assert!((3599..=3600).contains(&expiry), "{expiry}");
}

#[tokio::test]
async fn qos0_subscribers_get_the_publishers_properties() {
    // QoS 0 copies without an expiry interval are encoded once for all 5.0 subscribers.
    let broker = Broker::start(&[]);
    let mut subscribers = Vec::new();
    for id in ["sub-a", "sub-b"] {
        let mut sub = Client5::start(broker.port(), id).await;
        sub.subscribe("p0/#", QoS::AtMostOnce).await;
        subscribers.push(sub);
    }
    let publisher = Client5::start(broker.port(), "pub").await;
    let props = PublishProperties {
        payload_format_indicator: Some(1),
        response_topic: Some("p0/reply".into()),
        correlation_data: Some(Bytes::from_static(b"req-2")),
        user_properties: vec![("site".into(), "east".into())],
        content_type: Some("text/plain".into()),
        ..Default::default()
    };
    publisher
        .client
        .publish_with_properties("p0/x", QoS::AtLeastOnce, false, "hello", props)
        .await
        .expect("publish");
    for sub in &mut subscribers {
        let got = sub.publish_received().await;
        assert_eq!(
            (got.qos, &got.topic[..], &got.payload[..]),
            (QoS::AtMostOnce, &b"p0/x"[..], &b"hello"[..])
        );
        let p = got.properties.expect("properties");
        assert_eq!(p.payload_format_indicator, Some(1));
        assert_eq!(p.response_topic.as_deref(), Some("p0/reply"));
        assert_eq!(p.correlation_data.as_deref(), Some(&b"req-2"[..]));
        assert_eq!(p.user_properties, vec![("site".into(), "east".into())]);
        assert_eq!(p.content_type.as_deref(), Some("text/plain"));
        assert_eq!(p.message_expiry_interval, None);
        assert!(p.subscription_identifiers.is_empty());
    }
}

#[tokio::test]
async fn no_local_subscriptions_skip_the_clients_own_messages() {
    let broker = Broker::start(&[]);
    let mut me = Client5::start(broker.port(), "me").await;
    let mut filter = Filter::new("chat", QoS::AtMostOnce);
    filter.nolocal = true;
    me.client
        .subscribe_many(vec![filter])
        .await
        .expect("subscribe");
    me.suback().await;
    me.client
        .publish("chat", QoS::AtMostOnce, false, "mine")
        .await
        .expect("publish");
    let other = Client5::start(broker.port(), "other").await;
    other
        .client
        .publish("chat", QoS::AtMostOnce, false, "theirs")
        .await
        .expect("publish");
    let got = me.publish_received().await;
    assert_eq!(
        &got.payload[..],
        b"theirs",
        "the client's own message was not delivered back"
    );
}

#[tokio::test]
async fn subscription_identifiers_come_back_with_each_match() {
    let broker = Broker::start(&[]);
    let mut sub = Client5::start(broker.port(), "sub").await;
    let props = |id| SubscribeProperties {
        id: Some(id),
        user_properties: vec![],
    };
    sub.client
        .subscribe_with_properties("ids/+", QoS::AtMostOnce, props(7))
        .await
        .expect("subscribe");
    sub.suback().await;
    sub.client
        .subscribe_with_properties("ids/#", QoS::AtMostOnce, props(9))
        .await
        .expect("subscribe");
    sub.suback().await;
    let publisher = Client5::start(broker.port(), "pub").await;
    publisher
        .client
        .publish("ids/a", QoS::AtMostOnce, false, "x")
        .await
        .expect("publish");
    let got = sub.publish_received().await;
    let mut ids = got.properties.expect("properties").subscription_identifiers;
    ids.sort();
    assert_eq!(ids, vec![7, 9], "one delivery carrying both identifiers");
}

#[tokio::test]
async fn retain_handling_and_retain_as_published() {
    let broker = Broker::start(&[]);
    let mut publisher = Client5::start(broker.port(), "pub").await;
    publisher
        .client
        .publish("rh/state", QoS::AtLeastOnce, true, "on")
        .await
        .expect("publish");
    publisher.puback().await;

    let mut never = Client5::start(broker.port(), "never").await;
    let mut filter = Filter::new("rh/#", QoS::AtMostOnce);
    filter.retain_forward_rule = RetainForwardRule::Never;
    filter.preserve_retain = true;
    never
        .client
        .subscribe_many(vec![filter])
        .await
        .expect("subscribe");
    never.suback().await;
    publisher
        .client
        .publish("rh/state", QoS::AtLeastOnce, true, "off")
        .await
        .expect("publish");
    let got = never.publish_received().await;
    assert_eq!(&got.payload[..], b"off", "no retained message at subscribe");
    assert!(got.retain, "retain as published keeps the flag");

    let mut always = Client5::start(broker.port(), "always").await;
    always.subscribe("rh/#", QoS::AtMostOnce).await;
    let got = always.publish_received().await;
    assert_eq!((&got.payload[..], got.retain), (&b"off"[..], true));
}

#[tokio::test]
async fn session_expiry_keeps_a_session_only_when_asked() {
    let broker = Broker::start(&[]);
    let mut opts = options5(broker.port(), "exp");
    opts.set_clean_start(false);
    opts.set_session_expiry_interval(Some(60));
    let (mut c, ack) = Client5::connect(opts.clone()).await.expect("connect");
    assert!(!ack.session_present);
    c.subscribe("e/#", QoS::AtLeastOnce).await;
    c.client.disconnect().await.expect("disconnect");
    c.disconnected().await;
    drop(c);

    let mut publisher = Client5::start(broker.port(), "pub").await;
    publisher
        .client
        .publish("e/1", QoS::AtLeastOnce, false, "while away")
        .await
        .expect("publish");
    publisher.puback().await;

    let (mut c, ack) = Client5::connect(opts).await.expect("reconnect");
    assert!(ack.session_present);
    assert_eq!(&c.publish_received().await.payload[..], b"while away");

    // Without an expiry interval the session ends with the connection.
    let mut short = options5(broker.port(), "short");
    short.set_clean_start(false);
    let (mut s, _) = Client5::connect(short.clone()).await.expect("connect");
    s.subscribe("e/#", QoS::AtLeastOnce).await;
    s.client.disconnect().await.expect("disconnect");
    s.disconnected().await;
    drop(s);
    let (_, ack) = Client5::connect(short).await.expect("reconnect");
    assert!(!ack.session_present);
}

#[tokio::test]
async fn takeover_is_announced_with_reason_0x8e() {
    let broker = Broker::start(&[]);
    let mut first = Client5::start(broker.port(), "twin").await;
    let _second = Client5::start(broker.port(), "twin").await;
    let ended = first.disconnected().await;
    assert!(
        ended.contains(&format!("{:?}", DisconnectReasonCode::SessionTakenOver)),
        "{ended}"
    );
}

#[tokio::test]
async fn shared_subscriptions_spread_messages_across_members() {
    let broker = Broker::start(&[]);
    let mut a = Client5::start(broker.port(), "a").await;
    let mut b = Client5::start(broker.port(), "b").await;
    for c in [&mut a, &mut b] {
        let ack = c.subscribe("$share/workers/jobs/+", QoS::AtLeastOnce).await;
        assert_eq!(
            ack.return_codes,
            vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
        );
    }
    let publisher = Client5::start(broker.port(), "pub").await;
    let total = 20;
    for i in 0..total {
        publisher
            .client
            .publish("jobs/x", QoS::AtLeastOnce, false, format!("{i}"))
            .await
            .expect("publish");
    }
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    while got_a.len() + got_b.len() < total {
        tokio::select! {
            p = a.publish_received() => got_a.push(p.payload),
            p = b.publish_received() => got_b.push(p.payload),
        }
    }
    assert!(
        !got_a.is_empty() && !got_b.is_empty(),
        "{} / {}",
        got_a.len(),
        got_b.len()
    );
    let mut all: Vec<Bytes> = got_a.into_iter().chain(got_b).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), total, "each message went to exactly one member");
}

#[tokio::test]
async fn an_empty_client_id_gets_one_assigned_and_keep_alive_is_bounded() {
    let broker = Broker::start(&[("AOS_BROKER__MAX_KEEPALIVE", "120")]);
    let mut opts = options5(broker.port(), "");
    opts.set_keep_alive(std::time::Duration::from_secs(1000));
    let (_c, ack) = Client5::connect(opts).await.expect("connect");
    let props = ack.properties.expect("CONNACK properties");
    let assigned = props.assigned_client_identifier.expect("assigned id");
    assert!(!assigned.is_empty());
    assert_eq!(props.server_keep_alive, Some(120));
}

#[tokio::test]
async fn refusals_carry_5_0_reason_codes() {
    let broker = Broker::start(&[
        ("AOS_BROKER__AUTH__ALLOW_ANONYMOUS", "true"),
        (
            "AOS_BROKER__AUTH__ACL",
            "[{permission=\"deny\",action=\"all\",topic=\"locked/#\"}]",
        ),
    ]);
    let mut c = Client5::start(broker.port(), "c").await;
    let ack = c.subscribe("locked/x", QoS::AtMostOnce).await;
    assert_eq!(ack.return_codes, vec![SubscribeReasonCode::NotAuthorized]);
    c.client
        .publish("locked/x", QoS::AtLeastOnce, false, "no")
        .await
        .expect("publish");
    let puback = c.puback().await;
    assert_eq!(puback.reason, PubAckReason::NotAuthorized);

    let closed = Broker::start(&[("AOS_BROKER__AUTH__ALLOW_ANONYMOUS", "false")]);
    let err = Client5::connect(options5(closed.port(), "anon"))
        .await
        .err()
        .expect("refused");
    assert!(
        err.contains(&format!("{:?}", ConnectReturnCode::NotAuthorized)),
        "{err}"
    );
}

#[tokio::test]
async fn a_will_with_a_delay_is_sent_only_after_the_delay() {
    let broker = Broker::start(&[]);
    let mut watcher = Client5::start(broker.port(), "watcher").await;
    watcher.subscribe("w/#", QoS::AtLeastOnce).await;

    let mut opts = options5(broker.port(), "delayed");
    opts.set_session_expiry_interval(Some(60));
    let props = will_delay(1);
    opts.set_last_will(LastWill::new(
        "w/delayed",
        "late",
        QoS::AtLeastOnce,
        false,
        Some(props),
    ));
    let (delayed, _) = Client5::connect(opts).await.expect("connect");
    let dropped_at = std::time::Instant::now();
    drop(delayed);
    let got = watcher.publish_received().await;
    assert_eq!(got.topic, &b"w/delayed"[..]);
    assert!(
        dropped_at.elapsed() >= std::time::Duration::from_millis(900),
        "the will waited for its delay ({:?})",
        dropped_at.elapsed()
    );
    next_is_marker_after(&mut watcher, broker.port()).await;
}

/// Publishes a marker from a fresh client and checks it is the next thing `watcher` gets.
async fn next_is_marker_after(watcher: &mut Client5, port: u16) {
    let publisher = Client5::start(port, "marker").await;
    publisher
        .client
        .publish("w/marker", QoS::AtMostOnce, false, "")
        .await
        .expect("publish");
    next_is_marker(watcher, "w/marker").await;
}

#[tokio::test]
async fn an_oversize_packet_is_refused_with_0x95() {
    let broker = Broker::start(&[("AOS_BROKER__MAX_PACKET_SIZE", "1024")]);
    let mut big = Client5::start(broker.port(), "big").await;
    big.client
        .publish("t", QoS::AtMostOnce, false, vec![0u8; 4096])
        .await
        .expect("publish");
    let ended = big.disconnected().await;
    assert!(
        ended.contains(&format!("{:?}", DisconnectReasonCode::PacketTooLarge)),
        "{ended}"
    );
    // The broker still serves others.
    let mut ok = Client5::start(broker.port(), "ok").await;
    ok.subscribe("t", QoS::AtMostOnce).await;
    ok.client
        .publish("t", QoS::AtMostOnce, false, "small")
        .await
        .expect("publish");
    assert_eq!(&ok.publish_received().await.payload[..], b"small");
}

#[tokio::test]
async fn qos2_from_5_0_clients_is_exactly_once_and_ids_are_reused() {
    let broker = Broker::start(&[("AOS_BROKER__RECEIVE_MAXIMUM", "10")]);
    let mut sub = Client5::start(broker.port(), "sub").await;
    sub.subscribe("q2", QoS::ExactlyOnce).await;
    let publisher = Client5::start(broker.port(), "pub").await;
    // Far more QoS 2 publishes than the receive maximum: every packet id is freed after PUBREL.
    let total = 50;
    for i in 0..total {
        publisher
            .client
            .publish("q2", QoS::ExactlyOnce, false, format!("{i}"))
            .await
            .expect("publish");
    }
    for i in 0..total {
        let got = sub.publish_received().await;
        assert_eq!(got.qos, QoS::ExactlyOnce);
        assert_eq!(
            got.payload,
            format!("{i}").as_bytes(),
            "in order, once each"
        );
    }
    // The publisher is still connected and served.
    publisher
        .client
        .publish("q2", QoS::AtMostOnce, false, "after")
        .await
        .expect("publish");
    assert_eq!(&sub.publish_received().await.payload[..], b"after");
}

/// A raw 5.0 client `raw` (clean start, keep alive 60, no properties), connected.
async fn raw_client(port: u16) -> tokio::net::TcpStream {
    raw_client_with(port, "raw", &[]).await
}

#[tokio::test]
async fn a_resent_qos2_publish_is_acknowledged_but_not_delivered_twice() {
    use tokio::io::AsyncWriteExt;
    let broker = Broker::start(&[]);
    let mut sub = Client5::start(broker.port(), "sub").await;
    sub.subscribe("dup", QoS::ExactlyOnce).await;

    let mut raw = raw_client(broker.port()).await;

    let publish = [0x34, 10, 0, 3, b'd', b'u', b'p', 0, 1, 0, b'o', b'k'];
    raw.write_all(&publish).await.expect("PUBLISH");
    let (header, body) = read_packet(&mut raw).await;
    assert_eq!((header, &body[..2]), (0x50, &[0, 1][..]), "PUBREC");
    // The same message again, flagged DUP, before PUBREL.
    let mut again = publish;
    again[0] |= 0x08;
    raw.write_all(&again).await.expect("PUBLISH DUP");
    let (header, body) = read_packet(&mut raw).await;
    assert_eq!(
        (header, &body[..2]),
        (0x50, &[0, 1][..]),
        "PUBREC for the duplicate"
    );
    raw.write_all(&[0x62, 2, 0, 1]).await.expect("PUBREL");
    let (header, body) = read_packet(&mut raw).await;
    assert_eq!((header, &body[..2]), (0x70, &[0, 1][..]), "PUBCOMP");
    assert!(body.len() == 2 || body[2] == 0, "PUBCOMP success");
    // A PUBREL for an id that is not waiting is answered 0x92.
    raw.write_all(&[0x62, 2, 0, 9]).await.expect("PUBREL");
    let (header, body) = read_packet(&mut raw).await;
    assert_eq!((header, &body[..3]), (0x70, &[0, 9, 0x92][..]));

    assert_eq!(&sub.publish_received().await.payload[..], b"ok");
    let marker = Client5::start(broker.port(), "marker").await;
    marker
        .client
        .publish("dup", QoS::AtMostOnce, false, "marker")
        .await
        .expect("publish");
    assert_eq!(
        &sub.publish_received().await.payload[..],
        b"marker",
        "no second copy"
    );
}

#[tokio::test]
async fn messages_expire_while_they_wait() {
    let broker = Broker::start(&[]);
    let mut opts = options5(broker.port(), "away");
    opts.set_clean_start(false);
    opts.set_session_expiry_interval(Some(60));
    let (mut away, _) = Client5::connect(opts.clone()).await.expect("connect");
    away.subscribe("exp/#", QoS::AtLeastOnce).await;
    away.client.disconnect().await.expect("disconnect");
    away.disconnected().await;
    drop(away);

    let mut publisher = Client5::start(broker.port(), "pub").await;
    let short = PublishProperties {
        message_expiry_interval: Some(1),
        ..Default::default()
    };
    publisher
        .client
        .publish_with_properties("exp/short", QoS::AtLeastOnce, false, "stale", short)
        .await
        .expect("publish");
    publisher.puback().await;
    publisher
        .client
        .publish("exp/long", QoS::AtLeastOnce, false, "fresh")
        .await
        .expect("publish");
    publisher.puback().await;
    // Let the short message's expiry pass: that time passing is what is tested.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (mut back, _) = Client5::connect(opts).await.expect("reconnect");
    let got = back.publish_received().await;
    assert_eq!(
        &got.payload[..],
        b"fresh",
        "the expired message was dropped"
    );
    assert_eq!(broker.metric("aos_broker_dropped_expired_total"), 1);
}

#[tokio::test]
async fn a_message_larger_than_the_clients_maximum_is_skipped_not_fatal() {
    let broker = Broker::start(&[]);
    // One subscriber per delivery path: QoS 1 copies are encoded per connection, QoS 0 ones
    // once for all.
    let mut smalls = Vec::new();
    for (id, qos) in [("small", QoS::AtLeastOnce), ("small0", QoS::AtMostOnce)] {
        let mut opts = options5(broker.port(), id);
        opts.set_max_packet_size(Some(200));
        let (mut small, _) = Client5::connect(opts).await.expect("connect");
        small.subscribe("size/#", qos).await;
        smalls.push(small);
    }
    let publisher = Client5::start(broker.port(), "pub").await;
    publisher
        .client
        .publish("size/big", QoS::AtLeastOnce, false, vec![0u8; 1000])
        .await
        .expect("publish");
    publisher
        .client
        .publish("size/ok", QoS::AtLeastOnce, false, "fits")
        .await
        .expect("publish");
    for small in &mut smalls {
        let got = small.publish_received().await;
        assert_eq!(
            got.topic,
            &b"size/ok"[..],
            "the oversize message was skipped"
        );
    }
    assert_eq!(broker.metric("aos_broker_dropped_oversize_total"), 2);
}

#[tokio::test]
async fn topic_aliases_from_the_client_are_resolved() {
    let broker = Broker::start(&[]);
    let mut sub = Client5::start(broker.port(), "sub").await;
    sub.subscribe("alias/#", QoS::AtMostOnce).await;
    let mut opts = options5(broker.port(), "aliaser");
    opts.set_topic_alias_max(Some(10));
    let (publisher, _) = Client5::connect(opts).await.expect("connect");
    let with_alias = || PublishProperties {
        topic_alias: Some(3),
        ..Default::default()
    };
    publisher
        .client
        .publish_with_properties(
            "alias/long/topic/name",
            QoS::AtMostOnce,
            false,
            "first",
            with_alias(),
        )
        .await
        .expect("publish");
    publisher
        .client
        .publish_with_properties("", QoS::AtMostOnce, false, "second", with_alias())
        .await
        .expect("publish by alias");
    for payload in ["first", "second"] {
        let got = sub.publish_received().await;
        assert_eq!(got.topic, &b"alias/long/topic/name"[..]);
        assert_eq!(got.payload, payload.as_bytes());
    }
}

#[tokio::test]
async fn disconnect_with_reason_0x04_sends_the_will() {
    use tokio::io::AsyncWriteExt;
    let broker = Broker::start(&[]);
    let mut watcher = Client5::start(broker.port(), "watcher").await;
    watcher.subscribe("w4", QoS::AtMostOnce).await;
    // CONNECT 5.0, clean start + will flag, keep alive 60, no properties, client id "x",
    // will properties empty, will topic "w4", will payload "bye".
    let body = [
        0, 4, b'M', b'Q', b'T', b'T', 5, 0x06, 0, 60, 0, 0, 1, b'x', 0, 0, 2, b'w', b'4', 0, 3,
        b'b', b'y', b'e',
    ];
    let mut connect = vec![0x10, body.len() as u8];
    connect.extend_from_slice(&body);
    let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", broker.port()))
        .await
        .expect("connect");
    raw.write_all(&connect).await.expect("CONNECT");
    let (header, _) = read_packet(&mut raw).await;
    assert_eq!(header, 0x20);
    raw.write_all(&[0xE0, 1, 0x04])
        .await
        .expect("DISCONNECT 0x04");
    assert_eq!(&watcher.publish_received().await.payload[..], b"bye");
}

#[tokio::test]
async fn a_session_that_expires_before_the_will_delay_publishes_the_will_then() {
    let broker = Broker::start(&[]);
    let mut watcher = Client5::start(broker.port(), "watcher").await;
    watcher.subscribe("ws/#", QoS::AtLeastOnce).await;
    let mut opts = options5(broker.port(), "short-lived");
    opts.set_session_expiry_interval(Some(1));
    let props = will_delay(3600);
    opts.set_last_will(LastWill::new(
        "ws/expired",
        "session over",
        QoS::AtLeastOnce,
        false,
        Some(props),
    ));
    let (client, _) = Client5::connect(opts).await.expect("connect");
    drop(client);
    // The session (1 s) ends long before the will delay (1 h): the will goes out with it.
    let got = watcher.publish_received().await;
    assert_eq!(&got.payload[..], b"session over");
}

#[tokio::test]
async fn retain_handling_1_sends_retained_messages_only_for_a_new_subscription() {
    let broker = Broker::start(&[]);
    let mut publisher = Client5::start(broker.port(), "pub").await;
    publisher
        .client
        .publish("rh1/x", QoS::AtLeastOnce, true, "kept")
        .await
        .expect("publish");
    publisher.puback().await;
    let mut sub = Client5::start(broker.port(), "sub").await;
    let new_only = || {
        let mut filter = Filter::new("rh1/#", QoS::AtMostOnce);
        filter.retain_forward_rule = RetainForwardRule::OnNewSubscribe;
        vec![filter]
    };
    sub.client
        .subscribe_many(new_only())
        .await
        .expect("subscribe");
    sub.suback().await;
    assert_eq!(
        &sub.publish_received().await.payload[..],
        b"kept",
        "new subscription"
    );
    sub.client
        .subscribe_many(new_only())
        .await
        .expect("subscribe again");
    sub.suback().await;
    next_is_marker_after_on(&mut sub, broker.port(), "rh1/marker").await;
}

async fn next_is_marker_after_on(watcher: &mut Client5, port: u16, topic: &str) {
    let publisher = Client5::start(port, "marker").await;
    publisher
        .client
        .publish(topic, QoS::AtMostOnce, false, "")
        .await
        .expect("publish");
    next_is_marker(watcher, topic).await;
}

/// A raw 5.0 subscriber to `ta/#` (QoS 0) that accepts `alias_max` topic aliases (client id
/// `t` and the last digit of `alias_max`).
async fn raw_alias_subscriber(port: u16, alias_max: u16) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    // CONNECT 5.0, clean start, keep alive 60, properties: Topic Alias Maximum.
    let [hi, lo] = alias_max.to_be_bytes();
    let id = b'0' + (alias_max % 10) as u8;
    let body = [
        0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 60, 3, 0x22, hi, lo, 0, 2, b't', id,
    ];
    let mut connect = vec![0x10, body.len() as u8];
    connect.extend_from_slice(&body);
    raw.write_all(&connect).await.expect("CONNECT");
    let (header, body) = read_packet(&mut raw).await;
    assert_eq!((header, body[1]), (0x20, 0), "CONNACK success");
    // SUBSCRIBE id 1, no properties, `ta/#` at QoS 0.
    raw.write_all(&[0x82, 10, 0, 1, 0, 0, 4, b't', b'a', b'/', b'#', 0])
        .await
        .expect("SUBSCRIBE");
    let (header, _) = read_packet(&mut raw).await;
    assert_eq!(header, 0x90, "SUBACK");
    raw
}

/// A QoS 0 PUBLISH as (topic name, topic alias, payload).
fn alias_of(body: &[u8]) -> (String, Option<u16>, Vec<u8>) {
    let len = usize::from(u16::from_be_bytes([body[0], body[1]]));
    let topic = String::from_utf8(body[2..2 + len].to_vec()).expect("UTF-8 topic");
    let mut at = 2 + len;
    let props_len = usize::from(body[at]); // short property lists: one length byte
    at += 1;
    let props = &body[at..at + props_len];
    let mut alias = None;
    let mut i = 0;
    while i < props.len() {
        match props[i] {
            0x23 => {
                alias = Some(u16::from_be_bytes([props[i + 1], props[i + 2]]));
                i += 3;
            }
            0x02 => i += 5,
            other => panic!("unexpected property {other:#x}"),
        }
    }
    (topic, alias, body[at + props_len..].to_vec())
}

#[tokio::test]
async fn the_broker_names_repeated_topics_by_alias_within_the_limits() {
    let broker = Broker::start(&[("AOS_BROKER__SERVER_TOPIC_ALIASES", "2")]);
    // The client accepts up to 5 aliases; the broker assigns at most its own 2.
    let mut raw = raw_alias_subscriber(broker.port(), 5).await;
    let publisher = Client5::start(broker.port(), "pub").await;
    let sends = [
        ("ta/long/topic/name", "1"),
        ("ta/long/topic/name", "2"),
        ("ta/other", "3"),
        ("ta/third", "4"),
        ("ta/other", "5"),
    ];
    for (topic, payload) in sends {
        publisher
            .client
            .publish(topic, QoS::AtMostOnce, false, payload)
            .await
            .expect("publish");
    }
    let mut got = Vec::new();
    for _ in sends {
        let (header, body) = read_packet(&mut raw).await;
        assert_eq!(header, 0x30, "PUBLISH QoS 0");
        got.push(alias_of(&body));
    }
    let want = |topic: &str, alias: Option<u16>, payload: &str| {
        (topic.to_string(), alias, payload.as_bytes().to_vec())
    };
    assert_eq!(
        got,
        vec![
            want("ta/long/topic/name", Some(1), "1"),
            want("", Some(1), "2"),
            want("ta/other", Some(2), "3"),
            // Both aliases are taken: the topic goes by name.
            want("ta/third", None, "4"),
            want("", Some(2), "5"),
        ]
    );

    // A client that accepts none gets none, whatever the broker would assign.
    let mut plain = raw_alias_subscriber(broker.port(), 0).await;
    for _ in 0..2 {
        publisher
            .client
            .publish("ta/long/topic/name", QoS::AtMostOnce, false, "x")
            .await
            .expect("publish");
    }
    for _ in 0..2 {
        let (_, body) = read_packet(&mut plain).await;
        assert_eq!(alias_of(&body), want("ta/long/topic/name", None, "x"));
    }
}

#[tokio::test]
async fn a_resent_qos1_publish_is_taken_again_and_counted() {
    use tokio::io::AsyncWriteExt;
    let broker = Broker::start(&[]);
    let mut sub = Client5::start(broker.port(), "sub").await;
    sub.subscribe("again", QoS::AtLeastOnce).await;
    let mut raw = raw_client(broker.port()).await;
    assert_eq!(broker.metric("aos_broker_resent_received_total"), 0);
    // QoS 1, packet id 1, no properties; then the same again flagged DUP (its PUBACK "lost").
    let publish = [
        0x32, 12, 0, 5, b'a', b'g', b'a', b'i', b'n', 0, 1, 0, b'o', b'k',
    ];
    let mut again = publish;
    again[0] |= 0x08;
    for packet in [publish, again] {
        raw.write_all(&packet).await.expect("PUBLISH");
        let (header, body) = read_packet(&mut raw).await;
        assert_eq!((header, &body[..2]), (0x40, &[0, 1][..]), "PUBACK");
    }
    // QoS 1 is at least once: both are delivered, and the second is counted as resent.
    for _ in 0..2 {
        assert_eq!(&sub.publish_received().await.payload[..], b"ok");
    }
    assert_eq!(broker.metric("aos_broker_resent_received_total"), 1);
}

/// Stopping the node closes its clients' connections with DISCONNECT 0x8B (server shutting
/// down), `broker.drain_rate` a second: after the first is closed, the others are still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_broker_disconnects_its_clients_a_few_at_a_time() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    const CLIENTS: usize = 30;
    let mut broker = Broker::start(&[
        ("AOS_BROKER__DRAIN_RATE", "10"),
        ("AOS_BROKER__DRAIN_TIMEOUT", "60s"),
    ]);
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        clients.push(Client5::start(broker.port(), &format!("drained-{i}")).await);
    }
    // Each client publishes and awaits the PUBACK, again and again, until it is disconnected;
    // round trips completed after the first disconnection are counted.
    let first_gone = Arc::new(AtomicBool::new(false));
    let served_after = Arc::new(AtomicUsize::new(0));
    let mut running = Vec::new();
    for mut client in clients {
        let (first_gone, served_after) = (first_gone.clone(), served_after.clone());
        running.push(tokio::spawn(async move {
            loop {
                if client
                    .client
                    .publish("drain/ping", QoS::AtLeastOnce, false, "x")
                    .await
                    .is_err()
                {
                    first_gone.store(true, Ordering::SeqCst);
                    return "the client's event loop ended".to_string();
                }
                loop {
                    match client.next().await {
                        Ok(Packet::PubAck(_)) => break,
                        Ok(_) => {}
                        Err(how) => {
                            first_gone.store(true, Ordering::SeqCst);
                            return how;
                        }
                    }
                }
                if first_gone.load(Ordering::SeqCst) {
                    served_after.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    broker.process.signal(libc::SIGTERM);
    for client in running {
        let how = client.await.expect("the client task");
        assert!(how.contains("ServerShuttingDown"), "{how}");
    }
    let served = served_after.load(Ordering::SeqCst);
    assert!(
        served >= 10 * CLIENTS,
        "only {served} round trips after the first disconnection: all closed at once?"
    );
    broker.process.wait_exit(PATIENCE).expect("the node exits");
}

/// A 5.0 CONNECT with clean start, keep alive 60, the given properties (already encoded) and
/// client id.
fn connect5(client_id: &str, properties: &[u8]) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 60];
    body.push(u8::try_from(properties.len()).expect("short properties"));
    body.extend_from_slice(properties);
    body.extend_from_slice(&u16::try_from(client_id.len()).expect("id").to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut packet = vec![0x10, u8::try_from(body.len()).expect("short CONNECT")];
    packet.extend(body);
    packet
}

/// A raw 5.0 connection whose CONNECT carried `properties`, past its successful CONNACK.
async fn raw_client_with(port: u16, client_id: &str, properties: &[u8]) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    raw.write_all(&connect5(client_id, properties))
        .await
        .expect("CONNECT");
    let (header, body) = read_packet(&mut raw).await;
    assert_eq!((header, body[1]), (0x20, 0), "CONNACK success");
    raw
}

/// The reason code of the DISCONNECT the broker sends next.
async fn disconnect_reason(raw: &mut tokio::net::TcpStream) -> u8 {
    loop {
        let (header, body) = read_packet(raw).await;
        if header == 0xE0 {
            return body[0];
        }
    }
}

#[tokio::test]
async fn qos2_messages_to_a_5_0_subscriber_are_in_flight_together_up_to_its_receive_maximum() {
    use tokio::io::AsyncWriteExt;
    const MESSAGES: usize = 5;
    let broker = Broker::start(&[]);
    // Receive Maximum (0x21) 3.
    let mut raw = raw_client_with(broker.port(), "q2-reader", &[0x21, 0, 3]).await;
    // SUBSCRIBE q2/# at QoS 2 under packet id 1, no properties.
    raw.write_all(&[0x82, 10, 0, 1, 0, 0, 4, b'q', b'2', b'/', b'#', 2])
        .await
        .expect("SUBSCRIBE");
    let (header, body) = read_packet(&mut raw).await;
    assert_eq!(
        (header, &body[..2], body.last()),
        (0x90, &[0, 1][..], Some(&2))
    );

    let publisher = Client5::start(broker.port(), "q2-writer").await;
    for n in 0..MESSAGES {
        publisher
            .client
            .publish("q2/x", QoS::ExactlyOnce, false, format!("m{n}"))
            .await
            .expect("publish");
    }
    let next_publish = async |raw: &mut tokio::net::TcpStream, n: usize| {
        let (header, body) = read_packet(raw).await;
        assert_eq!(header, 0x34, "a QoS 2 PUBLISH");
        let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
        assert_eq!(&body[2..2 + topic_len], b"q2/x");
        let id = [body[2 + topic_len], body[3 + topic_len]];
        assert!(
            body.ends_with(format!("m{n}").as_bytes()),
            "message {n} in order"
        );
        id
    };
    // Three arrive before the subscriber answers any.
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(next_publish(&mut raw, n).await);
    }
    let distinct: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), 3, "each in flight under its own id");
    // The fourth waits for the first to complete: what comes next is the PUBREL.
    for n in 3..MESSAGES + 3 {
        let id = ids[n - 3];
        raw.write_all(&[0x50, 2, id[0], id[1]])
            .await
            .expect("PUBREC");
        let (header, body) = read_packet(&mut raw).await;
        assert_eq!(
            (header, &body[..2]),
            (0x62, &id[..]),
            "PUBREL for the same id"
        );
        raw.write_all(&[0x70, 2, id[0], id[1]])
            .await
            .expect("PUBCOMP");
        if n < MESSAGES {
            ids.push(next_publish(&mut raw, n).await);
        }
    }
    // Nothing is sent again: the next packet is a later message.
    publisher
        .client
        .publish("q2/end", QoS::AtMostOnce, false, "end")
        .await
        .expect("publish");
    let (header, body) = read_packet(&mut raw).await;
    assert_eq!(header, 0x30, "a QoS 0 PUBLISH, nothing resent");
    assert_eq!(&body[2..8], b"q2/end");
}

#[tokio::test]
async fn a_5_0_client_that_breaks_the_rules_is_told_why_it_is_disconnected() {
    use tokio::io::AsyncWriteExt;
    let broker = Broker::start(&[
        ("AOS_BROKER__RETAIN_AVAILABLE", "false"),
        ("AOS_BROKER__RECEIVE_MAXIMUM", "2"),
    ]);
    let port = broker.port();

    // A retained PUBLISH where retained messages are not available: 0x9A.
    let mut raw = raw_client_with(port, "retainer", &[]).await;
    raw.write_all(&[0x31, 6, 0, 1, b'r', 0, b'o', b'k'])
        .await
        .expect("PUBLISH");
    assert_eq!(disconnect_reason(&mut raw).await, 0x9A);

    // More QoS 2 messages waiting for PUBREL than the receive maximum: 0x93.
    let mut raw = raw_client_with(port, "flooder", &[]).await;
    for id in 1..=3u8 {
        raw.write_all(&[0x34, 7, 0, 1, b'f', 0, id, 0, b'm'])
            .await
            .expect("PUBLISH");
    }
    assert_eq!(disconnect_reason(&mut raw).await, 0x93);

    // A topic alias above the maximum the broker announced (32): 0x94.
    let mut raw = raw_client_with(port, "aliaser", &[]).await;
    raw.write_all(&[0x30, 9, 0, 1, b'a', 3, 0x23, 0, 33, b'o', b'k'])
        .await
        .expect("PUBLISH");
    assert_eq!(disconnect_reason(&mut raw).await, 0x94);

    // AUTH without an authentication method in CONNECT: 0x82.
    let mut raw = raw_client_with(port, "authenticator", &[]).await;
    raw.write_all(&[0xF0, 0]).await.expect("AUTH");
    assert_eq!(disconnect_reason(&mut raw).await, 0x82);

    // A session expiry on DISCONNECT after none on CONNECT: 0x82.
    let mut raw = raw_client_with(port, "expirer", &[]).await;
    raw.write_all(&[0xE0, 7, 0, 5, 0x11, 0, 0, 0, 60])
        .await
        .expect("DISCONNECT");
    assert_eq!(disconnect_reason(&mut raw).await, 0x82);

    // A will with the retain flag where retained messages are not available: CONNACK 0x9A.
    let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    // Clean start, will flag, will retain; no properties; client id "w"; will topic "w",
    // no will properties, payload "x".
    raw.write_all(&[
        0x10, 21, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x26, 0, 60, 0, 0, 1, b'w', 0, 0, 1, b'w', 0, 1,
        b'x',
    ])
    .await
    .expect("CONNECT");
    let (header, body) = read_packet(&mut raw).await;
    assert_eq!(
        (header, body[1]),
        (0x20, 0x9A),
        "CONNACK retain not supported"
    );

    // Everyone else is still served.
    let mut fine = Client5::start(port, "fine").await;
    fine.subscribe("still/here", QoS::AtLeastOnce).await;
    fine.client
        .publish("still/here", QoS::AtLeastOnce, false, "yes")
        .await
        .expect("publish");
    assert_eq!(&fine.publish_received().await.payload[..], b"yes");
}

#[tokio::test]
async fn a_client_that_answers_what_came_before_a_disconnect_still_reads_the_disconnect() {
    use tokio::io::AsyncWriteExt;
    let broker = Broker::start(&[("AOS_BROKER__RECEIVE_MAXIMUM", "2")]);
    let mut raw = raw_client_with(broker.port(), "flooder", &[]).await;
    // One QoS 2 PUBLISH more than the receive maximum, none released.
    for id in 1..=3u8 {
        raw.write_all(&[0x34, 7, 0, 1, b'f', 0, id, 0, b'm'])
            .await
            .expect("PUBLISH");
    }
    // The client answers each PUBREC as it reads it (as Paho's test client does), though the
    // broker has closed the exchange: its PUBRELs must not cost it the DISCONNECT.
    loop {
        let (header, body) = read_packet(&mut raw).await;
        match header {
            0x50 => raw
                .write_all(&[0x62, 2, body[0], body[1]])
                .await
                .expect("PUBREL"),
            0xE0 => {
                assert_eq!(body[0], 0x93, "receive maximum exceeded");
                break;
            }
            other => panic!("unexpected packet {other:#x}"),
        }
    }
}
