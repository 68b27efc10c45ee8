//! `GET /api/live`: who may watch which tenant's live updates (the stream itself is
//! [`crate::live`]'s).

use std::sync::Arc;

use aos_auth::permissions::{ObjectKind, Operation};
use aos_storage::repo::devices;
use ntex::web::{self, HttpResponse};

use super::{ApiError, ApiState, Caller, ErrorBody, InTenant, Query};
use crate::live::LiveHub;

/// Live updates
///
/// A `text/event-stream` of what changes for the caller: `value` (`{"device", "attribute",
/// "ts", "value", "level"}`), `event` (`{"device", "attribute", "level", "raised_at"}`),
/// `device` (`{"device", "status", "at"}`) and `command` (`{"device", "id", "status", "at"}`)
/// events; a `: ok` comment at once and `: alive` every 15 s. A stream ends after 15 minutes:
/// reconnect with a fresh token. Updates are best effort; the lists are the truth.
#[utoipa::path(
    get,
    path = "/api/live",
    tag = "live",
    operation_id = "live",
    params(InTenant),
    responses(
        (status = 200, description = "Server-Sent Events", content_type = "text/event-stream", body = String),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such tenant", body = ErrorBody),
        (status = 422, description = "A parameter is wrong (`field` names it)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn live(
    api: ApiState,
    hub: web::types::State<Arc<LiveHub>>,
    caller: Caller,
    query: Query<InTenant>,
) -> Result<HttpResponse, ApiError> {
    let scope = caller
        .scope(
            &api,
            ObjectKind::Devices,
            Operation::View,
            query.0.tenant.as_deref(),
        )
        .await?;
    // A customer sees its own devices' updates only (those it had when the stream opened).
    let visible = match scope.customer {
        Some(_) => Some(
            devices::list(&api.storage, scope)
                .await?
                .into_iter()
                .map(|d| d.uid)
                .collect(),
        ),
        None => None,
    };
    // Subscribed before the answer goes, so nothing after it is missed.
    let events = crate::live::events(hub.watch(scope.tenant).await, visible);
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .header("cache-control", "no-cache")
        .header("x-accel-buffering", "no")
        .streaming(Box::pin(events)))
}
