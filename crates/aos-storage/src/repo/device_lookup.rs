//! Finding a device within a scope, and the statuses it can have: what the device, command, class
//! and KPI queries share (a leaf, so that none of them needs another for it).

use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

use super::Scope;
use crate::entity::device;
use crate::{Storage, StorageError};

/// A device's status while it (or the gateway it is reached through) is connected.
pub const ONLINE: &str = "online";
pub const OFFLINE: &str = "offline";

pub(crate) fn visible(scope: Scope) -> sea_orm::Select<device::Entity> {
    let query = device::Entity::find().filter(device::Column::TenantId.eq(scope.tenant));
    match scope.customer {
        Some(entity) => query.filter(device::Column::EntityId.eq(entity)),
        None => query,
    }
}

pub(crate) async fn get_in(
    db: &impl ConnectionTrait,
    scope: Scope,
    uid: &str,
) -> Result<device::Model, StorageError> {
    // A device of another tenant or customer is indistinguishable from one that does not exist.
    visible(scope)
        .filter(device::Column::Uid.eq(uid))
        .one(db)
        .await?
        .ok_or_else(|| StorageError::not_found("device", uid))
}

/// The device `uid`, if the scope may see it.
pub async fn get(
    storage: &Storage,
    scope: Scope,
    uid: &str,
) -> Result<device::Model, StorageError> {
    get_in(storage.db(), scope, uid).await
}
