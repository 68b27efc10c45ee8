//! Key figures of a tenant (or a customer's part of it) for its dashboard.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, Query, SelectStatement};
use sea_orm::{
    ColumnTrait, Condition, EntityTrait, FromQueryResult, PaginatorTrait, QueryFilter, QuerySelect,
};

use super::commands::{QUEUED, SENT};
use super::device_lookup::ONLINE;
use super::ledger::epoch_bucket;
use super::{Scope, retention::ARCHIVED};
use crate::entity::{command, device, event, message_log};
use crate::{Storage, StorageError};

/// The figures.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Kpis {
    pub devices_total: u64,
    pub devices_online: u64,
    pub events_open: u64,
    pub events_unacknowledged: u64,
    /// Open events by level.
    pub events_by_level: BTreeMap<String, u64>,
    pub messages_last_hour: u64,
    pub messages_failed_last_hour: u64,
    /// Messages received per minute over the last hour, oldest first (every minute present).
    pub messages_per_minute: Vec<(DateTime<Utc>, u64)>,
    /// Commands queued or sent, not answered yet.
    pub commands_pending: u64,
}

/// The ids of the scope's devices, when the scope is a customer's (None: the whole tenant).
fn customer_devices(scope: Scope) -> Option<SelectStatement> {
    scope.customer.map(|entity| {
        Query::select()
            .column(device::Column::Id)
            .from(device::Entity)
            .and_where(device::Column::TenantId.eq(scope.tenant))
            .and_where(device::Column::EntityId.eq(entity))
            .to_owned()
    })
}

/// The scope's figures as of `now`.
pub async fn of(storage: &Storage, scope: Scope, now: DateTime<Utc>) -> Result<Kpis, StorageError> {
    let db = storage.db();
    let mine = |column: Expr| -> Condition {
        match customer_devices(scope) {
            Some(ids) => Condition::all().add(column.in_subquery(ids)),
            None => Condition::all(),
        }
    };
    let devices = super::device_lookup::visible(scope);
    let devices_total = devices.clone().count(db).await?;
    let devices_online = devices
        .filter(device::Column::Status.eq(ONLINE))
        .count(db)
        .await?;

    let open_events = event::Entity::find()
        .filter(event::Column::TenantId.eq(scope.tenant))
        .filter(event::Column::ClearedAt.is_null())
        .filter(mine(Expr::col(event::Column::DeviceId)));
    let events_open = open_events.clone().count(db).await?;
    let events_unacknowledged = open_events
        .clone()
        .filter(event::Column::AcknowledgedAt.is_null())
        .count(db)
        .await?;
    let events_by_level = open_events
        .select_only()
        .column(event::Column::Level)
        .column_as(Expr::col(event::Column::Id).count(), "n")
        .group_by(event::Column::Level)
        .into_tuple::<(String, i64)>()
        .all(db)
        .await?
        .into_iter()
        .map(|(level, n)| (level, u64::try_from(n).unwrap_or(0)))
        .collect();

    let hour_ago = now - Duration::hours(1);
    let last_hour = message_log::Entity::find()
        .filter(message_log::Column::TenantId.eq(scope.tenant))
        .filter(message_log::Column::ReceivedAt.gte(hour_ago))
        .filter(message_log::Column::Status.ne(ARCHIVED))
        .filter(mine(Expr::col(message_log::Column::DeviceId)));
    let messages_failed_last_hour = last_hour
        .clone()
        .filter(message_log::Column::Status.eq("failed"))
        .count(db)
        .await?;
    #[derive(FromQueryResult)]
    struct Minute {
        bucket: i64,
        n: i64,
    }
    let minutes = last_hour
        .select_only()
        .column_as(
            Expr::cust(epoch_bucket(storage.backend(), "received_at", 60)),
            "bucket",
        )
        .column_as(Expr::col(message_log::Column::Id).count(), "n")
        .group_by(Expr::cust("bucket"))
        .into_model::<Minute>()
        .all(db)
        .await?;
    let counted: BTreeMap<i64, u64> = minutes
        .into_iter()
        .map(|m| (m.bucket, u64::try_from(m.n).unwrap_or(0)))
        .collect();
    let first = hour_ago.timestamp() / 60 * 60;
    let messages_per_minute: Vec<(DateTime<Utc>, u64)> = (0..=60)
        .map(|i| first + i * 60)
        .filter_map(|at| {
            let count = counted.get(&at).copied().unwrap_or(0);
            DateTime::from_timestamp(at, 0).map(|ts| (ts, count))
        })
        .collect();
    let messages_last_hour = counted.values().sum();

    let commands_pending = command::Entity::find()
        .filter(command::Column::TenantId.eq(scope.tenant))
        .filter(command::Column::Status.is_in([QUEUED, SENT]))
        .filter(mine(Expr::col(command::Column::DeviceId)))
        .count(db)
        .await?;

    Ok(Kpis {
        devices_total,
        devices_online,
        events_open,
        events_unacknowledged,
        events_by_level,
        messages_last_hour,
        messages_failed_last_hour,
        messages_per_minute,
        commands_pending,
    })
}
