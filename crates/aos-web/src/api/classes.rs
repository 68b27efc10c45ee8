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
use utoipa::ToSchema;

use super::{
    ApiError, ApiState, Caller, ErrorBody, InTenant, Json, ListQuery, Listed, Query, Routes, page,
};

pub fn routes(r: &mut impl Routes) {
    r.get("/classes", list)
        .post("/classes", create)
        .get("/classes/{name}", get)
        .patch("/classes/{name}", update)
        .delete("/classes/{name}", delete)
        .get("/formats", list_formats);
}

/// A new device class.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateClass {
    #[schema(value_type = super::schema::Name)]
    name: String,
    #[serde(default)]
    #[schema(max_length = 4096)]
    description: String,
    /// Its devices publish for child devices.
    #[serde(default)]
    is_gateway: bool,
}

/// A device class.
#[derive(Serialize, ToSchema)]
pub(super) struct ClassView {
    name: String,
    description: String,
    is_gateway: bool,
    format: Option<String>,
    outbound_format: Option<String>,
    /// Unknown devices may register with a provisioning key.
    provisioning: bool,
    /// How many devices it has.
    devices: u64,
    created_at: DateTime<Utc>,
}

pub(super) const CLASS_SORT: [&str; 3] = ["name", "created_at", "devices"];

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

/// List the device classes
///
/// The tenant's classes, by name unless sorted; `sort`: `name`, `created_at`, `devices`.
#[utoipa::path(
    get,
    path = "/api/classes",
    tag = "classes",
    operation_id = "list_classes",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of classes", body = Listed<ClassView>),
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

/// Get a device class
#[utoipa::path(
    get,
    path = "/api/classes/{name}",
    tag = "classes",
    operation_id = "get_class",
    params(("name" = String, Path, description = "The class's name"), InTenant),
    responses(
        (status = 200, description = "The class", body = ClassView),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such class or tenant", body = ErrorBody),
        (status = 422, description = "A parameter is wrong (`field` names it)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn get(
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

/// Create a device class
#[utoipa::path(
    post,
    path = "/api/classes",
    tag = "classes",
    operation_id = "create_class",
    params(InTenant),
    request_body = CreateClass,
    responses(
        (status = 201, description = "Created", body = ClassView),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such tenant", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 413, description = "The body is over 256 KiB", body = ErrorBody),
        (status = 422, description = "The body or a parameter is wrong (`field` names it)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn create(
    api: ApiState,
    caller: Caller,
    query: Query<InTenant>,
    body: Json<CreateClass>,
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

/// A message format.
#[derive(Serialize, ToSchema)]
pub(super) struct FormatView {
    name: String,
    /// `json`, `xml`, `protobuf` or `pms`.
    kind: String,
    /// `inbound` or `outbound`.
    direction: String,
    /// The protobuf message type, for `protobuf` formats.
    proto_message: Option<String>,
    /// The `.proto` text, for `protobuf` formats.
    proto: Option<String>,
    /// Whether it checks messages against a JSON schema.
    json_schema: bool,
    /// That JSON Schema: an object or a boolean, as it was given.
    schema: Option<serde_json::Value>,
    /// Payload field → attribute mapping.
    #[schema(value_type = Object)]
    mapping: serde_json::Value,
    created_at: DateTime<Utc>,
}

pub(super) const FORMAT_SORT: [&str; 4] = ["name", "kind", "direction", "created_at"];

fn format_view(f: message_format::Model) -> FormatView {
    FormatView {
        name: f.name,
        kind: f.kind,
        direction: f.direction,
        proto_message: f.proto_message,
        proto: f.proto_text,
        json_schema: f.json_schema.is_some(),
        schema: f.json_schema,
        mapping: f.mapping,
        created_at: f.created_at,
    }
}

/// List the message formats
///
/// The tenant's message formats, by name unless sorted; `sort`: `name`, `kind`, `direction`,
/// `created_at`.
#[utoipa::path(
    get,
    path = "/api/formats",
    tag = "classes",
    operation_id = "list_formats",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of formats", body = Listed<FormatView>),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such tenant", body = ErrorBody),
        (status = 422, description = "A parameter is wrong (`field` names it)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn list_formats(
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

/// What to change of a class (absent: kept).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ClassChange {
    #[schema(value_type = Option<super::schema::Name>)]
    name: Option<String>,
    description: Option<String>,
}

/// Change a device class
///
/// Rename it or change its description; its devices, model and formats stay. Audited.
#[utoipa::path(
    patch,
    path = "/api/classes/{name}",
    tag = "classes",
    operation_id = "update_class",
    params(("name" = String, Path, description = "The class"), InTenant),
    request_body = ClassChange,
    responses(
        (status = 200, description = "The class", body = ClassView),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such class or tenant", body = ErrorBody),
        (status = 409, description = "The new name is taken", body = ErrorBody),
        (status = 413, description = "The body is over 256 KiB", body = ErrorBody),
        (status = 422, description = "The body or a parameter is wrong (`field` names it)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn update(
    api: ApiState,
    caller: Caller,
    name: web::types::Path<String>,
    query: Query<InTenant>,
    body: Json<ClassChange>,
) -> Result<HttpResponse, ApiError> {
    let scope = caller
        .scope(
            &api,
            ObjectKind::Classes,
            Operation::Update,
            query.0.tenant.as_deref(),
        )
        .await?;
    let body = body.0;
    let class = classes::update(&api.storage, scope, &name, body.name, body.description).await?;
    let mut event =
        super::people::api_event(&caller, Some(scope.tenant), "class.update", "class", &name);
    event.detail = serde_json::json!({ "name": class.name });
    aos_storage::repo::audit::record(&api.storage, event).await?;
    let formats = format_names(&api, scope).await?;
    let counts = classes::device_counts(&api.storage, scope).await?;
    Ok(HttpResponse::Ok().json(&class_view(class, &formats, &counts)))
}

/// Delete a device class
///
/// Only one no device is of, and in which no gateway class registers its children (`409` says
/// which); its model and interpreters go with it. Audited.
#[utoipa::path(
    delete,
    path = "/api/classes/{name}",
    tag = "classes",
    operation_id = "delete_class",
    params(("name" = String, Path, description = "The class"), InTenant),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such class or tenant", body = ErrorBody),
        (status = 409, description = "Devices are of it, or a gateway class registers its children in it", body = ErrorBody),
        (status = 422, description = "A parameter is wrong (`field` names it)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn delete(
    api: ApiState,
    caller: Caller,
    name: web::types::Path<String>,
    query: Query<InTenant>,
) -> Result<HttpResponse, ApiError> {
    let tenant = query.0.tenant.as_deref();
    super::delete_named(
        &api,
        &caller,
        (ObjectKind::Classes, "class"),
        tenant,
        &name,
        |scope| classes::delete(&api.storage, scope, &name),
    )
    .await
}
