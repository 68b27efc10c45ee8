//! A batch's rows as sea-orm multi-row inserts, for SQLite: one writer at a time, so nothing is
//! locked ahead.

use std::collections::{HashMap, HashSet};

use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect,
};

use super::{BatchWrites, INBOUND, Logged, LoggedMessage, Reading, to_store, wanted};
use crate::StorageError;
use crate::entity::{latest_value, ledger, message_log};

/// Rows per INSERT statement (SQLite takes at most 32,766 bound values in one).
const ROWS_PER_STATEMENT: usize = 1000;

/// Multi-row inserts of entity rows.
pub(super) struct Rows;

impl BatchWrites for Rows {
    async fn log(
        db: &impl ConnectionTrait,
        messages: &[&LoggedMessage],
        readings: &[&Reading],
    ) -> Result<Logged, StorageError> {
        // One writer at a time: what is logged before the insert is what it does not add.
        let logged_before = message_ids(db, messages.iter().map(|m| m.key.as_str())).await?;
        for chunk in messages.chunks(ROWS_PER_STATEMENT) {
            message_log::Entity::insert_many(chunk.iter().map(|m| log_row(m)))
                .on_conflict_do_nothing_on([message_log::Column::MessageKey])
                .exec_without_returning(db)
                .await?;
        }
        let keys: HashSet<String> = messages
            .iter()
            .filter(|m| !logged_before.contains_key(&m.key))
            .map(|m| m.key.clone())
            .collect();
        let ledger_rows = ledger(db, &to_store(messages, &keys, readings)).await?;
        Ok(Logged { keys, ledger_rows })
    }

    async fn latest_before(
        db: &impl ConnectionTrait,
        latest: &[&Reading],
    ) -> Result<Vec<latest_value::Model>, StorageError> {
        let mut devices: Vec<i64> = latest
            .iter()
            .filter(|r| wanted(r))
            .map(|r| r.device)
            .collect();
        devices.sort_unstable();
        devices.dedup();
        let mut stored = Vec::new();
        for chunk in devices.chunks(ROWS_PER_STATEMENT) {
            stored.extend(
                latest_value::Entity::find()
                    .filter(latest_value::Column::DeviceId.is_in(chunk.iter().copied()))
                    .all(db)
                    .await?,
            );
        }
        Ok(stored)
    }

    async fn upsert_latest(
        db: &impl ConnectionTrait,
        latest: &[&Reading],
    ) -> Result<(), StorageError> {
        for chunk in latest.chunks(ROWS_PER_STATEMENT) {
            let rows = chunk.iter().map(|r| {
                let (num, json) = r.columns();
                latest_value::ActiveModel {
                    device_id: Set(r.device),
                    attribute: Set(r.attribute.clone()),
                    tenant_id: Set(r.tenant),
                    ts: Set(r.ts),
                    value_num: Set(num),
                    value_json: Set(json.cloned()),
                    level: Set(r.level.clone()),
                }
            });
            // An older value arriving late does not replace a newer one.
            let newer = Expr::col((latest_value::Entity, latest_value::Column::Ts))
                .lte(Expr::cust("excluded.ts"));
            latest_value::Entity::insert_many(rows)
                .on_conflict(
                    OnConflict::columns([
                        latest_value::Column::DeviceId,
                        latest_value::Column::Attribute,
                    ])
                    .update_columns([
                        latest_value::Column::Ts,
                        latest_value::Column::ValueNum,
                        latest_value::Column::ValueJson,
                        latest_value::Column::Level,
                    ])
                    .action_and_where(newer)
                    .to_owned(),
                )
                .exec_without_returning(db)
                .await?;
        }
        Ok(())
    }
}

/// Adds the ledger rows, each naming its message's log entry where there is one; returns how
/// many.
async fn ledger(db: &impl ConnectionTrait, readings: &[&Reading]) -> Result<u64, StorageError> {
    let ids = message_ids(db, readings.iter().map(|r| r.message.as_str())).await?;
    let mut added = 0;
    for chunk in readings.chunks(ROWS_PER_STATEMENT) {
        let rows = chunk.iter().map(|r| {
            let (num, json) = r.columns();
            ledger::ActiveModel {
                tenant_id: Set(r.tenant),
                device_id: Set(r.device),
                attribute: Set(r.attribute.clone()),
                ts: Set(r.ts),
                value_num: Set(num),
                value_json: Set(json.cloned()),
                raw: Set(r.raw.clone()),
                level: Set(r.level.clone()),
                message_id: Set(ids.get(&r.message).copied()),
                ..Default::default()
            }
        });
        added += ledger::Entity::insert_many(rows)
            .exec_without_returning(db)
            .await?;
    }
    Ok(added)
}

fn log_row(m: &LoggedMessage) -> message_log::ActiveModel {
    message_log::ActiveModel {
        tenant_id: Set(m.tenant),
        device_id: Set(m.device),
        direction: Set(INBOUND.into()),
        topic: Set(m.topic.clone()),
        payload: Set(m.payload.clone()),
        status: Set(m.status().into()),
        error: Set(m.error.clone()),
        message_key: Set(m.key.clone()),
        received_at: Set(m.received_at),
        started_at: Set(Some(m.started_at)),
        processed_at: Set(Some(m.processed_at)),
        ..Default::default()
    }
}

/// The message-log ids of the messages with these keys that are logged.
async fn message_ids<'a>(
    db: &impl ConnectionTrait,
    keys: impl Iterator<Item = &'a str>,
) -> Result<HashMap<String, i64>, StorageError> {
    let mut keys: Vec<&str> = keys.collect();
    keys.sort_unstable();
    keys.dedup();
    let mut ids = HashMap::with_capacity(keys.len());
    for chunk in keys.chunks(ROWS_PER_STATEMENT) {
        let found: Vec<(i64, String)> = message_log::Entity::find()
            .select_only()
            .column(message_log::Column::Id)
            .column(message_log::Column::MessageKey)
            .filter(message_log::Column::MessageKey.is_in(chunk.iter().copied()))
            .into_tuple()
            .all(db)
            .await?;
        ids.extend(found.into_iter().map(|(id, key)| (key, id)));
    }
    Ok(ids)
}
