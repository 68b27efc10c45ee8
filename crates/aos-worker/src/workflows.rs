//! Workflows in the worker: the happenings the pipeline and the presence listener notice start
//! the tenant's matching workflows (pushed to the durable `workflows` queue), consumers run the
//! queued runs (each logged once, whatever the redeliveries), and the scheduler starts the
//! scheduled ones — on one worker of the cluster per second, through a lease.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aos_core::Kv;
use aos_core::queue::{Delivery, WorkQueue};
use aos_formats::interpret::{self, Engine};
use aos_storage::repo::{Scope, classes, workflows};
use aos_storage::{Storage, StorageError};
use aos_workflows::run::{self, Runtime};
use aos_workflows::{TenantWorkflows, Triggered, WORKFLOW_QUEUE, Workflow};
use chrono::{DateTime, Utc};
use prometheus_client::metrics::counter::Counter;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::lookups::Cached;
use aos_core::kv::{LOOK_LEASE, take_lease};

/// Counters of workflows (registered by the worker role).
#[derive(Clone, Default)]
pub struct WorkflowMetrics {
    pub started: Counter,
    pub succeeded: Counter,
    pub failed: Counter,
    /// Runs that could not be queued (the happening is logged, the run lost).
    pub lost: Counter,
}

/// Finds the workflows a happening starts and queues their runs.
pub struct Triggers {
    storage: Storage,
    queue: Arc<dyn WorkQueue>,
    engine: Engine,
    cache: Cached<i64, Arc<TenantWorkflows>>,
    metrics: WorkflowMetrics,
}

impl Triggers {
    pub fn new(storage: Storage, queue: Arc<dyn WorkQueue>, metrics: WorkflowMetrics) -> Triggers {
        Triggers {
            storage,
            queue,
            engine: interpret::engine(),
            cache: Cached::default(),
            metrics,
        }
    }

    /// The enabled workflows of a tenant (cached for a minute).
    /// Drops the workflows looked up (one may have changed).
    pub fn forget(&self) {
        self.cache.forget();
    }

    pub async fn of(&self, tenant: i64) -> Result<Arc<TenantWorkflows>, StorageError> {
        if let Some(found) = self.cache.get(&tenant) {
            return Ok(found);
        }
        let stored = workflows::enabled(&self.storage, Some(tenant)).await?;
        let names = if stored.is_empty() {
            HashMap::new()
        } else {
            classes::list(&self.storage, Scope::tenant(tenant))
                .await?
                .into_iter()
                .map(|c| (c.name, c.id))
                .collect()
        };
        let found = Arc::new(TenantWorkflows::new(&self.engine, stored, names));
        self.cache.put(tenant, found.clone());
        Ok(found)
    }

    /// Queues runs (durably); a failure is logged and counted, never passed on: the happening
    /// itself is stored already.
    pub async fn start(&self, runs: Vec<Triggered>) {
        if runs.is_empty() {
            return;
        }
        let count = runs.len() as u64;
        let payloads = runs.iter().map(Triggered::encode).collect();
        match self.queue.push_batch(WORKFLOW_QUEUE, payloads).await {
            Ok(_) => {
                self.metrics.started.inc_by(count);
            }
            Err(err) => {
                tracing::error!(%err, runs = count, "cannot queue workflow runs; they are lost");
                self.metrics.lost.inc_by(count);
            }
        }
    }
}

/// How many queued runs a consumer takes at once.
const RUNS_PER_PULL: usize = 8;
/// How long a run that could not be logged waits before it is tried again.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Runs queued workflow runs until `stop`.
pub async fn consume(
    queue: Arc<dyn WorkQueue>,
    storage: Storage,
    timeout: Duration,
    poll_wait: Duration,
    metrics: WorkflowMetrics,
    stop: CancellationToken,
) {
    let engine = interpret::engine();
    let runtime = Runtime {
        storage: &storage,
        engine: &engine,
        timeout,
    };
    loop {
        let pulled = tokio::select! {
            _ = stop.cancelled() => return,
            pulled = queue.pull(WORKFLOW_QUEUE, RUNS_PER_PULL, poll_wait) => pulled,
        };
        let batch = match pulled {
            Ok(batch) => batch,
            Err(err) => {
                tracing::error!(%err, "pulling from the workflow queue failed");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(RETRY_DELAY) => continue,
                }
            }
        };
        for delivery in batch {
            match run_one(&runtime, &delivery, &metrics).await {
                Ok(()) => {
                    if let Err(err) = queue.ack(WORKFLOW_QUEUE, &[delivery.id]).await {
                        tracing::warn!(%err, "acknowledging a workflow run failed; its redelivery will find it logged");
                    }
                }
                Err(err) => {
                    tracing::warn!(%err, "a workflow run could not be logged; it will be tried again");
                    if let Err(err) = queue.nack(WORKFLOW_QUEUE, delivery.id, RETRY_DELAY).await {
                        tracing::warn!(%err, "giving a workflow run back failed; it returns after the visibility timeout");
                    }
                }
            }
        }
    }
}

async fn run_one(
    runtime: &Runtime<'_>,
    delivery: &Delivery,
    metrics: &WorkflowMetrics,
) -> Result<(), StorageError> {
    let item = match Triggered::decode(&delivery.payload) {
        Ok(item) => item,
        Err(err) => {
            tracing::error!(%err, "dropped an unreadable workflow run");
            return Ok(());
        }
    };
    let Some(stored) = workflows::by_id(runtime.storage, item.workflow).await? else {
        return Ok(());
    };
    // A workflow disabled since it was triggered does not run (one run by hand still does).
    if !stored.enabled && item.key.is_some() {
        return Ok(());
    }
    let span = tracing::info_span!("workflow", name = %stored.name, tenant = stored.tenant_id);
    let outcome = run::perform(runtime, &stored, item.key.as_deref(), item.variables)
        .instrument(span.clone())
        .await?;
    let _entered = span.enter();
    match outcome {
        None => tracing::debug!("already ran for this happening"),
        Some(outcome) if outcome.result == "ok" => {
            metrics.succeeded.inc();
            tracing::info!(duration = ?outcome.duration, "workflow ran");
        }
        Some(outcome) => {
            metrics.failed.inc();
            tracing::warn!(result = outcome.result, error = ?outcome.error, "workflow run failed");
        }
    }
    Ok(())
}

/// The most runs one schedule makes per look (a schedule of every second after a long pause
/// does not flood the queue).
const MAX_CATCH_UP: usize = 10;

/// Starts scheduled workflows until `stop`: every second, on the worker holding the lease, each
/// enabled schedule's runs due since the previous look are queued (keyed by their time, so a
/// run due once is queued once even when the lease moves); runs left `running` for over twice
/// `timeout` (their worker crashed) are logged failed.
pub async fn schedules(
    storage: Storage,
    triggers: Arc<Triggers>,
    timeout: Duration,
    kv: Arc<dyn Kv>,
    node: String,
    stop: CancellationToken,
) {
    let every = Duration::from_secs(1);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: DateTime<Utc> = Utc::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = Utc::now();
        match take_lease(kv.as_ref(), "jobs.schedules", &node, LOOK_LEASE).await {
            Ok(true) => {}
            Ok(false) => {
                last = now;
                continue;
            }
            Err(err) => {
                tracing::warn!(%err, "cannot take the schedule lease");
                continue;
            }
        }
        let stored = match workflows::enabled(&storage, None).await {
            Ok(stored) => stored,
            Err(err) => {
                tracing::warn!(%err, "cannot look schedules up");
                continue;
            }
        };
        let mut due = Vec::new();
        for workflow in stored
            .iter()
            .filter(|w| w.trigger.get("kind").and_then(|k| k.as_str()) == Some("schedule"))
        {
            let Ok(compiled) =
                Workflow::compile(&triggers.engine, &workflow.trigger, &serde_json::json!([]))
            else {
                continue;
            };
            let mut after = last;
            let mut made = 0;
            while let Some(at) = compiled.next_run(after).filter(|at| *at <= now) {
                let mut variables = serde_json::Map::new();
                variables.insert("scheduled_at".into(), at.to_rfc3339().into());
                due.push(Triggered {
                    workflow: workflow.id,
                    tenant: workflow.tenant_id,
                    key: Some(format!(
                        "{}:schedule:{}",
                        workflow.id,
                        at.timestamp_millis()
                    )),
                    variables,
                });
                after = at;
                made += 1;
                if made >= MAX_CATCH_UP {
                    break;
                }
            }
        }
        triggers.start(due).await;
        // Runs a crashed worker left `running` are logged failed once well overdue.
        if let Ok(age) = chrono::Duration::from_std(timeout * 2)
            && let Err(err) = workflows::fail_interrupted(&storage, now - age).await
        {
            tracing::warn!(%err, "cannot close interrupted workflow runs");
        }
        last = now;
    }
}
