//! `aos-broker`: the broker role — an MQTT 3.1.1 and 5.0 broker on ntex-mqtt.
//!
//! ntex-mqtt provides the codec and the connection framework; this crate is the broker proper:
//! sessions ([`session`]) and what they deliver ([`delivery`]), the subscription tree and topic
//! rules ([`topic`]), routing and retained messages ([`broker`]), access control ([`auth`]), what
//! survives a restart ([`persist`], over the node's state store), the per-connection glue
//! (`connection`), what it tells the platform's broker view (`admin`), and in a cluster the
//! routing between nodes (`cluster`) and the wills of dead nodes' clients (`orphans`). It runs as a role of the `aos` binary, or embedded through [`BrokerRole`].
//!
//! What it needs from its host (the [`RoleContext`] a node gives it): the `[broker]` settings;
//! the state store (retained messages, persistent sessions); the work queue, into which device
//! messages go (`acquisition`); the bus (command offers, presence); optionally a device and API
//! key directory ([`aos_core::access::Clients`] among the extensions — without it, only
//! `[broker.auth]` users sign in). Another program can replace the hand-off to the platform
//! with its own [`broker::PublishHook`]: `examples/embedded_broker.rs` runs the broker alone
//! with one.

pub mod acquisition;
mod admin;
pub mod auth;
pub mod broker;
mod cluster;
pub mod commands;
mod config;
mod connection;
pub mod delivery;
pub mod message;
pub mod metrics;
mod orphans;
pub mod persist;
mod proxy;
mod server;
pub mod session;
pub mod topic;

pub use config::{BrokerConfig, ListenerConfig, TlsConfig, Transport};

use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aos_core::access::{Clients, Revocation};
use aos_core::acquisition::ACQUISITION_QUEUE;

use aos_core::net::{ServerSlot, bind_tcp};
use aos_core::role::{Health, HealthCell, HealthStatus, Role, RoleContext, RoleError, RoleKind};
use aos_core::state::StateUpdate;
use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::acquisition::AcquisitionHook;
use crate::auth::{Authenticator, ConfigAuthenticator};
use crate::broker::{Broker, BrokerLimits};
use crate::cluster::ClusterRoutes;
use crate::connection::ListenerContext;
use crate::metrics::BrokerMetrics;
use crate::session::QueueLimits;

/// Binds the main listener and every `[[broker.listeners]]` entry, loading TLS set-ups.
fn bind_listeners(
    broker: &Arc<Broker>,
    config: &Arc<BrokerConfig>,
) -> Result<Vec<server::Bound>, RoleError> {
    let connections = Arc::new(AtomicUsize::new(0));
    let context = |name: &str, limit: Option<usize>| {
        Arc::new(ListenerContext {
            broker: broker.clone(),
            config: config.clone(),
            name: name.into(),
            connections: connections.clone(),
            listener_connections: AtomicUsize::new(0),
            listener_limit: limit,
        })
    };
    let mut bound = vec![server::Bound {
        ctx: context("mqtt", None),
        listener: bind_tcp(config.listen, "MQTT listener", "broker.listen")?,
        transport: Transport::Tcp,
        tls: None,
        ws_path: "/mqtt".into(),
        proxy_protocol: config.proxy_protocol,
    }];
    for (i, listener) in config.listeners.iter().enumerate() {
        let key = format!("broker.listeners[{i}]");
        if bound.iter().any(|b| *b.ctx.name == *listener.name) {
            return Err(RoleError::other(format!(
                "{key}: the listener name `{}` is used twice; give each listener its own name",
                listener.name
            )));
        }
        let tls = match (listener.transport, &listener.tls) {
            (Transport::Tls | Transport::Wss, Some(tls)) => Some(
                aos_core::tls::server_config(&listener.name, tls)
                    .map_err(|e| RoleError::other(format!("{key}.tls: {e}")))?,
            ),
            (Transport::Tls | Transport::Wss, None) => {
                return Err(RoleError::other(format!(
                    "{key}: transport `{:?}` needs `tls = {{ cert = \"...\", key = \"...\" }}`",
                    listener.transport
                )));
            }
            _ => None,
        };
        bound.push(server::Bound {
            ctx: context(&listener.name, listener.max_connections),
            listener: bind_tcp(
                listener.bind,
                &format!("MQTT listener `{}`", listener.name),
                &format!("{key}.bind"),
            )?,
            transport: listener.transport,
            tls,
            ws_path: listener.path.as_str().into(),
            proxy_protocol: listener.proxy_protocol,
        });
    }
    Ok(bound)
}

/// How often expired sessions are removed.
const EXPIRY_SWEEP: Duration = Duration::from_secs(1);

/// The broker role.
#[derive(Default)]
pub struct BrokerRole {
    server: ServerSlot<server::Accepted>,
    health: Arc<HealthCell>,
    broker: Mutex<Option<Arc<Broker>>>,
    sweeper: Mutex<Option<CancellationToken>>,
    /// `broker.drain_rate` and `broker.drain_timeout` of the running broker.
    drain: Mutex<(u32, Duration)>,
    authenticator: Option<Arc<dyn Authenticator>>,
    /// Kept across a stop and a new start (the node can switch the role off and on).
    metrics: BrokerMetrics,
}

impl BrokerRole {
    pub fn new() -> Self {
        BrokerRole::default()
    }

    /// A broker role that asks `authenticator` instead of the `[broker.auth]` configuration.
    pub fn with_authenticator(authenticator: Arc<dyn Authenticator>) -> Self {
        BrokerRole {
            authenticator: Some(authenticator),
            ..BrokerRole::default()
        }
    }

    /// The running broker (after `start`).
    pub fn broker(&self) -> Option<Arc<Broker>> {
        self.broker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[async_trait]
impl Role for BrokerRole {
    fn kind(&self) -> RoleKind {
        RoleKind::Broker
    }

    async fn start(&self, ctx: &RoleContext) -> Result<(), RoleError> {
        let config: BrokerConfig = ctx.settings.section("broker")?;
        if config.auth.allow_anonymous {
            tracing::warn!(
                "broker.auth.allow_anonymous is on: clients without credentials may connect; they get what the ACL grants, and no tenant's traffic unless a rule names it"
            );
        }
        let metrics = self.metrics.clone();
        metrics.register(&ctx.metrics);
        let clients = ctx.extensions.get::<Clients>();
        let auth: Arc<dyn Authenticator> = match (&self.authenticator, &clients) {
            (Some(auth), _) => auth.clone(),
            (None, Some(clients)) => Arc::new(ConfigAuthenticator::with_clients(
                config.auth.clone(),
                clients.0.clone(),
            )),
            (None, None) => Arc::new(ConfigAuthenticator::new(config.auth.clone())),
        };
        let broker = Arc::new(Broker::new(
            &ctx.node.id,
            BrokerLimits {
                queue: QueueLimits {
                    max_messages: config.max_queued_messages,
                    max_bytes: config.max_queued_bytes,
                },
                max_session_expiry: config.max_session_expiry,
            },
            auth,
            metrics,
            config.persistence.then(|| ctx.state.clone()),
        ));
        // Set before the restore: the restored sessions' filters are interests too (held until
        // the routing runs).
        let routing = ctx.bus.spans_nodes().then(|| {
            let dropped = broker.metrics.cluster_dropped.clone();
            let (routes, routing) = ClusterRoutes::new(&broker.incarnation, dropped);
            broker.set_cluster(routes);
            routing
        });
        let (mut retained_elsewhere, mut sessions_elsewhere) = (None, None);
        if let Some(persistence) = broker.persistence() {
            // Watched before the load: a change made in between is applied (again) after it.
            retained_elsewhere = persistence
                .watch_retained()
                .await
                .map_err(RoleError::other)?;
            let restored = persistence.load().await.map_err(RoleError::other)?;
            let (retained, sessions) = (restored.retained.len(), restored.sessions.len());
            broker.restore(restored);
            tracing::info!(retained, sessions, "broker state restored");
            persistence.mark_holder();
            if let Some((now, changes)) = persistence
                .follow_sessions()
                .await
                .map_err(RoleError::other)?
            {
                for update in &now {
                    broker.session_elsewhere(update);
                }
                sessions_elsewhere = Some(changes);
            }
        }
        let (presence_tx, presence_rx) = tokio::sync::mpsc::unbounded_channel();
        if clients.is_some() {
            // On the platform (devices sign in from storage), device messages go to the workers.
            ctx.queue
                .declare(ACQUISITION_QUEUE, ctx.settings.core().queue.options())
                .await
                .map_err(RoleError::other)?;
            broker.set_hook(Arc::new(AcquisitionHook::new(
                ctx.queue.clone(),
                &ctx.node.id,
            )));
            // ...and commands come back from them, with devices' presence going to them.
            broker.report_presence(presence_tx);
        }
        *self.drain.lock().unwrap_or_else(|e| e.into_inner()) =
            (config.drain_rate, config.drain_timeout);
        let config = Arc::new(config);
        let listeners = bind_listeners(&broker, &config)?;
        let addresses: Vec<String> = listeners
            .iter()
            .map(|b| {
                format!(
                    "{} {:?} {}",
                    b.ctx.name,
                    b.transport,
                    b.listener
                        .local_addr()
                        .map_or(String::new(), |a| a.to_string())
                )
            })
            .collect();
        let server = server::start(ctx, listeners).await?;
        self.server.set(server);

        let stop = CancellationToken::new();
        if let Some(routing) = routing {
            self.health.supervise(
                "routing between broker nodes",
                &stop,
                routing.run(broker.clone(), ctx.bus.clone(), stop.clone()),
            );
        }
        if let Some(updates) = retained_elsewhere {
            let broker = broker.clone();
            self.health.supervise(
                "retained messages of the other nodes",
                &stop,
                follow(updates, stop.clone(), move |u| broker.retained_elsewhere(u)),
            );
        }
        if let Some(persistence) = broker.persistence().filter(|p| p.shared()) {
            self.health.supervise(
                "publishing the wills of dead nodes' clients",
                &stop,
                orphans::run(
                    broker.clone(),
                    persistence.clone(),
                    ctx.kv.clone(),
                    (ctx.node.id.clone(), ctx.settings.core().node.heartbeat()),
                    stop.clone(),
                ),
            );
        }
        if let Some(mut gaps) = ctx
            .bus
            .gaps()
            .filter(|_| broker.persistence().is_some_and(|p| p.shared()))
        {
            let broker = broker.clone();
            let cancelled = stop.clone();
            self.health
                .supervise("reading again what the bus lost", &stop, async move {
                    loop {
                        tokio::select! {
                            _ = cancelled.cancelled() => return,
                            changed = gaps.changed() => if changed.is_err() { return },
                        }
                        let gap = *gaps.borrow_and_update();
                        broker.resync_cluster(gap).await;
                    }
                });
        }
        if let Some(updates) = sessions_elsewhere {
            let broker = broker.clone();
            self.health.supervise(
                "persistent sessions of the other nodes",
                &stop,
                follow(updates, stop.clone(), move |u| broker.session_elsewhere(u)),
            );
        }
        let requests = admin::subscribe(ctx.bus.as_ref())
            .await
            .map_err(RoleError::other)?;
        self.health.supervise(
            "answering the broker view",
            &stop,
            admin::serve(
                broker.clone(),
                ctx.bus.clone(),
                ctx.node.id.clone(),
                requests,
                stop.clone(),
            ),
        );
        let sweeping = broker.clone();
        let cancelled = stop.clone();
        self.health
            .supervise("the session expiry sweep", &stop, async move {
                let mut tick = tokio::time::interval(EXPIRY_SWEEP);
                loop {
                    tokio::select! {
                        _ = cancelled.cancelled() => return,
                        _ = tick.tick() => { sweeping.expire_sessions(); }
                    }
                }
            });
        if let Some(clients) = clients {
            self.health.supervise(
                "the command subscription",
                &stop,
                commands::serve(
                    broker.clone(),
                    ctx.bus.clone(),
                    ctx.node.id.clone(),
                    presence_rx,
                    stop.clone(),
                ),
            );
            self.health.supervise(
                "the credential revocation watch",
                &stop,
                close_revoked(broker.clone(), clients.0.revocations(), stop.clone()),
            );
        }
        *self.sweeper.lock().unwrap_or_else(|e| e.into_inner()) = Some(stop);
        *self.broker.lock().unwrap_or_else(|e| e.into_inner()) = Some(broker);
        self.health.set(HealthStatus::Healthy);
        tracing::info!(listeners = ?addresses, "MQTT listeners ready");
        Ok(())
    }

    async fn stop(&self) -> Result<(), RoleError> {
        self.health.set(HealthStatus::Stopping);
        if let Some(broker) = self.broker() {
            // New clients go elsewhere while the connected ones are closed at the drain rate.
            self.server.pause().await;
            let (rate, within) = *self.drain.lock().unwrap_or_else(|e| e.into_inner());
            broker.drain(rate, within).await;
        }
        self.server.stop().await;
        if let Some(stop) = self
            .sweeper
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            stop.cancel();
        }
        self.health.set(HealthStatus::Stopped);
        Ok(())
    }

    fn health(&self) -> Health {
        self.health.get()
    }
}

/// Applies the changes other nodes make in the shared state store, until `stop` (the watch
/// ending before is a failure of the role).
async fn follow(
    mut updates: tokio::sync::mpsc::Receiver<StateUpdate>,
    stop: CancellationToken,
    apply: impl Fn(&StateUpdate) + Send + 'static,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            update = updates.recv() => match update {
                Some(update) => apply(&update),
                None => return,
            },
        }
    }
}

/// Closes the live session of every device whose credentials change, until `stop`.
async fn close_revoked(
    broker: Arc<Broker>,
    mut revoked: tokio::sync::broadcast::Receiver<Revocation>,
    stop: CancellationToken,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            next = revoked.recv() => match next {
                Ok(revoked) => broker.kick_revoked(&revoked),
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "credential changes came faster than sessions were closed; some may stay open until their next CONNECT");
                }
                Err(RecvError::Closed) => return,
            }
        }
    }
}
