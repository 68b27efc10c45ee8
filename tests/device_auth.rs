//! Devices authenticate with the credentials the platform stores (an MQTT username + password,
//! an access token, or a client certificate on a TLS listener), publish and subscribe only under
//! their own topic tree, and a change of credentials — made by another process, the CLI — closes
//! the live session and refuses the old secret on the next CONNECT.

mod common;

use std::path::Path;

use common::mqtt::{Client3, Client5, options3, options5};
use common::pki::{ClientCert, Pki, tls_listener};
use common::{Aos, cli_ok, free_port};
use rumqttc::QoS;

const PASSWORD: &str = "first password";

/// A tenant with two devices: `dev-1` (username `dev-1-user` and PASSWORD) and `dev-2` (a
/// token, returned).
fn provision(dir: &Path) -> String {
    cli_ok(dir, &["tenant", "add", "acme"]);
    cli_ok(dir, &["class", "add", "sensor", "--tenant", "acme"]);
    for uid in ["dev-1", "dev-2"] {
        cli_ok(
            dir,
            &[
                "device", "add", uid, "--tenant", "acme", "--class", "sensor",
            ],
        );
    }
    set_password(dir, PASSWORD);
    let out = cli_ok(dir, &["device", "credentials", "dev-2", "--tenant", "acme"]);
    out.lines()
        .find_map(|l| l.strip_prefix("access token: "))
        .and_then(|l| l.split_whitespace().next())
        .expect("token printed")
        .to_string()
}

fn set_password(dir: &Path, password: &str) {
    let (status, _, err) = Aos::new(
        dir,
        &[
            "device",
            "credentials",
            "dev-1",
            "--tenant",
            "acme",
            "--username",
            "dev-1-user",
            "--password-stdin",
        ],
    )
    .output_with_input(&format!("{password}\n"));
    assert!(status.success(), "{err}");
}

fn start_node(dir: &Path) -> common::AosProcess {
    start_node_with(dir, &[])
}

fn start_node_with(dir: &Path, env: &[(&str, &str)]) -> common::AosProcess {
    let mut node =
        Aos::new(dir, &["run", "--roles", "broker"]).env("AOS_AUTH__CREDENTIAL_POLL", "200ms");
    for (key, value) in env {
        node = node.env(key, value);
    }
    let mut node = node.spawn();
    node.wait_ready();
    node
}

fn with_password(port: u16, client_id: &str, user: &str, password: &str) -> rumqttc::MqttOptions {
    let mut options = options3(port, client_id);
    options.set_credentials(user, password);
    options
}

/// Asserts the CONNECT is refused with the return code named `code`.
async fn assert_refused(options: rumqttc::MqttOptions, code: &str) {
    let credentials = options.credentials();
    match Client3::connect(options).await {
        Ok(_) => panic!("{credentials:?} must be refused"),
        Err(refused) => assert!(refused.contains(code), "{credentials:?}: {refused}"),
    }
}

#[tokio::test]
async fn devices_sign_in_with_stored_credentials_and_stay_in_their_topic_tree() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = provision(dir.path());
    let node = start_node(dir.path());
    let port = node.ports.mqtt;

    // Wrong password, unknown user, anonymous, or someone else's client id: refused.
    let cases = [
        (
            with_password(port, "dev-1", "dev-1-user", "wrong"),
            "BadUserNamePassword",
        ),
        (
            with_password(port, "dev-1", "nobody", PASSWORD),
            "BadUserNamePassword",
        ),
        (options3(port, "dev-1"), "NotAuthorized"),
        (
            with_password(port, "dev-2", "dev-1-user", PASSWORD),
            "NotAuthorized",
        ),
    ];
    for (options, code) in cases {
        assert_refused(options, code).await;
    }

    // dev-1 (password) talks in its own tree; dev-2 (token, over 5.0) cannot reach it.
    let (mut dev1, _) = Client3::connect(with_password(port, "dev-1", "dev-1-user", PASSWORD))
        .await
        .expect("dev-1 signs in");
    let codes = dev1.subscribe("aos/dev-1/commands", QoS::AtLeastOnce).await;
    assert_eq!(
        codes,
        vec![rumqttc::SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    let codes = dev1.subscribe("aos/dev-2/#", QoS::AtLeastOnce).await;
    assert_eq!(codes, vec![rumqttc::SubscribeReasonCode::Failure]);
    let codes = dev1.subscribe("#", QoS::AtLeastOnce).await;
    assert_eq!(codes, vec![rumqttc::SubscribeReasonCode::Failure]);

    let mut options = options5(port, "dev-2");
    options.set_credentials("dev-2", token.as_str());
    let (mut dev2, _) = Client5::connect(options)
        .await
        .expect("dev-2 signs in with its token");
    let ack = dev2
        .subscribe(
            "aos/dev-2/commands",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        )
        .await;
    assert_eq!(ack.return_codes.len(), 1);
    dev2.client
        .publish(
            "aos/dev-1/commands",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            "intrude",
        )
        .await
        .expect("publish");
    let puback = dev2.puback().await;
    assert_eq!(
        puback.reason,
        rumqttc::v5::mqttbytes::v5::PubAckReason::NotAuthorized
    );
    dev2.client
        .publish(
            "aos/dev-2/telemetry",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            "{}",
        )
        .await
        .expect("publish");
    assert_eq!(
        dev2.puback().await.reason,
        rumqttc::v5::mqttbytes::v5::PubAckReason::Success
    );
    // dev-1 never saw the intrusion; its own publish reaches its own subscription.
    dev1.publish_acked("aos/dev-1/commands", false, b"mine")
        .await;
    assert_eq!(&dev1.publish_received().await.payload[..], b"mine");
}

#[tokio::test]
async fn changed_credentials_close_the_live_session_and_refuse_the_old_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    provision(dir.path());
    // Changes are read every 3 s: a device reconnecting right after its change signs in before
    // the node has read it.
    let node = start_node_with(dir.path(), &[("AOS_AUTH__CREDENTIAL_POLL", "3s")]);
    let port = node.ports.mqtt;
    let (mut dev1, _) = Client3::connect(with_password(port, "dev-1", "dev-1-user", PASSWORD))
        .await
        .expect("dev-1 signs in");

    // Another process (the CLI) gives dev-1 a new password: its session is closed.
    set_password(dir.path(), "second password");
    let closed = dev1.closed().await;
    assert!(
        !closed.contains("nothing received"),
        "the session must be closed: {closed}"
    );
    assert_refused(
        with_password(port, "dev-1", "dev-1-user", PASSWORD),
        "BadUserNamePassword",
    )
    .await;
    Client3::connect(with_password(
        port,
        "dev-1",
        "dev-1-user",
        "second password",
    ))
    .await
    .expect("the new password works");

    // A connection signed in with new credentials stays, even when the node reads the change
    // after it: dev-1 connects right after its change, then dev-2's later change closes dev-2's
    // session — by then the node has read both — and dev-1 is still served.
    let token = cli_ok(
        dir.path(),
        &["device", "credentials", "dev-2", "--tenant", "acme"],
    );
    let token = common::platform::printed(&token, "access token: ");
    let (mut dev2, _) = Client3::connect(with_password(port, "dev-2", "dev-2", &token))
        .await
        .expect("dev-2 signs in");
    set_password(dir.path(), "third password");
    let (mut fresh, _) =
        Client3::connect(with_password(port, "dev-1", "dev-1-user", "third password"))
            .await
            .expect("the newest password works");
    cli_ok(
        dir.path(),
        &["device", "credentials", "dev-2", "--tenant", "acme"],
    );
    let closed = dev2.closed().await;
    assert!(!closed.contains("nothing received"), "{closed}");
    fresh
        .publish_acked("aos/dev-1/telemetry", false, b"{\"t\": 1}")
        .await;
}

#[tokio::test]
async fn a_class_provisioning_key_registers_unknown_devices_on_first_connect() {
    let dir = tempfile::tempdir().expect("tempdir");
    provision(dir.path());
    let out = cli_ok(
        dir.path(),
        &["class", "provisioning", "sensor", "--tenant", "acme"],
    );
    let key = out
        .lines()
        .find_map(|l| l.strip_prefix("provisioning key: "))
        .and_then(|l| l.split_whitespace().next())
        .expect("key printed")
        .to_string();
    let node = start_node(dir.path());
    let port = node.ports.mqtt;

    assert_refused(
        with_password(port, "new-1", "provision", "wrong key"),
        "BadUserNamePassword",
    )
    .await;
    let (mut fresh, _) = Client3::connect(with_password(port, "new-1", "provision", &key))
        .await
        .expect("an unknown device registers itself");
    fresh
        .publish_acked("aos/new-1/telemetry", false, b"{}")
        .await;
    let codes = fresh.subscribe("aos/dev-1/#", QoS::AtLeastOnce).await;
    assert_eq!(
        codes,
        vec![rumqttc::SubscribeReasonCode::Failure],
        "only its own tree"
    );
    let devices = cli_ok(dir.path(), &["device", "list", "--tenant", "acme"]);
    assert!(devices.contains("new-1"), "{devices}");
    // The key cannot take over a device with credentials of its own, nor register an invalid id.
    for id in ["dev-1", "bad/id"] {
        assert_refused(with_password(port, id, "provision", &key), "NotAuthorized").await;
    }
    // The registered device comes back with the key.
    drop(fresh);
    Client3::connect(with_password(port, "new-1", "provision", &key))
        .await
        .expect("the registered device signs in again");

    // Switched off: a new device with the old key is refused.
    cli_ok(
        dir.path(),
        &[
            "class",
            "provisioning",
            "sensor",
            "--tenant",
            "acme",
            "--off",
        ],
    );
    assert_refused(
        with_password(port, "new-2", "provision", &key),
        "BadUserNamePassword",
    )
    .await;
}

/// Registers `cert` as the client certificate of `uid` through the CLI.
fn register_certificate(dir: &Path, uid: &str, cert: &ClientCert) {
    let path = dir.join(format!("{uid}-client.pem"));
    std::fs::write(&path, &cert.cert).expect("write");
    let path = path.display().to_string();
    let out = cli_ok(
        dir,
        &[
            "device",
            "credentials",
            uid,
            "--tenant",
            "acme",
            "--certificate",
            &path,
        ],
    );
    assert!(out.contains("certificate SHA-256: "), "{out}");
}

#[tokio::test]
async fn a_registered_client_certificate_names_its_device() {
    let dir = tempfile::tempdir().expect("tempdir");
    provision(dir.path());
    let pki = Pki::new(dir.path());
    let dev1_cert = pki.client("dev-1");
    register_certificate(dir.path(), "dev-1", &dev1_cert);
    let tls_port = free_port();
    // Client certificates are optional on this listener: identity comes from a registered one.
    let listeners = tls_listener(dir.path(), tls_port, true, false);
    let _node = start_node_with(dir.path(), &[("AOS_BROKER__LISTENERS", &listeners)]);

    // With its certificate and no username, dev-1 is dev-1 (anonymous clients are refused here).
    let (mut dev1, _) = Client3::connect(pki.options(tls_port, "dev-1", Some(&dev1_cert)))
        .await
        .expect("the certificate signs dev-1 in");
    let codes = dev1.subscribe("aos/dev-1/commands", QoS::AtLeastOnce).await;
    assert_eq!(
        codes,
        vec![rumqttc::SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    let codes = dev1.subscribe("aos/dev-2/#", QoS::AtLeastOnce).await;
    assert_eq!(codes, vec![rumqttc::SubscribeReasonCode::Failure]);

    // The certificate speaks for dev-1 only; a valid but unregistered one for nobody.
    assert_refused(
        pki.options(tls_port, "dev-2", Some(&dev1_cert)),
        "NotAuthorized",
    )
    .await;
    let stranger = pki.client("stranger");
    assert_refused(
        pki.options(tls_port, "stranger", Some(&stranger)),
        "NotAuthorized",
    )
    .await;

    // A new certificate for dev-1 closes the session of the old one and refuses it afterwards.
    let renewed = pki.client("dev-1 renewed");
    register_certificate(dir.path(), "dev-1", &renewed);
    let closed = dev1.closed().await;
    assert!(
        !closed.contains("nothing received"),
        "the session must be closed: {closed}"
    );
    assert_refused(
        pki.options(tls_port, "dev-1", Some(&dev1_cert)),
        "NotAuthorized",
    )
    .await;
    Client3::connect(pki.options(tls_port, "dev-1", Some(&renewed)))
        .await
        .expect("the renewed certificate works");
}
