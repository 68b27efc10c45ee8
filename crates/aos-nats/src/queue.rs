//! The work queues on JetStream: one stream per queue (work-queue retention: an acknowledged
//! item is gone) and one durable pull consumer, `aos-workers`, that every node pulls from, so a
//! batch goes to one worker. The consumer's ack wait is the visibility timeout; a `nack` is a
//! NAK with that delay; the delivery count comes with each message. JetStream keeps an item
//! that reached its delivery limit (it only publishes an advisory), so moving it to the dead
//! letters (`<queue>.dead`, a queue of its own) is done here, when an item delivered
//! `max_attempts` times is given back or comes back once more. A stream is bounded by
//! `queue.max_bytes` and refuses pushes beyond it (back-pressure).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use aos_core::queue::{
    Delivery, QueueDepth, QueueError, QueueOptions, WorkQueue, dead_letter_queue,
    validate_queue_name,
};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, Stream};
use async_nats::jetstream::{AckKind, ErrorCode, Message};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::join_all;

use crate::Nats;
use crate::names::{queue_stream, queue_subject};

/// The durable consumer every node's workers share.
const CONSUMER: &str = "aos-workers";
/// Stream metadata: how many deliveries an item gets before it is a dead letter.
const MAX_ATTEMPTS: &str = "aos_max_attempts";
/// Header of a dead letter: how often it had been delivered.
const ATTEMPTS: &str = "Aos-Attempts";
/// Items one consumer may have delivered and not acknowledged, over all nodes.
const MAX_ACK_PENDING: i64 = 50_000;

pub struct JetStreamQueue {
    nats: Nats,
    /// Bytes each queue's stream may hold.
    max_bytes: u64,
    declared: Mutex<HashMap<String, Arc<Declared>>>,
    closed: std::sync::atomic::AtomicBool,
}

/// A queue this node knows: its stream, the shared consumer, and the items this node pulled and
/// has not settled yet (to acknowledge them by id).
struct Declared {
    name: String,
    subject: String,
    stream: Stream,
    consumer: PullConsumer,
    max_attempts: u32,
    visibility: Duration,
    in_flight: Mutex<HashMap<u64, Pulled>>,
}

struct Pulled {
    message: Message,
    attempt: u32,
    at: Instant,
}

impl Declared {
    fn in_flight(&self) -> MutexGuard<'_, HashMap<u64, Pulled>> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn storage(err: impl std::fmt::Display) -> QueueError {
    QueueError::Storage(err.to_string())
}

fn stream_config(nats: &Nats, queue: &str, max_attempts: u32, max_bytes: u64) -> stream::Config {
    stream::Config {
        name: queue_stream(&nats.prefix, queue),
        subjects: vec![queue_subject(&nats.prefix, queue)],
        retention: RetentionPolicy::WorkQueue,
        discard: DiscardPolicy::New,
        max_bytes: i64::try_from(max_bytes).unwrap_or(i64::MAX),
        num_replicas: nats.replicas,
        allow_direct: true,
        metadata: HashMap::from([(MAX_ATTEMPTS.to_string(), max_attempts.to_string())]),
        ..Default::default()
    }
}

fn consumer_config(visibility: Duration) -> pull::Config {
    pull::Config {
        durable_name: Some(CONSUMER.into()),
        name: Some(CONSUMER.into()),
        ack_policy: AckPolicy::Explicit,
        deliver_policy: DeliverPolicy::All,
        ack_wait: visibility,
        max_deliver: -1,
        max_ack_pending: MAX_ACK_PENDING,
        ..Default::default()
    }
}

impl JetStreamQueue {
    pub fn new(nats: Nats, max_bytes: u64) -> Self {
        JetStreamQueue {
            nats,
            max_bytes,
            declared: Mutex::new(HashMap::new()),
            closed: Default::default(),
        }
    }

    fn check_open(&self) -> Result<(), QueueError> {
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            Err(QueueError::Closed)
        } else {
            Ok(())
        }
    }

    fn known(&self, queue: &str) -> Option<Arc<Declared>> {
        self.declared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(queue)
            .cloned()
    }

    /// Creates (or updates) the stream and the consumer of one queue. A NATS cluster electing
    /// leaders (a server was lost) answers nothing for a few seconds: that is waited out.
    async fn declare_one(&self, queue: &str, options: &QueueOptions) -> Result<(), QueueError> {
        crate::patiently("a queue is declared", || self.try_declare(queue, options)).await
    }

    async fn try_declare(&self, queue: &str, options: &QueueOptions) -> Result<(), QueueError> {
        let config = stream_config(&self.nats, queue, options.max_attempts, self.max_bytes);
        let name = config.name.clone();
        self.nats
            .js
            .create_or_update_stream(config)
            .await
            .map_err(storage)?;
        let stream = self.nats.js.get_stream(&name).await.map_err(storage)?;
        let consumer = stream
            .create_consumer(consumer_config(options.visibility_timeout))
            .await
            .map_err(storage)?;
        self.remember(
            queue,
            stream,
            consumer,
            options.max_attempts,
            options.visibility_timeout,
        );
        Ok(())
    }

    fn remember(
        &self,
        queue: &str,
        stream: Stream,
        consumer: PullConsumer,
        max_attempts: u32,
        visibility: Duration,
    ) -> Arc<Declared> {
        let declared = Arc::new(Declared {
            name: queue.to_string(),
            subject: queue_subject(&self.nats.prefix, queue),
            stream,
            consumer,
            max_attempts,
            visibility,
            in_flight: Mutex::new(HashMap::new()),
        });
        self.declared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(queue.to_string(), declared.clone());
        declared
    }

    /// A queue by name: known here, or declared by another node (its stream exists).
    async fn queue(&self, queue: &str) -> Result<Arc<Declared>, QueueError> {
        self.check_open()?;
        validate_queue_name(queue)?;
        if let Some(declared) = self.known(queue) {
            return Ok(declared);
        }
        let not_declared = || QueueError::NotDeclared(queue.to_string());
        let mut stream = self
            .nats
            .js
            .get_stream(queue_stream(&self.nats.prefix, queue))
            .await
            .map_err(|_| not_declared())?;
        let info = stream.info().await.map_err(storage)?;
        let max_attempts = info
            .config
            .metadata
            .get(MAX_ATTEMPTS)
            .and_then(|v| v.parse().ok())
            .unwrap_or(QueueOptions::default().max_attempts);
        let mut consumer: PullConsumer = stream
            .get_consumer(CONSUMER)
            .await
            .map_err(|_| not_declared())?;
        let visibility = consumer.info().await.map_err(storage)?.config.ack_wait;
        Ok(self.remember(queue, stream, consumer, max_attempts, visibility))
    }

    async fn publish(
        &self,
        declared: &Declared,
        message: PublishMessage,
    ) -> Result<u64, QueueError> {
        let sent = self
            .nats
            .js
            .send_publish(declared.subject.clone(), message)
            .await
            .map_err(|err| publish_error(&declared.name, &err))?;
        sent.await
            .map(|ack| ack.sequence)
            .map_err(|err| publish_error(&declared.name, &err))
    }

    /// Moves a delivered item to the dead letters: published there, then acknowledged here (a
    /// crash in between leaves it in both — a redelivery, never a loss).
    async fn bury(&self, declared: &Declared, pulled: Pulled) -> Result<(), QueueError> {
        let dead = self.queue(&dead_letter_queue(&declared.name)).await?;
        let message = PublishMessage::build()
            .payload(pulled.message.payload.clone())
            .header(ATTEMPTS, pulled.attempt.to_string());
        self.publish(&dead, message).await?;
        pulled.message.double_ack().await.map_err(storage)?;
        tracing::warn!(queue = %declared.name, attempts = pulled.attempt, "an item moved to the dead letters");
        Ok(())
    }
}

/// The seam's error for a refused publish: a full stream is back-pressure.
fn publish_error(queue: &str, err: &async_nats::jetstream::context::PublishError) -> QueueError {
    if err.kind() == PublishErrorKind::StreamNotFound {
        return QueueError::NotDeclared(queue.to_string());
    }
    let full = std::error::Error::source(err)
        .and_then(|s| s.downcast_ref::<async_nats::jetstream::Error>())
        .is_some_and(|js| js.error_code() == ErrorCode::STREAM_STORE_FAILED);
    if full {
        QueueError::Full(format!("queue `{queue}` holds `queue.max_bytes`"))
    } else {
        storage(err)
    }
}

#[async_trait]
impl WorkQueue for JetStreamQueue {
    async fn declare(&self, queue: &str, options: QueueOptions) -> Result<(), QueueError> {
        self.check_open()?;
        validate_queue_name(queue)?;
        let dead_options = QueueOptions {
            max_attempts: 0,
            ..options
        };
        self.declare_one(&dead_letter_queue(queue), &dead_options)
            .await?;
        self.declare_one(queue, &options).await
    }

    async fn push(&self, queue: &str, payload: Bytes) -> Result<u64, QueueError> {
        let declared = self.queue(queue).await?;
        self.publish(&declared, PublishMessage::build().payload(payload))
            .await
    }

    async fn push_batch(&self, queue: &str, payloads: Vec<Bytes>) -> Result<Vec<u64>, QueueError> {
        let declared = self.queue(queue).await?;
        // Sent one after the other without waiting, then every acknowledgement awaited: one
        // round trip for the batch, order kept.
        let mut pending = Vec::with_capacity(payloads.len());
        for payload in payloads {
            pending.push(
                self.nats
                    .js
                    .publish(declared.subject.clone(), payload)
                    .await
                    .map_err(|err| publish_error(queue, &err))?,
            );
        }
        let mut ids = Vec::with_capacity(pending.len());
        for ack in pending {
            ids.push(
                ack.await
                    .map_err(|err| publish_error(queue, &err))?
                    .sequence,
            );
        }
        Ok(ids)
    }

    async fn pull(
        &self,
        queue: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        let declared = self.queue(queue).await?;
        // What was pulled here and never settled has gone back (or to another node) by now.
        let now = Instant::now();
        declared
            .in_flight()
            .retain(|_, p| now.duration_since(p.at) < declared.visibility * 2);
        let mut fetch = declared.consumer.fetch().max_messages(max.max(1));
        if !wait.is_zero() {
            fetch = fetch.expires(wait);
        }
        let mut batch = fetch.messages().await.map_err(storage)?;
        let mut deliveries = Vec::new();
        let mut doomed = Vec::new();
        while let Some(message) = batch.next().await {
            let message = message.map_err(storage)?;
            let (id, attempt) = {
                let info = message.info().map_err(storage)?;
                (
                    info.stream_sequence,
                    u32::try_from(info.delivered).unwrap_or(u32::MAX),
                )
            };
            let pulled = Pulled {
                message,
                attempt,
                at: Instant::now(),
            };
            // Delivered once more than it may be (it was not acknowledged in time): a dead
            // letter now.
            if declared.max_attempts > 0 && attempt > declared.max_attempts {
                doomed.push(pulled);
                continue;
            }
            deliveries.push(Delivery {
                id,
                payload: pulled.message.payload.clone(),
                attempt,
            });
            declared.in_flight().insert(id, pulled);
        }
        for pulled in doomed {
            self.bury(&declared, pulled).await?;
        }
        Ok(deliveries)
    }

    async fn ack(&self, queue: &str, ids: &[u64]) -> Result<(), QueueError> {
        let declared = self.queue(queue).await?;
        let (pulled, waiting): (Vec<_>, Vec<_>) = {
            let mut in_flight = declared.in_flight();
            ids.iter()
                .map(|id| (*id, in_flight.remove(id)))
                .partition(|(_, p)| p.is_some())
        };
        // Acknowledged and confirmed by the server, all at once.
        let acked = join_all(
            pulled
                .into_iter()
                .filter_map(|(_, p)| p)
                .map(|p| async move { p.message.double_ack().await }),
        )
        .await;
        for result in acked {
            // Its ack wait passed and it went elsewhere: that delivery settles it.
            if let Err(err) = result {
                tracing::debug!(queue, %err, "an acknowledgement was not taken");
            }
        }
        // Not delivered here: removed from the stream (how an operator drops a dead letter);
        // an id that is gone already is fine.
        for (id, _) in waiting {
            if let Err(err) = declared.stream.delete_message(id).await {
                tracing::debug!(queue, id, %err, "nothing to remove");
            }
        }
        Ok(())
    }

    async fn nack(&self, queue: &str, id: u64, delay: Duration) -> Result<(), QueueError> {
        let declared = self.queue(queue).await?;
        let Some(pulled) = declared.in_flight().remove(&id) else {
            return Ok(());
        };
        if declared.max_attempts > 0 && pulled.attempt >= declared.max_attempts {
            return self.bury(&declared, pulled).await;
        }
        let kind = AckKind::Nak((!delay.is_zero()).then_some(delay));
        pulled.message.double_ack_with(kind).await.map_err(storage)
    }

    async fn depth(&self, queue: &str) -> Result<QueueDepth, QueueError> {
        let declared = self.queue(queue).await?;
        let stream = declared.stream.get_info().await.map_err(storage)?;
        let mut consumer = declared.consumer.clone();
        let in_flight = consumer.info().await.map_err(storage)?.num_ack_pending as u64;
        let in_flight = in_flight.min(stream.state.messages);
        Ok(QueueDepth {
            ready: stream.state.messages - in_flight,
            in_flight,
            delayed: None,
        })
    }

    async fn browse(&self, queue: &str, max: usize) -> Result<Vec<Delivery>, QueueError> {
        let declared = self.queue(queue).await?;
        let state = declared.stream.get_info().await.map_err(storage)?.state;
        let mut found = Vec::new();
        if state.messages == 0 {
            return Ok(found);
        }
        let mut sequence = state.first_sequence;
        while found.len() < max && sequence <= state.last_sequence {
            let in_flight_here = declared.in_flight().contains_key(&sequence);
            if !in_flight_here && let Ok(message) = declared.stream.direct_get(sequence).await {
                let attempt = message
                    .headers
                    .get(ATTEMPTS)
                    .and_then(|v| v.as_str().parse().ok())
                    .unwrap_or(0);
                found.push(Delivery {
                    id: message.sequence,
                    payload: message.payload,
                    attempt,
                });
            }
            sequence += 1;
        }
        Ok(found)
    }

    async fn flush(&self) -> Result<(), QueueError> {
        self.nats.flush().await;
        Ok(())
    }

    async fn close(&self) -> Result<(), QueueError> {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        self.nats.flush().await;
        Ok(())
    }
}
