//! Device classes and message formats of a tenant.

use std::collections::HashMap;

use aos_auth::permissions::{ObjectKind, Operation};
use aos_storage::entity::{device_class, message_format};
use aos_storage::repo::classes::{self, NewClass};
use aos_storage::repo::formats;
use aos_storage::repo::paging;
use chrono::{DateTime, Utc};
use ntex::web::{self, HttpResponse};
use serde::{Deserialize, Serialize};

use super::{ApiError, ApiState, Caller, InTenant, Json, ListQuery, Listed, Query, page};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/classes", web::get().to(list))
        .route("/classes", web::post().to(create))
        .route("/classes/{name}", web::get().to(get))
        .route("/formats", web::get().to(list_formats));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Create {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    is_gateway: bool,
}

#[derive(Serialize)]
struct ClassView {
    name: String,
    description: String,
    is_gateway: bool,
    format: Option<String>,
    outbound_format: Option<String>,
    /// Unknown devices may register with a provisioning key.
    provisioning: bool,
    devices: u64,
    created_at: DateTime<Utc>,
}

const CLASS_SORT: [&str; 3] = ["name", "created_at", "devices"];

fn class_view(
    c: device_class::Model,
    formats: &HashMap<i64, String>,
    counts: &HashMap<i64, u64>,
) -> ClassView {
    ClassView {
        format: c.format_id.and_then(|id| formats.get(&id).cloned()),
        outbound_format: c
            .outbound_format_id
            .and_then(|id| formats.get(&id).cloned()),
        provisioning: c.provisioning_key_hash.is_some(),
        devices: counts.get(&c.id).copied().unwrap_or(0),
        name: c.name,
        description: c.description,
        is_gateway: c.is_gateway,
        created_at: c.created_at,
    }
}

async fn format_names(
    api: &super::Api,
    scope: aos_storage::repo::Scope,
) -> Result<HashMap<i64, String>, ApiError> {
    Ok(formats::list(&api.storage, scope)
        .await?
        .into_iter()
        .map(|f| (f.id, f.name))
        .collect())
}

/// `GET /api/classes?limit=&offset=&sort=` → the tenant's classes, by name unless sorted.
async fn list(
    api: ApiState,
    caller: Caller,
    query: Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.0;
    let scope = caller
        .scope(
            &api,
            ObjectKind::Classes,
            Operation::View,
            query.tenant.as_deref(),
        )
        .await?;
    let wanted = page(query.limit, query.offset, query.sort)?;
    let formats = format_names(&api, scope).await?;
    let counts = classes::device_counts(&api.storage, scope).await?;
    let all: Vec<ClassView> = classes::list(&api.storage, scope)
        .await?
        .into_iter()
        .map(|c| class_view(c, &formats, &counts))
        .collect();
    let (items, total) = paging::in_memory(all, &wanted, &CLASS_SORT, |c, field| match field {
        "created_at" => c.created_at.to_rfc3339(),
        "devices" => format!("{:020}", c.devices),
        _ => c.name.clone(),
    })?;
    Ok(Listed::new(items, total).response())
}

/// `GET /api/classes/{name}` → the class.
async fn get(
    api: ApiState,
    caller: Caller,
    name: web::types::Path<String>,
    query: Query<InTenant>,
) -> Result<HttpResponse, ApiError> {
    let scope = caller
        .scope(
            &api,
            ObjectKind::Classes,
            Operation::View,
            query.0.tenant.as_deref(),
        )
        .await?;
    let class = classes::by_name(api.storage.db(), scope, &name).await?;
    let formats = format_names(&api, scope).await?;
    let counts = classes::device_counts(&api.storage, scope).await?;
    Ok(HttpResponse::Ok().json(&class_view(class, &formats, &counts)))
}

/// `POST /api/classes {"name", "description", "is_gateway"}` → 201.
async fn create(
    api: ApiState,
    caller: Caller,
    query: Query<InTenant>,
    body: Json<Create>,
) -> Result<HttpResponse, ApiError> {
    let scope = caller
        .scope(
            &api,
            ObjectKind::Classes,
            Operation::Create,
            query.0.tenant.as_deref(),
        )
        .await?;
    let body = body.0;
    let created = classes::create(
        &api.storage,
        scope,
        NewClass {
            name: body.name,
            description: body.description,
            is_gateway: body.is_gateway,
            auto_register_children: false,
        },
    )
    .await?;
    Ok(HttpResponse::Created().json(&class_view(created, &HashMap::new(), &HashMap::new())))
}

#[derive(Serialize)]
struct FormatView {
    name: String,
    kind: String,
    direction: String,
    proto_message: Option<String>,
    json_schema: bool,
    mapping: serde_json::Value,
    created_at: DateTime<Utc>,
}

const FORMAT_SORT: [&str; 4] = ["name", "kind", "direction", "created_at"];

fn format_view(f: message_format::Model) -> FormatView {
    FormatView {
        name: f.name,
        kind: f.kind,
        direction: f.direction,
        proto_message: f.proto_message,
        json_schema: f.json_schema.is_some(),
        mapping: f.mapping,
        created_at: f.created_at,
    }
}

/// `GET /api/formats?limit=&offset=&sort=` → the tenant's message formats, by name.
async fn list_formats(
    api: ApiState,
    caller: Caller,
    query: Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.0;
    let scope = caller
        .scope(
            &api,
            ObjectKind::Formats,
            Operation::View,
            query.tenant.as_deref(),
        )
        .await?;
    let wanted = page(query.limit, query.offset, query.sort)?;
    let all: Vec<FormatView> = formats::list(&api.storage, scope)
        .await?
        .into_iter()
        .map(format_view)
        .collect();
    let (items, total) = paging::in_memory(all, &wanted, &FORMAT_SORT, |f, field| match field {
        "kind" => f.kind.clone(),
        "direction" => f.direction.clone(),
        "created_at" => f.created_at.to_rfc3339(),
        _ => f.name.clone(),
    })?;
    Ok(Listed::new(items, total).response())
}
