//! Recording device messages is idempotent and keeps the newest value, on SQLite and PostgreSQL:
//! a redelivered batch writes no second log entry or ledger row, a late, older value does not
//! replace the latest one, and batches written at the same time (several workers) all land,
//! each level change raising one event. A gateway's children reporting the same attribute at
//! the same time in one message each keep their value, and a deleted device's values go with it.

use aos_storage::Storage;
use aos_storage::entity::{event, latest_value, ledger, message_log};
use aos_storage::repo::devices;
use aos_storage::repo::ingest::{self, LoggedMessage, Reading, Recorded};
use aos_storage::testing::{acme_with_one_device, add_class, add_device};
use chrono::{DateTime, Duration, Utc};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};

aos_storage::on_both_databases!(
    a_redelivered_batch_writes_nothing_twice,
    level_changes_raise_events_once,
    batches_written_at_once_all_land_and_raise_each_event_once,
    a_gateways_children_keep_their_values_until_deleted,
    a_value_of_no_message_is_stored,
);

/// Device `device`'s telemetry message `key`, processed at `now`.
fn logged(key: &str, tenant: i64, device: i64, now: DateTime<Utc>) -> LoggedMessage {
    LoggedMessage {
        key: key.into(),
        tenant,
        device: Some(device),
        topic: "aos/d-1/telemetry".into(),
        payload: b"{}".to_vec(),
        received_at: now,
        started_at: now,
        processed_at: now,
        error: None,
    }
}

async fn a_redelivered_batch_writes_nothing_twice(storage: &Storage) {
    let (scope, device) = acme_with_one_device(storage).await;
    let now = Utc::now();
    let message = |key: &str, error: Option<&str>| LoggedMessage {
        error: error.map(String::from),
        ..logged(key, scope.tenant, device.id, now)
    };
    let reading = |key: &str, attribute: &str, age_s: i64, value: serde_json::Value| Reading {
        message: key.into(),
        tenant: scope.tenant,
        device: device.id,
        attribute: attribute.into(),
        ts: now - Duration::seconds(age_s),
        value,
        raw: None,
        level: None,
        watched: false,
    };
    let messages = vec![
        message("k1", None),
        message("k2", None),
        message("k3", Some("invalid JSON")),
    ];
    let readings = vec![
        reading("k1", "temperature", 10, serde_json::json!(20.5)),
        reading("k1", "temperature", 5, serde_json::json!(21.0)),
        reading("k1", "door", 5, serde_json::json!("open")),
        // A payload naming one value twice: the last one counts.
        reading("k2", "temperature", 0, serde_json::json!(99.0)),
        reading("k2", "temperature", 0, serde_json::json!(22.0)),
    ];
    let first = ingest::record(storage, &messages, &readings, &[])
        .await
        .expect("record");
    assert_eq!(
        first,
        Recorded {
            messages: 3,
            ledger_rows: 4,
            events: 0,
            changes: Vec::new(),
        }
    );
    let again = ingest::record(storage, &messages, &readings, &[])
        .await
        .expect("record again");
    assert_eq!(again, Recorded::default(), "a redelivery adds nothing");
    // Nor does one that would now be processed: the first delivery's outcome stands.
    let retried = ingest::record(
        storage,
        &[message("k3", None)],
        &[reading("k3", "temperature", 1, serde_json::json!(23.0))],
        &[],
    )
    .await
    .expect("record a failed message again");
    assert_eq!(retried, Recorded::default(), "the first outcome stands");
    assert_eq!(
        message_log::Entity::find()
            .count(storage.db())
            .await
            .expect("count"),
        3
    );
    assert_eq!(
        ledger::Entity::find()
            .count(storage.db())
            .await
            .expect("count"),
        4
    );

    // A late message with an older temperature goes to the ledger, not to the latest value.
    let late = vec![message("k4", None)];
    let old = vec![reading("k4", "temperature", 60, serde_json::json!(-5.0))];
    let recorded = ingest::record(storage, &late, &old, &[])
        .await
        .expect("late");
    assert_eq!(recorded.ledger_rows, 1);
    let latest = latest_value::Entity::find_by_id((device.id, "temperature".to_string()))
        .one(storage.db())
        .await
        .expect("query")
        .expect("latest");
    assert_eq!(latest.value_num, Some(22.0));
    let door = latest_value::Entity::find_by_id((device.id, "door".to_string()))
        .one(storage.db())
        .await
        .expect("query")
        .expect("latest");
    assert_eq!(door.value_json, Some(serde_json::json!("open")));
}

async fn level_changes_raise_events_once(storage: &Storage) {
    let (scope, device) = acme_with_one_device(storage).await;
    let now = Utc::now();
    let step = |key: &str, age_s: i64, level: &str| {
        let message = logged(key, scope.tenant, device.id, now);
        let reading = Reading {
            message: key.into(),
            tenant: scope.tenant,
            device: device.id,
            attribute: "temperature".into(),
            ts: now - Duration::seconds(age_s),
            value: serde_json::json!(1),
            raw: None,
            level: Some(level.into()),
            watched: false,
        };
        (vec![message], vec![reading])
    };
    let (m, r) = step("w", 30, "warning");
    assert_eq!(
        ingest::record(storage, &m, &r, &[])
            .await
            .expect("record")
            .events,
        1
    );
    assert_eq!(
        ingest::record(storage, &m, &r, &[])
            .await
            .expect("again")
            .events,
        0,
        "redelivered"
    );
    let (m, r) = step("late", 60, "faulty");
    assert_eq!(
        ingest::record(storage, &m, &r, &[])
            .await
            .expect("late")
            .events,
        0,
        "older than the latest"
    );
    let (m, r) = step("n", 0, "normal");
    let back = ingest::record(storage, &m, &r, &[]).await.expect("normal");
    assert_eq!(back.events, 0);
    // What workflows are told: the level it left and the value it replaced.
    assert_eq!(back.changes.len(), 1);
    assert_eq!(
        (
            back.changes[0].previous_level.as_str(),
            back.changes[0].level.as_str()
        ),
        ("warning", "normal")
    );
    assert_eq!(back.changes[0].previous, Some(serde_json::json!(1.0)));
    let events = event::Entity::find()
        .all(storage.db())
        .await
        .expect("events");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].level, "warning");
    assert!(
        events[0].cleared_at.is_none(),
        "back to normal, the alarm stays open until someone clears it"
    );
    // Warning again while it is open: the same alarm, counted again with the new value and time.
    let again = |key: &str, age_s: i64, value: f64| {
        let (m, mut r) = step(key, age_s, "warning");
        r[0].value = serde_json::json!(value);
        (m, r)
    };
    let (m, r) = again("w2", -10, 7.5);
    assert_eq!(
        ingest::record(storage, &m, &r, &[])
            .await
            .expect("again")
            .events,
        0,
        "counted in the open alarm"
    );
    let events = event::Entity::find()
        .all(storage.db())
        .await
        .expect("events");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0].crossings, events[0].last_value.as_deref()),
        (2, Some("7.5"))
    );
    let ms = |t: DateTime<Utc>| t.timestamp_millis();
    assert_eq!(
        events[0].last_at.map(ms),
        Some(ms(now + Duration::seconds(10)))
    );
    assert_eq!(
        ms(events[0].raised_at),
        ms(now - Duration::seconds(30)),
        "first raised then"
    );
    // Faulty is another alarm; once the warning one is cleared, a warning raises a new one.
    let (m, r) = step("f", -20, "faulty");
    assert_eq!(
        ingest::record(storage, &m, &r, &[])
            .await
            .expect("faulty")
            .events,
        1
    );
    event::Entity::update_many()
        .col_expr(
            event::Column::ClearedAt,
            sea_orm::sea_query::Expr::value(now),
        )
        .filter(event::Column::Level.eq("warning"))
        .exec(storage.db())
        .await
        .expect("clear");
    let (m, r) = step("w3", -30, "warning");
    assert_eq!(
        ingest::record(storage, &m, &r, &[])
            .await
            .expect("warning")
            .events,
        1
    );
    let open = event::Entity::find()
        .filter(event::Column::ClearedAt.is_null())
        .count(storage.db())
        .await
        .expect("count");
    assert_eq!(open, 2, "the faulty one, and the new warning");
}

async fn batches_written_at_once_all_land_and_raise_each_event_once(storage: &Storage) {
    const WRITERS: usize = 8;
    const ATTRIBUTES: usize = 24;
    let (scope, device) = acme_with_one_device(storage).await;
    let now = Utc::now();
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..WRITERS {
        let storage = storage.clone();
        let key = format!("m-{writer}");
        let message = logged(&key, scope.tenant, device.id, now);
        // Every writer reports every attribute at a level other than normal, each in its own
        // order: the first change of each attribute raises its event, the others find it raised.
        let mut order: Vec<usize> = (0..ATTRIBUTES)
            .map(|a| (a + writer * 5) % ATTRIBUTES)
            .collect();
        if writer % 2 == 1 {
            order.reverse();
        }
        let readings: Vec<Reading> = order
            .into_iter()
            .map(|a| Reading {
                message: key.clone(),
                tenant: scope.tenant,
                device: device.id,
                attribute: format!("a{a:02}"),
                ts: now + Duration::milliseconds(writer as i64),
                value: serde_json::json!(writer),
                raw: None,
                level: Some("warning".into()),
                watched: false,
            })
            .collect();
        writers.spawn(async move { ingest::record(&storage, &[message], &readings, &[]).await });
    }
    while let Some(written) = writers.join_next().await {
        written.expect("writer").expect("every batch is stored");
    }
    assert_eq!(
        message_log::Entity::find()
            .count(storage.db())
            .await
            .expect("count"),
        WRITERS as u64
    );
    let events = event::Entity::find()
        .all(storage.db())
        .await
        .expect("events");
    let mut raised: Vec<Option<String>> = events.iter().map(|e| e.attribute.clone()).collect();
    raised.sort();
    let expected: Vec<Option<String>> = (0..ATTRIBUTES).map(|a| Some(format!("a{a:02}"))).collect();
    assert_eq!(raised, expected, "one event per attribute");
    let latest = latest_value::Entity::find()
        .all(storage.db())
        .await
        .expect("latest");
    assert!(
        latest
            .iter()
            .all(|l| l.value_num == Some((WRITERS - 1) as f64)),
        "the newest value is the latest: {latest:?}"
    );
}

async fn a_gateways_children_keep_their_values_until_deleted(storage: &Storage) {
    let (scope, _) = acme_with_one_device(storage).await;
    add_class(storage, scope, "hub", true).await;
    let gateway = add_device(storage, scope, "gw", "hub", None).await;
    let mut children = Vec::new();
    for uid in ["child-1", "child-2"] {
        children.push(add_device(storage, scope, uid, "sensor", Some("gw")).await);
    }
    let now = Utc::now();
    let message = logged("g", scope.tenant, gateway.id, now);
    let readings: Vec<Reading> = children
        .iter()
        .enumerate()
        .map(|(n, child)| Reading {
            message: "g".into(),
            tenant: scope.tenant,
            device: child.id,
            attribute: "temperature".into(),
            ts: now,
            value: serde_json::json!(n),
            raw: None,
            level: None,
            watched: false,
        })
        .collect();
    let recorded = ingest::record(storage, &[message], &readings, &[])
        .await
        .expect("record");
    assert_eq!(recorded.ledger_rows, 2, "one value per child");

    devices::delete(storage, scope, "child-1")
        .await
        .expect("delete a child");
    let left: Vec<i64> = ledger::Entity::find()
        .all(storage.db())
        .await
        .expect("ledger")
        .iter()
        .map(|row| row.device_id)
        .collect();
    assert_eq!(left, vec![children[1].id], "the deleted child's values go");

    devices::delete(storage, scope, &gateway.uid)
        .await
        .expect("delete the gateway");
    let logged = message_log::Entity::find()
        .filter(message_log::Column::MessageKey.eq("g"))
        .one(storage.db())
        .await
        .expect("log")
        .expect("a deleted device's messages stay logged");
    assert_eq!(logged.device_id, None, "without the device");
}

/// What a workflow saves: a value no logged message carries.
async fn a_value_of_no_message_is_stored(storage: &Storage) {
    let (scope, device) = acme_with_one_device(storage).await;
    let saved = Reading {
        message: "workflow:by-hand".into(),
        tenant: scope.tenant,
        device: device.id,
        attribute: "setpoint".into(),
        ts: Utc::now(),
        value: serde_json::json!(42),
        raw: None,
        level: None,
        watched: false,
    };
    let recorded = ingest::record(storage, &[] as &[LoggedMessage], &[saved], &[])
        .await
        .expect("record");
    assert_eq!((recorded.messages, recorded.ledger_rows), (0, 1));
    let latest = latest_value::Entity::find_by_id((device.id, "setpoint".to_string()))
        .one(storage.db())
        .await
        .expect("query")
        .expect("latest");
    assert_eq!(latest.value_num, Some(42.0));
}
