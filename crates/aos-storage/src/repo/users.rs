//! Users: of a tenant (optionally bound to one of its entities), or of the platform.

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder,
};

use super::{Scope, bound_entity, check_identifier, check_name, duplicate, roles};
use crate::entity::{app_user, org_entity, tenant};
use crate::{Storage, StorageError};

/// A user to create. `password_hash` is an argon2id PHC string (see `aos-auth`).
#[derive(Clone, Debug, Default)]
pub struct NewUser {
    pub login: String,
    pub name: String,
    pub email: Option<String>,
    pub password_hash: String,
    /// Name of the entity (of the same tenant) the user is bound to.
    pub entity: Option<String>,
    /// Names of the roles to give the user (built-in, or of its tenant).
    pub roles: Vec<String>,
}

fn check(new: &NewUser) -> Result<(), StorageError> {
    check_identifier("login", &new.login)?;
    check_name("name", &new.name)?;
    if let Some(email) = &new.email {
        check_email(email)?;
    }
    Ok(())
}

/// An e-mail address as the API document describes it: a name, an `@` and a domain, without
/// spaces or control characters.
fn check_email(email: &str) -> Result<(), StorageError> {
    check_name("email", email)?;
    let shaped = email
        .split_once('@')
        .is_some_and(|(name, domain)| !name.is_empty() && !domain.is_empty())
        && !email.chars().any(char::is_whitespace);
    if shaped {
        Ok(())
    } else {
        Err(StorageError::invalid(
            "email",
            "is not an e-mail address (name@domain)",
        ))
    }
}

async fn insert(
    storage: &Storage,
    tenant: Option<i64>,
    entity: Option<i64>,
    new: NewUser,
) -> Result<app_user::Model, StorageError> {
    let now = Utc::now();
    // The user and its roles, or nothing.
    let txn = storage.begin_write().await?;
    let user = app_user::ActiveModel {
        tenant_id: Set(tenant),
        entity_id: Set(entity),
        login: Set(new.login.clone()),
        name: Set(new.name),
        email: Set(new.email),
        phone: Set(None),
        password_hash: Set(new.password_hash),
        disabled: Set(false),
        locked: Set(false),
        created_at: Set(now),
        password_changed_at: Set(now),
        ..Default::default()
    }
    .insert(&txn)
    .await
    .map_err(duplicate("user", &new.login))?;
    for role in &new.roles {
        roles::assign_in(&txn, &user, role).await?;
    }
    txn.commit().await?;
    Ok(user)
}

/// Creates a user of the scope's tenant. A customer-bound scope creates users of its entity.
pub async fn create(
    storage: &Storage,
    scope: Scope,
    new: NewUser,
) -> Result<app_user::Model, StorageError> {
    check(&new)?;
    let entity = bound_entity(storage.db(), scope, new.entity.as_deref()).await?;
    insert(storage, Some(scope.tenant), entity, new).await
}

/// Creates a platform user (no tenant): a system administrator.
pub async fn create_platform(
    storage: &Storage,
    new: NewUser,
) -> Result<app_user::Model, StorageError> {
    check(&new)?;
    if new.entity.is_some() {
        return Err(StorageError::invalid(
            "entity",
            "must not be given: platform users belong to no entity",
        ));
    }
    insert(storage, None, None, new).await
}

/// The users the scope may see: its tenant's (a customer: its entity's).
pub async fn list(storage: &Storage, scope: Scope) -> Result<Vec<app_user::Model>, StorageError> {
    let mut query = app_user::Entity::find().filter(app_user::Column::TenantId.eq(scope.tenant));
    if let Some(entity) = scope.customer {
        query = query.filter(app_user::Column::EntityId.eq(entity));
    }
    Ok(query
        .order_by_asc(app_user::Column::Login)
        .all(storage.db())
        .await?)
}

/// Platform users (system administrators).
pub async fn list_platform(storage: &Storage) -> Result<Vec<app_user::Model>, StorageError> {
    Ok(app_user::Entity::find()
        .filter(app_user::Column::TenantId.is_null())
        .order_by_asc(app_user::Column::Login)
        .all(storage.db())
        .await?)
}

/// The customer entity a user is bound to (None for users of internal units, or of none):
/// such a user sees only its customer's devices and data.
pub async fn customer_of(
    storage: &Storage,
    user: &app_user::Model,
) -> Result<Option<i64>, StorageError> {
    let (Some(_), Some(entity)) = (user.tenant_id, user.entity_id) else {
        return Ok(None);
    };
    Ok(org_entity::Entity::find_by_id(entity)
        .one(storage.db())
        .await?
        .filter(|e| e.kind == "customer")
        .map(|e| e.id))
}

/// The user with this id, whatever its tenant (the id comes from a verified token or session).
pub async fn by_id(storage: &Storage, id: i64) -> Result<app_user::Model, StorageError> {
    app_user::Entity::find_by_id(id)
        .one(storage.db())
        .await?
        .ok_or_else(|| StorageError::not_found("user", id.to_string()))
}

/// The user with this id and whether its tenant is disabled, in one read (every API request
/// asks it: a disabled tenant's users are shut out at once).
pub async fn by_id_with_tenant(
    storage: &Storage,
    id: i64,
) -> Result<(app_user::Model, bool), StorageError> {
    let (user, tenant) = app_user::Entity::find_by_id(id)
        .find_also_related(tenant::Entity)
        .one(storage.db())
        .await?
        .ok_or_else(|| StorageError::not_found("user", id.to_string()))?;
    let tenant_disabled = user.tenant_id.is_some() && tenant.is_none_or(|t| t.disabled);
    Ok((user, tenant_disabled))
}

/// The user with this login, whatever its tenant (signing in is how the tenant is found).
pub async fn by_login(storage: &Storage, login: &str) -> Result<app_user::Model, StorageError> {
    app_user::Entity::find()
        .filter(app_user::Column::Login.eq(login))
        .one(storage.db())
        .await?
        .ok_or_else(|| StorageError::not_found("user", login))
}

/// What to change of a user (None: keep).
#[derive(Clone, Debug, Default)]
pub struct UserChange {
    pub name: Option<String>,
    pub email: Option<String>,
    /// A disabled user cannot sign in, and its tokens stop working at their next use.
    pub disabled: Option<bool>,
    /// The names of all its roles from now on (built-in, or of its tenant).
    pub roles: Option<Vec<String>>,
}

/// Changes a user of the scope's tenant (a customer scope: of its own entity): the user and its
/// roles, or nothing.
pub async fn update(
    storage: &Storage,
    scope: Scope,
    login: &str,
    change: UserChange,
) -> Result<app_user::Model, StorageError> {
    if let Some(name) = &change.name {
        check_name("name", name)?;
    }
    if let Some(email) = &change.email {
        check_email(email)?;
    }
    let user = by_login(storage, login).await?;
    if user.tenant_id != Some(scope.tenant)
        || scope.customer.is_some_and(|c| user.entity_id != Some(c))
    {
        // Indistinguishable from a user that does not exist.
        return Err(StorageError::not_found("user", login));
    }
    let txn = storage.begin_write().await?;
    if let Some(names) = &change.roles {
        roles::replace_in(&txn, &user, names).await?;
    }
    let mut row = user.into_active_model();
    if let Some(name) = change.name {
        row.name = Set(name);
    }
    if let Some(email) = change.email {
        row.email = Set(Some(email));
    }
    if let Some(disabled) = change.disabled {
        row.disabled = Set(disabled);
    }
    let user = row.update(&txn).await?;
    txn.commit().await?;
    Ok(user)
}

/// Sets a user's password hash. `scope` None: a platform-level change (the CLI, a system
/// administrator); otherwise the user must be visible in the scope.
pub async fn set_password(
    storage: &Storage,
    scope: Option<Scope>,
    login: &str,
    password_hash: String,
) -> Result<(), StorageError> {
    let user = by_login(storage, login).await?;
    if let Some(scope) = scope
        && (user.tenant_id != Some(scope.tenant)
            || scope.customer.is_some_and(|c| user.entity_id != Some(c)))
    {
        // Indistinguishable from a user that does not exist.
        return Err(StorageError::not_found("user", login));
    }
    let mut user = user.into_active_model();
    user.password_hash = Set(password_hash);
    user.password_changed_at = Set(Utc::now());
    user.update(storage.db()).await?;
    Ok(())
}
