//! Interpreters through the real interfaces: set with the CLI, applied to what a device
//! publishes over MQTT (a value map, an expression, levels), and level changes raising alarms
//! (one per attribute and level, counted again while open) that the CLI lists, acknowledges and
//! clears.

mod common;

use std::path::Path;

use aos_storage::entity::{latest_value, ledger};
use common::mqtt::{Client5, options5};
use common::platform::{access_token, storage, wait_logged};
use common::{Aos, cli_ok};
use rumqttc::v5::mqttbytes::QoS;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

fn setup(dir: &Path) -> String {
    cli_ok(dir, &["tenant", "add", "acme"]);
    cli_ok(dir, &["class", "add", "sensor", "--tenant", "acme"]);
    cli_ok(
        dir,
        &[
            "device", "add", "d-1", "--tenant", "acme", "--class", "sensor",
        ],
    );
    cli_ok(
        dir,
        &[
            "interpreter",
            "set",
            "temperature",
            "--tenant",
            "acme",
            "--class",
            "sensor",
            "--expression",
            "value / 10.0",
            "--level",
            "warning:30:50",
            "--level",
            "faulty:50:",
        ],
    );
    cli_ok(
        dir,
        &[
            "interpreter",
            "set",
            "door",
            "--tenant",
            "acme",
            "--map",
            "1=open",
            "--map",
            "0=closed",
        ],
    );
    access_token(dir, "d-1", "acme")
}

/// The CLI's event list as (id, level, acknowledged, cleared, count) per line, oldest first.
fn events(dir: &Path) -> Vec<(String, String, String, String, String)> {
    let listed = cli_ok(dir, &["event", "list", "--tenant", "acme"]);
    let mut rows: Vec<(String, String, String, String, String)> = listed
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[0].to_string(),
                f[1].to_string(),
                f[3].to_string(),
                f[4].to_string(),
                f[5].to_string(),
            )
        })
        .collect();
    rows.reverse();
    rows
}

#[tokio::test]
async fn values_are_interpreted_and_level_changes_raise_alarms_counted_while_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let token = setup(d);
    let (status, _, err) = Aos::new(
        d,
        &[
            "interpreter",
            "set",
            "x",
            "--tenant",
            "acme",
            "--expression",
            "value +",
        ],
    )
    .output();
    assert!(
        !status.success() && err.contains("does not compile"),
        "{err}"
    );

    let mut node = Aos::new(d, &["run"]).spawn();
    node.wait_ready();
    let mut options = options5(node.ports.mqtt, "d-1");
    options.set_credentials("d-1", token.as_str());
    let (mut dev, _) = Client5::connect(options).await.expect("signs in");
    let storage = storage(d).await;
    let steps = [
        r#"{"ts": 1796032800000, "values": {"temperature": 215, "door": 1}}"#,
        r#"{"ts": 1796032860000, "values": {"temperature": 350}}"#,
        r#"{"ts": 1796032920000, "values": {"temperature": 550}}"#,
        r#"{"ts": 1796032980000, "values": {"temperature": 200}}"#,
        r#"{"ts": 1796033040000, "values": {"temperature": 360}}"#,
    ];
    let mut seen = Vec::new();
    for (i, payload) in steps.iter().enumerate() {
        dev.client
            .publish("aos/d-1/telemetry", QoS::AtLeastOnce, false, *payload)
            .await
            .expect("publish");
        dev.puback().await;
        wait_logged(&storage, i as u64 + 1).await;
        seen.push(events(d));
    }
    // 21.5: normal, no alarm; 35: a warning alarm; 55: a faulty one too; 20: both stay open
    // until someone clears them; 36: warning again, counted in its open alarm.
    let shown = |i: usize| -> Vec<(&str, &str, &str)> {
        seen[i]
            .iter()
            .map(|e| (e.1.as_str(), e.3.as_str(), e.4.as_str()))
            .collect()
    };
    assert!(seen[0].is_empty(), "{seen:?}");
    assert_eq!(shown(1), [("warning", "false", "1")]);
    assert_eq!(
        shown(2),
        [("warning", "false", "1"), ("faulty", "false", "1")]
    );
    assert_eq!(shown(3), shown(2));
    assert_eq!(
        shown(4),
        [("warning", "false", "2"), ("faulty", "false", "1")]
    );

    let temperature = latest_value::Entity::find()
        .filter(latest_value::Column::Attribute.eq("temperature"))
        .one(storage.db())
        .await
        .expect("query")
        .expect("latest");
    assert_eq!(
        (temperature.value_num, temperature.level.as_deref()),
        (Some(36.0), Some("warning"))
    );
    let door = ledger::Entity::find()
        .filter(ledger::Column::Attribute.eq("door"))
        .one(storage.db())
        .await
        .expect("query")
        .expect("door");
    assert_eq!(door.value_json, Some(serde_json::json!("open")));
    assert_eq!(
        door.raw,
        Some(serde_json::json!(1)),
        "the raw value is kept"
    );

    let first = seen[1][0].0.clone();
    assert!(cli_ok(d, &["event", "ack", &first, "--tenant", "acme"]).contains("acknowledged"));
    assert_eq!(events(d)[0].2, "true");
    let (status, _, err) = Aos::new(d, &["event", "ack", "999", "--tenant", "acme"]).output();
    assert!(!status.success() && err.contains("no event `999`"), "{err}");
}
