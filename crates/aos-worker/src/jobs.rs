//! Scheduled jobs of the worker role. They run only on worker nodes, and once per schedule
//! however many workers there are: a run first takes a lease in the `Kv` seam, which expires on
//! its own, so a crashed worker blocks nobody for longer than one period.

use std::sync::Arc;
use std::time::Duration;

use aos_core::kv::{Kv, KvError};
use aos_storage::Storage;
use aos_storage::repo::retention;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

/// Takes the lease `key` for `ttl` on behalf of `holder`; false when another holder has it.
pub async fn take_lease(
    kv: &dyn Kv,
    key: &str,
    holder: &str,
    ttl: Duration,
) -> Result<bool, KvError> {
    match kv
        .create(key, Bytes::from(holder.to_string()), Some(ttl))
        .await
    {
        Ok(_) => Ok(true),
        Err(KvError::Exists(_)) => Ok(false),
        Err(err) => Err(err),
    }
}

/// How long data is kept (the `[worker]` retention keys).
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    pub ledger: Option<Duration>,
    pub messages: Option<Duration>,
    /// How often the retention job runs.
    pub every: Duration,
}

fn cutoff(age: Option<Duration>) -> Option<chrono::DateTime<chrono::Utc>> {
    let age = chrono::Duration::from_std(age?).ok()?;
    Some(chrono::Utc::now() - age)
}

/// Runs the retention job every `retention.every` until `stop`, on the worker that holds the
/// lease for that period.
pub async fn retention_job(
    storage: Storage,
    kv: Arc<dyn Kv>,
    node: String,
    retention: Retention,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(retention.every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        // The lease lasts a little less than a period, so the next period is free again.
        let ttl = retention.every.mul_f64(0.9).max(Duration::from_millis(100));
        match take_lease(kv.as_ref(), "jobs/retention", &node, ttl).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(err) => {
                tracing::warn!(%err, "cannot take the retention lease; skipping this period");
                continue;
            }
        }
        let span = tracing::info_span!("job", name = "retention");
        let _entered = span.enter();
        match retention::prune(
            &storage,
            cutoff(retention.ledger),
            cutoff(retention.messages),
        )
        .await
        {
            Ok(pruned) if pruned == Default::default() => {}
            Ok(pruned) => tracing::info!(
                ledger_rows = pruned.ledger_rows,
                messages = pruned.messages,
                "retention: old data deleted"
            ),
            Err(err) => tracing::warn!(%err, "retention failed; it runs again next period"),
        }
    }
}

#[cfg(test)]
mod tests {
    use aos_core::kv::MemoryKv;

    use super::*;

    #[tokio::test]
    async fn one_holder_per_lease_until_it_expires() {
        let kv = MemoryKv::new();
        let ttl = Duration::from_millis(200);
        assert!(take_lease(&kv, "jobs/x", "node-a", ttl).await.expect("kv"));
        assert!(!take_lease(&kv, "jobs/x", "node-b", ttl).await.expect("kv"));
        assert!(take_lease(&kv, "jobs/y", "node-b", ttl).await.expect("kv"));
        tokio::time::sleep(ttl * 2).await;
        assert!(take_lease(&kv, "jobs/x", "node-b", ttl).await.expect("kv"));
    }
}
