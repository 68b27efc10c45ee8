//! The embedded, durable [`StateStore`] of a standalone node: a log of changes on local disk.
//!
//! - One writer thread takes every batch waiting in its channel, appends them to the log and
//!   covers them with one `fdatasync` (group commit); [`StateStore::durable`] returns once the
//!   flush that covers a position is done, so what it promised survives `kill -9`.
//! - The live records are held in memory (reads never touch the disk). When the log holds much
//!   more than the live records, the writer rewrites them as a new log file (written aside,
//!   flushed, then renamed into place, so a crash leaves either the old log or the new one) and
//!   deletes the old file.
//! - A torn record at the end of the log (a write the crash interrupted, never promised to
//!   anyone) is cut off when the log is opened.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use async_trait::async_trait;
use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;

use super::{StateChange, StateError, StateStore, apply, under};
use crate::frames::{self, list_segments, lock_dir, put_bytes, segment_path, take_bytes};
use crate::metrics::Metrics;

/// A flush never gathers more than this many bytes before it writes.
const MAX_COMMIT_BYTES: usize = 8 * 1024 * 1024;
/// The log is rewritten when it is larger than this and than twice the live records.
const COMPACT_FROM_BYTES: u64 = 64 * 1024 * 1024;

const KIND_BASE: u8 = 0;
const KIND_PUT: u8 = 1;
const KIND_DELETE: u8 = 2;
const KIND_DELETE_PREFIX: u8 = 3;

/// What readers see: the live records, with the changes staged so far.
struct View {
    records: BTreeMap<String, Bytes>,
    /// Bytes of the records' keys and values.
    live_bytes: i64,
    /// Position of the latest staged batch.
    position: u64,
    /// Sender to the writer; `None` once closed.
    tx: Option<mpsc::Sender<Batch>>,
}

struct Batch {
    position: u64,
    changes: Vec<StateChange>,
}

/// How far the writer got.
#[derive(Clone, Debug, Default)]
struct Durable {
    position: u64,
    /// Set when a write failed: nothing staged after it becomes durable.
    failed: Option<String>,
}

#[derive(Clone, Default)]
struct StateMetrics {
    records: Gauge,
    log_bytes: Gauge,
    flushes: Counter,
    compactions: Counter,
}

impl StateMetrics {
    fn register(&self, metrics: &Metrics) {
        metrics.register(
            "state_records",
            "Records in the node's durable state store",
            self.records.clone(),
        );
        metrics.register(
            "state_log_bytes",
            "Size of the durable state store's log file",
            self.log_bytes.clone(),
        );
        metrics.register(
            "state_flushes",
            "Flushes to disk of the durable state store (each covers every change staged before it)",
            self.flushes.clone(),
        );
        metrics.register(
            "state_compactions",
            "Rewrites of the durable state store's log into its live records",
            self.compactions.clone(),
        );
    }
}

pub struct DiskState {
    /// Keeps other processes out of the directory while the store is open.
    _lock: File,
    view: Arc<Mutex<View>>,
    /// The latest staged and the latest durable position, readable without a lock: a writer
    /// with nothing pending (most publishes) learns it at the cost of two atomic loads.
    staged: AtomicU64,
    flushed: Arc<AtomicU64>,
    durable: watch::Receiver<Durable>,
    writer: Mutex<Option<JoinHandle<()>>>,
    metrics: StateMetrics,
}

impl DiskState {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: impl Into<PathBuf>, metrics: &Metrics) -> io::Result<DiskState> {
        let dir = dir.into();
        fs::create_dir_all(&dir)?;
        let lock = lock_dir(&dir)?;
        let mut records = BTreeMap::new();
        let numbers = list_segments(&dir)?;
        let (file, number, log_bytes) = match numbers.last() {
            Some(&number) => {
                let path = segment_path(&dir, number);
                let outcome = frames::read(&path, |body| replay(&mut records, body))?;
                let file = OpenOptions::new().append(true).open(&path)?;
                if outcome.torn {
                    tracing::warn!(path = %path.display(), "the state log ended in an unfinished write; cut it off");
                    file.set_len(outcome.valid_len)?;
                    file.sync_all()?;
                }
                (file, number, outcome.valid_len)
            }
            None => {
                let (file, bytes) = write_base(&dir, 1, &records)?;
                (file, 1, bytes)
            }
        };
        remove_old_files(&dir, number)?;
        let state_metrics = StateMetrics::default();
        state_metrics.register(metrics);
        state_metrics.records.set(records.len() as i64);
        state_metrics.log_bytes.set(log_bytes as i64);
        let (tx, rx) = mpsc::channel();
        let (durable_tx, durable_rx) = watch::channel(Durable::default());
        let flushed = Arc::new(AtomicU64::new(0));
        let live_bytes = records
            .iter()
            .map(|(k, v)| (k.len() + v.len()) as i64)
            .sum();
        let view = Arc::new(Mutex::new(View {
            records,
            live_bytes,
            position: 0,
            tx: Some(tx),
        }));
        let writer = Writer {
            dir,
            file,
            number,
            log_bytes,
            skip_through: 0,
            view: view.clone(),
            durable: durable_tx,
            flushed: flushed.clone(),
            metrics: state_metrics.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("aos-state-writer".into())
            .spawn(move || writer.run(rx))?;
        Ok(DiskState {
            _lock: lock,
            view,
            staged: AtomicU64::new(0),
            flushed,
            durable: durable_rx,
            writer: Mutex::new(Some(handle)),
            metrics: state_metrics,
        })
    }

    fn view(&self) -> MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl StateStore for DiskState {
    /// Writes what was staged and stops the writer.
    async fn close(&self) -> Result<(), StateError> {
        let position = self.position();
        let flushed = self.durable(position).await;
        self.view().tx = None;
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(writer) = writer {
            let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        }
        flushed
    }

    async fn load(&self, prefix: &str) -> Result<Vec<(String, Bytes)>, StateError> {
        Ok(under(&self.view().records, prefix))
    }

    fn stage(&self, changes: Vec<StateChange>) -> u64 {
        let mut view = self.view();
        for change in &changes {
            let grown = apply(&mut view.records, change);
            view.live_bytes += grown;
        }
        view.position += 1;
        let position = view.position;
        self.staged.store(position, Ordering::Release);
        self.metrics.records.set(view.records.len() as i64);
        // Sent under the lock: the writer gets batches in position order.
        if let Some(tx) = &view.tx {
            let _ = tx.send(Batch { position, changes });
        }
        position
    }

    fn position(&self) -> u64 {
        self.staged.load(Ordering::Acquire)
    }

    async fn durable(&self, position: u64) -> Result<(), StateError> {
        if self.flushed.load(Ordering::Acquire) >= position {
            return Ok(());
        }
        let mut durable = self.durable.clone();
        let reached = durable
            .wait_for(|d| d.position >= position || d.failed.is_some())
            .await
            .map(|d| d.clone());
        match reached {
            Ok(d) if d.position >= position => Ok(()),
            Ok(d) => Err(StateError::Write(d.failed.unwrap_or_default())),
            // The writer is gone: what it had written is all there is.
            Err(_) if self.durable.borrow().position >= position => Ok(()),
            Err(_) => Err(StateError::Closed),
        }
    }
}

impl Drop for DiskState {
    fn drop(&mut self) {
        // The writer drains what is left and ends when the channel closes.
        self.view().tx = None;
    }
}

/// Applies one log record to `records`; false if it is not a record of this log.
fn replay(records: &mut BTreeMap<String, Bytes>, body: &[u8]) -> bool {
    let Some((&kind, mut rest)) = body.split_first() else {
        return false;
    };
    let text = |rest: &mut &[u8]| {
        take_bytes(rest).and_then(|b| std::str::from_utf8(b).ok().map(str::to_string))
    };
    let change = match kind {
        KIND_BASE => {
            records.clear();
            return rest.is_empty();
        }
        KIND_PUT => {
            let (Some(key), Some(value)) = (text(&mut rest), take_bytes(&mut rest)) else {
                return false;
            };
            StateChange::Put {
                key,
                value: Bytes::copy_from_slice(value),
            }
        }
        KIND_DELETE => match text(&mut rest) {
            Some(key) => StateChange::Delete { key },
            None => return false,
        },
        KIND_DELETE_PREFIX => match text(&mut rest) {
            Some(prefix) => StateChange::DeletePrefix { prefix },
            None => return false,
        },
        _ => return false,
    };
    apply(records, &change);
    rest.is_empty()
}

fn encode(buf: &mut Vec<u8>, change: &StateChange) {
    frames::append(buf, |buf| match change {
        StateChange::Put { key, value } => {
            buf.push(KIND_PUT);
            put_bytes(buf, key.as_bytes());
            put_bytes(buf, value);
        }
        StateChange::Delete { key } => {
            buf.push(KIND_DELETE);
            put_bytes(buf, key.as_bytes());
        }
        StateChange::DeletePrefix { prefix } => {
            buf.push(KIND_DELETE_PREFIX);
            put_bytes(buf, prefix.as_bytes());
        }
    });
}

/// Writes `records` as log file `number` (aside first, then renamed into place); returns it open
/// for appending, and its size.
fn write_base(
    dir: &Path,
    number: u64,
    records: &BTreeMap<String, Bytes>,
) -> io::Result<(File, u64)> {
    let aside = dir.join(format!("{number:020}.tmp"));
    let mut file = File::create(&aside)?;
    let mut buf = Vec::new();
    frames::append(&mut buf, |buf| buf.push(KIND_BASE));
    let mut size = 0u64;
    for (key, value) in records {
        encode(
            &mut buf,
            &StateChange::Put {
                key: key.clone(),
                value: value.clone(),
            },
        );
        if buf.len() >= MAX_COMMIT_BYTES {
            file.write_all(&buf)?;
            size += buf.len() as u64;
            buf.clear();
        }
    }
    file.write_all(&buf)?;
    size += buf.len() as u64;
    file.sync_all()?;
    drop(file);
    let path = segment_path(dir, number);
    fs::rename(&aside, &path)?;
    // Make the rename durable too.
    File::open(dir)?.sync_all()?;
    Ok((OpenOptions::new().append(true).open(&path)?, size))
}

/// Removes log files older than `current`, and any left aside by an interrupted rewrite.
fn remove_old_files(dir: &Path, current: u64) -> io::Result<()> {
    for number in list_segments(dir)? {
        if number < current {
            fs::remove_file(segment_path(dir, number))?;
        }
    }
    for entry in fs::read_dir(dir)?.filter_map(Result::ok) {
        if entry.path().extension().is_some_and(|e| e == "tmp") {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

struct Writer {
    dir: PathBuf,
    file: File,
    number: u64,
    log_bytes: u64,
    /// Batches up to this position are already in the file (written by a rewrite).
    skip_through: u64,
    view: Arc<Mutex<View>>,
    durable: watch::Sender<Durable>,
    flushed: Arc<AtomicU64>,
    metrics: StateMetrics,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Batch>) {
        let mut buf = Vec::new();
        while let Ok(first) = rx.recv() {
            let mut last = first.position;
            self.encode(&mut buf, first);
            while buf.len() < MAX_COMMIT_BYTES {
                match rx.try_recv() {
                    Ok(batch) => {
                        last = batch.position;
                        self.encode(&mut buf, batch);
                    }
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            if self.durable.borrow().failed.is_some() {
                buf.clear();
                continue;
            }
            if let Err(err) = self.flush(&buf) {
                tracing::error!(%err, dir = %self.dir.display(), "the state store cannot write; changes from now on are not durable");
                self.durable
                    .send_modify(|d| d.failed = Some(err.to_string()));
                buf.clear();
                continue;
            }
            buf.clear();
            self.reached(last);
            if self.log_bytes > COMPACT_FROM_BYTES
                && self.log_bytes > 2 * live_bytes(&self.view)
                && let Err(err) = self.compact()
            {
                // The current log stays in use; the next flush tries again.
                tracing::warn!(%err, dir = %self.dir.display(), "rewriting the state log failed");
            }
        }
    }

    /// Everything staged up to `position` is durable.
    fn reached(&self, position: u64) {
        self.flushed.fetch_max(position, Ordering::AcqRel);
        self.durable
            .send_modify(|d| d.position = d.position.max(position));
    }

    fn encode(&self, buf: &mut Vec<u8>, batch: Batch) {
        if batch.position > self.skip_through {
            for change in &batch.changes {
                encode(buf, change);
            }
        }
    }

    fn flush(&mut self, buf: &[u8]) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        self.file.write_all(buf)?;
        self.file.sync_data()?;
        self.log_bytes += buf.len() as u64;
        self.metrics.flushes.inc();
        self.metrics.log_bytes.set(self.log_bytes as i64);
        Ok(())
    }

    /// Rewrites the live records as a new log file and drops the old one.
    fn compact(&mut self) -> io::Result<()> {
        let (records, position) = {
            let view = self.view.lock().unwrap_or_else(|e| e.into_inner());
            (view.records.clone(), view.position)
        };
        let number = self.number + 1;
        let (file, size) = write_base(&self.dir, number, &records)?;
        let old = segment_path(&self.dir, self.number);
        self.file = file;
        self.number = number;
        self.log_bytes = size;
        // Everything staged up to `position` is in the new file.
        self.skip_through = position;
        self.reached(position);
        self.metrics.compactions.inc();
        self.metrics.log_bytes.set(size as i64);
        fs::remove_file(old)
    }
}

/// Bytes the live records take (keys and values).
fn live_bytes(view: &Mutex<View>) -> u64 {
    let view = view.lock().unwrap_or_else(|e| e.into_inner());
    view.live_bytes.max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_survive_a_reopen_and_a_torn_tail_is_cut_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let state = DiskState::open(dir.path(), &Metrics::default()).expect("open");
            state.stage(vec![
                StateChange::put("r/a", "1"),
                StateChange::put("r/b", "2"),
                StateChange::put("s/x/1", "q"),
            ]);
            let at = state.stage(vec![
                StateChange::delete("r/a"),
                StateChange::delete_prefix("s/x/"),
            ]);
            state.durable(at).await.expect("durable");
            state.close().await.expect("close");
            // A second process (or node) on the same directory is kept out.
            assert!(DiskState::open(dir.path(), &Metrics::default()).is_err());
        }
        let log = segment_path(dir.path(), 1);
        let intact = fs::metadata(&log).expect("log").len();
        // Half of a further record, as a crash in the middle of a write leaves it.
        let mut tail = Vec::new();
        encode(&mut tail, &StateChange::put("r/c", "lost"));
        OpenOptions::new()
            .append(true)
            .open(&log)
            .and_then(|mut f| f.write_all(&tail[..tail.len() / 2]))
            .expect("tear");
        let state = DiskState::open(dir.path(), &Metrics::default()).expect("reopen");
        assert_eq!(
            state.load("").await.expect("load"),
            vec![("r/b".to_string(), Bytes::from("2"))]
        );
        assert_eq!(fs::metadata(&log).expect("log").len(), intact);
        // Appends after the cut are read back.
        let at = state.stage(vec![StateChange::put("r/d", "4")]);
        state.durable(at).await.expect("durable");
        state.close().await.expect("close");
        drop(state);
        let state = DiskState::open(dir.path(), &Metrics::default()).expect("reopen");
        assert_eq!(state.load("r/").await.expect("load").len(), 2);
    }

    #[tokio::test]
    async fn a_rewrite_keeps_the_live_records_and_later_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = DiskState::open(dir.path(), &Metrics::default()).expect("open");
        let big = Bytes::from(vec![7u8; 1024 * 1024]);
        // Overwriting one key 100 times leaves ~100 MiB of log for 1 MiB of records.
        for _ in 0..100 {
            let at = state.stage(vec![StateChange::put("big", big.clone())]);
            state.durable(at).await.expect("durable");
        }
        let at = state.stage(vec![StateChange::put("small", "s")]);
        state.durable(at).await.expect("durable");
        assert!(
            state.metrics.compactions.get() >= 1,
            "the log was rewritten"
        );
        state.close().await.expect("close");
        drop(state);
        assert_eq!(list_segments(dir.path()).expect("list").len(), 1);
        let state = DiskState::open(dir.path(), &Metrics::default()).expect("reopen");
        let records = state.load("").await.expect("load");
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].1, big);
    }
}
