//! Platform administration: the AOS nodes of the cluster, their roles and health, and their
//! listeners (system administrators).

use std::collections::HashMap;

use aos_auth::permissions::{ObjectKind, Operation};
use aos_core::RoleKind;
use aos_core::node::{
    NodeHealth, Registration, RoleSwitch, control_subject, registered, registration_key,
};
use aos_core::node_info::ListenerInfo;
use chrono::{DateTime, Utc};
use ntex::http::StatusCode;
use ntex::web::{self, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    ApiError, ApiState, Caller, ErrorBody, Json, Listed, PlatformListQuery, Query, Routes, page,
};

pub fn routes(r: &mut impl Routes) {
    r.get("/nodes", list)
        .put("/nodes/{id}/roles/{role}", switch_role);
}

/// An AOS node of the cluster.
#[derive(Serialize, ToSchema)]
pub(super) struct NodeView {
    id: String,
    version: String,
    compiled_roles: Vec<String>,
    /// The roles it started with (its configuration).
    enabled_roles: Vec<String>,
    /// The roles running now, as a live node reports them (a switch changes them).
    running_roles: Vec<String>,
    /// The roles a system administrator may switch on or off (`node.switchable_roles`).
    switchable_roles: Vec<String>,
    admin_listen: String,
    started_at: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    stopped_at: Option<DateTime<Utc>>,
    /// Whether the node's registration is current (it renews it every 10 s).
    live: bool,
    /// Its latest reported health: `{"state", "ready", "roles": [{"role", "status", "detail"}]}`;
    /// null when it is not live.
    #[schema(value_type = Option<Object>)]
    health: Option<NodeHealth>,
    /// What it listens on, as a live node reports it: `[{"role", "name", "protocol",
    /// "address"}]` (MQTT listeners of its broker, its HTTP listener, its admin listener).
    #[schema(value_type = Vec<Object>)]
    listeners: Vec<ListenerInfo>,
}

pub(super) const NODE_SORT: [&str; 3] = ["id", "started_at", "last_seen"];

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
    let mut registrations: HashMap<String, Registration> = registered(api.kv.as_ref())
        .await
        .map_err(ApiError::internal)?
        .into_iter()
        .map(|registration| (registration.info.id.clone(), registration))
        .collect();
    let all: Vec<NodeView> = aos_storage::nodes::list(&api.storage)
        .await?
        .into_iter()
        .map(|n| {
            let registration = registrations.remove(&n.id);
            let names = |roles: &[RoleKind]| roles.iter().map(|r| r.as_str().to_string()).collect();
            let (health, listeners, running_roles, switchable_roles) = match registration {
                Some(r) => (
                    Some(r.health),
                    r.info.listeners,
                    names(&r.running_roles),
                    names(&r.switchable_roles),
                ),
                None => Default::default(),
            };
            NodeView {
                live: health.is_some() && n.stopped_at.is_none(),
                health,
                listeners,
                running_roles,
                switchable_roles,
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

/// Whether a role should run.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RoleState {
    enabled: bool,
}

/// Accepted: the node switches the role when the message reaches it.
#[derive(Serialize, ToSchema)]
pub(super) struct SwitchAccepted {
    accepted: bool,
}

/// Switch a node's role on or off
///
/// For roles the node allows (`node.switchable_roles`: broker, worker); the node applies it
/// within moments and reports its running roles in `GET /api/nodes`.
#[utoipa::path(
    put,
    path = "/api/nodes/{id}/roles/{role}",
    tag = "platform",
    operation_id = "switch_node_role",
    params(
        ("id" = String, Path, description = "The node's id"),
        ("role" = String, Path, description = "broker, worker or web"),
    ),
    request_body = RoleState,
    responses(
        (status = 202, description = "Sent to the node", body = SwitchAccepted),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "Not a system administrator", body = ErrorBody),
        (status = 404, description = "No such role, or no such live node", body = ErrorBody),
        (status = 409, description = "The node does not allow switching this role", body = ErrorBody),
        (status = 422, description = "The body has the wrong shape", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn switch_role(
    api: ApiState,
    caller: Caller,
    path: web::types::Path<(String, String)>,
    body: Json<RoleState>,
) -> Result<HttpResponse, ApiError> {
    caller.platform(ObjectKind::Nodes, Operation::Update)?;
    let (id, role) = path.into_inner();
    let not_found = |what: String| ApiError::new(StatusCode::NOT_FOUND, "not_found", what);
    let kind = RoleKind::parse(&role).ok_or_else(|| not_found(format!("no role `{role}`")))?;
    let registration = api
        .kv
        .get(&registration_key(&id))
        .await
        .map_err(ApiError::internal)?
        .and_then(|entry| serde_json::from_slice::<Registration>(&entry.value).ok())
        .ok_or_else(|| not_found(format!("no live node `{id}`")))?;
    if !registration.switchable_roles.contains(&kind) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "node `{id}` does not allow switching its {kind} role (set node.switchable_roles on it)"
            ),
        ));
    }
    let switch = RoleSwitch {
        role: kind,
        enabled: body.0.enabled,
    };
    api.bus
        .publish(&control_subject(&id), aos_core::commands::encode(&switch))
        .await
        .map_err(ApiError::internal)?;
    let mut event = super::people::api_event(&caller, None, "node.role", "node", &id);
    event.detail = serde_json::json!({ "role": kind.as_str(), "enabled": switch.enabled });
    aos_storage::repo::audit::record(&api.storage, event).await?;
    Ok(HttpResponse::Accepted().json(&SwitchAccepted { accepted: true }))
}
