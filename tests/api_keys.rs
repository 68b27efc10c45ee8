//! Applications sign in over MQTT with an API key (username `apikey`, the key as password): they
//! may use only the topics granted to the key, only their own tenant's messages reach them (and
//! their messages reach only their tenant's devices), and revoking the key — from another
//! process, the CLI — closes their session and refuses the key afterwards.

mod common;

use std::path::Path;

use common::mqtt::{Client3, Client5, options3, options5};
use common::platform::{access_token, printed};
use common::{Aos, cli_ok};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{PubAckReason, SubscribeReasonCode};

/// Tenant `tenant` with a device `uid` (returns its access token) and an API key `app` with the
/// given extra arguments (returns the key).
fn tenant_with_device_and_key(
    dir: &Path,
    tenant: &str,
    uid: &str,
    key_args: &[&str],
) -> (String, String) {
    cli_ok(dir, &["tenant", "add", tenant]);
    cli_ok(dir, &["class", "add", "sensor", "--tenant", tenant]);
    cli_ok(
        dir,
        &[
            "device", "add", uid, "--tenant", tenant, "--class", "sensor",
        ],
    );
    let token = access_token(dir, uid, tenant);
    let mut args = vec!["apikey", "add", "app", "--tenant", tenant];
    args.extend_from_slice(key_args);
    let key = printed(&cli_ok(dir, &args), "key: ");
    (token, key)
}

async fn device(port: u16, uid: &str, token: &str) -> Client3 {
    let mut options = options3(port, uid);
    options.set_credentials(uid, token);
    Client3::connect(options).await.expect("device signs in").0
}

/// An application's grants: every device's telemetry in, commands out.
const TELEMETRY_AND_COMMANDS: &[&str] = &[
    "--subscribe",
    "aos/+/telemetry",
    "--publish",
    "aos/+/commands",
];

fn application(port: u16, client_id: &str, key: &str) -> rumqttc::v5::MqttOptions {
    let mut options = options5(port, client_id);
    options.set_credentials("apikey", key);
    options
}

#[tokio::test]
async fn api_keys_reach_only_their_grants_and_their_tenant() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (acme_token, acme_key) =
        tenant_with_device_and_key(dir.path(), "acme", "acme-1", TELEMETRY_AND_COMMANDS);
    let (globex_token, globex_key) = tenant_with_device_and_key(
        dir.path(),
        "globex",
        "globex-1",
        &["--subscribe", "#", "--publish", "aos/+/commands"],
    );
    let mut node = Aos::new(dir.path(), &["run", "--roles", "broker"])
        .env("AOS_AUTH__CREDENTIAL_POLL", "200ms")
        .spawn();
    node.wait_ready();
    let port = node.ports.mqtt;

    let (mut acme_app, _) = Client5::connect(application(port, "acme-dashboard", &acme_key))
        .await
        .expect("the acme key signs in");
    let (mut globex_app, _) = Client5::connect(application(port, "globex-dashboard", &globex_key))
        .await
        .expect("the globex key signs in");
    let mut wrong = application(port, "thief", "not a key");
    wrong.set_credentials("apikey", "not a key");
    let refused = Client5::connect(wrong)
        .await
        .err()
        .expect("a wrong key is refused");
    assert!(refused.contains("BadUserNamePassword"), "{refused}");

    // Only what the key grants.
    let ack = acme_app
        .subscribe("aos/+/telemetry", QoS::AtLeastOnce)
        .await;
    assert_eq!(
        ack.return_codes,
        vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    let ack = acme_app.subscribe("#", QoS::AtLeastOnce).await;
    assert_eq!(ack.return_codes, vec![SubscribeReasonCode::NotAuthorized]);
    let ack = globex_app.subscribe("#", QoS::AtLeastOnce).await;
    assert_eq!(
        ack.return_codes,
        vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    acme_app
        .client
        .publish("aos/acme-1/telemetry", QoS::AtLeastOnce, false, "spoof")
        .await
        .expect("publish");
    assert_eq!(acme_app.puback().await.reason, PubAckReason::NotAuthorized);

    // A device's telemetry reaches its own tenant's application only: globex's `#` sees its own
    // device's message first, acme's first.
    let mut acme_dev = device(port, "acme-1", &acme_token).await;
    let mut globex_dev = device(port, "globex-1", &globex_token).await;
    acme_dev
        .publish_acked("aos/acme-1/telemetry", false, b"acme reading")
        .await;
    globex_dev
        .publish_acked("aos/globex-1/telemetry", false, b"globex reading")
        .await;
    let seen = globex_app.publish_received().await;
    assert_eq!(&seen.payload[..], b"globex reading");
    let seen = acme_app.publish_received().await;
    assert_eq!(&seen.payload[..], b"acme reading");
    acme_dev
        .publish_acked("aos/acme-1/telemetry", false, b"acme again")
        .await;
    let seen = acme_app.publish_received().await;
    assert_eq!(
        &seen.payload[..],
        b"acme again",
        "globex's reading never reached acme"
    );

    // Nobody but the device takes over a device's session (its client id is the device id).
    let refused = Client5::connect(application(port, "globex-1", &acme_key))
        .await
        .err()
        .expect("another identity cannot take a device's client id");
    assert!(refused.contains("NotAuthorized"), "{refused}");

    // A command from acme's application to globex's device (the filter is granted) is not
    // delivered: globex's device receives its own tenant's command first.
    globex_dev
        .subscribe("aos/globex-1/commands", rumqttc::QoS::AtLeastOnce)
        .await;
    acme_app
        .client
        .publish("aos/globex-1/commands", QoS::AtLeastOnce, false, "intrude")
        .await
        .expect("publish");
    acme_app.puback().await;
    globex_app
        .client
        .publish("aos/globex-1/commands", QoS::AtLeastOnce, false, "reboot")
        .await
        .expect("publish");
    assert_eq!(&globex_dev.publish_received().await.payload[..], b"reboot");

    // Revoked from the CLI: the live session closes, and the key no longer signs in.
    cli_ok(dir.path(), &["apikey", "revoke", "app", "--tenant", "acme"]);
    let ended = acme_app.disconnected().await;
    assert!(ended.contains("NotAuthorized"), "{ended}");
    let refused = Client5::connect(application(port, "acme-dashboard", &acme_key))
        .await
        .err()
        .expect("a revoked key is refused");
    assert!(refused.contains("BadUserNamePassword"), "{refused}");
    let keys = cli_ok(dir.path(), &["apikey", "list", "--tenant", "acme"]);
    assert!(keys.contains("revoked"), "{keys}");
    // globex's key, of the same name, is untouched.
    globex_app
        .client
        .publish(
            "aos/globex-1/commands",
            QoS::AtLeastOnce,
            false,
            "still here",
        )
        .await
        .expect("publish");
    assert_eq!(globex_app.puback().await.reason, PubAckReason::Success);
}

#[test]
fn api_key_mistakes_are_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    cli_ok(dir.path(), &["tenant", "add", "acme"]);
    let cases: [(&[&str], &str); 4] = [
        (
            &["apikey", "add", "app", "--tenant", "acme"],
            "at least one --publish or --subscribe",
        ),
        (
            &[
                "apikey",
                "add",
                "app",
                "--tenant",
                "acme",
                "--subscribe",
                "a/#/b",
            ],
            "is not an MQTT topic filter",
        ),
        (
            &[
                "apikey",
                "add",
                "app",
                "--tenant",
                "nope",
                "--subscribe",
                "#",
            ],
            "no tenant `nope`",
        ),
        (
            &["apikey", "revoke", "ghost", "--tenant", "acme"],
            "no API key `ghost`",
        ),
    ];
    for (args, expected) in cases {
        let (status, _, err) = Aos::new(dir.path(), args).output();
        assert!(!status.success(), "{args:?} must fail");
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    // The second of two keys with one name.
    let add = [
        "apikey",
        "add",
        "app",
        "--tenant",
        "acme",
        "--subscribe",
        "#",
    ];
    cli_ok(dir.path(), &add);
    let (status, _, err) = Aos::new(dir.path(), &add).output();
    assert!(!status.success());
    assert!(err.contains("API key `app` already exists"), "{err}");
}

#[tokio::test]
async fn anonymous_clients_never_reach_a_tenants_traffic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (token, key) =
        tenant_with_device_and_key(dir.path(), "acme", "acme-1", TELEMETRY_AND_COMMANDS);
    // An operator opens anonymous access and writes the broadest rule there is.
    let mut node = Aos::new(dir.path(), &["run", "--roles", "broker"])
        .env("AOS_BROKER__AUTH__ALLOW_ANONYMOUS", "true")
        .env(
            "AOS_BROKER__AUTH__ACL",
            "[{permission=\"allow\",action=\"all\",topic=\"#\"}]",
        )
        .env("AOS_BROKER__AUTH__ACL_DEFAULT", "allow")
        .spawn();
    node.wait_ready();
    let port = node.ports.mqtt;

    let mut anonymous = Client3::start(port, "curious").await;
    assert_eq!(
        anonymous
            .subscribe("aos/#", rumqttc::QoS::AtLeastOnce)
            .await,
        vec![rumqttc::SubscribeReasonCode::Failure]
    );
    assert_eq!(
        anonymous.subscribe("#", rumqttc::QoS::AtLeastOnce).await,
        vec![rumqttc::SubscribeReasonCode::Success(
            rumqttc::QoS::AtLeastOnce
        )]
    );
    let mut sensor = device(port, "acme-1", &token).await;
    sensor
        .subscribe("aos/acme-1/commands", rumqttc::QoS::AtLeastOnce)
        .await;
    let (mut app, _) = Client5::connect(application(port, "acme-dashboard", &key))
        .await
        .expect("the key signs in");
    app.subscribe("aos/+/telemetry", QoS::AtLeastOnce).await;

    // An anonymous command is acknowledged (3.1.1) and dropped; the application's arrives.
    anonymous
        .publish_acked("aos/acme-1/commands", false, br#"{"name": "reboot"}"#)
        .await;
    app.client
        .publish(
            "aos/acme-1/commands",
            QoS::AtLeastOnce,
            false,
            r#"{"name": "ping"}"#,
        )
        .await
        .expect("publish");
    assert_eq!(app.puback().await.reason, PubAckReason::Success);
    let command = sensor.publish_received().await;
    assert_eq!(&command.payload[..], br#"{"name": "ping"}"#);

    // The device's telemetry reaches its tenant's application, not the anonymous `#`.
    sensor
        .publish_acked("aos/acme-1/telemetry", false, br#"{"t": 21}"#)
        .await;
    let got = app.publish_received().await;
    assert_eq!(&got.topic[..], b"aos/acme-1/telemetry");
    // Routing queued it for every reader at once: anything for the anonymous client precedes
    // this marker.
    anonymous.publish_acked("plain/marker", false, b"").await;
    assert_eq!(anonymous.publish_received().await.topic, "plain/marker");
}
