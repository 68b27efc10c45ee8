//! The pipeline against a real database: a message that storage refuses (here: its device was
//! deleted while the pipeline still knew it) is given back alone, and the rest of its batch is
//! stored; a group of messages in one queue item is given back whole, once, and an item that
//! cannot be read is given back rather than dropped.

use aos_core::acquisition::{self, Acquired};
use aos_core::queue::Delivery;
use aos_storage::Storage;
use aos_storage::entity::{device, ledger};
use aos_storage::repo::classes::{self, NewClass};
use aos_storage::repo::devices::{self, NewDevice};
use aos_storage::repo::{Scope, tenants};
use aos_worker::pipeline::{Pipeline, PipelineMetrics};
use bytes::Bytes;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

fn delivery(id: u64, tenant: i64, uid: &str, payload: &'static [u8]) -> Delivery {
    Delivery {
        id,
        payload: envelope(id, tenant, uid, payload),
        attempt: 1,
    }
}

fn envelope(n: u64, tenant: i64, uid: &str, payload: &'static [u8]) -> Bytes {
    Acquired {
        key: format!("test-{n}"),
        tenant,
        device: uid.into(),
        topic: format!("aos/{uid}/telemetry"),
        qos: 1,
        received_at_ms: 1_764_000_000_000,
        payload: Bytes::from_static(payload),
    }
    .encode()
}

/// Tenant `acme` with devices d-1 and d-2 of class `sensor`, and a pipeline that knows both.
async fn two_devices(storage: &Storage) -> (Scope, Pipeline) {
    storage.migrate().await.expect("migrate");
    let scope = Scope::tenant(tenants::create(storage, "acme").await.expect("tenant").id);
    let class = NewClass {
        name: "sensor".into(),
        ..Default::default()
    };
    classes::create(storage, scope, class).await.expect("class");
    for uid in ["d-1", "d-2"] {
        let new = NewDevice {
            uid: uid.into(),
            name: uid.into(),
            class: "sensor".into(),
            ..Default::default()
        };
        devices::create(storage, scope, new).await.expect("device");
    }
    let pipeline = Pipeline::new(storage.clone(), PipelineMetrics::default());
    let warm = [
        delivery(1, scope.tenant, "d-1", br#"{"t": 1}"#),
        delivery(2, scope.tenant, "d-2", br#"{"t": 2}"#),
    ];
    assert!(pipeline.process(&warm).await.is_empty(), "both stored");
    (scope, pipeline)
}

/// d-1 goes away behind the pipeline's back: its next message cannot be stored.
async fn delete_d1(storage: &Storage) {
    device::Entity::delete_many()
        .filter(device::Column::Uid.eq("d-1"))
        .exec(storage.db())
        .await
        .expect("delete");
}

async fn values(storage: &Storage) -> Vec<f64> {
    ledger::Entity::find()
        .all(storage.db())
        .await
        .expect("ledger")
        .into_iter()
        .filter_map(|r| r.value_num)
        .collect()
}

#[tokio::test]
async fn a_message_storage_refuses_is_retried_alone() {
    let db = aos_storage::testing::sqlite().await;
    let storage = db.storage.clone();
    let (scope, pipeline) = two_devices(&storage).await;

    delete_d1(&storage).await;
    let batch = [
        delivery(3, scope.tenant, "d-1", br#"{"t": 3}"#),
        delivery(4, scope.tenant, "d-2", br#"{"t": 4}"#),
    ];
    assert_eq!(
        pipeline.process(&batch).await,
        vec![3],
        "only d-1's message comes back"
    );
    let values = values(&storage).await;
    assert!(
        values.contains(&4.0),
        "d-2's message of the failed batch is stored: {values:?}"
    );
}

#[tokio::test]
async fn a_group_is_given_back_whole_and_once_as_is_an_item_that_cannot_be_read() {
    let db = aos_storage::testing::sqlite().await;
    let storage = db.storage.clone();
    let (scope, pipeline) = two_devices(&storage).await;
    delete_d1(&storage).await;
    let group = Delivery {
        id: 7,
        payload: acquisition::pack(vec![
            envelope(3, scope.tenant, "d-2", br#"{"t": 3}"#),
            envelope(4, scope.tenant, "d-1", br#"{"t": 4}"#),
            envelope(5, scope.tenant, "d-2", br#"{"t": 5}"#),
            envelope(6, scope.tenant, "d-1", br#"{"t": 6}"#),
        ]),
        attempt: 1,
    };
    let alone = delivery(8, scope.tenant, "d-2", br#"{"t": 8}"#);
    // An item no envelope format reads (a newer node's?) is given back too, never dropped.
    let unreadable = Delivery {
        id: 9,
        payload: Bytes::from_static(b"\x09not an envelope of any version"),
        attempt: 1,
    };
    assert_eq!(
        pipeline.process(&[group.clone(), alone, unreadable]).await,
        vec![7, 9],
        "the group comes back once, the unreadable item too, the lone message not"
    );
    let mut stored = values(&storage).await;
    stored.sort_by(f64::total_cmp);
    // (d-1's own value went with it.)
    assert_eq!(
        stored,
        [2.0, 3.0, 5.0, 8.0],
        "the group's others are stored"
    );
    // Delivered again, the group writes nothing twice.
    assert_eq!(pipeline.process(&[group]).await, vec![7]);
    assert_eq!(values(&storage).await.len(), 4);
}
