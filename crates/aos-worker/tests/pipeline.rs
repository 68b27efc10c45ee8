//! The pipeline against a real database: a message that storage refuses (here: its device was
//! deleted while the pipeline still knew it) is given back alone, and the rest of its batch is
//! stored.

use aos_core::acquisition::Acquired;
use aos_core::queue::Delivery;
use aos_storage::entity::{device, ledger};
use aos_storage::repo::classes::{self, NewClass};
use aos_storage::repo::devices::{self, NewDevice};
use aos_storage::repo::{Scope, tenants};
use aos_worker::pipeline::{Pipeline, PipelineMetrics};
use bytes::Bytes;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

fn delivery(id: u64, tenant: i64, uid: &str, payload: &'static [u8]) -> Delivery {
    let envelope = Acquired {
        key: format!("test-{id}"),
        tenant,
        device: uid.into(),
        topic: format!("aos/{uid}/telemetry"),
        qos: 1,
        received_at_ms: 1_764_000_000_000,
        payload: Bytes::from_static(payload),
    };
    Delivery {
        id,
        payload: envelope.encode(),
        attempt: 1,
    }
}

#[tokio::test]
async fn a_message_storage_refuses_is_retried_alone() {
    let db = aos_storage::testing::sqlite().await;
    let storage = db.storage.clone();
    storage.migrate().await.expect("migrate");
    let scope = Scope::tenant(tenants::create(&storage, "acme").await.expect("tenant").id);
    let class = NewClass {
        name: "sensor".into(),
        ..Default::default()
    };
    classes::create(&storage, scope, class)
        .await
        .expect("class");
    for uid in ["d-1", "d-2"] {
        let new = NewDevice {
            uid: uid.into(),
            name: uid.into(),
            class: "sensor".into(),
            ..Default::default()
        };
        devices::create(&storage, scope, new).await.expect("device");
    }
    let pipeline = Pipeline::new(storage.clone(), PipelineMetrics::default());
    let warm = [
        delivery(1, scope.tenant, "d-1", br#"{"t": 1}"#),
        delivery(2, scope.tenant, "d-2", br#"{"t": 2}"#),
    ];
    assert!(pipeline.process(&warm).await.is_empty(), "both stored");

    // d-1 goes away behind the pipeline's back: its next message cannot be stored.
    device::Entity::delete_many()
        .filter(device::Column::Uid.eq("d-1"))
        .exec(storage.db())
        .await
        .expect("delete");
    let batch = [
        delivery(3, scope.tenant, "d-1", br#"{"t": 3}"#),
        delivery(4, scope.tenant, "d-2", br#"{"t": 4}"#),
    ];
    assert_eq!(
        pipeline.process(&batch).await,
        vec![3],
        "only d-1's message comes back"
    );
    let values: Vec<f64> = ledger::Entity::find()
        .all(storage.db())
        .await
        .expect("ledger")
        .into_iter()
        .filter_map(|r| r.value_num)
        .collect();
    assert!(
        values.contains(&4.0),
        "d-2's message of the failed batch is stored: {values:?}"
    );
}
