//! Retention: ledger rows and message-log entries older than their configured age are deleted,
//! in bounded batches so that ingest keeps flowing while old data goes; before that, message-log
//! entries may be archived (their payload leaves the log for the worker's archive files).

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, IntoCondition};
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::entity::{latest_value, ledger, message_log, tenant};
use crate::{Storage, StorageError};

/// Rows deleted per statement.
const BATCH: u64 = 5_000;

/// What one pruning pass deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub ledger_rows: u64,
    pub messages: u64,
}

/// Deletes ledger rows with a timestamp before `ledger_before` and message-log entries received
/// before `messages_before` (None: keep forever).
pub async fn prune(
    storage: &Storage,
    ledger_before: Option<DateTime<Utc>>,
    messages_before: Option<DateTime<Utc>>,
) -> Result<Pruned, StorageError> {
    let mut pruned = Pruned::default();
    if let Some(cutoff) = ledger_before {
        // Series by series: the ledger's index leads with (device, attribute), and every series
        // has its latest value.
        let series: Vec<(i64, String)> = latest_value::Entity::find()
            .select_only()
            .column(latest_value::Column::DeviceId)
            .column(latest_value::Column::Attribute)
            .into_tuple()
            .all(storage.db())
            .await?;
        for (device, attribute) in series {
            let old = Condition::all()
                .add(ledger::Column::DeviceId.eq(device))
                .add(ledger::Column::Attribute.eq(attribute))
                .add(ledger::Column::Ts.lt(cutoff));
            pruned.ledger_rows +=
                delete_where::<ledger::Entity>(storage, ledger::Column::Id, old).await?;
        }
    }
    if let Some(cutoff) = messages_before {
        // Tenant by tenant: the log's time index leads with the tenant.
        for id in tenant_ids(storage).await? {
            let old = Condition::all()
                .add(message_log::Column::TenantId.eq(id))
                .add(message_log::Column::ReceivedAt.lt(cutoff));
            pruned.messages +=
                delete_where::<message_log::Entity>(storage, message_log::Column::Id, old).await?;
        }
    }
    Ok(pruned)
}

/// Deletes the rows of `E` that meet `old`, BATCH ids at a time.
async fn delete_where<E: EntityTrait>(
    storage: &Storage,
    id: E::Column,
    old: impl IntoCondition + Clone,
) -> Result<u64, StorageError> {
    let mut deleted = 0;
    loop {
        let ids: Vec<i64> = E::find()
            .select_only()
            .column(id)
            .filter(old.clone())
            .limit(BATCH)
            .into_tuple()
            .all(storage.db())
            .await?;
        if ids.is_empty() {
            return Ok(deleted);
        }
        deleted += E::delete_many()
            .filter(id.is_in(ids))
            .exec(storage.db())
            .await?
            .rows_affected;
    }
}

/// The status of message-log entries whose payload has gone to the archive.
pub const ARCHIVED: &str = "archived";

/// Up to `limit` message-log entries of `tenant` received before `before` and not archived yet,
/// oldest first.
pub async fn to_archive(
    storage: &Storage,
    tenant: i64,
    before: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<message_log::Model>, StorageError> {
    Ok(message_log::Entity::find()
        .filter(message_log::Column::TenantId.eq(tenant))
        .filter(message_log::Column::ReceivedAt.lt(before))
        .filter(message_log::Column::Status.ne(ARCHIVED))
        .order_by_asc(message_log::Column::Id)
        .limit(limit)
        .all(storage.db())
        .await?)
}

/// Marks entries archived, dropping their payload from the log (the archive holds it).
pub async fn mark_archived(storage: &Storage, ids: &[i64]) -> Result<u64, StorageError> {
    Ok(message_log::Entity::update_many()
        .col_expr(message_log::Column::Status, Expr::value(ARCHIVED))
        .col_expr(message_log::Column::Payload, Expr::value(Vec::<u8>::new()))
        .filter(message_log::Column::Id.is_in(ids.iter().copied()))
        .exec(storage.db())
        .await?
        .rows_affected)
}

/// The ids of every tenant (jobs go tenant by tenant, along the log's index).
pub async fn tenant_ids(storage: &Storage) -> Result<Vec<i64>, StorageError> {
    Ok(tenant::Entity::find()
        .select_only()
        .column(tenant::Column::Id)
        .into_tuple()
        .all(storage.db())
        .await?)
}
