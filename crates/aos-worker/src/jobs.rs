//! Scheduled jobs of the worker role. They run only on worker nodes, and once per schedule
//! however many workers there are: a run first takes a lease in the `Kv` seam, which expires on
//! its own, so a crashed worker blocks nobody for longer than one period.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aos_core::kv::{Kv, take_lease};
use aos_storage::entity::message_log;
use aos_storage::repo::retention;
use aos_storage::{Storage, StorageError};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How long data is kept (the `[worker]` retention keys).
#[derive(Clone, Debug)]
pub struct Retention {
    pub ledger: Option<Duration>,
    pub messages: Option<Duration>,
    /// Message-log entries older than this go to the archive first.
    pub archive: Option<Archive>,
    /// How often the retention job runs.
    pub every: Duration,
}

/// Where and when message-log entries are archived.
#[derive(Clone, Debug)]
pub struct Archive {
    pub after: Duration,
    pub dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("cannot write the archive file {path}: {source}")]
    Archive {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Entries archived per batch.
const ARCHIVE_BATCH: u64 = 5_000;

/// One message-log entry as an archive line (the payload as text when it is UTF-8, else hex).
fn archive_line(entry: &message_log::Model) -> String {
    let mut line = serde_json::json!({
        "id": entry.id,
        "tenant": entry.tenant_id,
        "device": entry.device_id,
        "direction": entry.direction,
        "topic": entry.topic,
        "status": entry.status,
        "error": entry.error,
        "key": entry.message_key,
        "received_at": entry.received_at,
        "started_at": entry.started_at,
        "processed_at": entry.processed_at,
    });
    match std::str::from_utf8(&entry.payload) {
        Ok(text) => line["payload"] = text.into(),
        Err(_) => line["payload_hex"] = hex::encode(&entry.payload).into(),
    }
    line.to_string()
}

/// Appends `lines` to `path` and makes them durable.
fn append(path: &Path, lines: &str) -> Result<(), JobError> {
    let failed = |source| JobError::Archive {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(failed)?;
    file.write_all(lines.as_bytes()).map_err(failed)?;
    file.sync_data().map_err(failed)
}

/// Archives the message-log entries received before `before`: each is appended as a JSON line to
/// `dir/message-log-YYYY-MM-DD.jsonl` (the UTC day it was received) and made durable, and only
/// then marked `archived` in the log, its payload dropped there. Returns how many.
pub async fn archive_messages(
    storage: &Storage,
    before: chrono::DateTime<chrono::Utc>,
    dir: &Path,
) -> Result<u64, JobError> {
    std::fs::create_dir_all(dir).map_err(|source| JobError::Archive {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut archived = 0;
    for tenant in retention::tenant_ids(storage).await? {
        loop {
            let entries = retention::to_archive(storage, tenant, before, ARCHIVE_BATCH).await?;
            if entries.is_empty() {
                break;
            }
            let mut by_day: BTreeMap<String, String> = BTreeMap::new();
            for entry in &entries {
                let day = entry.received_at.format("%Y-%m-%d").to_string();
                let lines = by_day.entry(day).or_default();
                lines.push_str(&archive_line(entry));
                lines.push('\n');
            }
            let dir = dir.to_path_buf();
            tokio::task::spawn_blocking(move || {
                by_day.iter().try_for_each(|(day, lines)| {
                    append(&dir.join(format!("message-log-{day}.jsonl")), lines)
                })
            })
            .await
            .map_err(|e| JobError::Archive {
                path: PathBuf::new(),
                source: std::io::Error::other(e),
            })??;
            let ids: Vec<i64> = entries.iter().map(|e| e.id).collect();
            archived += retention::mark_archived(storage, &ids).await?;
        }
    }
    Ok(archived)
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
        // The lease lasts a little less than a period (whole seconds, at least one), so the
        // next period is free again for whichever worker comes first.
        let ttl = aos_core::kv::ttl(retention.every.mul_f64(0.9));
        match take_lease(kv.as_ref(), "jobs.retention", &node, ttl).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(err) => {
                tracing::warn!(%err, "cannot take the retention lease; skipping this period");
                continue;
            }
        }
        let span = tracing::info_span!("job", name = "retention");
        retain_once(&storage, &retention).instrument(span).await;
    }
}

/// One period's archiving and pruning.
async fn retain_once(storage: &Storage, retention: &Retention) {
    if let Some(archive) = &retention.archive
        && let Some(before) = cutoff(Some(archive.after))
    {
        match archive_messages(storage, before, &archive.dir).await {
            Ok(0) => {}
            Ok(archived) => {
                tracing::info!(archived, dir = %archive.dir.display(), "message log archived");
            }
            // Nothing is deleted unarchived: pruning waits for the next period.
            Err(err) => {
                tracing::warn!(%err, "archiving failed; pruning waits for the next period");
                return;
            }
        }
    }
    match retention::prune(
        storage,
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
