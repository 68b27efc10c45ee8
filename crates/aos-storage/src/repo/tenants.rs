//! Tenants: platform-level (who may manage them is the permission check's business).

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder,
};

use super::{check_identifier, duplicate};
use crate::entity::tenant;
use crate::{Storage, StorageError};

pub async fn create(storage: &Storage, name: &str) -> Result<tenant::Model, StorageError> {
    // Tenant names go into URLs (`?tenant=`) and commands (`--tenant`): identifiers, not prose.
    check_identifier("tenant name", name)?;
    tenant::ActiveModel {
        name: Set(name.to_string()),
        disabled: Set(false),
        created_at: Set(Utc::now()),
        ..Default::default()
    }
    .insert(storage.db())
    .await
    .map_err(duplicate("tenant", name))
}

pub async fn list(storage: &Storage) -> Result<Vec<tenant::Model>, StorageError> {
    Ok(tenant::Entity::find()
        .order_by_asc(tenant::Column::Name)
        .all(storage.db())
        .await?)
}

pub async fn by_name(storage: &Storage, name: &str) -> Result<tenant::Model, StorageError> {
    tenant::Entity::find()
        .filter(tenant::Column::Name.eq(name))
        .one(storage.db())
        .await?
        .ok_or_else(|| StorageError::not_found("tenant", name))
}

pub async fn by_id(storage: &Storage, id: i64) -> Result<tenant::Model, StorageError> {
    tenant::Entity::find_by_id(id)
        .one(storage.db())
        .await?
        .ok_or_else(|| StorageError::not_found("tenant", id.to_string()))
}

/// Disables a tenant (its users cannot sign in, its devices and applications cannot connect,
/// and every node closes their live sessions) or enables it again.
pub async fn set_disabled(
    storage: &Storage,
    name: &str,
    disabled: bool,
) -> Result<tenant::Model, StorageError> {
    let txn = storage.begin_write().await?;
    let found = tenant::Entity::find()
        .filter(tenant::Column::Name.eq(name))
        .one(&txn)
        .await?
        .ok_or_else(|| StorageError::not_found("tenant", name))?;
    let was_disabled = found.disabled;
    let mut row = found.into_active_model();
    row.disabled = Set(disabled);
    let updated = row.update(&txn).await?;
    if disabled && !was_disabled {
        let revoked = aos_core::access::Revoked::Tenant(updated.id);
        super::devices::credential_changed(&txn, &revoked, Utc::now()).await?;
    }
    txn.commit().await?;
    Ok(updated)
}

/// Whether tenant `id` is disabled (a tenant that is gone is).
pub async fn is_disabled(storage: &Storage, id: i64) -> Result<bool, StorageError> {
    Ok(tenant::Entity::find_by_id(id)
        .one(storage.db())
        .await?
        .is_none_or(|t| t.disabled))
}
