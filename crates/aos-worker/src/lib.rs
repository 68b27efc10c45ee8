//! `aos-worker`: the worker role — it consumes the acquisition queue and runs scheduled jobs.
//!
//! Consumers pull a batch of device messages, run it through the [`pipeline`] (topic → device,
//! payload → platform message ([`pms`]) through the device's format (`aos-formats`), then
//! message log, ledger and latest values in one transaction) and acknowledge it; a batch that cannot be written is given
//! back and delivered again (after `queue.max_attempts` deliveries it waits in the dead letters).
//! Stored messages, level changes and devices' presence start workflows ([`workflows`], run from
//! a durable queue; scheduled ones too), commands go out through the broker nodes
//! ([`commands`]), and scheduled jobs (see [`jobs`]) run on one worker of the cluster per period.
//!
//! What it needs from its host (the [`RoleContext`] a node gives it): the `[worker]` settings,
//! a [`Storage`] among the extensions, the work queue (`acquisition`, `workflows`), the bus
//! (command offers, presence, live updates) and the key-value store (job leases, live-watch
//! marks). The pipeline alone needs only a migrated [`Storage`] and batches of
//! [`aos_core::acquisition::Acquired`] envelopes: `examples/embedded_pipeline.rs` runs it over
//! an embedded queue and SQLite.

pub mod commands;
pub mod jobs;
pub mod lookups;
pub mod pipeline;
pub mod pms;
pub mod workflows;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aos_core::acquisition::{self, ACQUISITION_QUEUE};
use aos_core::live::LiveFeed;
use aos_core::queue::{Delivery, WorkQueue};
use aos_core::role::{Health, HealthCell, HealthStatus, Role, RoleContext, RoleError, RoleKind};
use aos_storage::Storage;
use aos_workflows::WORKFLOW_QUEUE;
use async_trait::async_trait;
use commands::{CommandMetrics, Dispatcher};
use pipeline::{Pipeline, PipelineMetrics};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use workflows::{Triggers, WorkflowMetrics};

/// The `[worker]` configuration section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Concurrent consumers of the acquisition queue (default: as many as the database writes
    /// to good effect at once, [`Storage::parallel_writers`]).
    pub consumers: Option<usize>,
    /// Device messages a consumer stores per batch (a queue item carries one message or a group
    /// of them: a batch may exceed this by part of one item's group).
    pub batch_size: usize,
    /// How long an idle consumer waits for items in one pull.
    #[serde(with = "humantime_serde")]
    pub poll_wait: Duration,
    /// Once a batch has its first message, how long to wait for more before processing it (few
    /// large transactions store far more than many small ones).
    #[serde(with = "humantime_serde")]
    pub batch_linger: Duration,
    /// Ledger rows older than this are deleted ("0s": kept forever).
    #[serde(with = "humantime_serde")]
    pub ledger_retention: Duration,
    /// Message-log entries older than this are deleted ("0s": kept forever).
    #[serde(with = "humantime_serde")]
    pub message_log_retention: Duration,
    /// How often the retention job runs (on one worker of the cluster per period).
    #[serde(with = "humantime_serde")]
    pub retention_interval: Duration,
    /// Message-log entries older than this are archived by the retention job ("0s": never).
    #[serde(with = "humantime_serde")]
    pub message_log_archive_after: Duration,
    /// Where archived message-log entries are written (default: `archive` in the data
    /// directory; in a cluster, a directory every worker shares).
    pub archive_dir: Option<std::path::PathBuf>,
    /// Concurrent runners of queued workflow runs.
    pub workflow_consumers: usize,
    /// The longest one workflow run may take; then it stops and is logged `timeout`.
    #[serde(with = "humantime_serde")]
    pub workflow_timeout: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            consumers: None,
            batch_size: 1000,
            poll_wait: Duration::from_secs(1),
            batch_linger: Duration::from_millis(20),
            ledger_retention: Duration::from_secs(365 * 24 * 3600),
            message_log_retention: Duration::from_secs(90 * 24 * 3600),
            retention_interval: Duration::from_secs(3600),
            message_log_archive_after: Duration::from_secs(30 * 24 * 3600),
            archive_dir: None,
            workflow_consumers: 2,
            workflow_timeout: aos_workflows::run::DEFAULT_TIMEOUT,
        }
    }
}

struct Running {
    stop: CancellationToken,
    /// The consumers and the scheduled jobs.
    consumers: Vec<JoinHandle<()>>,
}

/// The worker role.
#[derive(Default)]
pub struct WorkerRole {
    running: Mutex<Option<Running>>,
    health: Arc<HealthCell>,
    metrics: PipelineMetrics,
    command_metrics: CommandMetrics,
    workflow_metrics: WorkflowMetrics,
}

impl WorkerRole {
    pub fn new() -> Self {
        WorkerRole::default()
    }
}

/// How long a batch that could not be written waits before it is delivered again.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// The device messages queue items carry.
fn messages_in(items: &[Delivery]) -> usize {
    items
        .iter()
        .map(|item| acquisition::messages_in(&item.payload))
        .sum()
}

/// Queue items to pull for `wanted` more messages, at `per_item` messages an item (as in the
/// consumer's last batch).
fn items_for(wanted: usize, per_item: usize) -> usize {
    wanted.div_ceil(per_item.max(1)).max(1)
}

/// Adds what arrives within the linger time to a batch, up to the batch size in messages.
async fn top_up(
    queue: &dyn WorkQueue,
    mut batch: Vec<Delivery>,
    config: &WorkerConfig,
    per_item: usize,
) -> Vec<Delivery> {
    let deadline = tokio::time::Instant::now() + config.batch_linger;
    let mut messages = messages_in(&batch);
    while messages < config.batch_size {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            break;
        }
        let wanted = items_for(config.batch_size - messages, per_item);
        match queue.pull(ACQUISITION_QUEUE, wanted, left).await {
            Ok(more) if !more.is_empty() => {
                messages += messages_in(&more);
                batch.extend(more);
            }
            // Nothing more in time, or a pull error (the next pull reports it): go with what is in hand.
            _ => break,
        }
    }
    batch
}

/// Drops what the pipeline and the triggers looked up whenever a change is announced, until
/// `stop`.
async fn forget_on_change(
    mut changes: aos_core::Subscription,
    pipeline: Arc<Pipeline>,
    triggers: Arc<Triggers>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            next = changes.next() => {
                if next.is_none() {
                    return;
                }
                pipeline.forget();
                triggers.forget();
            }
        }
    }
}

/// Pulls, processes and acknowledges batches until `stop`; the batch in hand is finished first.
async fn consume(
    queue: Arc<dyn WorkQueue>,
    pipeline: Arc<Pipeline>,
    config: WorkerConfig,
    stop: CancellationToken,
    health: Arc<HealthCell>,
) {
    // Messages per queue item in the last batch: groups grow with the load.
    let mut per_item = 1;
    loop {
        let wanted = items_for(config.batch_size, per_item);
        let pulled = tokio::select! {
            _ = stop.cancelled() => return,
            pulled = queue.pull(ACQUISITION_QUEUE, wanted, config.poll_wait) => pulled,
        };
        let batch = match pulled {
            Ok(batch) if batch.is_empty() => continue,
            Ok(batch) => top_up(queue.as_ref(), batch, &config, per_item).await,
            Err(err) => {
                tracing::error!(%err, "pulling from the acquisition queue failed");
                health.set_with_detail(HealthStatus::Degraded, err.to_string());
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(RETRY_DELAY) => {}
                }
                continue;
            }
        };
        let messages = messages_in(&batch);
        per_item = (messages / batch.len()).max(1);
        let span = tracing::info_span!("batch", items = batch.len(), messages);
        let retry = pipeline.process(&batch).instrument(span).await;
        let done: Vec<u64> = batch
            .iter()
            .map(|d| d.id)
            .filter(|id| !retry.contains(id))
            .collect();
        if let Err(err) = queue.ack(ACQUISITION_QUEUE, &done).await {
            // Stored already: the redelivery will write nothing twice.
            tracing::warn!(%err, "acknowledging a batch failed; it will be delivered again");
        }
        if retry.is_empty() {
            health.set(HealthStatus::Healthy);
        } else {
            health.set_with_detail(
                HealthStatus::Degraded,
                format!(
                    "messages of {} queue items could not be stored",
                    retry.len()
                ),
            );
        }
        for id in retry {
            if let Err(err) = queue.nack(ACQUISITION_QUEUE, id, RETRY_DELAY).await {
                tracing::warn!(%err, "giving a message back failed; it returns after the visibility timeout");
            }
        }
    }
}

#[async_trait]
impl Role for WorkerRole {
    fn kind(&self) -> RoleKind {
        RoleKind::Worker
    }

    async fn start(&self, ctx: &RoleContext) -> Result<(), RoleError> {
        let config: WorkerConfig = ctx.settings.section("worker")?;
        for queue in [ACQUISITION_QUEUE, WORKFLOW_QUEUE] {
            ctx.queue
                .declare(queue, ctx.settings.core().queue.options())
                .await
                .map_err(RoleError::other)?;
        }
        let storage = ctx
            .extensions
            .get::<Storage>()
            .ok_or_else(|| RoleError::other("the worker role needs the platform's storage"))?;
        ctx.metrics.register(
            "worker_processed_messages",
            "Device messages processed and stored",
            self.metrics.processed.clone(),
        );
        ctx.metrics.register(
            "worker_failed_messages",
            "Device messages logged as failed (unknown device, bad topic, undecodable payload)",
            self.metrics.failed.clone(),
        );
        ctx.metrics.register(
            "ledger_rows",
            "Ledger rows written (one per attribute value)",
            self.metrics.ledger_rows.clone(),
        );
        for (name, help, counter) in [
            (
                "commands_offered",
                "Commands offered to the broker nodes",
                &self.command_metrics.offered,
            ),
            (
                "commands_sent",
                "Commands handed to their device's session",
                &self.command_metrics.sent,
            ),
            (
                "commands_expired",
                "Commands expired before their device acknowledged them",
                &self.command_metrics.expired,
            ),
            (
                "workflow_runs_started",
                "Workflow runs queued by their triggers",
                &self.workflow_metrics.started,
            ),
            (
                "workflow_runs_succeeded",
                "Workflow runs that ended ok",
                &self.workflow_metrics.succeeded,
            ),
            (
                "workflow_runs_failed",
                "Workflow runs that failed or timed out",
                &self.workflow_metrics.failed,
            ),
            (
                "workflow_runs_lost",
                "Workflow runs that could not be queued",
                &self.workflow_metrics.lost,
            ),
        ] {
            ctx.metrics.register(name, help, counter.clone());
        }
        let triggers = Arc::new(Triggers::new(
            (*storage).clone(),
            ctx.queue.clone(),
            self.workflow_metrics.clone(),
        ));
        let live = Arc::new(LiveFeed::new(ctx.bus.clone(), ctx.kv.clone()));
        let pipeline = Arc::new(
            Pipeline::new((*storage).clone(), self.metrics.clone())
                .with_triggers(triggers.clone())
                .with_live(live.clone()),
        );
        let dispatcher = Arc::new(Dispatcher::new(
            (*storage).clone(),
            ctx.bus.clone(),
            pipeline.formats(),
            triggers.clone(),
            live,
            self.command_metrics.clone(),
        ));
        let stop = CancellationToken::new();
        let health = &self.health;
        let changes = ctx
            .bus
            .subscribe(aos_core::changes::SUBJECT)
            .await
            .map_err(|err| RoleError::other(format!("cannot follow announced changes: {err}")))?;
        let forgetting =
            forget_on_change(changes, pipeline.clone(), triggers.clone(), stop.clone());
        let consumer_count = config
            .consumers
            .unwrap_or_else(|| storage.parallel_writers())
            .max(1);
        let mut consumers: Vec<JoinHandle<()>> = (0..consumer_count)
            .map(|_| {
                health.supervise(
                    "an acquisition consumer",
                    &stop,
                    consume(
                        ctx.queue.clone(),
                        pipeline.clone(),
                        config.clone(),
                        stop.clone(),
                        health.clone(),
                    ),
                )
            })
            .collect();
        for _ in 0..config.workflow_consumers.max(1) {
            consumers.push(health.supervise(
                "a workflow consumer",
                &stop,
                workflows::consume(
                    ctx.queue.clone(),
                    (*storage).clone(),
                    config.workflow_timeout,
                    config.poll_wait,
                    self.workflow_metrics.clone(),
                    stop.clone(),
                ),
            ));
        }
        consumers.push(health.supervise("the change announcements", &stop, forgetting));
        consumers.push(health.supervise(
            "the workflow schedules",
            &stop,
            workflows::schedules(
                (*storage).clone(),
                triggers,
                config.workflow_timeout,
                ctx.kv.clone(),
                ctx.node.id.clone(),
                stop.clone(),
            ),
        ));
        consumers.push(health.supervise(
            "the command dispatcher",
            &stop,
            commands::run(
                dispatcher,
                ctx.kv.clone(),
                ctx.node.id.clone(),
                stop.clone(),
            ),
        ));
        let keep = |age: Duration| (!age.is_zero()).then_some(age);
        consumers.push(health.supervise(
            "the retention job",
            &stop,
            jobs::retention_job(
                (*storage).clone(),
                ctx.kv.clone(),
                ctx.node.id.clone(),
                jobs::Retention {
                    ledger: keep(config.ledger_retention),
                    messages: keep(config.message_log_retention),
                    archive: keep(config.message_log_archive_after).map(|after| jobs::Archive {
                        after,
                        dir:
                            config.archive_dir.clone().unwrap_or_else(|| {
                                ctx.settings.core().node.data_dir.join("archive")
                            }),
                    }),
                    every: config.retention_interval.max(Duration::from_millis(100)),
                },
                stop.clone(),
            ),
        ));
        *self.running.lock().unwrap_or_else(|e| e.into_inner()) = Some(Running { stop, consumers });
        self.health.set(HealthStatus::Healthy);
        tracing::info!(
            consumers = consumer_count,
            "worker consuming the acquisition queue"
        );
        Ok(())
    }

    async fn stop(&self) -> Result<(), RoleError> {
        self.health.set(HealthStatus::Stopping);
        let running = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(running) = running {
            running.stop.cancel();
            for consumer in running.consumers {
                if let Err(err) = consumer.await {
                    tracing::error!(%err, "a worker consumer ended abnormally");
                }
            }
        }
        self.health.set(HealthStatus::Stopped);
        Ok(())
    }

    fn health(&self) -> Health {
        self.health.get()
    }
}
