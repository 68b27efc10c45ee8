//! Tenants (system administrators), users and roles.

use aos_auth::password;
use aos_auth::permissions::{ObjectKind, Operation};
use aos_storage::entity::role;
use aos_storage::repo::audit::{self, AuditEvent};
use aos_storage::repo::users::{self, NewUser};
use aos_storage::repo::{paging, roles, tenants};
use chrono::{DateTime, Utc};
use ntex::http::StatusCode;
use ntex::web::{self, HttpResponse};
use serde::{Deserialize, Serialize};

use super::{
    ApiError, ApiState, Caller, InTenant, Json, ListQuery, Listed, PlatformListQuery, Query, page,
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/tenants", web::get().to(list_tenants))
        .route("/tenants", web::post().to(create_tenant))
        .route("/users", web::get().to(list_users))
        .route("/users", web::post().to(create_user))
        .route("/roles", web::get().to(list_roles));
}

/// The audit record of something a signed-in user did through the API.
fn api_event(
    caller: &Caller,
    tenant: Option<i64>,
    action: &str,
    kind: &str,
    id: &str,
) -> AuditEvent {
    AuditEvent {
        tenant,
        actor: format!("user:{}", caller.0.login),
        action: action.into(),
        object_kind: Some(kind.into()),
        object_id: Some(id.into()),
        success: true,
        detail: serde_json::Value::Null,
        ..Default::default()
    }
}

#[derive(Serialize)]
struct TenantView {
    name: String,
    disabled: bool,
    created_at: DateTime<Utc>,
}

const TENANT_SORT: [&str; 2] = ["name", "created_at"];

/// `GET /api/tenants` → every tenant (system administrators).
async fn list_tenants(
    api: ApiState,
    caller: Caller,
    query: Query<PlatformListQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.platform(ObjectKind::Tenants, Operation::View)?;
    let query = query.0;
    let wanted = page(query.limit, query.offset, query.sort)?;
    let all: Vec<TenantView> = tenants::list(&api.storage)
        .await?
        .into_iter()
        .map(|t| TenantView {
            name: t.name,
            disabled: t.disabled,
            created_at: t.created_at,
        })
        .collect();
    let (items, total) = paging::in_memory(all, &wanted, &TENANT_SORT, |t, field| match field {
        "created_at" => t.created_at.to_rfc3339(),
        _ => t.name.clone(),
    })?;
    Ok(Listed::new(items, total).response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    name: String,
}

/// `POST /api/tenants {"name"}` → 201 (system administrators).
async fn create_tenant(
    api: ApiState,
    caller: Caller,
    body: Json<NewTenant>,
) -> Result<HttpResponse, ApiError> {
    caller.platform(ObjectKind::Tenants, Operation::Create)?;
    let created = tenants::create(&api.storage, &body.0.name).await?;
    audit::record(
        &api.storage,
        api_event(&caller, None, "tenant.create", "tenant", &created.name),
    )
    .await?;
    Ok(HttpResponse::Created().json(&TenantView {
        name: created.name,
        disabled: created.disabled,
        created_at: created.created_at,
    }))
}

#[derive(Serialize)]
struct UserView {
    login: String,
    name: String,
    email: Option<String>,
    roles: Vec<String>,
    disabled: bool,
    created_at: DateTime<Utc>,
}

const USER_SORT: [&str; 3] = ["login", "name", "created_at"];

/// `GET /api/users?limit=&offset=&sort=` → the tenant's users with their roles, by login.
async fn list_users(
    api: ApiState,
    caller: Caller,
    query: Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.0;
    let scope = caller
        .scope(
            &api,
            ObjectKind::Users,
            Operation::View,
            query.tenant.as_deref(),
        )
        .await?;
    let wanted = page(query.limit, query.offset, query.sort)?;
    let (found, total) = paging::in_memory(
        users::list(&api.storage, scope).await?,
        &wanted,
        &USER_SORT,
        |u, field| match field {
            "name" => u.name.clone(),
            "created_at" => u.created_at.to_rfc3339(),
            _ => u.login.clone(),
        },
    )?;
    let mut items = Vec::with_capacity(found.len());
    for u in found {
        let roles = roles::of_user(&api.storage, u.id)
            .await?
            .into_iter()
            .map(|r| r.name)
            .collect();
        items.push(UserView {
            login: u.login,
            name: u.name,
            email: u.email,
            roles,
            disabled: u.disabled,
            created_at: u.created_at,
        });
    }
    Ok(Listed::new(items, total).response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateUser {
    login: String,
    name: Option<String>,
    email: Option<String>,
    password: String,
    /// The entity (customer) the user is bound to.
    entity: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
}

/// `POST /api/users {"login", "name", "email", "password", "entity", "roles"}` → 201.
async fn create_user(
    api: ApiState,
    caller: Caller,
    query: Query<InTenant>,
    body: Json<CreateUser>,
) -> Result<HttpResponse, ApiError> {
    let scope = caller
        .scope(
            &api,
            ObjectKind::Users,
            Operation::Create,
            query.0.tenant.as_deref(),
        )
        .await?;
    let body = body.0;
    if !password::long_enough(&body.password) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!(
                "the password is too short: use at least {} characters",
                password::MIN_CHARS
            ),
        )
        .field("password"));
    }
    // argon2id takes a while on purpose: off the request threads.
    let password_hash = password::hash_off_thread(body.password, api.accounts.hash_params())
        .await
        .map_err(ApiError::internal)?;
    let new = NewUser {
        name: body.name.unwrap_or_else(|| body.login.clone()),
        login: body.login,
        email: body.email,
        password_hash,
        entity: body.entity,
        roles: body.roles,
    };
    let created = users::create(&api.storage, scope, new).await?;
    audit::record(
        &api.storage,
        api_event(
            &caller,
            Some(scope.tenant),
            "user.create",
            "user",
            &created.login,
        ),
    )
    .await?;
    let roles = roles::of_user(&api.storage, created.id)
        .await?
        .into_iter()
        .map(|r| r.name)
        .collect();
    Ok(HttpResponse::Created().json(&UserView {
        login: created.login,
        name: created.name,
        email: created.email,
        roles,
        disabled: created.disabled,
        created_at: created.created_at,
    }))
}

#[derive(Serialize)]
struct RoleView {
    name: String,
    builtin: bool,
    permissions: serde_json::Value,
    actions: serde_json::Value,
}

const ROLE_SORT: [&str; 1] = ["name"];

/// `GET /api/roles` → the roles the tenant's users may be given: built-in ones, then its own.
async fn list_roles(
    api: ApiState,
    caller: Caller,
    query: Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.0;
    let scope = caller
        .scope(
            &api,
            ObjectKind::Roles,
            Operation::View,
            query.tenant.as_deref(),
        )
        .await?;
    let wanted = page(query.limit, query.offset, query.sort)?;
    let (found, total) = paging::in_memory(
        roles::list(&api.storage, scope).await?,
        &wanted,
        &ROLE_SORT,
        |r: &role::Model, _| r.name.clone(),
    )?;
    let items = found
        .into_iter()
        .map(|r| RoleView {
            name: r.name,
            builtin: r.builtin,
            permissions: r.permissions,
            actions: r.actions,
        })
        .collect();
    Ok(Listed::new(items, total).response())
}
