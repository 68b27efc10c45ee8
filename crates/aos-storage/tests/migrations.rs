//! The same migrations run on SQLite and PostgreSQL, and the node table works on both.

use aos_core::{NodeInfo, RoleKind};
use aos_storage::{Storage, nodes, testing};

async fn exercise(storage: &Storage) {
    let applied = storage.migrate().await.expect("first migration run");
    assert!(!applied.is_empty(), "a new database gets every migration");
    assert!(
        storage
            .pending_migrations()
            .await
            .expect("pending")
            .is_empty()
    );
    let again = storage.migrate().await.expect("second migration run");
    assert!(again.is_empty(), "migrating twice applies nothing twice");

    let info = NodeInfo::new(
        "node-a".into(),
        vec![RoleKind::Broker, RoleKind::Web],
        vec![RoleKind::Broker],
        "127.0.0.1:9090".into(),
    );
    nodes::record_start(storage, &info)
        .await
        .expect("record start");
    nodes::record_start(storage, &info)
        .await
        .expect("restart updates the row");
    nodes::record_stop(storage, "node-a")
        .await
        .expect("record stop");
    let rows = nodes::list(storage).await.expect("list");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].enabled_roles, "broker");
    assert_eq!(rows[0].compiled_roles, "broker,web");
    assert!(rows[0].stopped_at.is_some());
}

#[tokio::test]
async fn migrations_and_nodes_on_sqlite() {
    let db = testing::sqlite().await;
    exercise(&db.storage).await;
    assert!(db.dir.path().join("aos.db").exists());
}

#[tokio::test]
async fn migrations_and_nodes_on_postgres() {
    let Some(db) = testing::postgres().await else {
        return;
    };
    exercise(&db.storage).await;
    db.drop_schema().await;
}
