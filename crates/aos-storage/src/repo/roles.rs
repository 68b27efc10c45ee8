//! Roles (built-in ones have no tenant) and which users have them.

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, EntityTrait,
    IntoActiveModel, PaginatorTrait, QueryFilter, QueryOrder,
};

use super::{Scope, check_name, duplicate};
use crate::entity::{app_user, role, user_role};
use crate::{Storage, StorageError};

/// A role's grants as stored: levels per object kind, and advanced actions (JSON).
#[derive(Clone, Debug, PartialEq)]
pub struct RoleGrants {
    pub permissions: serde_json::Value,
    pub actions: serde_json::Value,
}

/// Creates or updates the built-in roles (tenant NULL), so that a new version's definitions
/// apply to existing databases.
pub async fn ensure_builtin(
    storage: &Storage,
    roles: &[(&str, RoleGrants)],
) -> Result<(), StorageError> {
    let txn = storage.begin_write().await?;
    for (name, grants) in roles {
        let existing = role::Entity::find()
            .filter(role::Column::TenantId.is_null())
            .filter(role::Column::Name.eq(*name))
            .one(&txn)
            .await?;
        match existing {
            Some(row) => {
                let mut row = row.into_active_model();
                row.permissions = Set(grants.permissions.clone());
                row.actions = Set(grants.actions.clone());
                row.builtin = Set(true);
                row.update(&txn).await?;
            }
            None => {
                role::ActiveModel {
                    tenant_id: Set(None),
                    name: Set(name.to_string()),
                    builtin: Set(true),
                    permissions: Set(grants.permissions.clone()),
                    actions: Set(grants.actions.clone()),
                    created_at: Set(Utc::now()),
                    ..Default::default()
                }
                .insert(&txn)
                .await?;
            }
        }
    }
    txn.commit().await?;
    Ok(())
}

/// Creates a role of the scope's tenant. Its name may not be a built-in role's (users are given
/// roles by name).
pub async fn create(
    storage: &Storage,
    scope: Scope,
    name: &str,
    grants: RoleGrants,
) -> Result<role::Model, StorageError> {
    if scope.customer.is_some() {
        return Err(StorageError::Forbidden("customers cannot create roles"));
    }
    check_name("role name", name)?;
    let txn = storage.begin_write().await?;
    let builtin = role::Entity::find()
        .filter(role::Column::TenantId.is_null())
        .filter(role::Column::Name.eq(name))
        .one(&txn)
        .await?;
    if builtin.is_some() {
        return Err(StorageError::Duplicate {
            what: "built-in role",
            name: name.to_string(),
        });
    }
    let role = role::ActiveModel {
        tenant_id: Set(Some(scope.tenant)),
        name: Set(name.to_string()),
        builtin: Set(false),
        permissions: Set(grants.permissions),
        actions: Set(grants.actions),
        created_at: Set(Utc::now()),
        ..Default::default()
    }
    .insert(&txn)
    .await
    .map_err(duplicate("role", name))?;
    txn.commit().await?;
    Ok(role)
}

/// Replaces the grants of a role of the scope's tenant (built-in roles cannot be changed); its
/// users have the new grants from their next request.
pub async fn update(
    storage: &Storage,
    scope: Scope,
    name: &str,
    grants: RoleGrants,
) -> Result<role::Model, StorageError> {
    if scope.customer.is_some() {
        return Err(StorageError::Forbidden("customers cannot change roles"));
    }
    let role = role::Entity::find()
        .filter(builtin_or_of(Some(scope.tenant)))
        .filter(role::Column::Name.eq(name))
        .one(storage.db())
        .await?
        .ok_or_else(|| StorageError::not_found("role", name))?;
    if role.builtin {
        return Err(StorageError::Forbidden(
            "built-in roles cannot be changed: create a role of the tenant instead",
        ));
    }
    let mut role = role.into_active_model();
    role.permissions = Set(grants.permissions);
    role.actions = Set(grants.actions);
    Ok(role.update(storage.db()).await?)
}

/// Deletes a role of the scope's tenant that no user has (built-in roles cannot be deleted).
pub async fn delete(storage: &Storage, scope: Scope, name: &str) -> Result<(), StorageError> {
    if scope.customer.is_some() {
        return Err(StorageError::Forbidden("customers cannot delete roles"));
    }
    let txn = storage.begin_write().await?;
    let role = role::Entity::find()
        .filter(builtin_or_of(Some(scope.tenant)))
        .filter(role::Column::Name.eq(name))
        .one(&txn)
        .await?
        .ok_or_else(|| StorageError::not_found("role", name))?;
    if role.builtin {
        return Err(StorageError::Forbidden("built-in roles cannot be deleted"));
    }
    let holders = user_role::Entity::find()
        .filter(user_role::Column::RoleId.eq(role.id))
        .count(&txn)
        .await?;
    if holders > 0 {
        return Err(StorageError::InUse {
            what: "role",
            name: name.to_string(),
            reason: format!(
                "{holders} user{} still {} it: take it from them first",
                if holders == 1 { "" } else { "s" },
                if holders == 1 { "has" } else { "have" }
            ),
        });
    }
    role::Entity::delete_by_id(role.id).exec(&txn).await?;
    txn.commit().await?;
    Ok(())
}

/// The roles the scope's users may be given: the built-in ones (but the platform's), then the
/// tenant's own.
pub async fn list(storage: &Storage, scope: Scope) -> Result<Vec<role::Model>, StorageError> {
    let roles = role::Entity::find()
        .filter(builtin_or_of(Some(scope.tenant)))
        .order_by_desc(role::Column::Builtin)
        .order_by_asc(role::Column::Name)
        .all(storage.db())
        .await?;
    Ok(roles
        .into_iter()
        .filter(|r| r.tenant_id.is_some() || r.name != SYSTEM_ADMINISTRATOR)
        .collect())
}

/// Gives the user `login` the role `name`: a built-in role, or one of the user's tenant.
pub async fn assign(storage: &Storage, login: &str, name: &str) -> Result<(), StorageError> {
    let txn = storage.begin_write().await?;
    let user = app_user::Entity::find()
        .filter(app_user::Column::Login.eq(login))
        .one(&txn)
        .await?
        .ok_or_else(|| StorageError::not_found("user", login))?;
    assign_in(&txn, &user, name).await?;
    txn.commit().await?;
    Ok(())
}

/// [`assign`] inside the caller's transaction.
pub(crate) async fn assign_in(
    db: &impl ConnectionTrait,
    user: &app_user::Model,
    name: &str,
) -> Result<(), StorageError> {
    check_name("role name", name)?;
    let role = role::Entity::find()
        .filter(role::Column::Name.eq(name))
        .filter(builtin_or_of(user.tenant_id))
        .one(db)
        .await?
        .ok_or_else(|| StorageError::not_found("role", name))?;
    let system = role.tenant_id.is_none() && name == SYSTEM_ADMINISTRATOR;
    if system != user.tenant_id.is_none() {
        return Err(StorageError::invalid(
            "role",
            "must be `system administrator` for platform users, and any other for tenant users",
        ));
    }
    let exists = user_role::Entity::find_by_id((user.id, role.id))
        .one(db)
        .await?
        .is_some();
    if !exists {
        user_role::ActiveModel {
            user_id: Set(user.id),
            role_id: Set(role.id),
        }
        .insert(db)
        .await?;
    }
    Ok(())
}

/// Gives `user` exactly the roles `names`, inside the caller's transaction.
pub(crate) async fn replace_in(
    db: &impl ConnectionTrait,
    user: &app_user::Model,
    names: &[String],
) -> Result<(), StorageError> {
    user_role::Entity::delete_many()
        .filter(user_role::Column::UserId.eq(user.id))
        .exec(db)
        .await?;
    for name in names {
        assign_in(db, user, name).await?;
    }
    Ok(())
}

/// Built-in roles, and those of `tenant`.
fn builtin_or_of(tenant: Option<i64>) -> Condition {
    let roles = Condition::any().add(role::Column::TenantId.is_null());
    match tenant {
        Some(t) => roles.add(role::Column::TenantId.eq(t)),
        None => roles,
    }
}

/// The built-in role of platform users.
pub const SYSTEM_ADMINISTRATOR: &str = "system administrator";

/// The roles of a user (by id), by name.
pub async fn of_user(storage: &Storage, user_id: i64) -> Result<Vec<role::Model>, StorageError> {
    let ids: Vec<i64> = user_role::Entity::find()
        .filter(user_role::Column::UserId.eq(user_id))
        .all(storage.db())
        .await?
        .into_iter()
        .map(|r| r.role_id)
        .collect();
    Ok(role::Entity::find()
        .filter(role::Column::Id.is_in(ids))
        .order_by_asc(role::Column::Name)
        .all(storage.db())
        .await?)
}
