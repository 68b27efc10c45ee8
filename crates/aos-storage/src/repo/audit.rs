//! The audit log of security events.

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

use crate::entity::audit_log;
use crate::{Storage, StorageError};

/// One security event.
#[derive(Clone, Debug, Default)]
pub struct AuditEvent {
    pub tenant: Option<i64>,
    /// `user:<login>`, `device:<uid>`, `cli`, `system`.
    pub actor: String,
    /// What happened: `user.create`, `user.password`, `device.credential`, `sign_in`, ...
    pub action: String,
    pub object_kind: Option<String>,
    pub object_id: Option<String>,
    pub client_addr: Option<String>,
    pub success: bool,
    pub detail: serde_json::Value,
}

pub async fn record(storage: &Storage, event: AuditEvent) -> Result<(), StorageError> {
    audit_log::ActiveModel {
        tenant_id: Set(event.tenant),
        at: Set(Utc::now()),
        actor: Set(event.actor),
        action: Set(event.action),
        object_kind: Set(event.object_kind),
        object_id: Set(event.object_id),
        client_addr: Set(event.client_addr),
        success: Set(event.success),
        detail: Set(event.detail),
        ..Default::default()
    }
    .insert(storage.db())
    .await?;
    Ok(())
}

/// The newest `limit` events of a tenant (None: platform events), newest first.
pub async fn recent(
    storage: &Storage,
    tenant: Option<i64>,
    limit: u64,
) -> Result<Vec<audit_log::Model>, StorageError> {
    let query = match tenant {
        Some(id) => audit_log::Entity::find().filter(audit_log::Column::TenantId.eq(id)),
        None => audit_log::Entity::find().filter(audit_log::Column::TenantId.is_null()),
    };
    Ok(query
        .order_by_desc(audit_log::Column::Id)
        .limit(limit)
        .all(storage.db())
        .await?)
}
