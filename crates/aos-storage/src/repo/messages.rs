//! The message log, as people look at it: a tenant's (or one device's) messages, filtered by
//! status and time, newest first — through the (tenant, time) and (device, time) indexes.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Query;
use sea_orm::{ColumnTrait, EntityTrait, Order, QueryFilter, QuerySelect};

use super::paging::{self, Page};
use super::{Scope, devices};
use crate::entity::{device, message_log};
use crate::{Storage, StorageError};

/// Statuses a logged message can have.
pub const STATUSES: [&str; 3] = ["processed", "failed", super::retention::ARCHIVED];
/// What message lists sort by (only time: the indexes' order).
pub const SORT_FIELDS: [&str; 1] = ["received_at"];

/// Which messages.
#[derive(Clone, Debug, Default)]
pub struct MessageQuery {
    /// Of this device (by id) only.
    pub device: Option<String>,
    pub status: Option<String>,
    /// Received at or after.
    pub from: Option<DateTime<Utc>>,
    /// Received before.
    pub to: Option<DateTime<Utc>>,
    pub page: Page,
}

/// A logged message with the id of its device (None: from no known device).
#[derive(Clone, Debug)]
pub struct LoggedRow {
    pub message: message_log::Model,
    pub device: Option<String>,
}

/// A page of the messages the scope may see and how many match in all.
pub async fn search(
    storage: &Storage,
    scope: Scope,
    query: &MessageQuery,
) -> Result<(Vec<LoggedRow>, u64), StorageError> {
    if let Some(status) = &query.status
        && !STATUSES.contains(&status.as_str())
    {
        return Err(StorageError::invalid(
            "status",
            format!("must be one of {}", STATUSES.join(", ")),
        ));
    }
    let mut select =
        message_log::Entity::find().filter(message_log::Column::TenantId.eq(scope.tenant));
    if let Some(uid) = &query.device {
        let device = devices::get(storage, scope, uid).await?;
        select = select.filter(message_log::Column::DeviceId.eq(device.id));
    } else if let Some(entity) = scope.customer {
        // A customer sees the messages of its own entity's devices only.
        select = select.filter(
            message_log::Column::DeviceId.in_subquery(
                Query::select()
                    .column(device::Column::Id)
                    .from(device::Entity)
                    .and_where(device::Column::TenantId.eq(scope.tenant))
                    .and_where(device::Column::EntityId.eq(entity))
                    .to_owned(),
            ),
        );
    }
    if let Some(status) = &query.status {
        select = select.filter(message_log::Column::Status.eq(status.as_str()));
    }
    if let Some(from) = query.from {
        select = select.filter(message_log::Column::ReceivedAt.gte(from));
    }
    if let Some(to) = query.to {
        select = select.filter(message_log::Column::ReceivedAt.lt(to));
    }
    let select = paging::ordered(
        select,
        &query.page,
        &[(SORT_FIELDS[0], message_log::Column::ReceivedAt)],
        (message_log::Column::ReceivedAt, Order::Desc),
        message_log::Column::Id,
    )?;
    let (messages, total) = paging::fetch(storage.db(), select, &query.page).await?;
    let mut ids: Vec<i64> = messages.iter().filter_map(|m| m.device_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let names: std::collections::HashMap<i64, String> = device::Entity::find()
        .filter(device::Column::Id.is_in(ids))
        .select_only()
        .column(device::Column::Id)
        .column(device::Column::Uid)
        .into_tuple::<(i64, String)>()
        .all(storage.db())
        .await?
        .into_iter()
        .collect();
    let rows = messages
        .into_iter()
        .map(|message| LoggedRow {
            device: message.device_id.and_then(|id| names.get(&id).cloned()),
            message,
        })
        .collect();
    Ok((rows, total))
}
