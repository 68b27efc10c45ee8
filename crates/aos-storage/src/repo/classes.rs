//! Device classes of a tenant.

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel,
    PaginatorTrait, QueryFilter, QueryOrder,
};

use super::{Scope, check_name, duplicate, unused};
use crate::entity::{device, device_class};
use crate::{Storage, StorageError};

/// A class to create.
#[derive(Clone, Debug, Default)]
pub struct NewClass {
    pub name: String,
    pub description: String,
    pub is_gateway: bool,
    pub auto_register_children: bool,
}

pub async fn create(
    storage: &Storage,
    scope: Scope,
    new: NewClass,
) -> Result<device_class::Model, StorageError> {
    if scope.customer.is_some() {
        return Err(StorageError::Forbidden(
            "customers cannot create device classes",
        ));
    }
    check_name("class name", &new.name)?;
    check_description(&new.description)?;
    device_class::ActiveModel {
        tenant_id: Set(scope.tenant),
        name: Set(new.name.clone()),
        description: Set(new.description),
        format_id: Set(None),
        outbound_format_id: Set(None),
        is_gateway: Set(new.is_gateway),
        auto_register_children: Set(new.auto_register_children),
        child_class_id: Set(None),
        provisioning_key_hash: Set(None),
        created_at: Set(Utc::now()),
        ..Default::default()
    }
    .insert(storage.db())
    .await
    .map_err(duplicate("device class", &new.name))
}

pub async fn list(
    storage: &Storage,
    scope: Scope,
) -> Result<Vec<device_class::Model>, StorageError> {
    Ok(device_class::Entity::find()
        .filter(device_class::Column::TenantId.eq(scope.tenant))
        .order_by_asc(device_class::Column::Name)
        .all(storage.db())
        .await?)
}

/// The class called `name` in the scope's tenant.
pub async fn by_name(
    db: &impl ConnectionTrait,
    scope: Scope,
    name: &str,
) -> Result<device_class::Model, StorageError> {
    device_class::Entity::find()
        .filter(device_class::Column::TenantId.eq(scope.tenant))
        .filter(device_class::Column::Name.eq(name))
        .one(db)
        .await?
        .ok_or_else(|| StorageError::not_found("device class", name))
}

/// Sets (Some: the SHA-256 of a new key) or clears the class's provisioning key. With a key,
/// unknown devices that present it are registered in this class on their first CONNECT.
pub async fn set_provisioning_key(
    storage: &Storage,
    scope: Scope,
    name: &str,
    key_lookup: Option<String>,
) -> Result<(), StorageError> {
    if scope.customer.is_some() {
        return Err(StorageError::Forbidden(
            "customers cannot change device classes",
        ));
    }
    let class = by_name(storage.db(), scope, name).await?;
    let mut class = class.into_active_model();
    class.provisioning_key_hash = Set(key_lookup);
    class.update(storage.db()).await?;
    Ok(())
}

/// Lets the gateways of class `gateway` register unknown child nodes in class `children`
/// (`None`: they may not, the default).
pub async fn set_children(
    storage: &Storage,
    scope: Scope,
    gateway: &str,
    children: Option<&str>,
) -> Result<(), StorageError> {
    if scope.customer.is_some() {
        return Err(StorageError::Forbidden(
            "customers cannot change device classes",
        ));
    }
    let class = by_name(storage.db(), scope, gateway).await?;
    if !class.is_gateway {
        return Err(StorageError::invalid(
            "class",
            format!("`{gateway}` is not a gateway class (create it with --gateway)"),
        ));
    }
    let children = match children {
        Some(name) => Some(by_name(storage.db(), scope, name).await?.id),
        None => None,
    };
    let mut class = class.into_active_model();
    class.auto_register_children = Set(children.is_some());
    class.child_class_id = Set(children);
    class.update(storage.db()).await?;
    Ok(())
}

/// The class whose provisioning key has this SHA-256, whatever its tenant (the key is how a
/// new device finds its tenant).
pub async fn by_provisioning_key(
    storage: &Storage,
    key_lookup: &str,
) -> Result<Option<device_class::Model>, StorageError> {
    Ok(device_class::Entity::find()
        .filter(device_class::Column::ProvisioningKeyHash.eq(key_lookup))
        .one(storage.db())
        .await?)
}

/// How many devices each class of the scope has (classes without devices are absent).
pub async fn device_counts(
    storage: &Storage,
    scope: Scope,
) -> Result<std::collections::HashMap<i64, u64>, StorageError> {
    use sea_orm::QuerySelect;
    use sea_orm::sea_query::{Expr, ExprTrait};
    Ok(super::device_lookup::visible(scope)
        .select_only()
        .column(crate::entity::device::Column::ClassId)
        .column_as(Expr::col(crate::entity::device::Column::Id).count(), "n")
        .group_by(crate::entity::device::Column::ClassId)
        .into_tuple::<(i64, i64)>()
        .all(storage.db())
        .await?
        .into_iter()
        .map(|(class, n)| (class, u64::try_from(n).unwrap_or(0)))
        .collect())
}

/// Renames a class or changes its description (absent: kept); its devices stay in it.
pub async fn update(
    storage: &Storage,
    scope: Scope,
    name: &str,
    new_name: Option<String>,
    description: Option<String>,
) -> Result<device_class::Model, StorageError> {
    if scope.customer.is_some() {
        return Err(StorageError::Forbidden(
            "customers cannot change device classes",
        ));
    }
    let class = by_name(storage.db(), scope, name).await?;
    let mut row = class.into_active_model();
    if let Some(new_name) = &new_name {
        check_name("class name", new_name)?;
        row.name = Set(new_name.clone());
    }
    if let Some(description) = description {
        check_description(&description)?;
        row.description = Set(description);
    }
    row.update(storage.db()).await.map_err(duplicate(
        "device class",
        new_name.as_deref().unwrap_or(name),
    ))
}

fn check_description(description: &str) -> Result<(), StorageError> {
    if description.chars().count() > 4096 {
        return Err(StorageError::invalid(
            "description",
            "is longer than 4096 characters",
        ));
    }
    Ok(())
}

/// Deletes a class that no device is of (its model, formats' choice and interpreters go with
/// it), unless a gateway class registers its children in it.
pub async fn delete(storage: &Storage, scope: Scope, name: &str) -> Result<(), StorageError> {
    if scope.customer.is_some() {
        return Err(StorageError::Forbidden(
            "customers cannot delete device classes",
        ));
    }
    let txn = storage.begin_write().await?;
    let class = by_name(&txn, scope, name).await?;
    let devices = device::Entity::find()
        .filter(device::Column::ClassId.eq(class.id))
        .count(&txn)
        .await?;
    let gateways = device_class::Entity::find()
        .filter(device_class::Column::ChildClassId.eq(class.id))
        .count(&txn)
        .await?;
    unused(
        "device class",
        name,
        &[
            (devices, "device", "devices"),
            (
                gateways,
                "gateway class registering its children in it",
                "gateway classes registering their children in it",
            ),
        ],
    )?;
    device_class::Entity::delete_by_id(class.id)
        .exec(&txn)
        .await?;
    txn.commit().await?;
    Ok(())
}
