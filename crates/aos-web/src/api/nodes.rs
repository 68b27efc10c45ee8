//! Platform administration: the AOS nodes of the cluster, their roles and health, and their
//! listeners (system administrators).

use std::collections::HashMap;

use aos_auth::permissions::{ObjectKind, Operation};
use aos_core::node::registration_key;
use chrono::{DateTime, Utc};
use ntex::web::HttpResponse;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::{
    ApiError, ApiState, Caller, ErrorBody, Listed, PlatformListQuery, Query, Routes, page,
};

pub fn routes(r: &mut impl Routes) {
    r.get("/nodes", list);
}

/// An AOS node of the cluster.
#[derive(Serialize, ToSchema)]
pub(super) struct NodeView {
    id: String,
    version: String,
    compiled_roles: Vec<String>,
    enabled_roles: Vec<String>,
    admin_listen: String,
    started_at: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    stopped_at: Option<DateTime<Utc>>,
    /// Whether the node's registration is current (it renews it every 10 s).
    live: bool,
    /// Its latest reported health: `{"state", "ready", "roles": [{"role", "status", "detail"}]}`;
    /// null when it is not live.
    #[schema(value_type = Option<Object>)]
    health: Option<Value>,
    /// What it listens on, as a live node reports it: `[{"role", "name", "protocol",
    /// "address"}]` (MQTT listeners of its broker, its HTTP listener, its admin listener).
    #[schema(value_type = Vec<Object>)]
    listeners: Vec<Value>,
}

const NODE_SORT: [&str; 3] = ["id", "started_at", "last_seen"];

fn roles(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(String::from)
        .collect()
}

/// List the nodes
///
/// Every node the database has seen, with the health of the live ones (system
/// administrators); `sort`: `id`, `started_at`, `last_seen`.
#[utoipa::path(
    get,
    path = "/api/nodes",
    tag = "platform",
    operation_id = "list_nodes",
    params(PlatformListQuery),
    responses(
        (status = 200, description = "A page of nodes", body = Listed<NodeView>),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "Not a system administrator", body = ErrorBody),
        (status = 422, description = "A parameter is wrong (`field` names it)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn list(
    api: ApiState,
    caller: Caller,
    query: Query<PlatformListQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.platform(ObjectKind::Nodes, Operation::View)?;
    let query = query.0;
    let wanted = page(query.limit, query.offset, query.sort)?;
    let prefix = registration_key("");
    let registrations: HashMap<String, Value> = api
        .kv
        .list(&prefix)
        .await
        .map_err(ApiError::internal)?
        .into_iter()
        .filter_map(|entry| {
            let id = entry.key.strip_prefix(&prefix)?.to_string();
            let value: Value = serde_json::from_slice(&entry.value).ok()?;
            Some((id, value))
        })
        .collect();
    let all: Vec<NodeView> = aos_storage::nodes::list(&api.storage)
        .await?
        .into_iter()
        .map(|n| {
            let registration = registrations.get(&n.id);
            let health = registration.map(|r| r["health"].clone());
            let listeners = registration
                .and_then(|r| r["listeners"].as_array().cloned())
                .unwrap_or_default();
            NodeView {
                live: health.is_some() && n.stopped_at.is_none(),
                health,
                listeners,
                compiled_roles: roles(&n.compiled_roles),
                enabled_roles: roles(&n.enabled_roles),
                id: n.id,
                version: n.version,
                admin_listen: n.admin_listen,
                started_at: n.started_at,
                last_seen: n.last_seen,
                stopped_at: n.stopped_at,
            }
        })
        .collect();
    let (items, total) =
        aos_storage::repo::paging::in_memory(all, &wanted, &NODE_SORT, |n, field| match field {
            "started_at" => n.started_at.to_rfc3339(),
            "last_seen" => n.last_seen.to_rfc3339(),
            _ => n.id.clone(),
        })?;
    Ok(Listed::new(items, total).response())
}
