//! The role trait: what a broker, a worker or a web role looks like to the node.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use crate::kind::RoleKind;

use crate::bus::Bus;
use crate::config::Settings;
use crate::extensions::Extensions;
use crate::kv::Kv;
use crate::metrics::Metrics;
use crate::net::NetHost;
use crate::node_info::NodeInfo;
use crate::queue::WorkQueue;
use crate::state::StateStore;

/// How a role is doing, as reported on the admin listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Starting,
    Healthy,
    Degraded,
    Stopping,
    Stopped,
    Failed,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Health {
    pub status: HealthStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Health {
    pub fn new(status: HealthStatus) -> Self {
        Health {
            status,
            detail: None,
        }
    }

    pub fn with_detail(status: HealthStatus, detail: impl Into<String>) -> Self {
        Health {
            status,
            detail: Some(detail.into()),
        }
    }

    /// Ready means: serving as intended (a degraded role still serves).
    pub fn is_ready(&self) -> bool {
        matches!(self.status, HealthStatus::Healthy | HealthStatus::Degraded)
    }
}

/// Why a role could not start or stop.
#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    /// The role's configuration section is invalid (the message names key, source and expectation).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A listener could not be bound.
    #[error(transparent)]
    Bind(#[from] crate::net::BindError),
    #[error("{0}")]
    Other(String),
}

impl RoleError {
    pub fn other(msg: impl fmt::Display) -> Self {
        RoleError::Other(msg.to_string())
    }
}

/// A role: one function of the platform that a node can run.
///
/// `start` returns once the role serves (its listeners are bound, its tasks spawned); `stop`
/// returns once it has stopped accepting new work and drained what was in flight. A role that
/// fails after start reports it through [`RoleContext::fail`], which shuts the node down.
#[async_trait]
pub trait Role: Send + Sync + 'static {
    fn kind(&self) -> RoleKind;
    async fn start(&self, ctx: &RoleContext) -> Result<(), RoleError>;
    async fn stop(&self) -> Result<(), RoleError>;
    fn health(&self) -> Health;
}

/// A role that failed while running.
#[derive(Debug)]
pub struct RoleFailure {
    pub role: RoleKind,
    pub error: String,
}

/// Everything a role starts with: the node, its configuration, the seams and shared services.
#[derive(Clone)]
pub struct RoleContext {
    pub node: Arc<NodeInfo>,
    pub settings: Arc<Settings>,
    pub bus: Arc<dyn Bus>,
    pub queue: Arc<dyn WorkQueue>,
    pub kv: Arc<dyn Kv>,
    /// Durable records kept across restarts (the broker's retained messages and sessions).
    pub state: Arc<dyn StateStore>,
    pub metrics: Metrics,
    pub net: Arc<NetHost>,
    /// Shared services that `aos-core` does not know by type (storage, auth), keyed by type.
    pub extensions: Arc<Extensions>,
    /// Cancelled when the node begins to shut down.
    pub shutdown: CancellationToken,
    pub(crate) failures: mpsc::UnboundedSender<RoleFailure>,
}

impl RoleContext {
    /// Report that a running role failed; the node shuts down and exits non-zero.
    pub fn fail(&self, role: RoleKind, error: impl fmt::Display) {
        let _ = self.failures.send(RoleFailure {
            role,
            error: error.to_string(),
        });
    }
}

/// A role's current health, written by the role and read by the admin listener.
pub struct HealthCell(std::sync::Mutex<Health>);

impl Default for HealthCell {
    fn default() -> Self {
        HealthCell(std::sync::Mutex::new(Health::new(HealthStatus::Starting)))
    }
}

impl HealthCell {
    /// Sets the role's health. A failure stays until the role starts or stops again: a part
    /// that recovers does not hide another that failed.
    pub fn set(&self, status: HealthStatus) {
        self.replace(Health::new(status));
    }

    pub fn set_with_detail(&self, status: HealthStatus, detail: impl Into<String>) {
        self.replace(Health::with_detail(status, detail));
    }

    fn replace(&self, health: Health) {
        let mut current = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let transition = matches!(
            health.status,
            HealthStatus::Starting | HealthStatus::Stopping | HealthStatus::Stopped
        );
        if current.status != HealthStatus::Failed || transition {
            *current = health;
        }
    }

    pub fn get(&self) -> Health {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Runs `task`, a loop the role needs while it runs (a subscription, a consumer, a job), in
    /// the background. If it ends before `stop` is cancelled — it returned or panicked — the
    /// role reports itself failed, naming `what`, instead of staying healthy without it.
    pub fn supervise<F>(
        self: &Arc<Self>,
        what: &'static str,
        stop: &CancellationToken,
        task: F,
    ) -> tokio::task::JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let health = self.clone();
        let stop = stop.clone();
        let running = tokio::spawn(task);
        tokio::spawn(async move {
            let how = match running.await {
                Ok(()) => "ended",
                Err(err) if err.is_panic() => "panicked",
                Err(_) => "was cancelled",
            };
            if !stop.is_cancelled() {
                tracing::error!(
                    task = what,
                    how,
                    "a background task of a running role stopped"
                );
                health.set_with_detail(HealthStatus::Failed, format!("{what} {how}"));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_loop_that_ends_while_the_role_runs_fails_the_role() {
        let health = Arc::new(HealthCell::default());
        health.set(HealthStatus::Healthy);
        let stop = CancellationToken::new();
        health
            .supervise("the test subscription", &stop, async {})
            .await
            .expect("supervisor");
        let now = health.get();
        assert_eq!(now.status, HealthStatus::Failed);
        assert_eq!(now.detail.as_deref(), Some("the test subscription ended"));
        // Another part recovering does not hide it; stopping and starting again clear it.
        health.set(HealthStatus::Healthy);
        assert_eq!(health.get().status, HealthStatus::Failed);
        health.set(HealthStatus::Stopped);
        health.set(HealthStatus::Healthy);
        assert_eq!(health.get().status, HealthStatus::Healthy);

        health
            .supervise("a panicking loop", &stop, async { panic!("boom") })
            .await
            .expect("supervisor");
        assert_eq!(
            health.get().detail.as_deref(),
            Some("a panicking loop panicked")
        );
    }

    #[tokio::test]
    async fn a_loop_that_ends_on_stop_leaves_the_health_alone() {
        let health = Arc::new(HealthCell::default());
        health.set(HealthStatus::Healthy);
        let stop = CancellationToken::new();
        let waiting = stop.clone();
        let supervisor = health.supervise("the loop", &stop, async move {
            waiting.cancelled().await;
        });
        stop.cancel();
        supervisor.await.expect("supervisor");
        assert_eq!(health.get().status, HealthStatus::Healthy);
    }
}
