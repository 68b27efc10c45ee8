//! `aos-web`: the web role — the REST API and the web client.
//!
//! It serves the REST API under `/api` ([`api`]: sign-in and tokens, devices, commands, events,
//! workflows, classes, users, the platform's nodes and dead letters, the HTTP device API, live
//! updates; every error in one JSON shape), its OpenAPI document (`/api/openapi.json`, rendered
//! at `/api/docs`), the node's version under `/api/version`, and the web client.
//!
//! What it needs from its host (the [`RoleContext`] a node gives it): the `[web]` settings, a
//! [`Storage`] and the sign-in service (`aos_auth::accounts::Accounts`) among the extensions,
//! optionally the device and API key directory (to close sessions of revoked credentials); the
//! work queue (the HTTP device API pushes to `acquisition`, workflows run from `workflows`),
//! the bus (role switches, command offers, live updates) and the key-value store (the nodes'
//! registrations, live-watch marks).

pub mod api;
mod changes;
mod client;
mod live;
mod security;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aos_auth::accounts::Accounts;
use aos_core::NodeInfo;
use aos_core::access::Clients;
use aos_core::acquisition::{ACQUISITION_QUEUE, Acquirer};
use aos_core::live::LiveFeed;
use aos_core::net::{ServerSlot, bind_tcp};
use aos_core::role::{Health, HealthCell, HealthStatus, Role, RoleContext, RoleError, RoleKind};
use aos_core::tls::TlsConfig;
use aos_storage::Storage;
use async_trait::async_trait;

use aos_workflows::WORKFLOW_QUEUE;

use crate::api::Api;
use ntex::web::{self, App, HttpResponse, HttpServer};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The `[web]` configuration section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Address of the HTTP listener (REST API and web client).
    pub listen: SocketAddr,
    /// Threads serving HTTP; 0: one per CPU core.
    pub workers: usize,
    /// How long open requests may take to finish when the node stops.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Origins (`https://app.example.com`, or `*`) whose pages may call the API from the
    /// browser (CORS). Empty: none but AOS's own pages.
    pub cors_origins: Vec<String>,
    /// Serve HTTPS with this certificate and key (rustls) instead of plain HTTP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            workers: 0,
            drain_timeout: Duration::from_secs(5),
            cors_origins: Vec::new(),
            tls: None,
        }
    }
}

impl WebConfig {
    /// Its listener, as a node reports it.
    pub fn listener_infos(&self) -> Vec<aos_core::node::ListenerInfo> {
        vec![aos_core::node::ListenerInfo {
            role: "web".into(),
            name: "http".into(),
            protocol: if self.tls.is_some() { "https" } else { "http" }.into(),
            address: self.listen.to_string(),
        }]
    }
}

/// The web role.
#[derive(Default)]
pub struct WebRole {
    server: ServerSlot,
    health: Arc<HealthCell>,
    /// Ends the live-update feed when the role stops.
    live: tokio_util::sync::CancellationToken,
}

impl WebRole {
    pub fn new() -> Self {
        WebRole::default()
    }
}

/// What `GET /api/version` answers.
#[derive(Serialize, ToSchema)]
struct VersionView {
    /// AOS's version.
    version: String,
    /// The node's id.
    node: String,
}

/// The node's version
///
/// AOS's version and the answering node's id.
#[utoipa::path(
    get,
    path = "/api/version",
    tag = "meta",
    operation_id = "version",
    responses((status = 200, description = "The version", body = VersionView)),
)]
async fn version(node: web::types::State<Arc<NodeInfo>>) -> HttpResponse {
    HttpResponse::Ok().json(&VersionView {
        version: node.version.clone(),
        node: node.id.clone(),
    })
}

#[async_trait]
impl Role for WebRole {
    fn kind(&self) -> RoleKind {
        RoleKind::Web
    }

    async fn start(&self, ctx: &RoleContext) -> Result<(), RoleError> {
        let config: WebConfig = ctx.settings.section("web")?;
        let listener = bind_tcp(config.listen, "HTTP listener", "web.listen")?;
        let workers = aos_core::net::worker_threads(config.workers);
        let drain =
            ntex::time::Seconds(config.drain_timeout.as_secs().clamp(1, u16::MAX as u64) as u16);
        let node = ctx.node.clone();
        let (Some(storage), Some(accounts)) = (
            ctx.extensions.get::<Storage>(),
            ctx.extensions.get::<Accounts>(),
        ) else {
            return Err(RoleError::other(
                "the web role needs the platform's storage and accounts",
            ));
        };
        // Runs started from the API, and what devices post over HTTP, wait there for a worker
        // (of this node or another).
        for queue in [WORKFLOW_QUEUE, ACQUISITION_QUEUE] {
            ctx.queue
                .declare(queue, ctx.settings.core().queue.options())
                .await
                .map_err(RoleError::other)?;
        }
        let api = Arc::new(Api {
            storage: (*storage).clone(),
            accounts,
            queue: ctx.queue.clone(),
            bus: ctx.bus.clone(),
            kv: ctx.kv.clone(),
            clients: ctx.extensions.get::<Clients>().map(|c| c.0.clone()),
            acquirer: Acquirer::new(ctx.queue.clone(), &ctx.node.id, "http"),
            live: LiveFeed::new(ctx.bus.clone(), ctx.kv.clone()),
        });
        let hub = live::LiveHub::start(
            ctx.bus.clone(),
            ctx.kv.clone(),
            self.live.clone(),
            &self.health,
        )
        .await
        .map_err(RoleError::other)?;
        let tls = match &config.tls {
            Some(tls) => Some(
                aos_core::tls::server_config("web.tls", tls)
                    .map_err(|e| RoleError::other(e.to_string()))?,
            ),
            None => None,
        };
        let announce = changes::Announce::new(ctx.bus.clone());
        let guard = security::Guard::new(config.cors_origins.clone(), tls.is_some());
        let server = ctx
            .net
            .run(move || -> std::io::Result<ntex::server::Server> {
                let server = HttpServer::new(async move || {
                    App::new()
                        .middleware(guard.clone())
                        .middleware(announce.clone())
                        .state(node.clone())
                        .state(api.clone())
                        .state(hub.clone())
                        .configure(client::configure)
                        .configure(api::configure)
                })
                .workers(workers)
                .disable_signals()
                .shutdown_timeout(drain);
                let server = match tls {
                    Some(tls) => server.listen_rustls(listener, (*tls).clone())?,
                    None => server.listen(listener)?,
                };
                Ok(server.run())
            })
            .await
            .and_then(|r| r)
            .map_err(|e| RoleError::other(format!("cannot start the HTTP server: {e}")))?;
        self.server.set(server);
        self.health.set(HealthStatus::Healthy);
        tracing::info!(listen = %config.listen, https = config.tls.is_some(), "HTTP listener ready");
        Ok(())
    }

    async fn stop(&self) -> Result<(), RoleError> {
        self.health.set(HealthStatus::Stopping);
        self.live.cancel();
        self.server.stop().await;
        self.health.set(HealthStatus::Stopped);
        Ok(())
    }

    fn health(&self) -> Health {
        self.health.get()
    }
}
