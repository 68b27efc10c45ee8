//! The admin HTTP listener every node serves, whatever its roles: `/health` (liveness),
//! `/ready` (readiness, for load balancers), `/metrics` (Prometheus), `/node` (identity) and
//! `/cluster` (every node registered in the key-value store this node shares: in a cluster, all
//! of them, with their roles and health).

use std::net::SocketAddr;
use std::sync::Arc;

use ntex::http::StatusCode;
use ntex::web::{self, App, HttpResponse, HttpServer};

use crate::net::{BindError, bind_tcp};
use crate::node::Node;

/// A running admin listener.
pub struct AdminServer {
    server: ntex::server::Server,
    pub local_addr: SocketAddr,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("cannot start the admin listener: {0}")]
    Io(#[from] std::io::Error),
}

type NodeState = web::types::State<Arc<Node>>;

fn json(status: StatusCode, body: &impl serde::Serialize) -> HttpResponse {
    HttpResponse::build(status).json(body)
}

async fn health(node: NodeState) -> HttpResponse {
    let status = if node.is_live() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(status, &node.health())
}

async fn ready(node: NodeState) -> HttpResponse {
    let health = node.health();
    let status = if health.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(status, &health)
}

async fn metrics(node: NodeState) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(node.metrics().render())
}

async fn info(node: NodeState) -> HttpResponse {
    #[derive(serde::Serialize)]
    struct Body<'a> {
        #[serde(flatten)]
        info: &'a crate::node::NodeInfo,
        health: crate::node::NodeHealth,
    }
    json(
        StatusCode::OK,
        &Body {
            info: node.info(),
            health: node.health(),
        },
    )
}

async fn cluster(node: NodeState) -> HttpResponse {
    match crate::node::registered(node.context().kv.as_ref()).await {
        Ok(nodes) => json(StatusCode::OK, &serde_json::json!({ "nodes": nodes })),
        Err(err) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({ "error": format!("cannot read the node registry: {err}") }),
        ),
    }
}

impl AdminServer {
    /// Binds `listen` and serves the admin endpoints for `node`.
    pub async fn start(node: Arc<Node>, listen: SocketAddr) -> Result<AdminServer, AdminError> {
        let listener = bind_tcp(listen, "admin listener", "admin.listen")?;
        let local_addr = listener.local_addr()?;
        let net = node.context().net.clone();
        let server = net
            .run(move || -> std::io::Result<_> {
                Ok(HttpServer::new(async move || {
                    App::new()
                        .state(node.clone())
                        .route("/health", web::get().to(health))
                        .route("/ready", web::get().to(ready))
                        .route("/metrics", web::get().to(metrics))
                        .route("/node", web::get().to(info))
                        .route("/cluster", web::get().to(cluster))
                })
                .workers(1)
                .disable_signals()
                .listen(listener)?
                .run())
            })
            .await??;
        tracing::info!(%local_addr, "admin listener ready");
        Ok(AdminServer { server, local_addr })
    }

    /// Stops the admin listener. Bounded: ntex-server can miss a worker's stop when the stop
    /// follows the start within milliseconds, and the node must not hang on its way out for
    /// that (the whole ntex system is stopped afterwards anyway).
    pub async fn stop(&self) {
        const BOUND: std::time::Duration = std::time::Duration::from_secs(3);
        if tokio::time::timeout(BOUND, self.server.stop(true))
            .await
            .is_err()
        {
            tracing::warn!(
                "the admin listener did not confirm its stop within {BOUND:?}; going on"
            );
        }
    }
}
