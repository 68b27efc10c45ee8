//! Devices: list (filters, search, pages), one with its latest values, register one.

use aos_auth::permissions::{ObjectKind, Operation};
use aos_storage::entity::device;
use aos_storage::repo::devices::{self, DeviceQuery, NewDevice};
use ntex::web::{self, HttpResponse};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, ApiState, Caller, InTenant, Json, Query, limit};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/devices", web::get().to(list))
        .route("/devices", web::post().to(create))
        .route("/devices/{uid}", web::get().to(get));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    tenant: Option<String>,
    class: Option<String>,
    status: Option<String>,
    search: Option<String>,
    limit: Option<u64>,
    offset: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Create {
    uid: String,
    name: Option<String>,
    class: String,
    entity: Option<String>,
    gateway: Option<String>,
    format: Option<String>,
}

fn device_json(d: &device::Model) -> Value {
    json!({
        "uid": d.uid,
        "name": d.name,
        "status": d.status,
        "last_seen": d.last_seen,
        "disabled": d.disabled,
        "created_at": d.created_at,
    })
}

/// `GET /api/devices?class=&status=&search=&limit=&offset=` → `{"items", "total"}`, by id.
async fn list(
    api: ApiState,
    caller: Caller,
    query: Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.0;
    let scope = caller
        .scope(
            &api,
            ObjectKind::Devices,
            Operation::View,
            query.tenant.as_deref(),
        )
        .await?;
    let wanted = DeviceQuery {
        class: query.class,
        status: query.status,
        search: query.search,
        limit: limit(query.limit)?,
        offset: query.offset.unwrap_or(0),
    };
    let (page, total) = devices::search(&api.storage, scope, &wanted).await?;
    let items: Vec<Value> = page.iter().map(device_json).collect();
    Ok(HttpResponse::Ok().json(&json!({ "items": items, "total": total })))
}

/// `GET /api/devices/{uid}` → the device and its latest values.
async fn get(
    api: ApiState,
    caller: Caller,
    uid: web::types::Path<String>,
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
    let found = devices::get(&api.storage, scope, &uid).await?;
    let latest: Vec<Value> = devices::latest_values(&api.storage, &found)
        .await?
        .iter()
        .map(|v| {
            json!({
                "attribute": v.attribute,
                "ts": v.ts,
                "value": v.value_num.map_or_else(|| v.value_json.clone().unwrap_or(Value::Null), Value::from),
                "level": v.level,
            })
        })
        .collect();
    let mut shown = device_json(&found);
    shown["latest"] = Value::Array(latest);
    Ok(HttpResponse::Ok().json(&shown))
}

/// `POST /api/devices {"uid", "name", "class", "entity", "gateway", "format"}` → 201.
async fn create(
    api: ApiState,
    caller: Caller,
    query: Query<InTenant>,
    body: Json<Create>,
) -> Result<HttpResponse, ApiError> {
    let scope = caller
        .scope(
            &api,
            ObjectKind::Devices,
            Operation::Create,
            query.0.tenant.as_deref(),
        )
        .await?;
    let body = body.0;
    let new = NewDevice {
        name: body.name.unwrap_or_else(|| body.uid.clone()),
        uid: body.uid,
        class: body.class,
        entity: body.entity,
        gateway: body.gateway,
        format: body.format,
    };
    let created = devices::create(&api.storage, scope, new).await?;
    Ok(HttpResponse::Created().json(&device_json(&created)))
}
