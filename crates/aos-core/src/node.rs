//! The node: one `aos` process, running the roles configuration gives it.
//!
//! The node starts its roles in order ([`RoleKind::ALL`]), watches them (a role reports a fatal
//! failure through its context), registers itself in the key-value store with a heartbeat, and on
//! shutdown stops the roles in reverse order within a bounded time.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::bus::Bus;
use crate::config::Settings;
use crate::extensions::Extensions;
use crate::kv::Kv;
use crate::metrics::Metrics;
use crate::net::NetHost;
use crate::queue::WorkQueue;
use crate::role::{Health, HealthStatus, Role, RoleContext, RoleError, RoleFailure, RoleKind};

/// How often a node renews its registration; the registration expires after three misses.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);

/// The key under which a node registers itself in the [`Kv`] store.
pub fn registration_key(node_id: &str) -> String {
    format!("nodes/{node_id}")
}

/// A listener of a node: what it serves, how, where.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ListenerInfo {
    /// The role it belongs to (`broker`, `web`), or `admin`.
    pub role: String,
    pub name: String,
    /// `mqtt`, `mqtt+tls`, `mqtt+ws`, `mqtt+wss`, `http`, `https`.
    pub protocol: String,
    /// The address it is bound to.
    pub address: String,
}

/// What a node is: reported on `/node` and in its registration.
#[derive(Clone, Debug, Serialize)]
pub struct NodeInfo {
    pub id: String,
    pub version: String,
    /// Roles linked into this binary.
    pub compiled_roles: Vec<RoleKind>,
    /// Roles this node runs.
    pub enabled_roles: Vec<RoleKind>,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub admin_listen: String,
    /// The listeners of its enabled roles and its admin listener.
    pub listeners: Vec<ListenerInfo>,
}

impl NodeInfo {
    pub fn new(
        id: String,
        compiled_roles: Vec<RoleKind>,
        enabled_roles: Vec<RoleKind>,
        admin_listen: String,
    ) -> Self {
        NodeInfo {
            id,
            version: crate::VERSION.to_string(),
            compiled_roles,
            enabled_roles,
            started_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            listeners: vec![ListenerInfo {
                role: "admin".into(),
                name: "admin".into(),
                protocol: "http".into(),
                address: admin_listen.clone(),
            }],
            admin_listen,
        }
    }

    /// Adds the listeners of its roles.
    pub fn with_listeners(mut self, listeners: impl IntoIterator<Item = ListenerInfo>) -> Self {
        self.listeners.extend(listeners);
        self
    }
}

/// The parts a node is assembled from.
pub struct NodeParts {
    pub info: NodeInfo,
    pub settings: Arc<Settings>,
    pub bus: Arc<dyn Bus>,
    pub queue: Arc<dyn WorkQueue>,
    pub kv: Arc<dyn Kv>,
    pub metrics: Metrics,
    pub net: Arc<NetHost>,
    pub extensions: Extensions,
    /// The roles to run, in start order.
    pub roles: Vec<Arc<dyn Role>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    Starting,
    Running,
    Stopping,
    Stopped,
}

impl NodeState {
    fn from_u8(v: u8) -> NodeState {
        match v {
            0 => NodeState::Starting,
            1 => NodeState::Running,
            2 => NodeState::Stopping,
            _ => NodeState::Stopped,
        }
    }
}

/// Why the node stopped running.
#[derive(Debug)]
pub enum Exit {
    /// A shutdown was requested (signal or [`Node::shutdown_token`]).
    Requested,
    /// A role failed while running.
    Failed(RoleFailure),
}

#[derive(Debug, Serialize)]
pub struct RoleHealth {
    pub role: RoleKind,
    #[serde(flatten)]
    pub health: Health,
}

#[derive(Debug, Serialize)]
pub struct NodeHealth {
    pub state: NodeState,
    pub ready: bool,
    pub roles: Vec<RoleHealth>,
}

/// What a node's registration holds (under [`registration_key`]): what it is, how it is, when
/// that was read.
#[derive(Debug, Serialize)]
pub struct Registration<'a> {
    #[serde(flatten)]
    pub info: &'a NodeInfo,
    pub health: NodeHealth,
    /// RFC 3339, UTC.
    pub at: String,
}

fn health_of(state: NodeState, roles: &[Arc<dyn Role>]) -> NodeHealth {
    let roles: Vec<RoleHealth> = roles
        .iter()
        .map(|role| RoleHealth {
            role: role.kind(),
            health: role.health(),
        })
        .collect();
    let ready = state == NodeState::Running && roles.iter().all(|r| r.health.is_ready());
    NodeHealth {
        state,
        ready,
        roles,
    }
}

pub struct Node {
    ctx: RoleContext,
    roles: Vec<Arc<dyn Role>>,
    started: Mutex<Vec<Arc<dyn Role>>>,
    failures: tokio::sync::Mutex<mpsc::UnboundedReceiver<RoleFailure>>,
    state: AtomicU8,
}

impl Node {
    pub fn new(parts: NodeParts) -> Node {
        let (tx, rx) = mpsc::unbounded_channel();
        let ctx = RoleContext {
            node: Arc::new(parts.info),
            settings: parts.settings,
            bus: parts.bus,
            queue: parts.queue,
            kv: parts.kv,
            metrics: parts.metrics,
            net: parts.net,
            extensions: Arc::new(parts.extensions),
            shutdown: CancellationToken::new(),
            failures: tx,
        };
        Node {
            ctx,
            roles: parts.roles,
            started: Mutex::new(Vec::new()),
            failures: tokio::sync::Mutex::new(rx),
            state: AtomicU8::new(0),
        }
    }

    pub fn info(&self) -> &NodeInfo {
        &self.ctx.node
    }

    pub fn context(&self) -> &RoleContext {
        &self.ctx
    }

    pub fn metrics(&self) -> &Metrics {
        &self.ctx.metrics
    }

    /// Cancelling this token asks the node to shut down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.ctx.shutdown.clone()
    }

    pub fn state(&self) -> NodeState {
        NodeState::from_u8(self.state.load(Ordering::Acquire))
    }

    fn set_state(&self, state: NodeState) {
        self.state.store(state as u8, Ordering::Release);
    }

    /// Starts every role in order. If one fails, those already started are stopped again (in
    /// reverse) and the error names the role.
    pub async fn start(&self) -> Result<(), (RoleKind, RoleError)> {
        for role in &self.roles {
            let kind = role.kind();
            tracing::info!(role = %kind, "starting role");
            if let Err(err) = role.start(&self.ctx).await {
                tracing::error!(role = %kind, %err, "role failed to start");
                self.stop_started(Instant::now() + self.ctx.settings.core().node.shutdown_timeout)
                    .await;
                return Err((kind, err));
            }
            self.started
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(role.clone());
        }
        self.set_state(NodeState::Running);
        self.spawn_heartbeat();
        tracing::info!(
            node = %self.ctx.node.id,
            roles = ?self.ctx.node.enabled_roles,
            "node running"
        );
        Ok(())
    }

    /// Registers the node in the key-value store and renews the registration, with the node's
    /// current health, until shutdown: what every node's web role shows of the cluster.
    fn spawn_heartbeat(&self) {
        let ctx = self.ctx.clone();
        let roles = self.roles.clone();
        tokio::spawn(async move {
            let key = registration_key(&ctx.node.id);
            let mut tick = tokio::time::interval(HEARTBEAT_INTERVAL);
            loop {
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => break,
                    _ = tick.tick() => {
                        // The heartbeat runs while the node runs.
                        let registration = Registration {
                            info: &ctx.node,
                            health: health_of(NodeState::Running, &roles),
                            at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
                        };
                        let body = match serde_json::to_vec(&registration) {
                            Ok(body) => Bytes::from(body),
                            Err(err) => {
                                tracing::error!(%err, "cannot encode the node registration");
                                break;
                            }
                        };
                        if let Err(err) = ctx.kv.put(&key, body, Some(HEARTBEAT_INTERVAL * 3)).await {
                            tracing::warn!(%err, "node heartbeat failed");
                        }
                    }
                }
            }
            if let Err(err) = ctx.kv.delete(&key).await {
                tracing::warn!(%err, "could not remove the node registration");
            }
        });
    }

    /// Resolves when the node should stop: a requested shutdown or a failed role.
    pub async fn wait(&self) -> Exit {
        let mut failures = self.failures.lock().await;
        tokio::select! {
            _ = self.ctx.shutdown.cancelled() => Exit::Requested,
            failure = failures.recv() => match failure {
                Some(failure) => Exit::Failed(failure),
                None => Exit::Requested,
            },
        }
    }

    /// Stops the roles in reverse start order, giving the whole shutdown at most `timeout`.
    /// Returns the roles that did not stop cleanly in time.
    pub async fn stop(&self, timeout: Duration) -> Vec<RoleKind> {
        self.set_state(NodeState::Stopping);
        self.ctx.shutdown.cancel();
        let unclean = self.stop_started(Instant::now() + timeout).await;
        self.set_state(NodeState::Stopped);
        unclean
    }

    async fn stop_started(&self, deadline: Instant) -> Vec<RoleKind> {
        let started: Vec<Arc<dyn Role>> =
            std::mem::take(&mut *self.started.lock().unwrap_or_else(|e| e.into_inner()));
        let mut unclean = Vec::new();
        for role in started.iter().rev() {
            let kind = role.kind();
            tracing::info!(role = %kind, "stopping role");
            match tokio::time::timeout_at(deadline, role.stop()).await {
                Ok(Ok(())) => tracing::info!(role = %kind, "role stopped"),
                Ok(Err(err)) => {
                    tracing::error!(role = %kind, %err, "role did not stop cleanly");
                    unclean.push(kind);
                }
                Err(_) => {
                    tracing::error!(role = %kind, "role did not stop within the shutdown timeout");
                    unclean.push(kind);
                }
            }
        }
        unclean
    }

    /// The node's and each role's health; ready when running and every role serves.
    pub fn health(&self) -> NodeHealth {
        health_of(self.state(), &self.roles)
    }

    /// Alive unless a role has failed.
    pub fn is_live(&self) -> bool {
        !self
            .roles
            .iter()
            .any(|role| role.health().status == HealthStatus::Failed)
    }
}
