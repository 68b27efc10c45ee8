//! The work-queue seam: named, durable, at-least-once queues.
//!
//! A producer pushes; once `push` returns `Ok` the item is durable. A consumer pulls a batch; each
//! pulled item stays invisible for the queue's visibility timeout and comes back (with a higher
//! attempt number) unless it is acknowledged in time or explicitly released with `nack`. An item
//! delivered `max_attempts` times without an ack moves to the queue's dead-letter queue
//! ([`dead_letter_queue`]), where it waits to be inspected or replayed.

pub mod disk;
mod log;

pub use disk::DiskQueue;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

/// How a queue behaves; given when the queue is declared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueOptions {
    /// How long a pulled item stays invisible to other consumers before it is delivered again.
    pub visibility_timeout: Duration,
    /// Deliveries after which an unacknowledged item moves to the dead letters; 0: never.
    pub max_attempts: u32,
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            visibility_timeout: Duration::from_secs(30),
            max_attempts: 5,
        }
    }
}

/// One delivered item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Unique within the queue backend, assigned at push; acknowledge with it.
    pub id: u64,
    pub payload: Bytes,
    /// 1 on first delivery, 2 on the first redelivery, …
    pub attempt: u32,
}

/// Items of a queue by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Waiting to be pulled now.
    pub ready: u64,
    /// Pulled and not yet acknowledged.
    pub in_flight: u64,
    /// Released with a delay that has not passed yet, where the backend tells them apart
    /// (JetStream holds them as pending acknowledgement: counted in `in_flight`).
    pub delayed: Option<u64>,
}

impl QueueDepth {
    pub fn total(&self) -> u64 {
        self.ready + self.in_flight + self.delayed.unwrap_or(0)
    }
}

#[derive(Clone, Debug, thiserror::Error)]
pub enum QueueError {
    #[error("invalid queue name `{0}`: use 1 to 64 characters of A-Z a-z 0-9 - _ .")]
    InvalidName(String),
    #[error("queue `{0}` is not declared; declare it before use")]
    NotDeclared(String),
    #[error("queue storage is full ({0}); consumers are behind — retry later")]
    Full(String),
    #[error("queue storage failed: {0}")]
    Storage(String),
    #[error("the queue is closed")]
    Closed,
}

/// The name of the dead-letter queue of `queue`.
pub fn dead_letter_queue(queue: &str) -> String {
    format!("{queue}.dead")
}

/// Gives the dead letters `ids` of `queue` another chance: each is pushed to `queue` again (as
/// a new item, attempts from zero) and then dropped from the dead-letter queue. Returns how many
/// were found and replayed. A crash between the two steps leaves an item in both queues — a
/// redelivery, which consumers take in their stride.
pub async fn replay_dead_letters(
    backend: &dyn WorkQueue,
    queue: &str,
    ids: &[u64],
) -> Result<usize, QueueError> {
    let (dead, chosen) = dead_letters(backend, queue, ids).await?;
    if chosen.is_empty() {
        return Ok(0);
    }
    backend
        .push_batch(queue, chosen.iter().map(|d| d.payload.clone()).collect())
        .await?;
    let replayed: Vec<u64> = chosen.iter().map(|d| d.id).collect();
    backend.ack(&dead, &replayed).await?;
    Ok(replayed.len())
}

/// The dead-letter queue of `queue`, and those of its items that `ids` name.
async fn dead_letters(
    backend: &dyn WorkQueue,
    queue: &str,
    ids: &[u64],
) -> Result<(String, Vec<Delivery>), QueueError> {
    let dead = dead_letter_queue(queue);
    let mut waiting = backend.browse(&dead, usize::MAX).await?;
    waiting.retain(|d| ids.contains(&d.id));
    Ok((dead, waiting))
}

/// Drops the dead letters `ids` of `queue` for good; returns how many were found.
pub async fn drop_dead_letters(
    backend: &dyn WorkQueue,
    queue: &str,
    ids: &[u64],
) -> Result<usize, QueueError> {
    let (dead, chosen) = dead_letters(backend, queue, ids).await?;
    let found: Vec<u64> = chosen.iter().map(|d| d.id).collect();
    if !found.is_empty() {
        backend.ack(&dead, &found).await?;
    }
    Ok(found.len())
}

pub fn validate_queue_name(name: &str) -> Result<(), QueueError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(QueueError::InvalidName(name.to_string()))
    }
}

#[async_trait]
pub trait WorkQueue: Send + Sync + 'static {
    /// Creates the queue (and its dead-letter queue) or updates its options; idempotent.
    async fn declare(&self, queue: &str, options: QueueOptions) -> Result<(), QueueError>;
    /// Appends one item; durable once this returns `Ok`.
    async fn push(&self, queue: &str, payload: Bytes) -> Result<u64, QueueError>;
    /// Appends several items at once; all are durable once this returns `Ok`.
    async fn push_batch(&self, queue: &str, payloads: Vec<Bytes>) -> Result<Vec<u64>, QueueError>;
    /// Up to `max` visible items, in push order where possible; waits up to `wait` for the first.
    async fn pull(
        &self,
        queue: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, QueueError>;
    /// Acknowledges delivered items: they are done and never delivered again. Unknown ids are
    /// ignored (an item may already have been acknowledged). Waiting items may be acknowledged
    /// too, without a delivery: that is how an operator drops a dead letter.
    async fn ack(&self, queue: &str, ids: &[u64]) -> Result<(), QueueError>;
    /// Gives a delivered item back, visible again after `delay`.
    async fn nack(&self, queue: &str, id: u64, delay: Duration) -> Result<(), QueueError>;
    /// How many items the queue holds, by state.
    async fn depth(&self, queue: &str) -> Result<QueueDepth, QueueError>;
    /// Up to `max` of the queue's waiting items (ready or delayed; not those in flight), oldest
    /// first, without delivering them: what an operator looks at in a dead-letter queue.
    /// `attempt` says how often each was delivered.
    async fn browse(&self, queue: &str, max: usize) -> Result<Vec<Delivery>, QueueError>;
    /// Makes every write so far durable (used on shutdown).
    async fn flush(&self) -> Result<(), QueueError>;
    /// Flushes, then refuses further use (node shutdown).
    async fn close(&self) -> Result<(), QueueError>;
}
