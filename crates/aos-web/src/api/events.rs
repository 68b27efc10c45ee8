//! Events (alarms) of devices: list, acknowledge, clear.

use aos_auth::permissions::{ObjectKind, Operation};
use aos_storage::entity::event;
use aos_storage::repo::interpreters::{self, EventFilter};
use chrono::{DateTime, Utc};
use ntex::web::{self, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    ApiError, ApiState, Caller, ErrorBody, InTenant, Listed, Query, Routes, object_id, page,
};

pub fn routes(r: &mut impl Routes) {
    r.get("/events", list)
        .post("/events/{id}/acknowledge", acknowledge)
        .post("/events/{id}/clear", clear);
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// The tenant a system administrator acts in (a tenant's user always acts in its own).
    tenant: Option<String>,
    /// A device's id.
    device: Option<String>,
    /// A level (`warning`, `faulty`, …).
    level: Option<String>,
    /// `true`: not cleared yet; `false`: cleared.
    open: Option<bool>,
    /// `true`: acknowledged; `false`: not acknowledged yet.
    acknowledged: Option<bool>,
    /// Only those whose last crossing is at or after this time (RFC 3339).
    from: Option<DateTime<Utc>>,
    /// Only those raised before this time (RFC 3339).
    to: Option<DateTime<Utc>>,
    /// Items per page, 1 to 1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
    /// Items to skip, up to 1,000,000 (default 0).
    #[param(maximum = 1_000_000)]
    offset: Option<u64>,
    /// `raised_at`, `last_at`, `level` or `attribute`, `-field` for descending.
    sort: Option<String>,
}

/// An event (alarm) of a device.
#[derive(Serialize, ToSchema)]
pub(super) struct EventView {
    id: i64,
    /// The device's id.
    device: String,
    /// The attribute whose value raised it.
    attribute: Option<String>,
    /// `warning`, `faulty`, …
    level: String,
    message: String,
    raised_at: DateTime<Utc>,
    acknowledged_at: Option<DateTime<Utc>>,
    /// `user:<login>`, or the workflow that did.
    acknowledged_by: Option<String>,
    cleared_at: Option<DateTime<Utc>>,
    /// How many times the value crossed into the level while the alarm stayed open.
    count: i64,
    /// The value of the last crossing (a number, or the JSON value as sent).
    last_value: Option<serde_json::Value>,
    /// When the last crossing was.
    last_at: Option<DateTime<Utc>>,
}

fn event_view(e: event::Model, device: String) -> EventView {
    EventView {
        id: e.id,
        device,
        attribute: e.attribute,
        level: e.level,
        message: e.message,
        raised_at: e.raised_at,
        acknowledged_at: e.acknowledged_at,
        acknowledged_by: e.acknowledged_by,
        cleared_at: e.cleared_at,
        count: e.crossings,
        last_value: e.last_value.and_then(|v| serde_json::from_str(&v).ok()),
        last_at: e.last_at.or(Some(e.raised_at)),
    }
}

/// An event's state after acknowledging or clearing it.
#[derive(Serialize, ToSchema)]
pub(super) struct SettledView {
    id: i64,
    acknowledged_at: Option<DateTime<Utc>>,
    acknowledged_by: Option<String>,
    cleared_at: Option<DateTime<Utc>>,
}

/// List events
///
/// The events (alarms) of the tenant's devices (a customer's user: its own), newest first
/// unless sorted. One alarm per device, attribute and level stays open until cleared: the value
/// crossing into the level again counts in it (`count`, `last_value`, `last_at`).
#[utoipa::path(
    get,
    path = "/api/events",
    tag = "events",
    operation_id = "list_events",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of events", body = Listed<EventView>),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such tenant", body = ErrorBody),
        (status = 422, description = "A parameter is wrong (`field` names it)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn list(
    api: ApiState,
    caller: Caller,
    query: Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.0;
    let scope = caller
        .scope(
            &api,
            ObjectKind::Events,
            Operation::View,
            query.tenant.as_deref(),
        )
        .await?;
    let filter = EventFilter {
        device: query.device,
        level: query.level,
        open: query.open,
        acknowledged: query.acknowledged,
        from: query.from,
        to: query.to,
        page: page(query.limit, query.offset, query.sort)?,
    };
    let (found, total) = interpreters::events(&api.storage, scope, &filter).await?;
    let items: Vec<EventView> = found.into_iter().map(|(e, d)| event_view(e, d)).collect();
    Ok(Listed::new(items, total).response())
}

async fn settle(
    api: ApiState,
    caller: Caller,
    id: web::types::Path<String>,
    tenant: Option<String>,
    clear: bool,
) -> Result<HttpResponse, ApiError> {
    let scope = caller
        .scope(
            &api,
            ObjectKind::Events,
            Operation::Update,
            tenant.as_deref(),
        )
        .await?;
    let id = object_id(&id, "event")?;
    let by = format!("user:{}", caller.0.login);
    let settled = interpreters::settle(&api.storage, scope, id, &by, clear).await?;
    Ok(HttpResponse::Ok().json(&SettledView {
        id: settled.id,
        acknowledged_at: settled.acknowledged_at,
        acknowledged_by: settled.acknowledged_by,
        cleared_at: settled.cleared_at,
    }))
}

/// Acknowledge an event
///
/// The event is acknowledged by the caller.
#[utoipa::path(
    post,
    path = "/api/events/{id}/acknowledge",
    tag = "events",
    operation_id = "acknowledge_event",
    params(("id" = i64, Path, description = "The event's id"), InTenant),
    responses(
        (status = 200, description = "Acknowledged", body = SettledView),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such event or tenant", body = ErrorBody),
        (status = 422, description = "A parameter is wrong (`field` names it)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn acknowledge(
    api: ApiState,
    caller: Caller,
    id: web::types::Path<String>,
    query: Query<InTenant>,
) -> Result<HttpResponse, ApiError> {
    settle(api, caller, id, query.0.tenant, false).await
}

/// Clear an event
#[utoipa::path(
    post,
    path = "/api/events/{id}/clear",
    tag = "events",
    operation_id = "clear_event",
    params(("id" = i64, Path, description = "The event's id"), InTenant),
    responses(
        (status = 200, description = "Cleared", body = SettledView),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such event or tenant", body = ErrorBody),
        (status = 422, description = "A parameter is wrong (`field` names it)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn clear(
    api: ApiState,
    caller: Caller,
    id: web::types::Path<String>,
    query: Query<InTenant>,
) -> Result<HttpResponse, ApiError> {
    settle(api, caller, id, query.0.tenant, true).await
}
