//! Entities of a tenant: internal units and customers. Users and devices bound to a customer
//! are seen only by that customer's users (and the tenant's).

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel,
    PaginatorTrait, QueryFilter, QueryOrder,
};

use super::{Scope, bound_entity, check_name, duplicate, unused};
use crate::entity::{app_user, device, org_entity};
use crate::{Storage, StorageError};

/// What an entity is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntityKind {
    /// A department, a subsidiary: its users see the whole tenant (as their roles allow).
    Unit,
    /// A customer: its users see only its own devices and data.
    Customer,
}

impl EntityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::Unit => "unit",
            EntityKind::Customer => "customer",
        }
    }
}

/// Creates an entity of the scope's tenant, optionally under a `parent` entity.
pub async fn create(
    storage: &Storage,
    scope: Scope,
    name: &str,
    kind: EntityKind,
    parent: Option<&str>,
) -> Result<org_entity::Model, StorageError> {
    if scope.customer.is_some() {
        return Err(StorageError::Forbidden("customers cannot create entities"));
    }
    check_name("entity name", name)?;
    let parent = bound_entity(storage.db(), scope, parent).await?;
    org_entity::ActiveModel {
        tenant_id: Set(scope.tenant),
        name: Set(name.to_string()),
        kind: Set(kind.as_str().into()),
        parent_id: Set(parent),
        created_at: Set(Utc::now()),
        ..Default::default()
    }
    .insert(storage.db())
    .await
    .map_err(duplicate("entity", name))
}

/// The entities the scope may see (a customer: itself).
pub async fn list(storage: &Storage, scope: Scope) -> Result<Vec<org_entity::Model>, StorageError> {
    let mut query =
        org_entity::Entity::find().filter(org_entity::Column::TenantId.eq(scope.tenant));
    if let Some(entity) = scope.customer {
        query = query.filter(org_entity::Column::Id.eq(entity));
    }
    Ok(query
        .order_by_asc(org_entity::Column::Name)
        .all(storage.db())
        .await?)
}

/// A change of an entity: its name, and the entity it is under (`Some(None)`: none).
#[derive(Clone, Debug, Default)]
pub struct EntityChange {
    pub name: Option<String>,
    pub parent: Option<Option<String>>,
}

/// The entity `name` of the scope's tenant, for a change (customers change none).
async fn changeable(
    db: &impl ConnectionTrait,
    scope: Scope,
    name: &str,
    what: &'static str,
) -> Result<org_entity::Model, StorageError> {
    if scope.customer.is_some() {
        return Err(StorageError::Forbidden(what));
    }
    org_entity::Entity::find()
        .filter(org_entity::Column::TenantId.eq(scope.tenant))
        .filter(org_entity::Column::Name.eq(name))
        .one(db)
        .await?
        .ok_or_else(|| StorageError::not_found("entity", name))
}

/// Renames an entity, or puts it under another (never under itself or one of its own).
pub async fn update(
    storage: &Storage,
    scope: Scope,
    name: &str,
    change: EntityChange,
) -> Result<org_entity::Model, StorageError> {
    let txn = storage.begin_write().await?;
    let found = changeable(&txn, scope, name, "customers cannot change entities").await?;
    let id = found.id;
    let mut row = found.into_active_model();
    if let Some(new_name) = &change.name {
        check_name("name", new_name)?;
        row.name = Set(new_name.clone());
    }
    if let Some(parent) = change.parent {
        let parent = bound_entity(&txn, scope, parent.as_deref()).await?;
        // Walking up from the new parent must not come back here.
        let mut above = parent;
        while let Some(at) = above {
            if at == id {
                return Err(StorageError::invalid(
                    "parent",
                    format!(
                        "would put `{name}` under itself: choose an entity that is not under it"
                    ),
                ));
            }
            above = org_entity::Entity::find_by_id(at)
                .one(&txn)
                .await?
                .and_then(|e| e.parent_id);
        }
        row.parent_id = Set(parent);
    }
    let updated = row
        .update(&txn)
        .await
        .map_err(duplicate("entity", change.name.as_deref().unwrap_or(name)))?;
    txn.commit().await?;
    Ok(updated)
}

/// Deletes an entity that nothing is bound to (no users, devices or entities under it).
pub async fn delete(storage: &Storage, scope: Scope, name: &str) -> Result<(), StorageError> {
    let txn = storage.begin_write().await?;
    let found = changeable(&txn, scope, name, "customers cannot delete entities").await?;
    let users = app_user::Entity::find()
        .filter(app_user::Column::EntityId.eq(found.id))
        .count(&txn)
        .await?;
    let devices = device::Entity::find()
        .filter(device::Column::EntityId.eq(found.id))
        .count(&txn)
        .await?;
    let children = org_entity::Entity::find()
        .filter(org_entity::Column::ParentId.eq(found.id))
        .count(&txn)
        .await?;
    unused(
        "entity",
        name,
        &[
            (users, "user", "users"),
            (devices, "device", "devices"),
            (children, "entity under it", "entities under it"),
        ],
    )?;
    org_entity::Entity::delete_by_id(found.id)
        .exec(&txn)
        .await?;
    txn.commit().await?;
    Ok(())
}
