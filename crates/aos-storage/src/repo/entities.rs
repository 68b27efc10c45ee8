//! Entities of a tenant: internal units and customers. Users and devices bound to a customer
//! are seen only by that customer's users (and the tenant's).

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder,
};

use super::{Scope, bound_entity, check_name, duplicate};
use crate::entity::org_entity;
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
