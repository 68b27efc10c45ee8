//! Device messages become stored data: a device publishes over MQTT, and its values appear in the
//! ledger and the latest values, each message in the message log with its outcome; a payload
//! that does not decode is logged `failed` while the good ones keep flowing; and a node killed
//! with SIGKILL in the middle of an ingest loses no acknowledged message and stores none twice.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use aos_storage::entity::{latest_value, ledger, message_log};
use common::mqtt::{Client5, options5};
use common::platform::{access_token, ledger_numbers, storage, wait_logged};
use common::{Aos, AosProcess, cli_ok};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::PubAckReason;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

/// Tenant `acme` with device `d-1`; returns its access token.
fn provision(dir: &Path) -> String {
    cli_ok(dir, &["tenant", "add", "acme"]);
    cli_ok(dir, &["class", "add", "sensor", "--tenant", "acme"]);
    cli_ok(
        dir,
        &[
            "device", "add", "d-1", "--tenant", "acme", "--class", "sensor",
        ],
    );
    access_token(dir, "d-1", "acme")
}

fn start(dir: &Path) -> AosProcess {
    let mut node = Aos::new(dir, &["run"]).spawn();
    node.wait_ready();
    node
}

async fn device(port: u16, token: &str) -> Client5 {
    let mut options = options5(port, "d-1");
    options.set_credentials("d-1", token);
    Client5::connect(options).await.expect("d-1 signs in").0
}

#[tokio::test]
async fn json_telemetry_lands_in_the_ledger_and_bad_payloads_fail_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = provision(dir.path());
    let node = start(dir.path());
    let mut dev = device(node.ports.mqtt, &token).await;
    let payloads: [&[u8]; 4] = [
        br#"{"ts": "2026-11-30T10:00:00Z", "values": {"temperature": 21.5, "door": "open"}}"#,
        b"not json",
        br#"{"ts": "2026-11-30T09:00:00Z", "values": {"temperature": 19}}"#,
        br#"[{"ts": 1796032800000, "humidity": 40}, {"ts": 1796032860000, "humidity": 41}]"#,
    ];
    for payload in payloads {
        dev.client
            .publish(
                "aos/d-1/telemetry",
                QoS::AtLeastOnce,
                false,
                payload.to_vec(),
            )
            .await
            .expect("publish");
        assert_eq!(dev.puback().await.reason, PubAckReason::Success);
    }
    let storage = storage(dir.path()).await;
    wait_logged(&storage, 4).await;

    let log = message_log::Entity::find()
        .order_by_asc(message_log::Column::Id)
        .all(storage.db())
        .await
        .expect("log");
    let statuses: Vec<&str> = log.iter().map(|m| m.status.as_str()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == "processed").count(),
        3,
        "{statuses:?}"
    );
    let failed: Vec<_> = log.iter().filter(|m| m.status == "failed").collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].payload, b"not json");
    assert!(
        failed[0]
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("invalid JSON"),
        "{:?}",
        failed[0].error
    );
    for m in &log {
        let processed = m.processed_at.expect("processed_at");
        assert!(
            m.received_at <= processed && m.started_at.is_some(),
            "{m:?}"
        );
    }

    let rows = ledger::Entity::find()
        .all(storage.db())
        .await
        .expect("ledger");
    let mut seen: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            let value = match (&r.value_num, &r.value_json) {
                (Some(n), _) => n.to_string(),
                (None, Some(j)) => j.to_string(),
                (None, None) => "null".into(),
            };
            (r.attribute.clone(), value)
        })
        .collect();
    seen.sort();
    let expected: Vec<(String, String)> = [
        ("door", "\"open\""),
        ("humidity", "40"),
        ("humidity", "41"),
        ("temperature", "19"),
        ("temperature", "21.5"),
    ]
    .iter()
    .map(|(a, v)| (a.to_string(), v.to_string()))
    .collect();
    assert_eq!(seen, expected);

    // The latest value is the newest by time, not the last to arrive.
    let temperature = latest_value::Entity::find()
        .filter(latest_value::Column::Attribute.eq("temperature"))
        .one(storage.db())
        .await
        .expect("query")
        .expect("latest temperature");
    assert_eq!(temperature.value_num, Some(21.5));
    let humidity = latest_value::Entity::find()
        .filter(latest_value::Column::Attribute.eq("humidity"))
        .one(storage.db())
        .await
        .expect("query")
        .expect("latest humidity");
    assert_eq!(humidity.value_num, Some(41.0));
}

#[tokio::test]
async fn a_killed_node_loses_no_acknowledged_message_and_stores_none_twice() {
    const MESSAGES: u64 = 3000;
    let dir = tempfile::tempdir().expect("tempdir");
    let token = provision(dir.path());
    let mut node = start(dir.path());
    let mut dev = device(node.ports.mqtt, &token).await;
    for seq in 0..MESSAGES {
        let payload = format!(r#"{{"seq": {seq}}}"#);
        dev.client
            .publish("aos/d-1/telemetry", QoS::AtLeastOnce, false, payload)
            .await
            .expect("publish");
    }
    let mut acknowledged = 0;
    while acknowledged < MESSAGES {
        assert_eq!(dev.puback().await.reason, PubAckReason::Success);
        acknowledged += 1;
    }
    // Every message is acknowledged, so durably queued: kill the node in the middle of its work.
    node.signal(libc::SIGKILL);
    node.wait_exit(common::PATIENCE).expect("killed");
    drop(dev);

    let _restarted = start(dir.path());
    let storage = storage(dir.path()).await;
    wait_logged(&storage, MESSAGES).await;
    let rows = ledger_numbers(&storage, "seq").await;
    let values: BTreeSet<&i64> = rows.iter().collect();
    assert_eq!(rows.len() as u64, MESSAGES, "each message exactly once");
    assert_eq!(values.len() as u64, MESSAGES, "every message");
}
