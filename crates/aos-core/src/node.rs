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
use crate::kind::RoleKind;
use crate::kv::Kv;
use crate::metrics::Metrics;
use crate::net::NetHost;
pub use crate::node_info::{ListenerInfo, NodeInfo};
use crate::queue::WorkQueue;
use crate::role::{Health, HealthStatus, Role, RoleContext, RoleError, RoleFailure};
use crate::state::StateStore;

/// The key prefix of the nodes' registrations in the [`Kv`] store.
pub const REGISTRATIONS: &str = "nodes";

/// The key under which a node registers itself in the [`Kv`] store.
pub fn registration_key(node_id: &str) -> String {
    format!("{REGISTRATIONS}.{node_id}")
}

/// The nodes registered now (live: a registration lapses unless renewed); one that cannot be
/// read is logged and left out.
pub async fn registered(kv: &dyn Kv) -> Result<Vec<Registration>, crate::kv::KvError> {
    Ok(kv
        .list(REGISTRATIONS)
        .await?
        .into_iter()
        .filter_map(|entry| match serde_json::from_slice(&entry.value) {
            Ok(registration) => Some(registration),
            Err(err) => {
                tracing::warn!(key = %entry.key, %err, "a node registration that cannot be read");
                None
            }
        })
        .collect())
}

/// The parts a node is assembled from.
pub struct NodeParts {
    pub info: NodeInfo,
    pub settings: Arc<Settings>,
    pub bus: Arc<dyn Bus>,
    pub queue: Arc<dyn WorkQueue>,
    pub kv: Arc<dyn Kv>,
    /// Durable records kept across restarts (the broker's retained messages and sessions).
    pub state: Arc<dyn StateStore>,
    pub metrics: Metrics,
    pub net: Arc<NetHost>,
    pub extensions: Extensions,
    /// The roles to run, in start order.
    pub roles: Vec<Arc<dyn Role>>,
    /// Roles that may be switched on or off while the node runs (`node.switchable_roles`).
    pub switchable: Vec<RoleKind>,
    /// Switchable roles that do not run at start, ready to be switched on.
    pub spare: Vec<Arc<dyn Role>>,
}

/// The bus subject on which node `id` takes role switches ([`RoleSwitch`]).
pub fn control_subject(node_id: &str) -> String {
    format!("nodes.{node_id}.roles")
}

/// Switch `role` on or off (a message to a node's [`control_subject`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RoleSwitch {
    pub role: RoleKind,
    pub enabled: bool,
}

/// Why a role could not be switched.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error("this node does not allow switching the {0} role (node.switchable_roles)")]
    NotSwitchable(RoleKind),
    #[error("the {0} role cannot start: {1}")]
    Start(RoleKind, RoleError),
    #[error("the {0} role did not stop cleanly: {1}")]
    Stop(RoleKind, RoleError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
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

#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct RoleHealth {
    pub role: RoleKind,
    #[serde(flatten)]
    pub health: Health,
}

#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct NodeHealth {
    pub state: NodeState,
    pub ready: bool,
    pub roles: Vec<RoleHealth>,
}

/// What a node's registration holds (under [`registration_key`]): what it is, how it is, when
/// that was read.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Registration {
    #[serde(flatten)]
    pub info: NodeInfo,
    /// The roles running now (switching changes them; `enabled_roles` are those it started
    /// with).
    pub running_roles: Vec<RoleKind>,
    /// The roles it allows to switch on or off.
    pub switchable_roles: Vec<RoleKind>,
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
    /// The roles it starts with.
    roles: Vec<Arc<dyn Role>>,
    /// Switchable roles not started at first.
    spare: Vec<Arc<dyn Role>>,
    switchable: Vec<RoleKind>,
    /// The roles running, in start order.
    started: Arc<Mutex<Vec<Arc<dyn Role>>>>,
    /// One switch at a time.
    switching: tokio::sync::Mutex<()>,
    /// Wakes the heartbeat to publish a change at once.
    changed: Arc<tokio::sync::Notify>,
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
            state: parts.state,
            metrics: parts.metrics,
            net: parts.net,
            extensions: Arc::new(parts.extensions),
            shutdown: CancellationToken::new(),
            failures: tx,
        };
        Node {
            ctx,
            roles: parts.roles,
            spare: parts.spare,
            switchable: parts.switchable,
            started: Arc::new(Mutex::new(Vec::new())),
            switching: tokio::sync::Mutex::new(()),
            changed: Arc::new(tokio::sync::Notify::new()),
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
    /// current roles and health, until shutdown (and at once after a switch): what every node's
    /// web role shows of the cluster.
    fn spawn_heartbeat(&self) {
        let ctx = self.ctx.clone();
        let started = self.started.clone();
        let switchable = self.switchable.clone();
        let changed = self.changed.clone();
        tokio::spawn(async move {
            let key = registration_key(&ctx.node.id);
            let every = ctx.settings.core().node.heartbeat();
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                    _ = changed.notified() => {}
                }
                let running: Vec<Arc<dyn Role>> =
                    started.lock().unwrap_or_else(|e| e.into_inner()).clone();
                // The heartbeat runs while the node runs.
                let registration = Registration {
                    info: ctx.node.as_ref().clone(),
                    running_roles: running.iter().map(|r| r.kind()).collect(),
                    switchable_roles: switchable.clone(),
                    health: health_of(NodeState::Running, &running),
                    at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
                };
                let body = match serde_json::to_vec(&registration) {
                    Ok(body) => Bytes::from(body),
                    Err(err) => {
                        tracing::error!(%err, "cannot encode the node registration");
                        break;
                    }
                };
                if let Err(err) = ctx
                    .kv
                    .put(&key, body, Some(crate::kv::ttl(every * 3)))
                    .await
                {
                    tracing::warn!(%err, "node heartbeat failed");
                }
            }
            if let Err(err) = ctx.kv.delete(&key).await {
                tracing::warn!(%err, "could not remove the node registration");
            }
        });
    }

    /// Switches a role on or off while the node runs, if the node allows it for that role.
    /// Switching on a running role, or off one that is not running, does nothing.
    pub async fn switch(&self, kind: RoleKind, enabled: bool) -> Result<(), SwitchError> {
        if !self.switchable.contains(&kind) {
            return Err(SwitchError::NotSwitchable(kind));
        }
        let _one_at_a_time = self.switching.lock().await;
        let running = self
            .started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|r| r.kind() == kind)
            .cloned();
        match (running, enabled) {
            (Some(_), true) | (None, false) => return Ok(()),
            (Some(role), false) => {
                tracing::info!(role = %kind, "switching the role off");
                self.started
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .retain(|r| r.kind() != kind);
                role.stop().await.map_err(|e| SwitchError::Stop(kind, e))?;
            }
            (None, true) => {
                let Some(role) = self
                    .roles
                    .iter()
                    .chain(&self.spare)
                    .find(|r| r.kind() == kind)
                else {
                    return Err(SwitchError::NotSwitchable(kind));
                };
                tracing::info!(role = %kind, "switching the role on");
                role.start(&self.ctx)
                    .await
                    .map_err(|e| SwitchError::Start(kind, e))?;
                self.started
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(role.clone());
            }
        }
        self.changed.notify_one();
        Ok(())
    }

    /// Takes role switches from the bus (sent by any node's web role) until shutdown.
    pub async fn serve_control(self: Arc<Self>) {
        let subject = control_subject(&self.ctx.node.id);
        let mut switches = match self.ctx.bus.subscribe(&subject).await {
            Ok(subscription) => subscription,
            Err(err) => {
                tracing::error!(%err, "cannot take role switches");
                return;
            }
        };
        loop {
            let message = tokio::select! {
                _ = self.ctx.shutdown.cancelled() => break,
                message = switches.next() => message,
            };
            let Some(message) = message else { break };
            match serde_json::from_slice::<RoleSwitch>(&message.payload) {
                Ok(switch) => {
                    if let Err(err) = self.switch(switch.role, switch.enabled).await {
                        tracing::error!(%err, "a role switch failed");
                    }
                }
                Err(err) => tracing::warn!(%err, "ignored a malformed role switch"),
            }
        }
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
        match self.state() {
            // While it starts, every role it starts with, as far as it got.
            NodeState::Starting => health_of(NodeState::Starting, &self.roles),
            state => {
                let running = self
                    .started
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                health_of(state, &running)
            }
        }
    }

    /// Alive unless a role has failed.
    pub fn is_live(&self) -> bool {
        !self
            .roles
            .iter()
            .chain(&self.spare)
            .any(|role| role.health().status == HealthStatus::Failed)
    }
}
