//! The worker's retention job deletes ledger rows older than `worker.ledger_retention` and
//! message-log entries older than `worker.message_log_retention`, and keeps the rest; before,
//! it archives entries older than `worker.message_log_archive_after` to JSON-lines files.

mod common;

use std::time::{Duration, Instant};

use aos_storage::entity::{device, latest_value, ledger, message_log};
use aos_storage::{Storage, StorageConfig};
use common::{Aos, cli_ok};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};

#[tokio::test]
async fn old_ledger_rows_and_log_entries_are_deleted_and_recent_ones_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    cli_ok(dir.path(), &["tenant", "add", "acme"]);
    cli_ok(dir.path(), &["class", "add", "sensor", "--tenant", "acme"]);
    cli_ok(
        dir.path(),
        &[
            "device", "add", "t-1", "--tenant", "acme", "--class", "sensor",
        ],
    );
    let storage = Storage::connect(&StorageConfig::default(), &dir.path().join("data"))
        .await
        .expect("database");
    let dev = device::Entity::find()
        .filter(device::Column::Uid.eq("t-1"))
        .one(storage.db())
        .await
        .expect("query")
        .expect("device");
    let now = chrono::Utc::now();
    for (i, age_hours) in [72, 49, 30, 2, 0].into_iter().enumerate() {
        ledger::ActiveModel {
            tenant_id: Set(dev.tenant_id),
            device_id: Set(dev.id),
            attribute: Set("temperature".into()),
            ts: Set(now - chrono::Duration::hours(age_hours)),
            value_num: Set(Some(i as f64)),
            value_json: Set(None),
            raw: Set(None),
            level: Set(None),
            message_id: Set(None),
            ..Default::default()
        }
        .insert(storage.db())
        .await
        .expect("ledger row");
    }
    // The pipeline keeps a latest value for every series it writes; retention goes by series.
    latest_value::ActiveModel {
        device_id: Set(dev.id),
        attribute: Set("temperature".into()),
        tenant_id: Set(dev.tenant_id),
        ts: Set(now),
        value_num: Set(Some(4.0)),
        value_json: Set(None),
        level: Set(None),
    }
    .insert(storage.db())
    .await
    .expect("latest value");
    for age_hours in [72, 30, 13, 1] {
        message_log::ActiveModel {
            tenant_id: Set(dev.tenant_id),
            device_id: Set(Some(dev.id)),
            direction: Set("inbound".into()),
            topic: Set("aos/t-1/telemetry".into()),
            payload: Set(format!("{{\"age\": {age_hours}}}").into_bytes()),
            status: Set("processed".into()),
            error: Set(None),
            message_key: Set(format!("old-{age_hours}")),
            received_at: Set(now - chrono::Duration::hours(age_hours)),
            started_at: Set(None),
            processed_at: Set(None),
            ..Default::default()
        }
        .insert(storage.db())
        .await
        .expect("message-log entry");
    }

    let mut node = Aos::new(dir.path(), &["run", "--roles", "worker"])
        .env("AOS_WORKER__LEDGER_RETENTION", "1day")
        .env("AOS_WORKER__MESSAGE_LOG_RETENTION", "1day")
        .env("AOS_WORKER__RETENTION_INTERVAL", "200ms")
        .env("AOS_WORKER__MESSAGE_LOG_ARCHIVE_AFTER", "12h")
        .spawn();
    node.wait_ready();
    let deadline = Instant::now() + common::PATIENCE;
    let (kept, messages) = loop {
        let rows = ledger::Entity::find()
            .all(storage.db())
            .await
            .expect("ledger");
        let messages = message_log::Entity::find()
            .all(storage.db())
            .await
            .expect("message log");
        let archived = messages.iter().any(|m| m.status == "archived");
        if (rows.len() <= 2 && messages.len() <= 2 && archived) || Instant::now() > deadline {
            break (rows, messages);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut values: Vec<f64> = kept.iter().filter_map(|r| r.value_num).collect();
    values.sort_by(f64::total_cmp);
    assert_eq!(
        values,
        [3.0, 4.0],
        "only the rows younger than a day remain: {}",
        node.stderr()
    );
    let kept: Vec<(&str, &str, usize)> = messages
        .iter()
        .map(|m| (m.message_key.as_str(), m.status.as_str(), m.payload.len()))
        .collect();
    assert_eq!(
        kept,
        [("old-13", "archived", 0), ("old-1", "processed", 10)],
        "only the entries younger than a day remain; those older than 12 hours are archived"
    );
    // Every entry older than 12 hours is in the archive, payload and all, before it is deleted.
    let mut archived: Vec<serde_json::Value> = Vec::new();
    for file in std::fs::read_dir(dir.path().join("data/archive")).expect("archive dir") {
        let path = file.expect("entry").path();
        assert!(path.to_string_lossy().contains("message-log-"), "{path:?}");
        let text = std::fs::read_to_string(&path).expect("read");
        archived.extend(
            text.lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json line")),
        );
    }
    archived.sort_by_key(|a| a["key"].as_str().map(String::from));
    let summary: Vec<(String, String)> = archived
        .iter()
        .map(|a| {
            (
                a["key"].as_str().unwrap_or("").to_string(),
                a["payload"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("old-13".to_string(), r#"{"age": 13}"#.to_string()),
            ("old-30".to_string(), r#"{"age": 30}"#.to_string()),
            ("old-72".to_string(), r#"{"age": 72}"#.to_string()),
        ]
    );
    storage.close().await.ok();
}
