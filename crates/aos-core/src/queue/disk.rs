//! The embedded, durable [`WorkQueue`] of a standalone node: an append-only log on local disk.
//!
//! - Every queue of the node shares one log, written by one writer thread. The writer takes all
//!   requests waiting in its channel, writes them, and covers them with a single `fdatasync`
//!   (group commit): a push returns `Ok` only after the fsync that covers it, so it survives
//!   `kill -9`, yet a burst of pushes costs one fsync, not one each.
//! - Acknowledgements and attempt counters are appended without waiting for an fsync: losing one
//!   in a crash means a redelivery, which at-least-once consumers handle anyway.
//! - The log rolls over to a new segment file at `segment_bytes`. A segment whose items are all
//!   acknowledged is deleted; a sparse old segment has its remaining items copied forward so
//!   that a few stuck items do not pin a whole file.
//! - Item payloads are held in memory; `max_bytes` bounds them and `push` answers
//!   [`QueueError::Full`] beyond it, so producers feel back-pressure instead of the node growing.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use super::log::{Record, encode, list_segments, read_segment, segment_path};
use super::{
    Delivery, QueueDepth, QueueError, QueueOptions, WorkQueue, dead_letter_queue,
    validate_queue_name,
};
use crate::frames::lock_dir;
use crate::metrics::Metrics;

/// A commit never gathers more than this many bytes before it writes.
const MAX_COMMIT_BYTES: usize = 8 * 1024 * 1024;

/// Settings of a [`DiskQueue`].
#[derive(Clone, Debug)]
pub struct DiskQueueConfig {
    pub dir: PathBuf,
    pub segment_bytes: u64,
    pub commit_delay: Duration,
    /// Payload bytes the queues may hold in all; pushes beyond it fail with `Full`.
    pub max_bytes: u64,
}

impl DiskQueueConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DiskQueueConfig {
            dir: dir.into(),
            segment_bytes: 64 * 1024 * 1024,
            commit_delay: Duration::ZERO,
            max_bytes: 1024 * 1024 * 1024,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ItemState {
    Ready,
    InFlight(Instant),
    Delayed(Instant),
}

struct Item {
    payload: Bytes,
    attempts: u32,
    /// The segment holding this item's latest push record.
    segment: u64,
    state: ItemState,
}

#[derive(Default)]
struct QueueState {
    options: Option<QueueOptions>,
    items: HashMap<u64, Item>,
    /// Ready ids in delivery order; may hold stale ids (skipped when popped).
    ready: VecDeque<u64>,
    /// Deadlines of in-flight and delayed items; may hold stale entries.
    timers: BTreeSet<(Instant, u64)>,
    notify: Arc<Notify>,
    depth: Counts,
}

/// Items of a queue by state (the disk queue tells delayed ones apart).
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    ready: u64,
    in_flight: u64,
    delayed: u64,
}

impl From<Counts> for QueueDepth {
    fn from(c: Counts) -> QueueDepth {
        QueueDepth {
            ready: c.ready,
            in_flight: c.in_flight,
            delayed: Some(c.delayed),
        }
    }
}

impl QueueState {
    fn count(&mut self, state: ItemState, delta: i64) {
        let slot = match state {
            ItemState::Ready => &mut self.depth.ready,
            ItemState::InFlight(_) => &mut self.depth.in_flight,
            ItemState::Delayed(_) => &mut self.depth.delayed,
        };
        *slot = slot.saturating_add_signed(delta);
    }

    fn set_state(&mut self, id: u64, new: ItemState) {
        let Some(item) = self.items.get_mut(&id) else {
            return;
        };
        let old = std::mem::replace(&mut item.state, new);
        self.count(old, -1);
        self.count(new, 1);
        match new {
            ItemState::Ready => self.ready.push_back(id),
            ItemState::InFlight(t) | ItemState::Delayed(t) => {
                self.timers.insert((t, id));
            }
        }
    }

    fn insert(&mut self, id: u64, item: Item) {
        self.count(item.state, 1);
        if item.state == ItemState::Ready {
            self.ready.push_back(id);
        }
        self.items.insert(id, item);
    }

    fn remove(&mut self, id: u64) -> Option<Item> {
        let item = self.items.remove(&id)?;
        self.count(item.state, -1);
        Some(item)
    }
}

#[derive(Default, Clone, Copy)]
struct SegmentInfo {
    live_items: u64,
    live_bytes: u64,
}

/// An item to make visible once its push record is durable.
struct Insert {
    queue: String,
    id: u64,
    payload: Bytes,
}

/// One unit of work for the writer thread.
#[derive(Default)]
struct WriteReq {
    buf: Vec<u8>,
    inserts: Vec<Insert>,
    /// Segments each losing one live item of the given size once this request is written.
    released: Vec<(u64, u64)>,
    /// Whether `done` (and the request's effects) must wait for an fsync.
    sync: bool,
    done: Option<oneshot::Sender<Result<(), QueueError>>>,
}

struct State {
    queues: HashMap<String, QueueState>,
    next_id: u64,
    segments: BTreeMap<u64, SegmentInfo>,
    current_segment: u64,
    /// Payload bytes held by all queues, including pushes not yet durable.
    held_bytes: u64,
    /// Set when the log cannot be written any more; every later write fails with it.
    failed: Option<String>,
    tx: Option<mpsc::Sender<WriteReq>>,
}

impl State {
    fn queue(&mut self, name: &str) -> Result<&mut QueueState, QueueError> {
        validate_queue_name(name)?;
        match self.queues.get_mut(name) {
            Some(q) if q.options.is_some() => Ok(q),
            _ => Err(QueueError::NotDeclared(name.to_string())),
        }
    }

    fn send(&self, req: WriteReq) -> Result<(), QueueError> {
        if let Some(reason) = &self.failed {
            return Err(QueueError::Storage(reason.clone()));
        }
        self.tx
            .as_ref()
            .ok_or(QueueError::Closed)?
            .send(req)
            .map_err(|_| QueueError::Closed)
    }

    /// Moves `id` of `queue` to the dead-letter queue: a durable push there plus an ack here.
    fn dead_letter(&mut self, queue: &str, id: u64, metrics: &QueueMetrics) {
        let Some(q) = self.queues.get_mut(queue) else {
            return;
        };
        let Some(item) = q.remove(id) else { return };
        let dlq = dead_letter_queue(queue);
        let new_id = self.next_id;
        self.next_id += 1;
        let mut req = WriteReq {
            sync: true,
            released: vec![(item.segment, item.payload.len() as u64)],
            ..WriteReq::default()
        };
        encode(
            &mut req.buf,
            &Record::Push {
                queue: &dlq,
                id: new_id,
                attempts: 0,
                payload: &item.payload,
            },
        );
        encode(&mut req.buf, &Record::Ack { queue, id });
        req.inserts.push(Insert {
            queue: dlq,
            id: new_id,
            payload: item.payload,
        });
        metrics.dead_lettered.get_or_create(&label(queue)).inc();
        tracing::warn!(
            queue,
            id,
            attempts = item.attempts,
            "item moved to the dead-letter queue"
        );
        if let Err(err) = self.send(req) {
            tracing::error!(%err, queue, id, "could not record a dead-letter move");
        }
    }

    /// Returns expired in-flight items and due delayed items of `queue` to the ready list, or to
    /// the dead letters when they have used up their attempts.
    fn reap(&mut self, queue: &str, now: Instant, metrics: &QueueMetrics) {
        let Some(q) = self.queues.get_mut(queue) else {
            return;
        };
        let max_attempts = q.options.as_ref().map_or(0, |o| o.max_attempts);
        let mut exhausted = Vec::new();
        while let Some(&(at, id)) = q.timers.first() {
            if at > now {
                break;
            }
            q.timers.pop_first();
            let Some(item) = q.items.get(&id) else {
                continue;
            };
            match item.state {
                ItemState::InFlight(t) if t == at => {
                    if max_attempts > 0 && item.attempts >= max_attempts {
                        exhausted.push(id);
                    } else {
                        metrics.redelivered.get_or_create(&label(queue)).inc();
                        q.set_state(id, ItemState::Ready);
                    }
                }
                ItemState::Delayed(t) if t == at => q.set_state(id, ItemState::Ready),
                _ => {}
            }
        }
        for id in exhausted {
            self.dead_letter(queue, id, metrics);
        }
    }

    fn publish_depth(&self, queue: &str, metrics: &QueueMetrics) {
        if let Some(q) = self.queues.get(queue) {
            let d = q.depth;
            for (state, value) in [
                ("ready", d.ready),
                ("in_flight", d.in_flight),
                ("delayed", d.delayed),
            ] {
                metrics
                    .depth
                    .get_or_create(&DepthLabels {
                        queue: queue.to_string(),
                        state: state.to_string(),
                    })
                    .set(value as i64);
            }
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabel {
    queue: String,
}

fn label(queue: &str) -> QueueLabel {
    QueueLabel {
        queue: queue.to_string(),
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DepthLabels {
    queue: String,
    state: String,
}

#[derive(Clone, Default)]
struct QueueMetrics {
    pushed: Family<QueueLabel, Counter>,
    acked: Family<QueueLabel, Counter>,
    redelivered: Family<QueueLabel, Counter>,
    dead_lettered: Family<QueueLabel, Counter>,
    depth: Family<DepthLabels, Gauge>,
    commits: Counter,
    fsyncs: Counter,
    segments: Gauge,
}

impl QueueMetrics {
    fn register(&self, metrics: &Metrics) {
        metrics.register(
            "queue_pushed",
            "Items pushed, by queue",
            self.pushed.clone(),
        );
        metrics.register(
            "queue_acked",
            "Items acknowledged, by queue",
            self.acked.clone(),
        );
        metrics.register(
            "queue_redelivered",
            "Items delivered again after their visibility timeout or a nack, by queue",
            self.redelivered.clone(),
        );
        metrics.register(
            "queue_dead_lettered",
            "Items moved to the dead-letter queue, by queue",
            self.dead_lettered.clone(),
        );
        metrics.register(
            "queue_depth",
            "Items held, by queue and state",
            self.depth.clone(),
        );
        metrics.register(
            "queue_commits",
            "Batches written to the queue log",
            self.commits.clone(),
        );
        metrics.register(
            "queue_fsyncs",
            "fsync calls of the queue log (one covers a whole group commit)",
            self.fsyncs.clone(),
        );
        metrics.register(
            "queue_segments",
            "Segment files of the queue log",
            self.segments.clone(),
        );
    }
}

struct Shared {
    state: Mutex<State>,
    config: DiskQueueConfig,
    metrics: QueueMetrics,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The embedded durable work queue; see the module documentation.
pub struct DiskQueue {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Held (with an exclusive `flock`) while the queue is open: two processes appending to one
    /// log would corrupt it.
    _lock: File,
}

impl DiskQueue {
    /// Opens (or creates) the queue log in `config.dir`, replaying what it holds: every item
    /// pushed and not acknowledged is there again, ready for delivery.
    pub fn open(config: DiskQueueConfig, metrics: &Metrics) -> io::Result<DiskQueue> {
        fs::create_dir_all(&config.dir)?;
        let lock = lock_dir(&config.dir)?;
        let mut state = State {
            queues: HashMap::new(),
            next_id: 1,
            segments: BTreeMap::new(),
            current_segment: 0,
            held_bytes: 0,
            failed: None,
            tx: None,
        };
        let numbers = list_segments(&config.dir)?;
        for &number in &numbers {
            let path = segment_path(&config.dir, number);
            let outcome = read_segment(&path, |record| replay(&mut state, number, record))?;
            if outcome.torn {
                tracing::warn!(
                    segment = %path.display(),
                    valid_bytes = outcome.valid_len,
                    "queue log segment ends in an incomplete record (an unfinished write); it is ignored"
                );
            }
            state.segments.insert(number, SegmentInfo::default());
        }
        for q in state.queues.values_mut() {
            let mut ids: Vec<u64> = q.items.keys().copied().collect();
            ids.sort_unstable();
            q.ready = ids.into();
            q.depth.ready = q.items.len() as u64;
            for item in q.items.values() {
                let info = state.segments.entry(item.segment).or_default();
                info.live_items += 1;
                info.live_bytes += item.payload.len() as u64;
                state.held_bytes += item.payload.len() as u64;
            }
        }
        let recovered: usize = state.queues.values().map(|q| q.items.len()).sum();
        if recovered > 0 {
            tracing::info!(items = recovered, "queue log replayed");
        }

        let current = numbers.last().map_or(1, |n| n + 1);
        let (file, size) = create_segment(&config.dir, current, state.next_id)?;
        state.current_segment = current;
        state.segments.insert(current, SegmentInfo::default());
        let (tx, rx) = mpsc::channel();
        state.tx = Some(tx);

        let queue_metrics = QueueMetrics::default();
        queue_metrics.register(metrics);
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            config,
            metrics: queue_metrics,
        });
        delete_empty_segments(&shared);
        let writer = Writer {
            shared: shared.clone(),
            file,
            segment: current,
            size,
        };
        let thread = std::thread::Builder::new()
            .name("aos-queue-writer".into())
            .spawn(move || writer.run(rx))?;
        Ok(DiskQueue {
            shared,
            writer: Mutex::new(Some(thread)),
            _lock: lock,
        })
    }

    fn metrics(&self) -> &QueueMetrics {
        &self.shared.metrics
    }

    async fn wait(rx: oneshot::Receiver<Result<(), QueueError>>) -> Result<(), QueueError> {
        rx.await.map_err(|_| QueueError::Closed)?
    }
}

fn replay(state: &mut State, segment: u64, record: Record<'_>) {
    match record {
        Record::SegmentStart { next_id } => state.next_id = state.next_id.max(next_id),
        Record::Push {
            queue,
            id,
            attempts,
            payload,
        } => {
            state.next_id = state.next_id.max(id + 1);
            state
                .queues
                .entry(queue.to_string())
                .or_default()
                .items
                .insert(
                    id,
                    Item {
                        payload: Bytes::copy_from_slice(payload),
                        attempts,
                        segment,
                        state: ItemState::Ready,
                    },
                );
        }
        Record::Ack { queue, id } => {
            if let Some(q) = state.queues.get_mut(queue) {
                q.items.remove(&id);
            }
        }
        Record::Attempt {
            queue,
            id,
            attempts,
        } => {
            if let Some(item) = state
                .queues
                .get_mut(queue)
                .and_then(|q| q.items.get_mut(&id))
            {
                item.attempts = attempts;
            }
        }
    }
}

fn create_segment(dir: &Path, number: u64, next_id: u64) -> io::Result<(File, u64)> {
    let path = segment_path(dir, number);
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)?;
    let mut buf = Vec::new();
    encode(&mut buf, &Record::SegmentStart { next_id });
    file.write_all(&buf)?;
    file.sync_all()?;
    // Make the new file's directory entry durable too.
    File::open(dir)?.sync_all()?;
    Ok((file, buf.len() as u64))
}

fn delete_empty_segments(shared: &Shared) {
    let empty: Vec<u64> = {
        let mut state = shared.lock();
        let current = state.current_segment;
        let empty: Vec<u64> = state
            .segments
            .iter()
            .filter(|(n, info)| **n != current && info.live_items == 0)
            .map(|(n, _)| *n)
            .collect();
        for n in &empty {
            state.segments.remove(n);
        }
        shared.metrics.segments.set(state.segments.len() as i64);
        empty
    };
    for n in empty {
        let path = segment_path(&shared.config.dir, n);
        if let Err(err) = fs::remove_file(&path) {
            tracing::warn!(%err, segment = %path.display(), "could not delete a drained queue segment");
        }
    }
}

/// The writer thread: group commits, segment rotation and compaction.
struct Writer {
    shared: Arc<Shared>,
    file: File,
    segment: u64,
    size: u64,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<WriteReq>) {
        while let Ok(first) = rx.recv() {
            let batch = self.gather(first, &rx);
            self.commit(batch);
            if self.size >= self.shared.config.segment_bytes
                && let Err(err) = self.rotate()
            {
                self.fail(format!("cannot start a new queue segment: {err}"));
            }
        }
        if let Err(err) = self.file.sync_data() {
            tracing::error!(%err, "final fsync of the queue log failed");
        }
    }

    /// Everything already waiting, plus what arrives within `commit_delay`.
    fn gather(&self, first: WriteReq, rx: &mpsc::Receiver<WriteReq>) -> Vec<WriteReq> {
        let mut bytes = first.buf.len();
        let mut batch = vec![first];
        let deadline = std::time::Instant::now() + self.shared.config.commit_delay;
        while bytes < MAX_COMMIT_BYTES {
            let next = match rx.try_recv() {
                Ok(req) => req,
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    let now = std::time::Instant::now();
                    if now >= deadline {
                        break;
                    }
                    match rx.recv_timeout(deadline - now) {
                        Ok(req) => req,
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            bytes += next.buf.len();
            batch.push(next);
        }
        batch
    }

    fn commit(&mut self, batch: Vec<WriteReq>) {
        let sync = batch.iter().any(|r| r.sync);
        let written = self.write(&batch, sync);
        let metrics = &self.shared.metrics;
        let mut notify = Vec::new();
        let result = {
            let mut state = self.shared.lock();
            match written {
                Ok(()) => {
                    metrics.commits.inc();
                    for req in &batch {
                        for insert in &req.inserts {
                            let len = insert.payload.len() as u64;
                            let info = state.segments.entry(self.segment).or_default();
                            info.live_items += 1;
                            info.live_bytes += len;
                            let q = state.queues.entry(insert.queue.clone()).or_default();
                            q.insert(
                                insert.id,
                                Item {
                                    payload: insert.payload.clone(),
                                    attempts: 0,
                                    segment: self.segment,
                                    state: ItemState::Ready,
                                },
                            );
                            notify.push(q.notify.clone());
                            metrics.pushed.get_or_create(&label(&insert.queue)).inc();
                        }
                        for &(segment, len) in &req.released {
                            if let Some(info) = state.segments.get_mut(&segment) {
                                info.live_items = info.live_items.saturating_sub(1);
                                info.live_bytes = info.live_bytes.saturating_sub(len);
                            }
                        }
                    }
                    let queues: BTreeSet<&str> = batch
                        .iter()
                        .flat_map(|r| r.inserts.iter().map(|i| i.queue.as_str()))
                        .collect();
                    for queue in queues {
                        state.publish_depth(queue, metrics);
                    }
                    Ok(())
                }
                Err(err) => {
                    let unreserved: u64 = batch
                        .iter()
                        .flat_map(|r| &r.inserts)
                        .map(|i| i.payload.len() as u64)
                        .sum();
                    state.held_bytes = state.held_bytes.saturating_sub(unreserved);
                    Err(QueueError::Storage(err))
                }
            }
        };
        for n in notify {
            n.notify_waiters();
        }
        let released_any = batch.iter().any(|r| !r.released.is_empty());
        for req in batch {
            if let Some(done) = req.done {
                let _ = done.send(
                    result
                        .as_ref()
                        .map(|_| ())
                        .map_err(|e| QueueError::Storage(e.to_string())),
                );
            }
        }
        if released_any {
            delete_empty_segments(&self.shared);
        }
    }

    /// Appends the batch; on a failed write, cuts the segment back to its last good length so a
    /// torn record can never hide later ones.
    fn write(&mut self, batch: &[WriteReq], sync: bool) -> Result<(), String> {
        let mut result = batch
            .iter()
            .try_for_each(|req| self.file.write_all(&req.buf));
        if result.is_ok() && sync {
            result = self.file.sync_data();
            self.shared.metrics.fsyncs.inc();
        }
        match result {
            Ok(()) => {
                self.size += batch.iter().map(|r| r.buf.len() as u64).sum::<u64>();
                Ok(())
            }
            Err(err) => {
                let repaired = self
                    .file
                    .set_len(self.size)
                    .and_then(|()| self.file.seek(SeekFrom::End(0)).map(|_| ()));
                let reason = format!("writing the queue log failed: {err}");
                if let Err(repair) = repaired {
                    self.fail(format!("{reason}; repairing the log failed too: {repair}"));
                }
                tracing::error!(%err, "queue log write failed");
                Err(reason)
            }
        }
    }

    fn fail(&self, reason: String) {
        tracing::error!(%reason, "the queue log is no longer writable; restart the node once the disk is fixed");
        self.shared.lock().failed = Some(reason);
    }

    /// Starts a new segment, then copies the live items of sparse old segments into it.
    fn rotate(&mut self) -> io::Result<()> {
        let next = self.segment + 1;
        let next_id = self.shared.lock().next_id;
        let (file, size) = create_segment(&self.shared.config.dir, next, next_id)?;
        self.file = file;
        self.segment = next;
        self.size = size;
        let sparse: Vec<u64> = {
            let mut state = self.shared.lock();
            state.current_segment = next;
            state.segments.insert(next, SegmentInfo::default());
            let threshold = self.shared.config.segment_bytes / 4;
            state
                .segments
                .iter()
                .filter(|(n, info)| {
                    **n != next && info.live_items > 0 && info.live_bytes < threshold
                })
                .map(|(n, _)| *n)
                .collect()
        };
        for old in sparse {
            self.copy_forward(old)?;
        }
        delete_empty_segments(&self.shared);
        Ok(())
    }

    fn copy_forward(&mut self, old: u64) -> io::Result<()> {
        let mut buf = Vec::new();
        let mut moved: Vec<(String, u64)> = Vec::new();
        {
            let state = self.shared.lock();
            for (name, q) in &state.queues {
                for (id, item) in q.items.iter().filter(|(_, i)| i.segment == old) {
                    encode(
                        &mut buf,
                        &Record::Push {
                            queue: name,
                            id: *id,
                            attempts: item.attempts,
                            payload: &item.payload,
                        },
                    );
                    moved.push((name.clone(), *id));
                }
            }
        }
        self.file.write_all(&buf)?;
        self.file.sync_data()?;
        self.shared.metrics.fsyncs.inc();
        self.size += buf.len() as u64;
        let mut state = self.shared.lock();
        let state = &mut *state;
        for (name, id) in moved {
            let Some(item) = state
                .queues
                .get_mut(&name)
                .and_then(|q| q.items.get_mut(&id))
            else {
                continue;
            };
            if item.segment != old {
                continue;
            }
            item.segment = self.segment;
            let len = item.payload.len() as u64;
            if let Some(info) = state.segments.get_mut(&old) {
                info.live_items = info.live_items.saturating_sub(1);
                info.live_bytes = info.live_bytes.saturating_sub(len);
            }
            let info = state.segments.entry(self.segment).or_default();
            info.live_items += 1;
            info.live_bytes += len;
        }
        Ok(())
    }
}

#[async_trait]
impl WorkQueue for DiskQueue {
    async fn declare(&self, queue: &str, options: QueueOptions) -> Result<(), QueueError> {
        validate_queue_name(queue)?;
        let dlq = dead_letter_queue(queue);
        validate_queue_name(&dlq)?;
        let mut state = self.shared.lock();
        let dlq_options = QueueOptions {
            max_attempts: 0,
            ..options
        };
        state.queues.entry(queue.to_string()).or_default().options = Some(options);
        state.queues.entry(dlq.clone()).or_default().options = Some(dlq_options);
        state.publish_depth(queue, self.metrics());
        state.publish_depth(&dlq, self.metrics());
        Ok(())
    }

    async fn push(&self, queue: &str, payload: Bytes) -> Result<u64, QueueError> {
        let ids = self.push_batch(queue, vec![payload]).await?;
        ids.into_iter().next().ok_or(QueueError::Closed)
    }

    async fn push_batch(&self, queue: &str, payloads: Vec<Bytes>) -> Result<Vec<u64>, QueueError> {
        let (done, rx) = oneshot::channel();
        let ids = {
            let mut state = self.shared.lock();
            state.queue(queue)?;
            let bytes: u64 = payloads.iter().map(|p| p.len() as u64).sum();
            if state.held_bytes + bytes > self.shared.config.max_bytes {
                return Err(QueueError::Full(format!(
                    "{} bytes held, limit {}",
                    state.held_bytes, self.shared.config.max_bytes
                )));
            }
            let first = state.next_id;
            state.next_id += payloads.len() as u64;
            let mut req = WriteReq {
                sync: true,
                done: Some(done),
                ..WriteReq::default()
            };
            for (i, payload) in payloads.into_iter().enumerate() {
                let id = first + i as u64;
                encode(
                    &mut req.buf,
                    &Record::Push {
                        queue,
                        id,
                        attempts: 0,
                        payload: &payload,
                    },
                );
                req.inserts.push(Insert {
                    queue: queue.to_string(),
                    id,
                    payload,
                });
            }
            let ids: Vec<u64> = req.inserts.iter().map(|i| i.id).collect();
            state.send(req)?;
            state.held_bytes += bytes;
            ids
        };
        Self::wait(rx).await?;
        Ok(ids)
    }

    async fn pull(
        &self,
        queue: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        let deadline = Instant::now() + wait;
        loop {
            let notify;
            let wake_at;
            {
                let mut state = self.shared.lock();
                let now = Instant::now();
                state.queue(queue)?;
                state.reap(queue, now, self.metrics());
                let q = state.queue(queue)?;
                let visibility = q
                    .options
                    .as_ref()
                    .map(|o| o.visibility_timeout)
                    .unwrap_or_default();
                let mut out = Vec::new();
                let mut attempts_log = Vec::new();
                while out.len() < max {
                    let Some(id) = q.ready.pop_front() else { break };
                    match q.items.get_mut(&id) {
                        Some(item) if item.state == ItemState::Ready => {
                            item.attempts += 1;
                            let attempt = item.attempts;
                            let payload = item.payload.clone();
                            q.set_state(id, ItemState::InFlight(now + visibility));
                            encode(
                                &mut attempts_log,
                                &Record::Attempt {
                                    queue,
                                    id,
                                    attempts: attempt,
                                },
                            );
                            out.push(Delivery {
                                id,
                                payload,
                                attempt,
                            });
                        }
                        _ => {}
                    }
                }
                if !out.is_empty() {
                    state.send(WriteReq {
                        buf: attempts_log,
                        ..WriteReq::default()
                    })?;
                    state.publish_depth(queue, self.metrics());
                    return Ok(out);
                }
                if now >= deadline || max == 0 {
                    return Ok(out);
                }
                let next_timer = q.timers.first().map(|(t, _)| *t);
                wake_at = next_timer.map_or(deadline, |t| t.min(deadline));
                notify = q.notify.clone();
            }
            let notified = notify.notified();
            tokio::pin!(notified);
            // Register before re-checking, so a push between the check above and the await
            // below is not missed.
            notified.as_mut().enable();
            if self.shared.lock().queue(queue)?.depth.ready > 0 {
                continue;
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(wake_at) => {}
            }
        }
    }

    async fn ack(&self, queue: &str, ids: &[u64]) -> Result<(), QueueError> {
        let mut state = self.shared.lock();
        let q = state.queue(queue)?;
        let mut req = WriteReq::default();
        let mut freed = 0;
        for &id in ids {
            if let Some(item) = q.remove(id) {
                let len = item.payload.len() as u64;
                freed += len;
                req.released.push((item.segment, len));
                encode(&mut req.buf, &Record::Ack { queue, id });
            }
        }
        if req.released.is_empty() {
            return Ok(());
        }
        self.metrics()
            .acked
            .get_or_create(&label(queue))
            .inc_by(req.released.len() as u64);
        state.held_bytes = state.held_bytes.saturating_sub(freed);
        state.publish_depth(queue, self.metrics());
        state.send(req)
    }

    async fn nack(&self, queue: &str, id: u64, delay: Duration) -> Result<(), QueueError> {
        let mut state = self.shared.lock();
        let q = state.queue(queue)?;
        let max_attempts = q.options.as_ref().map_or(0, |o| o.max_attempts);
        let attempts = match q.items.get(&id) {
            Some(item) if matches!(item.state, ItemState::InFlight(_)) => item.attempts,
            // Unknown, already acknowledged or already released: nothing to give back.
            _ => return Ok(()),
        };
        if max_attempts > 0 && attempts >= max_attempts {
            state.dead_letter(queue, id, self.metrics());
        } else {
            self.metrics()
                .redelivered
                .get_or_create(&label(queue))
                .inc();
            let new_state = if delay.is_zero() {
                ItemState::Ready
            } else {
                ItemState::Delayed(Instant::now() + delay)
            };
            q.set_state(id, new_state);
            q.notify.notify_waiters();
        }
        state.publish_depth(queue, self.metrics());
        Ok(())
    }

    async fn depth(&self, queue: &str) -> Result<QueueDepth, QueueError> {
        let mut state = self.shared.lock();
        state.queue(queue)?;
        state.reap(queue, Instant::now(), self.metrics());
        state.publish_depth(queue, self.metrics());
        Ok(state.queue(queue)?.depth.into())
    }

    async fn browse(&self, queue: &str, max: usize) -> Result<Vec<Delivery>, QueueError> {
        let mut state = self.shared.lock();
        state.queue(queue)?;
        state.reap(queue, Instant::now(), self.metrics());
        let q = state.queue(queue)?;
        let mut waiting: Vec<(&u64, &Item)> = q
            .items
            .iter()
            .filter(|(_, item)| !matches!(item.state, ItemState::InFlight(_)))
            .collect();
        waiting.sort_unstable_by_key(|(id, _)| **id);
        Ok(waiting
            .into_iter()
            .take(max)
            .map(|(id, item)| Delivery {
                id: *id,
                payload: item.payload.clone(),
                attempt: item.attempts,
            })
            .collect())
    }

    async fn flush(&self) -> Result<(), QueueError> {
        let (done, rx) = oneshot::channel();
        self.shared.lock().send(WriteReq {
            sync: true,
            done: Some(done),
            ..WriteReq::default()
        })?;
        Self::wait(rx).await
    }

    async fn close(&self) -> Result<(), QueueError> {
        let flushed = self.flush().await;
        self.shared.lock().tx = None;
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(writer) = writer {
            tokio::task::spawn_blocking(move || writer.join())
                .await
                .map_err(|e| QueueError::Storage(e.to_string()))?
                .map_err(|_| QueueError::Storage("the queue writer panicked".into()))?;
        }
        match flushed {
            Err(QueueError::Closed) => Ok(()),
            other => other,
        }
    }
}
