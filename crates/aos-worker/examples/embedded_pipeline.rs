//! Embeds the acquisition pipeline alone, without a node or a broker: device messages go into an
//! embedded durable queue, a loop pulls them in batches, the pipeline stores them in SQLite, and
//! the loop acknowledges what was stored — the worker role's consumer, in a few lines.
//!
//! What the pipeline needs from its host: a migrated [`Storage`] holding the tenant, class and
//! device the messages name, and a [`WorkQueue`] of [`Acquired`] envelopes to pull from.
//!
//! ```sh
//! cargo run -p aos-worker --example embedded_pipeline -- /tmp/pipeline-demo
//! ```

use std::path::Path;
use std::time::Duration;

use aos_core::Metrics;
use aos_core::acquisition::{ACQUISITION_QUEUE, Acquired};
use aos_core::queue::disk::DiskQueueConfig;
use aos_core::queue::{DiskQueue, QueueOptions, WorkQueue};
use aos_storage::entity::latest_value;
use aos_storage::repo::classes::{self, NewClass};
use aos_storage::repo::devices::{self, NewDevice};
use aos_storage::repo::{Scope, tenants};
use aos_storage::{Storage, StorageConfig};
use aos_worker::pipeline::{Pipeline, PipelineMetrics};
use bytes::Bytes;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Stores `readings` (temperature values) of device `t-1` through the pipeline, in a database
/// and queue under `dir`; returns the device's latest values.
async fn run(dir: &Path, readings: &[f64]) -> Result<Vec<latest_value::Model>, Error> {
    let storage = Storage::connect(&StorageConfig::default(), dir).await?;
    storage.migrate().await?;
    let tenant = match tenants::by_name(&storage, "demo").await {
        Ok(tenant) => tenant,
        Err(_) => tenants::create(&storage, "demo").await?,
    };
    let scope = Scope::tenant(tenant.id);
    if devices::list(&storage, scope).await?.is_empty() {
        classes::create(
            &storage,
            scope,
            NewClass {
                name: "thermometer".into(),
                description: String::new(),
                is_gateway: false,
                auto_register_children: false,
            },
        )
        .await?;
        devices::create(
            &storage,
            scope,
            NewDevice {
                uid: "t-1".into(),
                name: "Thermometer 1".into(),
                class: "thermometer".into(),
                entity: None,
                gateway: None,
                format: None,
            },
        )
        .await?;
    }

    let metrics = Metrics::default();
    let queue = DiskQueue::open(DiskQueueConfig::new(dir.join("queue")), &metrics)?;
    queue
        .declare(ACQUISITION_QUEUE, QueueOptions::default())
        .await?;
    let now = chrono::Utc::now().timestamp_millis();
    let envelopes = readings
        .iter()
        .enumerate()
        .map(|(n, value)| {
            Acquired {
                key: format!("demo-{now}-{n}"),
                tenant: tenant.id,
                device: "t-1".into(),
                topic: "aos/t-1/telemetry".into(),
                qos: 1,
                received_at_ms: now + n as i64,
                payload: Bytes::from(format!(r#"{{"temperature": {value}}}"#)),
            }
            .encode()
        })
        .collect();
    queue.push_batch(ACQUISITION_QUEUE, envelopes).await?;

    // The consumer loop: pull a batch, process it, acknowledge what was stored.
    let pipeline = Pipeline::new(storage.clone(), PipelineMetrics::default());
    loop {
        let batch = queue
            .pull(ACQUISITION_QUEUE, 100, Duration::from_millis(100))
            .await?;
        if batch.is_empty() {
            break;
        }
        let retry = pipeline.process(&batch).await;
        let done: Vec<u64> = batch
            .iter()
            .map(|d| d.id)
            .filter(|id| !retry.contains(id))
            .collect();
        queue.ack(ACQUISITION_QUEUE, &done).await?;
    }
    queue.close().await?;

    let device = devices::list(&storage, scope)
        .await?
        .into_iter()
        .find(|d| d.uid == "t-1")
        .ok_or("the device is gone")?;
    let latest = devices::latest_values(&storage, &device).await?;
    storage.close().await?;
    Ok(latest)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let dir = std::env::args()
        .nth(1)
        .ok_or("usage: embedded_pipeline DIR (where the database and the queue go)")?;
    for value in run(Path::new(&dir), &[20.5, 21.0, 21.5]).await? {
        println!(
            "{} = {} at {}",
            value.attribute,
            value.value_num.map_or("?".to_string(), |v| v.to_string()),
            value.ts
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn messages_pushed_to_the_queue_end_up_stored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let latest = super::run(dir.path(), &[20.5, 21.0]).await.expect("run");
        assert_eq!(latest.len(), 1);
        assert_eq!(latest[0].attribute, "temperature");
        assert_eq!(
            latest[0].value_num,
            Some(21.0),
            "the newest value is the latest"
        );
    }
}
