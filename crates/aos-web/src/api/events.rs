//! Events (alarms) of devices: list, acknowledge, clear.

use aos_auth::permissions::{ObjectKind, Operation};
use aos_storage::entity::event;
use aos_storage::repo::interpreters::{self, EventFilter};
use ntex::web::{self, HttpResponse};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, ApiState, Caller, InTenant, Listed, Query, object_id, page};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/events", web::get().to(list))
        .route("/events/{id}/acknowledge", web::post().to(acknowledge))
        .route("/events/{id}/clear", web::post().to(clear));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    tenant: Option<String>,
    device: Option<String>,
    /// `true`: not cleared yet; `false`: cleared.
    open: Option<bool>,
    limit: Option<u64>,
    offset: Option<u64>,
    sort: Option<String>,
}

fn event_json(e: &event::Model, device: &str) -> Value {
    json!({
        "id": e.id,
        "device": device,
        "attribute": e.attribute,
        "level": e.level,
        "message": e.message,
        "raised_at": e.raised_at,
        "acknowledged_at": e.acknowledged_at,
        "acknowledged_by": e.acknowledged_by,
        "cleared_at": e.cleared_at,
    })
}

/// `GET /api/events?device=&open=&limit=&offset=&sort=` → a page, newest first unless sorted.
async fn list(
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
        open: query.open,
        page: page(query.limit, query.offset, query.sort)?,
    };
    let (found, total) = interpreters::events(&api.storage, scope, &filter).await?;
    let items: Vec<Value> = found.iter().map(|(e, d)| event_json(e, d)).collect();
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
    Ok(HttpResponse::Ok().json(&json!({
        "id": settled.id,
        "acknowledged_at": settled.acknowledged_at,
        "acknowledged_by": settled.acknowledged_by,
        "cleared_at": settled.cleared_at,
    })))
}

/// `POST /api/events/{id}/acknowledge` → the event, acknowledged by the caller.
async fn acknowledge(
    api: ApiState,
    caller: Caller,
    id: web::types::Path<String>,
    query: Query<InTenant>,
) -> Result<HttpResponse, ApiError> {
    settle(api, caller, id, query.0.tenant, false).await
}

/// `POST /api/events/{id}/clear` → the event, cleared.
async fn clear(
    api: ApiState,
    caller: Caller,
    id: web::types::Path<String>,
    query: Query<InTenant>,
) -> Result<HttpResponse, ApiError> {
    settle(api, caller, id, query.0.tenant, true).await
}
