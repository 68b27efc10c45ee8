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
use utoipa::ToSchema;

use super::{
    ApiError, ApiState, Caller, ErrorBody, InTenant, Json, ListQuery, Listed, PlatformListQuery,
    Query, Routes, page,
};

pub fn routes(r: &mut impl Routes) {
    r.get("/tenants", list_tenants)
        .post("/tenants", create_tenant)
        .patch("/tenants/{name}", update_tenant)
        .get("/users", list_users)
        .post("/users", create_user)
        .patch("/users/{login}", update_user)
        .post("/users/{login}/password-reset", reset_password)
        .get("/roles", list_roles)
        .post("/roles", create_role)
        .put("/roles/{name}", update_role)
        .delete("/roles/{name}", delete_role);
}

/// The audit record of something a signed-in user did through the API.
pub(super) fn api_event(
    caller: &Caller,
    tenant: Option<i64>,
    action: &str,
    kind: &str,
    id: &str,
) -> AuditEvent {
    AuditEvent::done(tenant, format!("user:{}", caller.0.login), action, kind, id)
}

/// A tenant.
#[derive(Serialize, ToSchema)]
pub(super) struct TenantView {
    name: String,
    disabled: bool,
    created_at: DateTime<Utc>,
}

pub(super) const TENANT_SORT: [&str; 2] = ["name", "created_at"];

/// List the tenants
///
/// Every tenant (system administrators); `sort`: `name`, `created_at`.
#[utoipa::path(
    get,
    path = "/api/tenants",
    tag = "people",
    operation_id = "list_tenants",
    params(PlatformListQuery),
    responses(
        (status = 200, description = "A page of tenants", body = Listed<TenantView>),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "Not a system administrator", body = ErrorBody),
        (status = 422, description = "A parameter is wrong (`field` names it)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn list_tenants(
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

/// A tenant to create.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewTenant {
    #[schema(value_type = super::schema::Identifier)]
    name: String,
}

/// Create a tenant
///
/// System administrators only; audited.
#[utoipa::path(
    post,
    path = "/api/tenants",
    tag = "people",
    operation_id = "create_tenant",
    request_body = NewTenant,
    responses(
        (status = 201, description = "Created", body = TenantView),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "Not a system administrator", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 413, description = "The body is over 256 KiB", body = ErrorBody),
        (status = 422, description = "The body is wrong (`field` names it)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn create_tenant(
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

/// What to change of a tenant.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TenantChange {
    /// A disabled tenant's users cannot sign in (their tokens stop working at once), its
    /// devices and applications cannot connect, and every node closes their live sessions.
    disabled: bool,
}

/// Disable or enable a tenant
///
/// System administrators only; audited (`tenant.disable`, `tenant.enable`). Nothing of the
/// tenant is deleted: enabling it again lets its users and devices back in.
#[utoipa::path(
    patch,
    path = "/api/tenants/{name}",
    tag = "people",
    operation_id = "update_tenant",
    params(("name" = String, Path, description = "The tenant's name")),
    request_body = TenantChange,
    responses(
        (status = 200, description = "The tenant", body = TenantView),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "Not a system administrator", body = ErrorBody),
        (status = 404, description = "No such tenant", body = ErrorBody),
        (status = 413, description = "The body is over 256 KiB", body = ErrorBody),
        (status = 422, description = "The body is wrong (`field` names it)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn update_tenant(
    api: ApiState,
    caller: Caller,
    name: web::types::Path<String>,
    body: Json<TenantChange>,
) -> Result<HttpResponse, ApiError> {
    caller.platform(ObjectKind::Tenants, Operation::Update)?;
    let disabled = body.0.disabled;
    let updated = tenants::set_disabled(&api.storage, &name, disabled).await?;
    let action = if disabled {
        "tenant.disable"
    } else {
        "tenant.enable"
    };
    audit::record(
        &api.storage,
        api_event(&caller, None, action, "tenant", &updated.name),
    )
    .await?;
    Ok(HttpResponse::Ok().json(&TenantView {
        name: updated.name,
        disabled: updated.disabled,
        created_at: updated.created_at,
    }))
}

/// A user of a tenant.
#[derive(Serialize, ToSchema)]
pub(super) struct UserView {
    login: String,
    name: String,
    email: Option<String>,
    /// Its roles' names.
    roles: Vec<String>,
    disabled: bool,
    created_at: DateTime<Utc>,
}

pub(super) const USER_SORT: [&str; 3] = ["login", "name", "created_at"];

/// List the users
///
/// The tenant's users with their roles, by login unless sorted; `sort`: `login`, `name`,
/// `created_at`.
#[utoipa::path(
    get,
    path = "/api/users",
    tag = "people",
    operation_id = "list_users",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of users", body = Listed<UserView>),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such tenant", body = ErrorBody),
        (status = 422, description = "A parameter is wrong (`field` names it)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn list_users(
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
        items.push(user_view(&api, u).await?);
    }
    Ok(Listed::new(items, total).response())
}

/// A user to create.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateUser {
    #[schema(value_type = super::schema::Identifier)]
    login: String,
    /// Default: the login.
    #[schema(value_type = Option<super::schema::Name>)]
    name: Option<String>,
    #[schema(value_type = Option<super::schema::Email>)]
    email: Option<String>,
    /// At least 8 characters.
    #[schema(min_length = 8)]
    password: String,
    /// The entity (customer) the user is bound to.
    #[schema(value_type = Option<super::schema::Name>)]
    entity: Option<String>,
    /// Role names.
    #[serde(default)]
    #[schema(value_type = Vec<super::schema::Name>)]
    roles: Vec<String>,
}

/// Create a user
///
/// Audited; a password under 8 characters is refused (`422`, `field` `password`).
#[utoipa::path(
    post,
    path = "/api/users",
    tag = "people",
    operation_id = "create_user",
    params(InTenant),
    request_body = CreateUser,
    responses(
        (status = 201, description = "Created", body = UserView),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such role, entity or tenant", body = ErrorBody),
        (status = 409, description = "The login is taken", body = ErrorBody),
        (status = 413, description = "The body is over 256 KiB", body = ErrorBody),
        (status = 422, description = "The body or a parameter is wrong (`field` names it)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn create_user(
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
    Ok(HttpResponse::Created().json(&user_view(&api, created).await?))
}

/// A user as the API shows it, with its roles' names.
async fn user_view(
    api: &super::Api,
    user: aos_storage::entity::app_user::Model,
) -> Result<UserView, ApiError> {
    let roles = roles::of_user(&api.storage, user.id)
        .await?
        .into_iter()
        .map(|r| r.name)
        .collect();
    Ok(UserView {
        login: user.login,
        name: user.name,
        email: user.email,
        roles,
        disabled: user.disabled,
        created_at: user.created_at,
    })
}

/// What to change of a user (an absent field is kept).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UserChangeBody {
    #[schema(value_type = Option<super::schema::Name>)]
    name: Option<String>,
    #[schema(value_type = Option<super::schema::Email>)]
    email: Option<String>,
    /// A disabled user cannot sign in, and its access tokens stop working at once.
    disabled: Option<bool>,
    /// All its roles from now on (built-in, or of the tenant); they apply to its next request.
    #[schema(value_type = Option<Vec<super::schema::Name>>)]
    roles: Option<Vec<String>>,
}

/// Change a user
///
/// Its name, e-mail, roles, or whether it is disabled (audited).
#[utoipa::path(
    patch,
    path = "/api/users/{login}",
    tag = "people",
    operation_id = "update_user",
    params(("login" = String, Path, description = "The user's login"), InTenant),
    request_body = UserChangeBody,
    responses(
        (status = 200, description = "The user", body = UserView),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such user in the tenant", body = ErrorBody),
        (status = 422, description = "A field is wrong (`field` names it)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn update_user(
    api: ApiState,
    caller: Caller,
    login: web::types::Path<String>,
    query: Query<InTenant>,
    body: Json<UserChangeBody>,
) -> Result<HttpResponse, ApiError> {
    let scope = caller
        .scope(
            &api,
            ObjectKind::Users,
            Operation::Update,
            query.0.tenant.as_deref(),
        )
        .await?;
    let body = body.0;
    let change = users::UserChange {
        name: body.name,
        email: body.email,
        disabled: body.disabled,
        roles: body.roles,
    };
    let changed = users::update(&api.storage, scope, &login, change).await?;
    audit::record(
        &api.storage,
        api_event(
            &caller,
            Some(scope.tenant),
            "user.update",
            "user",
            &changed.login,
        ),
    )
    .await?;
    Ok(HttpResponse::Ok().json(&user_view(&api, changed).await?))
}

/// A new password, shown this once.
#[derive(Serialize, ToSchema)]
pub(super) struct NewPassword {
    password: String,
}

/// Reset a user's password
///
/// A new generated password, shown this once; the user's sessions can no longer refresh.
#[utoipa::path(
    post,
    path = "/api/users/{login}/password-reset",
    tag = "people",
    operation_id = "reset_password",
    params(("login" = String, Path, description = "The user's login")),
    responses(
        (status = 200, description = "The new password", body = NewPassword),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn reset_password(
    api: ApiState,
    caller: Caller,
    login: web::types::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let password = api.accounts.reset_password(&caller.0, &login).await?;
    Ok(HttpResponse::Ok().json(&NewPassword { password }))
}

/// A role: what it grants.
#[derive(Serialize, ToSchema)]
pub(super) struct RoleView {
    name: String,
    /// Defined by AOS, the same in every tenant.
    builtin: bool,
    /// Object kind (`devices`, `commands`, …) → level (`view`, `manage` or `full`).
    #[schema(value_type = std::collections::BTreeMap<String, String>)]
    permissions: serde_json::Value,
    /// The advanced actions granted one by one.
    #[schema(value_type = Vec<String>)]
    actions: serde_json::Value,
}

pub(super) const ROLE_SORT: [&str; 1] = ["name"];

/// List the roles
///
/// The roles the tenant's users may be given: the built-in ones, then its own.
#[utoipa::path(
    get,
    path = "/api/roles",
    tag = "people",
    operation_id = "list_roles",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of roles", body = Listed<RoleView>),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such tenant", body = ErrorBody),
        (status = 422, description = "A parameter is wrong (`field` names it)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn list_roles(
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

/// What a role of the tenant grants.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RoleGrantsBody {
    /// Object kind (`devices`, `commands`, …) → level (`view`, `manage` or `full`).
    #[serde(default)]
    #[schema(value_type = super::schema::RolePermissions)]
    permissions: std::collections::BTreeMap<String, String>,
    /// Advanced actions (`validate`, `lock`, `disable`).
    #[serde(default)]
    #[schema(value_type = super::schema::RoleActions)]
    actions: Vec<String>,
}

/// A new role of the tenant.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewRole {
    #[schema(value_type = super::schema::Name)]
    name: String,
    /// Object kind (`devices`, `commands`, …) → level (`view`, `manage` or `full`).
    #[serde(default)]
    #[schema(value_type = super::schema::RolePermissions)]
    permissions: std::collections::BTreeMap<String, String>,
    /// Advanced actions (`validate`, `lock`, `disable`).
    #[serde(default)]
    #[schema(value_type = super::schema::RoleActions)]
    actions: Vec<String>,
}

impl RoleGrantsBody {
    fn grants(&self) -> Result<aos_auth::permissions::Grants, ApiError> {
        let levels: Vec<String> = self
            .permissions
            .iter()
            .map(|(kind, level)| format!("{kind}={level}"))
            .collect();
        aos_auth::permissions::Grants::parse_tenant_role(&levels, &self.actions).map_err(|e| {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e).field("permissions")
        })
    }
}

/// Saves a role of the caller's tenant (new, or its grants replaced) and audits it.
async fn save_role(
    api: &super::Api,
    caller: &Caller,
    tenant: Option<&str>,
    name: &str,
    body: &RoleGrantsBody,
    new: bool,
) -> Result<RoleView, ApiError> {
    let operation = if new {
        Operation::Create
    } else {
        Operation::Update
    };
    let scope = caller
        .scope(api, ObjectKind::Roles, operation, tenant)
        .await?;
    let grants = body.grants()?;
    let (saved, action) = if new {
        (
            roles::create(&api.storage, scope, name, grants.stored()).await?,
            "role.create",
        )
    } else {
        (
            roles::update(&api.storage, scope, name, grants.stored()).await?,
            "role.update",
        )
    };
    let mut event = api_event(caller, Some(scope.tenant), action, "role", name);
    event.detail = serde_json::to_value(&grants).unwrap_or_default();
    audit::record(&api.storage, event).await?;
    Ok(RoleView {
        name: saved.name,
        builtin: saved.builtin,
        permissions: saved.permissions,
        actions: saved.actions,
    })
}

/// Create a role
///
/// A role of the tenant: object kind → level, and advanced actions; built-in names are taken.
#[utoipa::path(
    post,
    path = "/api/roles",
    tag = "people",
    operation_id = "create_role",
    params(InTenant),
    request_body = NewRole,
    responses(
        (status = 201, description = "Created", body = RoleView),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 422, description = "An unknown kind, level or action (`field` names it)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn create_role(
    api: ApiState,
    caller: Caller,
    query: Query<InTenant>,
    body: Json<NewRole>,
) -> Result<HttpResponse, ApiError> {
    let NewRole {
        name,
        permissions,
        actions,
    } = body.0;
    let grants = RoleGrantsBody {
        permissions,
        actions,
    };
    let saved = save_role(
        &api,
        &caller,
        query.0.tenant.as_deref(),
        &name,
        &grants,
        true,
    )
    .await?;
    Ok(HttpResponse::Created().json(&saved))
}

/// Change a role's grants
///
/// Its users have the new grants from their next request; built-in roles cannot be changed.
#[utoipa::path(
    put,
    path = "/api/roles/{name}",
    tag = "people",
    operation_id = "update_role",
    params(("name" = String, Path, description = "The role"), InTenant),
    request_body = RoleGrantsBody,
    responses(
        (status = 200, description = "Saved", body = RoleView),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it, or the role is built in", body = ErrorBody),
        (status = 404, description = "No such role", body = ErrorBody),
        (status = 422, description = "An unknown kind, level or action (`field` names it)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn update_role(
    api: ApiState,
    caller: Caller,
    name: web::types::Path<String>,
    query: Query<InTenant>,
    body: Json<RoleGrantsBody>,
) -> Result<HttpResponse, ApiError> {
    let saved = save_role(
        &api,
        &caller,
        query.0.tenant.as_deref(),
        &name,
        &body.0,
        false,
    )
    .await?;
    Ok(HttpResponse::Ok().json(&saved))
}

/// Delete a role
///
/// A role of the tenant that no user has (take it from its users first: `409` says how many
/// have it); built-in roles cannot be deleted. Audited.
#[utoipa::path(
    delete,
    path = "/api/roles/{name}",
    tag = "people",
    operation_id = "delete_role",
    params(("name" = String, Path, description = "The role"), InTenant),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it, or the role is built in", body = ErrorBody),
        (status = 404, description = "No such role", body = ErrorBody),
        (status = 409, description = "Users still have it", body = ErrorBody),
        (status = 422, description = "A parameter is wrong (`field` names it)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn delete_role(
    api: ApiState,
    caller: Caller,
    name: web::types::Path<String>,
    query: Query<InTenant>,
) -> Result<HttpResponse, ApiError> {
    let tenant = query.0.tenant.as_deref();
    super::delete_named(
        &api,
        &caller,
        (ObjectKind::Roles, "role"),
        tenant,
        &name,
        |scope| roles::delete(&api.storage, scope, &name),
    )
    .await
}
