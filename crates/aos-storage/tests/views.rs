//! What people read, on SQLite and PostgreSQL: a device's values raw and aggregated per interval
//! (the interval arithmetic is SQL of each backend), the message log filtered and paged, the
//! dashboard's figures, and sorting checked against the fields a list allows.

use aos_storage::Storage;
use aos_storage::repo::devices::{self, DeviceQuery};
use aos_storage::repo::ingest::{self, LoggedMessage, Reading};
use aos_storage::repo::kpis;
use aos_storage::repo::ledger::{self, Aggregate, SeriesQuery};
use aos_storage::repo::messages::{self, MessageQuery};
use aos_storage::repo::paging::Page;
use aos_storage::repo::{Scope, tenants};
use aos_storage::testing::acme_with_one_device;
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;

aos_storage::on_both_databases!(values_messages_and_figures,);

fn message(
    scope: Scope,
    device: i64,
    key: &str,
    at: DateTime<Utc>,
    error: Option<&str>,
) -> LoggedMessage {
    LoggedMessage {
        key: key.into(),
        tenant: scope.tenant,
        device: Some(device),
        topic: "aos/d-1/telemetry".into(),
        payload: b"{}".to_vec(),
        received_at: at,
        started_at: at,
        processed_at: at,
        error: error.map(String::from),
    }
}

async fn values_messages_and_figures(storage: &Storage) {
    let (scope, device) = acme_with_one_device(storage).await;
    // Four readings a minute apart from 10:00 (with a non-numeric one), logged just now.
    let start = Utc
        .with_ymd_and_hms(2026, 3, 1, 10, 0, 0)
        .single()
        .expect("time");
    let now = Utc::now();
    let mut logged = Vec::new();
    let mut readings = Vec::new();
    for (i, value) in [
        json!(10.0),
        json!(20.0),
        json!(30.0),
        json!(40.0),
        json!("open"),
    ]
    .into_iter()
    .enumerate()
    {
        let key = format!("k{i}");
        logged.push(message(scope, device.id, &key, now, None));
        readings.push(Reading {
            message: key,
            tenant: scope.tenant,
            device: device.id,
            attribute: if value.is_string() {
                "door".into()
            } else {
                "temperature".into()
            },
            ts: start + Duration::minutes(i as i64),
            value,
            raw: None,
            level: None,
            watched: false,
        });
    }
    logged.push(message(scope, device.id, "bad", now, Some("invalid JSON")));
    ingest::record(storage, &logged, &readings, &[])
        .await
        .expect("record");

    let query = |every: Option<(i64, Aggregate)>| SeriesQuery {
        attributes: vec!["temperature".into(), "door".into()],
        from: start,
        to: start + Duration::hours(1),
        every,
    };
    let raw = ledger::series(storage, scope, "d-1", &query(None))
        .await
        .expect("raw");
    let values = |i: usize, series: &[ledger::Series]| -> Vec<serde_json::Value> {
        series[i].points.iter().map(|p| p.value.clone()).collect()
    };
    assert_eq!(
        values(0, &raw),
        [json!(10.0), json!(20.0), json!(30.0), json!(40.0)]
    );
    assert_eq!(values(1, &raw), [json!("open")]);
    for (aggregate, want) in [
        (Aggregate::Avg, [15.0, 35.0]),
        (Aggregate::Min, [10.0, 30.0]),
        (Aggregate::Max, [20.0, 40.0]),
        (Aggregate::Sum, [30.0, 70.0]),
        (Aggregate::Count, [2.0, 2.0]),
    ] {
        let per = ledger::series(storage, scope, "d-1", &query(Some((120, aggregate))))
            .await
            .expect("aggregated");
        assert_eq!(
            values(0, &per),
            [json!(want[0]), json!(want[1])],
            "{aggregate:?}"
        );
        assert_eq!(
            per[0].points[1].ts,
            start + Duration::minutes(2),
            "stamped with the interval's start"
        );
        assert!(per[1].points.is_empty(), "no numbers to aggregate");
    }
    // More than 10,000 intervals: the newest 10,000 (here from minute 2.5 on), flagged.
    let too_fine = SeriesQuery {
        to: start + Duration::seconds(10_000 + 150),
        ..query(Some((1, Aggregate::Avg)))
    };
    let clipped = ledger::series(storage, scope, "d-1", &too_fine)
        .await
        .expect("clipped");
    assert_eq!(values(0, &clipped), [json!(40.0)]);
    assert!(clipped[0].truncated);
    let other = Scope::tenant(tenants::create(storage, "globex").await.expect("tenant").id);
    assert!(
        ledger::series(storage, other, "d-1", &query(None))
            .await
            .is_err(),
        "another tenant's device"
    );

    // The message log: newest first, filtered by status, paged with the total.
    let page = |limit, offset| Page {
        limit,
        offset,
        sort: None,
    };
    let (all, total) = messages::search(
        storage,
        scope,
        &MessageQuery {
            page: page(2, 0),
            ..Default::default()
        },
    )
    .await
    .expect("messages");
    assert_eq!((all.len(), total), (2, 6));
    assert_eq!(all[0].device.as_deref(), Some("d-1"));
    let failed = MessageQuery {
        status: Some("failed".into()),
        page: page(10, 0),
        ..Default::default()
    };
    let (found, total) = messages::search(storage, scope, &failed)
        .await
        .expect("failed");
    assert_eq!((found[0].message.message_key.as_str(), total), ("bad", 1));
    let later = MessageQuery {
        from: Some(now + Duration::seconds(1)),
        page: page(10, 0),
        ..Default::default()
    };
    assert_eq!(
        messages::search(storage, scope, &later)
            .await
            .expect("later")
            .1,
        0
    );

    // The dashboard's figures.
    let figures = kpis::of(storage, scope, now).await.expect("figures");
    assert_eq!((figures.devices_total, figures.devices_online), (1, 0));
    assert_eq!(
        (
            figures.messages_last_hour,
            figures.messages_failed_last_hour
        ),
        (6, 1)
    );
    assert_eq!(figures.messages_per_minute.len(), 61);
    assert_eq!(
        figures
            .messages_per_minute
            .iter()
            .map(|(_, n)| n)
            .sum::<u64>(),
        6
    );

    // Sorting names only the fields a list has.
    let sorted = DeviceQuery {
        page: Page {
            sort: Some("-created_at".into()),
            ..Page::default()
        },
        ..Default::default()
    };
    assert_eq!(
        devices::search(storage, scope, &sorted)
            .await
            .expect("sorted")
            .1,
        1
    );
    let wrong = DeviceQuery {
        page: Page {
            sort: Some("colour".into()),
            ..Page::default()
        },
        ..Default::default()
    };
    let err = devices::search(storage, scope, &wrong)
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("uid, name"), "{err}");
}
