//! Commands through the real interfaces: queued with the CLI, delivered over MQTT on the
//! device's command topic (right away when it is online, when it connects otherwise, through its
//! gateway for a child node), written in the class's outbound format, settled by the device's
//! reply on `commands/reply` (only its own commands), expired when their time runs out, and
//! queued for devices registered later by a batch that includes them.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use aos_storage::Storage;
use aos_storage::entity::{command, message_log};
use common::mqtt::{Client5, options5};
use common::platform::{access_token, storage};
use common::{Aos, PATIENCE, cli_ok};
use rumqttc::v5::mqttbytes::QoS;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};

fn setup(dir: &Path) {
    cli_ok(dir, &["tenant", "add", "acme"]);
    cli_ok(dir, &["class", "add", "sensor", "--tenant", "acme"]);
    cli_ok(dir, &["class", "add", "node", "--tenant", "acme"]);
    cli_ok(
        dir,
        &["class", "add", "gw", "--tenant", "acme", "--gateway"],
    );
    for (name, flags) in [("gw-in", &[][..]), ("gw-out", &["--outbound"][..])] {
        let mut args = vec!["format", "add", name, "--tenant", "acme", "--kind", "xml"];
        args.extend(flags);
        cli_ok(dir, &args);
    }
    // Gateways read and write XML; their children's commands go in the children's class format.
    cli_ok(
        dir,
        &[
            "class", "format", "gw", "--tenant", "acme", "--format", "gw-in",
        ],
    );
    cli_ok(
        dir,
        &[
            "class",
            "format",
            "node",
            "--tenant",
            "acme",
            "--format",
            "gw-out",
            "--outbound",
        ],
    );
    for uid in ["d-1", "d-2", "d-3"] {
        cli_ok(
            dir,
            &[
                "device", "add", uid, "--tenant", "acme", "--class", "sensor",
            ],
        );
    }
    cli_ok(
        dir,
        &["device", "add", "gw-1", "--tenant", "acme", "--class", "gw"],
    );
    cli_ok(
        dir,
        &[
            "device",
            "add",
            "n-1",
            "--tenant",
            "acme",
            "--class",
            "node",
            "--gateway",
            "gw-1",
        ],
    );
}

fn send(dir: &Path, device: &str, extra: &[&str]) -> i64 {
    let mut args = vec!["command", "send", device, "--tenant", "acme"];
    args.extend(extra);
    cli_ok(dir, &args)
        .trim()
        .parse()
        .expect("the command id is printed")
}

/// Waits (polling, with a deadline) until command `id` has `status`; returns it.
async fn wait_status(storage: &Storage, id: i64, status: &str) -> command::Model {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let found = command::Entity::find_by_id(id)
            .one(storage.db())
            .await
            .expect("query")
            .expect("command");
        if found.status == status {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "command {id} is {} (wanted {status})",
            found.status
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Connects device `uid` with its access token and subscribes it to `filter`.
async fn device(port: u16, tokens: &HashMap<&str, String>, uid: &str, filter: &str) -> Client5 {
    let token = &tokens[uid];
    let mut options = options5(port, uid);
    options.set_credentials(uid, token.as_str());
    let (mut client, _) = Client5::connect(options).await.expect("signs in");
    client.subscribe(filter, QoS::AtLeastOnce).await;
    client
}

async fn reply(client: &mut Client5, topic: &str, payload: String) {
    client
        .client
        .publish(topic, QoS::AtLeastOnce, false, payload)
        .await
        .expect("publish");
    client.puback().await;
}

#[tokio::test]
async fn commands_reach_their_devices_and_follow_the_replies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    setup(d);
    let refused = Aos::new(
        d,
        &["command", "send", "nope", "--tenant", "acme", "--name", "x"],
    )
    .output();
    assert!(
        !refused.0.success() && refused.2.contains("no device `nope`"),
        "{}",
        refused.2
    );

    let tokens: HashMap<&str, String> = ["d-1", "d-2", "gw-1"]
        .into_iter()
        .map(|uid| (uid, access_token(d, uid, "acme")))
        .collect();
    let mut node = Aos::new(d, &["run"]).spawn();
    node.wait_ready();
    let port = node.ports.mqtt;
    let storage = storage(d).await;

    // Online: delivered at once, in JSON, then acknowledged by the device's reply.
    let mut d1 = device(port, &tokens, "d-1", "aos/d-1/commands").await;
    let reboot = send(
        d,
        "d-1",
        &[
            "--name",
            "reboot",
            "--param",
            "delay=5",
            "--param",
            "mode=soft",
        ],
    );
    let got = d1.publish_received().await;
    assert_eq!(got.topic, "aos/d-1/commands");
    assert_eq!(
        serde_json::from_slice::<Value>(&got.payload).expect("json"),
        json!({"id": reboot, "name": "reboot", "parameters": {"delay": 5, "mode": "soft"}})
    );
    wait_status(&storage, reboot, "sent").await;
    reply(
        &mut d1,
        "aos/d-1/commands/reply",
        json!({"id": reboot, "status": "ok"}).to_string(),
    )
    .await;
    let done = wait_status(&storage, reboot, "acknowledged").await;
    assert!(done.sent_at.is_some() && done.acknowledged_at.is_some());

    // Offline: queued until the device connects and subscribes; a failure reply says why.
    let update = send(d, "d-2", &["--name", "update"]);
    let queued = wait_status(&storage, update, "queued").await;
    assert!(queued.sent_at.is_none());
    // A device cannot settle another device's command, and a reply without an id is refused.
    reply(
        &mut d1,
        "aos/d-1/commands/reply",
        json!({"id": update, "status": "ok"}).to_string(),
    )
    .await;
    reply(
        &mut d1,
        "aos/d-1/commands/reply",
        r#"{"status": "ok"}"#.into(),
    )
    .await;
    let mut d2 = device(port, &tokens, "d-2", "aos/d-2/commands").await;
    let got = d2.publish_received().await;
    assert_eq!(
        serde_json::from_slice::<Value>(&got.payload).expect("json")["id"],
        json!(update)
    );
    reply(
        &mut d2,
        "aos/d-2/commands/reply",
        json!({"id": update, "status": "failed", "error": "battery low"}).to_string(),
    )
    .await;
    let failed = wait_status(&storage, update, "failed").await;
    assert_eq!(failed.error.as_deref(), Some("battery low"));
    // Both refused replies are logged failed, each with its reason.
    let refused: Vec<String> = message_log::Entity::find()
        .filter(message_log::Column::Status.eq("failed"))
        .all(storage.db())
        .await
        .expect("log")
        .into_iter()
        .map(|m| m.error.unwrap_or_default())
        .collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(
        refused.iter().any(|e| e.contains(&format!(
            "command {update}, which is not a command of device `d-1`"
        ))),
        "{refused:?}"
    );
    assert!(
        refused
            .iter()
            .any(|e| e.contains("needs the command's `id`")),
        "{refused:?}"
    );

    // A device that never comes: the command expires.
    let late = send(d, "d-3", &["--name", "ping", "--expires-in", "1s"]);
    wait_status(&storage, late, "expired").await;

    // A child node's command goes through its gateway, in XML, and the XML reply settles it.
    let mut gw = device(port, &tokens, "gw-1", "aos/gw-1/nodes/+/commands").await;
    let valve = send(d, "n-1", &["--name", "open", "--param", "valve=2"]);
    let got = gw.publish_received().await;
    assert_eq!(got.topic, "aos/gw-1/nodes/n-1/commands");
    assert_eq!(
        String::from_utf8_lossy(&got.payload),
        format!(
            "<command><id>{valve}</id><name>open</name><parameters><valve>2</valve></parameters></command>"
        )
    );
    reply(
        &mut gw,
        "aos/gw-1/nodes/n-1/commands/reply",
        format!("<reply><id>{valve}</id><status>ok</status></reply>"),
    )
    .await;
    wait_status(&storage, valve, "acknowledged").await;

    // A batch for a class, including devices registered later.
    let out = cli_ok(
        d,
        &[
            "command",
            "batch",
            "firmware",
            "--tenant",
            "acme",
            "--class",
            "sensor",
            "--include-future",
            "--name",
            "upgrade",
            "--param",
            "version=\"2.1\"",
        ],
    );
    assert!(out.contains("3 commands queued"), "{out}");
    let got = d1.publish_received().await;
    let batch_command = serde_json::from_slice::<Value>(&got.payload).expect("json");
    assert_eq!(batch_command["parameters"], json!({"version": "2.1"}));
    cli_ok(
        d,
        &[
            "device", "add", "d-4", "--tenant", "acme", "--class", "sensor",
        ],
    );
    let listed = cli_ok(
        d,
        &["command", "list", "--tenant", "acme", "--device", "d-4"],
    );
    assert!(
        listed.contains("upgrade") && listed.contains("queued"),
        "{listed}"
    );

    // Everyone else kept being served: d-1 still gets its commands.
    let again = send(d, "d-1", &["--name", "blink"]);
    let got = d1.publish_received().await;
    assert_eq!(
        serde_json::from_slice::<Value>(&got.payload).expect("json")["id"],
        json!(again)
    );
}
