//! Message formats through the real interfaces: formats made with the CLI and given to classes,
//! devices publishing XML, Protobuf and schema-checked JSON over MQTT, the values in the ledger
//! with their mapped names, a payload that breaks the schema logged `failed` with the reason, and
//! formats that cannot work refused when they are saved.

mod common;

use std::path::Path;

use aos_storage::entity::{device, ledger, message_log};
use common::mqtt::{Client5, options5};
use common::platform::{access_token, storage, wait_logged};
use common::{Aos, cli_ok};
use rumqttc::v5::mqttbytes::QoS;
use sea_orm::EntityTrait;

const PROTO: &str = r#"
syntax = "proto3";
package acme;
message Reading {
  double temperature = 1;
  int64 ts = 2;
  string door = 3;
}
"#;

/// Formats, classes using them and one device per class; returns (device, token) pairs.
fn provision(dir: &Path) -> Vec<(String, String)> {
    cli_ok(dir, &["tenant", "add", "acme"]);
    std::fs::write(dir.join("reading.proto"), PROTO).expect("write");
    std::fs::write(
        dir.join("schema.json"),
        r#"{"type": "object", "required": ["t"], "properties": {"t": {"type": "number"}}}"#,
    )
    .expect("write");
    let at = |name: &str| dir.join(name).display().to_string();
    let formats: [Vec<String>; 3] = [
        vec![
            "xml-t".into(),
            "--kind".into(),
            "xml".into(),
            "--map".into(),
            "temperature=/t".into(),
        ],
        vec![
            "pb".into(),
            "--kind".into(),
            "protobuf".into(),
            "--proto".into(),
            at("reading.proto"),
            "--message".into(),
            "acme.Reading".into(),
        ],
        vec![
            "checked".into(),
            "--kind".into(),
            "json".into(),
            "--schema".into(),
            at("schema.json"),
            "--map".into(),
            "temperature=/t".into(),
            "--ts".into(),
            "/time".into(),
        ],
    ];
    let mut devices = Vec::new();
    for (i, format) in formats.iter().enumerate() {
        let mut args = vec!["format", "add"];
        args.extend(format.iter().map(String::as_str));
        args.extend(["--tenant", "acme"]);
        cli_ok(dir, &args);
        let class = format!("class-{i}");
        let uid = format!("dev-{i}");
        cli_ok(dir, &["class", "add", &class, "--tenant", "acme"]);
        cli_ok(
            dir,
            &[
                "class", "format", &class, "--tenant", "acme", "--format", &format[0],
            ],
        );
        cli_ok(
            dir,
            &["device", "add", &uid, "--tenant", "acme", "--class", &class],
        );
        let token = access_token(dir, &uid, "acme");
        devices.push((uid, token));
    }
    devices
}

/// A protobuf `acme.Reading` with temperature, ts (ms) and door.
fn reading(temperature: f64, ts: u64, door: &str) -> Vec<u8> {
    let mut payload = vec![0x09];
    payload.extend_from_slice(&temperature.to_le_bytes());
    payload.push(0x10);
    let mut v = ts;
    while v >= 0x80 {
        payload.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    payload.push(v as u8);
    payload.push(0x1a);
    payload.push(door.len() as u8);
    payload.extend_from_slice(door.as_bytes());
    payload
}

#[tokio::test]
async fn xml_protobuf_and_checked_json_become_mapped_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let devices = provision(dir.path());
    let mut node = Aos::new(dir.path(), &["run"]).spawn();
    node.wait_ready();
    let payloads: [(usize, Vec<u8>); 4] = [
        (0, b"<m><t>21.5</t><ignored>1</ignored></m>".to_vec()),
        (1, reading(19.5, 1_796_032_800_000, "open")),
        (2, br#"{"t": 22.5, "time": 1796032800000}"#.to_vec()),
        (2, br#"{"t": "hot"}"#.to_vec()),
    ];
    for (i, payload) in payloads {
        let (uid, token) = &devices[i];
        let mut options = options5(node.ports.mqtt, uid);
        options.set_credentials(uid.as_str(), token.as_str());
        let (mut client, _) = Client5::connect(options).await.expect("signs in");
        client
            .client
            .publish(
                format!("aos/{uid}/telemetry"),
                QoS::AtLeastOnce,
                false,
                payload,
            )
            .await
            .expect("publish");
        client.puback().await;
    }

    let storage = storage(dir.path()).await;
    wait_logged(&storage, 4).await;
    let uids: std::collections::HashMap<i64, String> = device::Entity::find()
        .all(storage.db())
        .await
        .expect("devices")
        .into_iter()
        .map(|d| (d.id, d.uid))
        .collect();
    let mut rows: Vec<String> = ledger::Entity::find()
        .all(storage.db())
        .await
        .expect("ledger")
        .into_iter()
        .map(|r| {
            let value = r.value_num.map_or_else(
                || r.value_json.unwrap_or_default().to_string(),
                |n| n.to_string(),
            );
            format!(
                "{} {} {} {}",
                uids[&r.device_id],
                r.attribute,
                value,
                r.ts.timestamp_millis()
            )
        })
        .collect();
    rows.sort();
    // XML and JSON through their mappings; Protobuf read as is (its `ts` stamps the values).
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert!(rows[0].starts_with("dev-0 temperature 21.5 "), "{rows:?}");
    assert_eq!(rows[1], "dev-1 door \"open\" 1796032800000");
    assert_eq!(rows[2], "dev-1 temperature 19.5 1796032800000");
    assert_eq!(rows[3], "dev-2 temperature 22.5 1796032800000");
    let failed: Vec<String> = message_log::Entity::find()
        .all(storage.db())
        .await
        .expect("log")
        .into_iter()
        .filter_map(|m| m.error)
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        failed[0].contains("does not match the format's JSON Schema"),
        "{failed:?}"
    );
}

#[test]
fn formats_that_cannot_work_are_refused_when_saved() {
    let dir = tempfile::tempdir().expect("tempdir");
    cli_ok(dir.path(), &["tenant", "add", "acme"]);
    std::fs::write(dir.path().join("bad.proto"), "message {").expect("write");
    let bad = dir.path().join("bad.proto").display().to_string();
    let cases: [(&[&str], &str); 4] = [
        (
            &["format", "add", "f", "--tenant", "acme", "--kind", "yaml"],
            "unknown format kind `yaml`",
        ),
        (
            &[
                "format",
                "add",
                "f",
                "--tenant",
                "acme",
                "--kind",
                "protobuf",
                "--proto",
                &bad,
                "--message",
                "X",
            ],
            "does not compile",
        ),
        (
            &[
                "format", "add", "f", "--tenant", "acme", "--kind", "json", "--map", "t=data.t",
            ],
            "not a JSON pointer",
        ),
        (
            &[
                "class", "format", "nope", "--tenant", "acme", "--format", "f",
            ],
            "no format `f`",
        ),
    ];
    for (args, expected) in cases {
        let (status, _, err) = Aos::new(dir.path(), args).output();
        assert!(!status.success(), "{args:?} must fail");
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    let listed = cli_ok(dir.path(), &["format", "list", "--tenant", "acme"]);
    assert_eq!(listed.lines().count(), 1, "nothing was saved: {listed}");
}
