//! Roles (built-in ones have no tenant) and which users have them.

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, EntityTrait,
    IntoActiveModel, QueryFilter, QueryOrder, TransactionTrait,
};

use super::check_name;
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
    let txn = storage.db().begin().await?;
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

/// Gives the user `login` the role `name`: a built-in role, or one of the user's tenant.
pub async fn assign(storage: &Storage, login: &str, name: &str) -> Result<(), StorageError> {
    let txn = storage.db().begin().await?;
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
    let mut tenant = Condition::any().add(role::Column::TenantId.is_null());
    if let Some(t) = user.tenant_id {
        tenant = tenant.add(role::Column::TenantId.eq(t));
    }
    let role = role::Entity::find()
        .filter(role::Column::Name.eq(name))
        .filter(tenant)
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
