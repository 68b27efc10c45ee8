//! Entities of a tenant (units and customers) and its API keys for applications.

use aos_auth::permissions::{ObjectKind, Operation};
use aos_auth::secret;
use aos_core::access::TopicGrant;
use aos_storage::repo::api_keys::{self, NewApiKey};
use aos_storage::repo::audit;
use aos_storage::repo::entities::{self, EntityChange, EntityKind};
use aos_storage::repo::paging;
use chrono::{DateTime, Utc};
use ntex::http::StatusCode;
use ntex::web::{self, HttpResponse};
use serde::{Deserialize, Serialize};

use super::people::api_event;
use utoipa::ToSchema;

use super::{
    ApiError, ApiState, Caller, ErrorBody, InTenant, Json, ListQuery, Listed, Query, Routes, page,
};

pub fn routes(r: &mut impl Routes) {
    r.get("/entities", list)
        .post("/entities", create)
        .patch("/entities/{name}", update)
        .delete("/entities/{name}", delete)
        .get("/api-keys", list_keys)
        .post("/api-keys", create_key)
        .delete("/api-keys/{name}", revoke_key);
}

/// An entity: a unit of the tenant, or a customer.
#[derive(Serialize, ToSchema)]
pub(super) struct EntityView {
    name: String,
    /// `unit` or `customer`.
    kind: String,
    parent: Option<String>,
    created_at: DateTime<Utc>,
}

pub(super) const ENTITY_SORT: [&str; 3] = ["name", "kind", "created_at"];

/// List the entities
///
/// The tenant's entities (a customer's user: its own), by name; `sort`: `name`, `kind`,
/// `created_at`.
#[utoipa::path(
    get,
    path = "/api/entities",
    tag = "people",
    operation_id = "list_entities",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of entities", body = Listed<EntityView>),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such tenant or object", body = ErrorBody),
        (status = 422, description = "A field is wrong (`field` names it)", body = ErrorBody),
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
            ObjectKind::Entities,
            Operation::View,
            query.tenant.as_deref(),
        )
        .await?;
    let wanted = page(query.limit, query.offset, query.sort)?;
    let all = entities::list(&api.storage, scope).await?;
    let names: std::collections::HashMap<i64, String> =
        all.iter().map(|e| (e.id, e.name.clone())).collect();
    let views: Vec<EntityView> = all
        .into_iter()
        .map(|e| EntityView {
            parent: e.parent_id.and_then(|p| names.get(&p).cloned()),
            name: e.name,
            kind: e.kind,
            created_at: e.created_at,
        })
        .collect();
    let (items, total) = paging::in_memory(views, &wanted, &ENTITY_SORT, |e, field| match field {
        "kind" => e.kind.clone(),
        "created_at" => e.created_at.to_rfc3339(),
        _ => e.name.clone(),
    })?;
    Ok(Listed::new(items, total).response())
}

/// A new entity.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewEntity {
    #[schema(value_type = super::schema::Name)]
    name: String,
    /// `unit` (default) or `customer`.
    #[schema(pattern = "^(unit|customer)$")]
    kind: Option<String>,
    #[schema(value_type = Option<super::schema::Name>)]
    parent: Option<String>,
}

/// Create an entity
#[utoipa::path(
    post,
    path = "/api/entities",
    tag = "people",
    operation_id = "create_entity",
    params(InTenant),
    request_body = NewEntity,
    responses(
        (status = 201, description = "Created", body = EntityView),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such tenant or object", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 422, description = "A field is wrong (`field` names it)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn create(
    api: ApiState,
    caller: Caller,
    query: Query<InTenant>,
    body: Json<NewEntity>,
) -> Result<HttpResponse, ApiError> {
    let scope = caller
        .scope(
            &api,
            ObjectKind::Entities,
            Operation::Create,
            query.0.tenant.as_deref(),
        )
        .await?;
    let body = body.0;
    let kind = match body.kind.as_deref() {
        None | Some("unit") => EntityKind::Unit,
        Some("customer") => EntityKind::Customer,
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                format!("kind must be unit or customer, not `{other}`"),
            )
            .field("kind"));
        }
    };
    let made = entities::create(
        &api.storage,
        scope,
        &body.name,
        kind,
        body.parent.as_deref(),
    )
    .await?;
    audit::record(
        &api.storage,
        api_event(
            &caller,
            Some(scope.tenant),
            "entity.create",
            "entity",
            &made.name,
        ),
    )
    .await?;
    Ok(HttpResponse::Created().json(&EntityView {
        name: made.name,
        kind: made.kind,
        parent: body.parent,
        created_at: made.created_at,
    }))
}

/// What to change of an entity (absent: kept).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct EntityChangeBody {
    #[schema(value_type = Option<super::schema::Name>)]
    name: Option<String>,
    /// The entity it is under (null: none).
    #[serde(default, with = "super::serde_with_null")]
    #[schema(value_type = Option<String>)]
    parent: Option<Option<String>>,
}

/// Change an entity
///
/// Rename it, or put it under another entity (never under itself or one of its own); its
/// users and devices stay bound to it. Audited.
#[utoipa::path(
    patch,
    path = "/api/entities/{name}",
    tag = "people",
    operation_id = "update_entity",
    params(("name" = String, Path, description = "The entity"), InTenant),
    request_body = EntityChangeBody,
    responses(
        (status = 200, description = "Changed", body = EntityView),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such entity (or parent)", body = ErrorBody),
        (status = 409, description = "The new name is taken", body = ErrorBody),
        (status = 413, description = "The body is over 256 KiB", body = ErrorBody),
        (status = 422, description = "A field is wrong (`field` names it)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn update(
    api: ApiState,
    caller: Caller,
    name: web::types::Path<String>,
    query: Query<InTenant>,
    body: Json<EntityChangeBody>,
) -> Result<HttpResponse, ApiError> {
    let scope = caller
        .scope(
            &api,
            ObjectKind::Entities,
            Operation::Update,
            query.0.tenant.as_deref(),
        )
        .await?;
    let body = body.0;
    let change = EntityChange {
        name: body.name,
        parent: body.parent,
    };
    let updated = entities::update(&api.storage, scope, &name, change).await?;
    let mut event = api_event(
        &caller,
        Some(scope.tenant),
        "entity.update",
        "entity",
        &name,
    );
    event.detail = serde_json::json!({ "name": updated.name });
    audit::record(&api.storage, event).await?;
    let parent = match updated.parent_id {
        Some(id) => entities::list(&api.storage, scope)
            .await?
            .into_iter()
            .find(|e| e.id == id)
            .map(|e| e.name),
        None => None,
    };
    Ok(HttpResponse::Ok().json(&EntityView {
        name: updated.name,
        kind: updated.kind,
        parent,
        created_at: updated.created_at,
    }))
}

/// Delete an entity
///
/// Only one nothing is bound to: no users, devices or entities under it (`409` says what is
/// left). Audited.
#[utoipa::path(
    delete,
    path = "/api/entities/{name}",
    tag = "people",
    operation_id = "delete_entity",
    params(("name" = String, Path, description = "The entity"), InTenant),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such entity", body = ErrorBody),
        (status = 409, description = "Users, devices or entities are bound to it", body = ErrorBody),
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
        (ObjectKind::Entities, "entity"),
        tenant,
        &name,
        |scope| entities::delete(&api.storage, scope, &name),
    )
    .await
}

/// An API key of an application (never the key itself).
#[derive(Serialize, ToSchema)]
pub(super) struct ApiKeyView {
    name: String,
    /// The first characters of the key, to recognise it.
    prefix: String,
    grants: Vec<TopicGrant>,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

fn key_view(key: aos_storage::entity::api_key::Model) -> ApiKeyView {
    ApiKeyView {
        grants: api_keys::grants(&key),
        name: key.name,
        prefix: key.prefix,
        created_at: key.created_at,
        expires_at: key.expires_at,
        revoked_at: key.revoked_at,
    }
}

pub(super) const KEY_SORT: [&str; 2] = ["name", "created_at"];

/// List the API keys
///
/// The tenant's API keys for applications (never the keys themselves), by name; `sort`:
/// `name`, `created_at`.
#[utoipa::path(
    get,
    path = "/api/api-keys",
    tag = "people",
    operation_id = "list_api_keys",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of API keys", body = Listed<ApiKeyView>),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such tenant or object", body = ErrorBody),
        (status = 422, description = "A field is wrong (`field` names it)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn list_keys(
    api: ApiState,
    caller: Caller,
    query: Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.0;
    let scope = caller
        .scope(
            &api,
            ObjectKind::ApiKeys,
            Operation::View,
            query.tenant.as_deref(),
        )
        .await?;
    let wanted = page(query.limit, query.offset, query.sort)?;
    let views: Vec<ApiKeyView> = api_keys::list(&api.storage, scope)
        .await?
        .into_iter()
        .map(key_view)
        .collect();
    let (items, total) = paging::in_memory(views, &wanted, &KEY_SORT, |k, field| match field {
        "created_at" => k.created_at.to_rfc3339(),
        _ => k.name.clone(),
    })?;
    Ok(Listed::new(items, total).response())
}

/// A new API key.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewKey {
    #[schema(value_type = super::schema::Identifier)]
    name: String,
    /// MQTT topic filters the key may publish and/or subscribe to.
    #[schema(value_type = super::schema::Grants)]
    grants: Vec<TopicGrant>,
    /// `90d`, `1y`...; none: until revoked.
    #[serde(default, with = "humantime_serde")]
    #[schema(value_type = Option<super::schema::DurationText>, example = "90d")]
    expires_in: Option<std::time::Duration>,
}

/// A new API key and its secret, shown this once.
#[derive(Serialize, ToSchema)]
pub(super) struct CreatedKey {
    #[serde(flatten)]
    key: ApiKeyView,
    /// Shown once: the application's MQTT password (username `apikey`).
    secret: String,
}

/// Create an API key
///
/// An application's MQTT credential (username `apikey`, the secret as password) with explicit
/// topic grants; the secret is shown this once.
#[utoipa::path(
    post,
    path = "/api/api-keys",
    tag = "people",
    operation_id = "create_api_key",
    params(InTenant),
    request_body = NewKey,
    responses(
        (status = 201, description = "Created, with its secret", body = CreatedKey),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such tenant or object", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 422, description = "A field is wrong (`field` names it)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn create_key(
    api: ApiState,
    caller: Caller,
    query: Query<InTenant>,
    body: Json<NewKey>,
) -> Result<HttpResponse, ApiError> {
    let scope = caller
        .scope(
            &api,
            ObjectKind::ApiKeys,
            Operation::Create,
            query.0.tenant.as_deref(),
        )
        .await?;
    let body = body.0;
    let expires_at = match body.expires_in {
        Some(d) if d.is_zero() => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                "expires_in must be longer than zero (90d, 1y), or left out for a key that lasts until revoked",
            )
            .field("expires_in"));
        }
        Some(d) => Some(aos_storage::repo::expiry_after(d).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                "expires_in is too long: the key must expire before the year 10000",
            )
            .field("expires_in")
        })?),
        None => None,
    };
    let secret = secret::generate();
    let made = api_keys::create(
        &api.storage,
        scope,
        NewApiKey {
            name: body.name,
            prefix: secret::shown_prefix(&secret),
            key_hash: secret::lookup_hash(&secret),
            grants: body.grants,
            expires_at,
        },
    )
    .await?;
    audit::record(
        &api.storage,
        api_event(
            &caller,
            Some(scope.tenant),
            "api_key.create",
            "api_key",
            &made.name,
        ),
    )
    .await?;
    Ok(HttpResponse::Created().json(&CreatedKey {
        key: key_view(made),
        secret,
    }))
}

/// Revoke an API key
///
/// It signs in no more, and its sessions are closed on every node.
#[utoipa::path(
    delete,
    path = "/api/api-keys/{name}",
    tag = "people",
    operation_id = "revoke_api_key",
    params(("name" = String, Path, description = "The key's name"), InTenant),
    responses(
        (status = 200, description = "Revoked", body = ApiKeyView),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such tenant or object", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn revoke_key(
    api: ApiState,
    caller: Caller,
    name: web::types::Path<String>,
    query: Query<InTenant>,
) -> Result<HttpResponse, ApiError> {
    let scope = caller
        .scope(
            &api,
            ObjectKind::ApiKeys,
            Operation::Delete,
            query.0.tenant.as_deref(),
        )
        .await?;
    let revoked = api_keys::revoke(&api.storage, scope, &name).await?;
    audit::record(
        &api.storage,
        api_event(
            &caller,
            Some(scope.tenant),
            "api_key.revoke",
            "api_key",
            &revoked.name,
        ),
    )
    .await?;
    Ok(HttpResponse::Ok().json(&key_view(revoked)))
}
