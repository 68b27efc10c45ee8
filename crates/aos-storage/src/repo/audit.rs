//! The audit log of security events.

use chrono::{DateTime, Utc};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, Order, QueryFilter};

use super::paging::{self, Page};
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

impl AuditEvent {
    /// `actor` did `action` on the object `kind`/`id`, successfully.
    pub fn done(tenant: Option<i64>, actor: String, action: &str, kind: &str, id: &str) -> Self {
        AuditEvent {
            tenant,
            actor,
            action: action.into(),
            object_kind: Some(kind.into()),
            object_id: Some(id.into()),
            success: true,
            detail: serde_json::Value::Null,
            ..Default::default()
        }
    }
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

/// What audit lists sort by.
pub const SORT_FIELDS: [&str; 2] = ["at", "action"];

/// Which events to list (None: any).
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    /// Who acted, as recorded (`user:<login>`, `device:<id>`, `cli`, `system`).
    pub actor: Option<String>,
    /// What was done: an action (`user.create`), or all those it starts (`user.`).
    pub action: Option<String>,
    /// At or after.
    pub from: Option<DateTime<Utc>>,
    /// Before.
    pub to: Option<DateTime<Utc>>,
}

/// A page of a tenant's events (None: the platform's) that `filter` lets through, newest first
/// unless sorted, and how many there are.
pub async fn search(
    storage: &Storage,
    tenant: Option<i64>,
    filter: &AuditFilter,
    page: &Page,
) -> Result<(Vec<audit_log::Model>, u64), StorageError> {
    let mut query = match tenant {
        Some(id) => audit_log::Entity::find().filter(audit_log::Column::TenantId.eq(id)),
        None => audit_log::Entity::find().filter(audit_log::Column::TenantId.is_null()),
    };
    if let Some(actor) = &filter.actor {
        query = query.filter(audit_log::Column::Actor.eq(actor.as_str()));
    }
    if let Some(action) = &filter.action {
        query = match action.strip_suffix('.') {
            Some(prefix) => {
                query.filter(audit_log::Column::Action.starts_with(format!("{prefix}.")))
            }
            None => query.filter(audit_log::Column::Action.eq(action.as_str())),
        };
    }
    if let Some(from) = filter.from {
        query = query.filter(audit_log::Column::At.gte(from));
    }
    if let Some(to) = filter.to {
        query = query.filter(audit_log::Column::At.lt(to));
    }
    let query = paging::ordered(
        query,
        page,
        &[
            (SORT_FIELDS[0], audit_log::Column::At),
            (SORT_FIELDS[1], audit_log::Column::Action),
        ],
        (audit_log::Column::Id, Order::Desc),
        audit_log::Column::Id,
    )?;
    paging::fetch(storage.db(), query, page).await
}
