//! The worker's retention job deletes ledger rows older than `worker.ledger_retention` and keeps
//! the rest.

mod common;

use std::time::{Duration, Instant};

use aos_storage::entity::{device, ledger};
use aos_storage::{Storage, StorageConfig};
use common::{Aos, cli_ok};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};

#[tokio::test]
async fn old_ledger_rows_are_deleted_and_recent_ones_kept() {
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

    let mut node = Aos::new(dir.path(), &["run", "--roles", "worker"])
        .env("AOS_WORKER__LEDGER_RETENTION", "1day")
        .env("AOS_WORKER__RETENTION_INTERVAL", "200ms")
        .spawn();
    node.wait_ready();
    let deadline = Instant::now() + common::PATIENCE;
    let kept = loop {
        let rows = ledger::Entity::find()
            .all(storage.db())
            .await
            .expect("ledger");
        if rows.len() <= 2 || Instant::now() > deadline {
            break rows;
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
    storage.close().await.ok();
}
