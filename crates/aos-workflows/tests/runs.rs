//! A workflow run is logged once per happening, on SQLite and PostgreSQL: a trigger delivered
//! twice (a redelivered message, a schedule seen by two workers) runs it once — one run in the
//! log, one command queued — while runs by hand are always made.

use aos_formats::interpret;
use aos_storage::Storage;
use aos_storage::entity::command;
use aos_storage::repo::classes::{self, NewClass};
use aos_storage::repo::devices::{self, NewDevice};
use aos_storage::repo::workflows::{self, NewWorkflow};
use aos_storage::repo::{Scope, tenants};
use aos_workflows::run::{self, Runtime};
use sea_orm::{EntityTrait, PaginatorTrait};
use serde_json::json;

aos_storage::on_both_databases!(a_happening_runs_a_workflow_once,);

async fn a_happening_runs_a_workflow_once(storage: &Storage) {
    let scope = Scope::tenant(tenants::create(storage, "acme").await.expect("tenant").id);
    let class = NewClass {
        name: "sensor".into(),
        ..Default::default()
    };
    classes::create(storage, scope, class).await.expect("class");
    let device = NewDevice {
        uid: "d-1".into(),
        name: "d-1".into(),
        class: "sensor".into(),
        ..Default::default()
    };
    devices::create(storage, scope, device)
        .await
        .expect("device");
    let (stored, created) = workflows::save(
        storage,
        scope,
        NewWorkflow {
            name: "reset".into(),
            enabled: true,
            trigger: json!({"kind": "level", "attribute": "t"}),
            actions: json!([{"command": {"name": "reset", "parameters": {"to": "=value * 2"}}}]),
        },
    )
    .await
    .expect("saved");
    assert!(created);
    let engine = interpret::engine();
    let runtime = Runtime {
        storage,
        engine: &engine,
        timeout: run::DEFAULT_TIMEOUT,
    };
    let variables = || {
        json!({"device": "d-1", "value": 21})
            .as_object()
            .cloned()
            .unwrap_or_default()
    };
    let first = run::perform(&runtime, &stored, Some("m-1:d-1:t"), variables())
        .await
        .expect("runs");
    assert_eq!(first.map(|o| o.result), Some("ok"));
    let again = run::perform(&runtime, &stored, Some("m-1:d-1:t"), variables())
        .await
        .expect("runs");
    assert_eq!(again, None, "the same happening runs it once");
    let commands = command::Entity::find()
        .all(storage.db())
        .await
        .expect("commands");
    assert_eq!(commands.len(), 1);
    assert_eq!(commands[0].payload, json!({"to": 42}));
    for _ in 0..2 {
        let by_hand = run::perform(&runtime, &stored, None, variables())
            .await
            .expect("runs");
        assert!(by_hand.is_some());
    }
    let (logged, total) = workflows::runs(storage, scope, "reset", &newest_runs(10))
        .await
        .expect("runs");
    assert_eq!((logged.len(), total), (3, 3));
    assert!(logged.iter().all(|r| r.result == "ok" && r.error.is_none()));
    assert_eq!(
        command::Entity::find()
            .count(storage.db())
            .await
            .expect("count"),
        3
    );
    // A run its worker never finished (a crash) is logged failed once it is overdue.
    workflows::claim_run(storage, &stored, Some("lost"), chrono::Utc::now())
        .await
        .expect("claimed");
    let later = chrono::Utc::now() + chrono::Duration::seconds(1);
    assert_eq!(
        workflows::fail_interrupted(storage, later)
            .await
            .expect("swept"),
        1
    );
    assert_eq!(
        workflows::fail_interrupted(storage, later)
            .await
            .expect("swept"),
        0
    );
    let (newest, _) = workflows::runs(storage, scope, "reset", &newest_runs(1))
        .await
        .expect("runs");
    assert_eq!(newest[0].result, "failed");
    assert!(
        newest[0]
            .error
            .as_deref()
            .unwrap_or_default()
            .starts_with("interrupted")
    );
    // Saving again by name replaces it.
    let (_, created) = workflows::save(
        storage,
        scope,
        NewWorkflow {
            name: "reset".into(),
            enabled: false,
            trigger: json!({"kind": "manual"}),
            actions: json!([]),
        },
    )
    .await
    .expect("replaced");
    assert!(!created);
    assert!(
        workflows::enabled(storage, Some(scope.tenant))
            .await
            .expect("list")
            .is_empty()
    );
}

/// The first page of `limit` runs, newest first.
fn newest_runs(limit: u64) -> aos_storage::repo::paging::Page {
    aos_storage::repo::paging::Page {
        limit,
        ..Default::default()
    }
}
