//! Who may connect, subscribe and read, through a real socket: the shipped defaults refuse
//! anonymous clients, and a deny rule inside a granted wildcard keeps the wildcard working while
//! every message it denies — live, queued for an offline session, or retained — stays away
//! (MQTT 3.1.1 and 5.0).

mod common;

use common::Broker;
use common::mqtt::{Client3, Client5, options3, options5};

/// Anonymous clients allowed, everything readable but `test/nosubscribe`: the rule third-party
/// conformance suites run with.
fn broker_with_a_deny_rule() -> Broker {
    Broker::start(&[(
        "AOS_BROKER__AUTH__ACL",
        "[{permission=\"deny\",action=\"subscribe\",topic=\"test/nosubscribe\"}]",
    )])
}

#[tokio::test]
async fn the_shipped_defaults_refuse_anonymous_clients_and_grant_users_nothing() {
    let hash = aos_auth::password::hash_password(
        "secret",
        aos_auth::password::HashParams {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        },
    )
    .expect("hash");
    let users = format!("[{{username=\"tool\",password_hash=\"{hash}\"}}]");
    let broker = Broker::start_as_shipped(&[("AOS_BROKER__AUTH__USERS", &users)]);

    let refused = Client3::connect(options3(broker.port(), "anon3"))
        .await
        .err()
        .expect("a 3.1.1 anonymous CONNECT is refused");
    assert!(refused.contains("NotAuthorized"), "{refused}");
    let refused = Client5::connect(options5(broker.port(), "anon5"))
        .await
        .err()
        .expect("a 5.0 anonymous CONNECT is refused");
    assert!(refused.contains("NotAuthorized"), "{refused}");

    // A configured user signs in, but no rule grants it anything.
    let mut tool = options5(broker.port(), "tool");
    tool.set_credentials("tool", "secret");
    let (mut tool, _) = Client5::connect(tool).await.expect("the user signs in");
    let ack = tool
        .subscribe("#", rumqttc::v5::mqttbytes::QoS::AtMostOnce)
        .await;
    assert_eq!(
        ack.return_codes,
        vec![rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::NotAuthorized]
    );
    tool.client
        .publish(
            "plant/line-1",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            "x",
        )
        .await
        .expect("publish");
    assert_eq!(
        tool.puback().await.reason,
        rumqttc::v5::mqttbytes::v5::PubAckReason::NotAuthorized
    );
}

#[tokio::test]
async fn enabling_anonymous_access_is_warned_about() {
    broker_with_a_deny_rule()
        .process
        .wait_logged("broker.auth.allow_anonymous is on");
}

mod v3 {
    use super::*;
    use rumqttc::{QoS, SubscribeReasonCode};

    async fn next_topic(client: &mut Client3) -> String {
        client.publish_received().await.topic
    }

    #[tokio::test]
    async fn wildcards_stay_granted_and_denied_topics_are_not_delivered() {
        let broker = broker_with_a_deny_rule();
        let mut sub = Client3::start(broker.port(), "sub").await;
        assert_eq!(
            sub.subscribe("test/nosubscribe", QoS::AtLeastOnce).await,
            vec![SubscribeReasonCode::Failure]
        );
        for filter in ["#", "+/+", "test/#"] {
            assert_eq!(
                sub.subscribe(filter, QoS::AtLeastOnce).await,
                vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)],
                "{filter}"
            );
        }
        let mut publisher = Client3::start(broker.port(), "pub").await;
        publisher
            .publish_acked("test/nosubscribe", false, b"secret")
            .await;
        publisher.publish_acked("test/other", false, b"open").await;
        // Messages from one publisher arrive in order: the denied one would have come first.
        let got = sub.publish_received().await;
        assert_eq!(
            (got.topic.as_str(), &got.payload[..]),
            ("test/other", &b"open"[..])
        );
    }

    #[tokio::test]
    async fn an_offline_session_queues_only_what_it_may_read() {
        let broker = broker_with_a_deny_rule();
        let mut persistent = options3(broker.port(), "away");
        persistent.set_clean_session(false);
        let (mut away, _) = Client3::connect(persistent.clone()).await.expect("connect");
        away.subscribe("test/#", QoS::AtLeastOnce).await;
        away.client.disconnect().await.expect("disconnect");
        away.closed().await;
        drop(away);

        let mut publisher = Client3::start(broker.port(), "pub").await;
        publisher
            .publish_acked("test/nosubscribe", false, b"secret")
            .await;
        publisher
            .publish_acked("test/other", false, b"queued")
            .await;

        let (mut back, ack) = Client3::connect(persistent).await.expect("reconnect");
        assert!(ack.session_present);
        let got = back.publish_received().await;
        assert_eq!(
            (got.topic.as_str(), &got.payload[..]),
            ("test/other", &b"queued"[..])
        );
    }

    #[tokio::test]
    async fn retained_messages_are_delivered_only_where_they_may_be_read() {
        let broker = broker_with_a_deny_rule();
        let mut publisher = Client3::start(broker.port(), "pub").await;
        publisher
            .publish_acked("test/nosubscribe", true, b"secret")
            .await;
        publisher.publish_acked("test/other", true, b"kept").await;

        let mut sub = Client3::start(broker.port(), "sub").await;
        sub.subscribe("test/#", QoS::AtLeastOnce).await;
        let got = sub.publish_received().await;
        assert_eq!(
            (got.topic.as_str(), &got.payload[..], got.retain),
            ("test/other", &b"kept"[..], true)
        );
        // Retained messages are queued together at SUBACK: a denied one would precede this.
        publisher.publish_acked("test/marker", false, b"").await;
        assert_eq!(next_topic(&mut sub).await, "test/marker");
    }
}

mod v5 {
    use super::*;
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::SubscribeReasonCode;

    async fn publish_acked(client: &mut Client5, topic: &str, retain: bool, payload: &str) {
        client
            .client
            .publish(topic, QoS::AtLeastOnce, retain, payload.to_string())
            .await
            .expect("publish");
        client.puback().await;
    }

    fn topic_and_payload(p: &rumqttc::v5::mqttbytes::v5::Publish) -> (String, String) {
        (
            String::from_utf8_lossy(&p.topic).into_owned(),
            String::from_utf8_lossy(&p.payload).into_owned(),
        )
    }

    #[tokio::test]
    async fn wildcards_stay_granted_and_denied_topics_are_not_delivered() {
        let broker = broker_with_a_deny_rule();
        let mut sub = Client5::start(broker.port(), "sub").await;
        let ack = sub.subscribe("test/nosubscribe", QoS::AtLeastOnce).await;
        assert_eq!(ack.return_codes, vec![SubscribeReasonCode::NotAuthorized]);
        for filter in ["#", "+/+", "test/#"] {
            let ack = sub.subscribe(filter, QoS::AtLeastOnce).await;
            assert_eq!(
                ack.return_codes,
                vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)],
                "{filter}"
            );
        }
        let mut publisher = Client5::start(broker.port(), "pub").await;
        publish_acked(&mut publisher, "test/nosubscribe", false, "secret").await;
        publish_acked(&mut publisher, "test/other", false, "open").await;
        let got = sub.publish_received().await;
        assert_eq!(
            topic_and_payload(&got),
            ("test/other".into(), "open".into())
        );
    }

    #[tokio::test]
    async fn an_offline_session_queues_only_what_it_may_read() {
        let broker = broker_with_a_deny_rule();
        let mut persistent = options5(broker.port(), "away");
        persistent.set_clean_start(false);
        persistent.set_session_expiry_interval(Some(600));
        let (mut away, _) = Client5::connect(persistent.clone()).await.expect("connect");
        away.subscribe("test/#", QoS::AtLeastOnce).await;
        away.client.disconnect().await.expect("disconnect");
        away.disconnected().await;
        drop(away);

        let mut publisher = Client5::start(broker.port(), "pub").await;
        publish_acked(&mut publisher, "test/nosubscribe", false, "secret").await;
        publish_acked(&mut publisher, "test/other", false, "queued").await;

        let (mut back, ack) = Client5::connect(persistent).await.expect("reconnect");
        assert!(ack.session_present);
        let got = back.publish_received().await;
        assert_eq!(
            topic_and_payload(&got),
            ("test/other".into(), "queued".into())
        );
    }

    #[tokio::test]
    async fn retained_messages_are_delivered_only_where_they_may_be_read() {
        let broker = broker_with_a_deny_rule();
        let mut publisher = Client5::start(broker.port(), "pub").await;
        publish_acked(&mut publisher, "test/nosubscribe", true, "secret").await;
        publish_acked(&mut publisher, "test/other", true, "kept").await;

        let mut sub = Client5::start(broker.port(), "sub").await;
        sub.subscribe("test/#", QoS::AtLeastOnce).await;
        let got = sub.publish_received().await;
        assert_eq!(
            (topic_and_payload(&got), got.retain),
            (("test/other".into(), "kept".into()), true)
        );
        publish_acked(&mut publisher, "test/marker", false, "").await;
        let next = sub.publish_received().await;
        assert_eq!(topic_and_payload(&next).0, "test/marker");
    }
}
