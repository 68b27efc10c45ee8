//! Device messages into storage: a batch's message-log entries, ledger rows and latest values in
//! one transaction, idempotent — a redelivered message (same key) writes nothing twice.

use std::borrow::Borrow;
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    QuerySelect, TryInsertResult,
};

use super::commands::{self, Reply};
use crate::entity::{event, latest_value, ledger, message_log};
use crate::{Storage, StorageError};

/// Rows per INSERT statement (SQLite takes at most 32,766 bound values in one).
const ROWS_PER_STATEMENT: usize = 1000;

/// One device message and what became of it.
#[derive(Clone, Debug)]
pub struct LoggedMessage {
    /// Names the message across redeliveries.
    pub key: String,
    pub tenant: i64,
    pub device: Option<i64>,
    pub topic: String,
    pub payload: Vec<u8>,
    pub received_at: DateTime<Utc>,
    /// When a worker took it up.
    pub started_at: DateTime<Utc>,
    pub processed_at: DateTime<Utc>,
    /// Why it failed; `None`: processed.
    pub error: Option<String>,
}

/// One interpreted value of a device attribute.
#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    /// The key of the message it came from.
    pub message: String,
    pub tenant: i64,
    pub device: i64,
    pub attribute: String,
    pub ts: DateTime<Utc>,
    pub value: serde_json::Value,
    /// The value as it arrived, when an interpreter changed it.
    pub raw: Option<serde_json::Value>,
    pub level: Option<String>,
    /// Report its change from the stored latest value (a workflow watches a threshold on it).
    pub watched: bool,
}

/// The level of values no range names: reaching it clears the attribute's events.
pub const NORMAL_LEVEL: &str = "normal";

impl Reading {
    /// Numbers go to `value_num` (aggregatable), everything else to `value_json`.
    fn columns(&self) -> (Option<f64>, Option<serde_json::Value>) {
        match self.value.as_f64() {
            Some(n) => (Some(n), None),
            None => (None, Some(self.value.clone())),
        }
    }
}

/// What a batch added.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recorded {
    /// Message-log entries written (a redelivered message's entry exists already).
    pub messages: u64,
    pub ledger_rows: u64,
    /// Events raised by level changes.
    pub events: u64,
    /// The new latest values whose level changed, or that are watched, with what they replace.
    pub changes: Vec<Change>,
}

/// A device attribute's new latest value and the one it replaced.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// The key of the message it came from.
    pub message: String,
    pub tenant: i64,
    pub device: i64,
    pub attribute: String,
    pub ts: DateTime<Utc>,
    pub value: serde_json::Value,
    /// The level now and before (`normal` when there was none).
    pub level: String,
    pub previous_level: String,
    /// The value before, if there was one.
    pub previous: Option<serde_json::Value>,
}

impl Change {
    pub fn level_changed(&self) -> bool {
        self.level != self.previous_level
    }
}

/// Records a batch: message-log entries, ledger rows, latest values and the commands devices
/// replied to, all or nothing.
pub async fn record(
    storage: &Storage,
    messages: &[impl Borrow<LoggedMessage>],
    readings: &[impl Borrow<Reading>],
    replies: &[Reply],
) -> Result<Recorded, StorageError> {
    let readings: Vec<&Reading> = readings.iter().map(Borrow::borrow).collect();
    let txn = storage.begin_write().await?;
    let mut recorded = Recorded::default();
    for chunk in messages.chunks(ROWS_PER_STATEMENT) {
        recorded.messages += inserted(
            message_log::Entity::insert_many(chunk.iter().map(|m| log_row(m.borrow())))
                .on_conflict_do_nothing_on([message_log::Column::MessageKey])
                .exec_without_returning(&txn)
                .await?,
        );
    }
    let ids = message_ids(&txn, &readings).await?;
    for chunk in readings.chunks(ROWS_PER_STATEMENT) {
        let rows = chunk.iter().map(|r| {
            let (num, json) = r.columns();
            ledger::ActiveModel {
                tenant_id: Set(r.tenant),
                device_id: Set(r.device),
                attribute: Set(r.attribute.clone()),
                ts: Set(r.ts),
                value_num: Set(num),
                value_json: Set(json),
                raw: Set(r.raw.clone()),
                level: Set(r.level.clone()),
                message_id: Set(ids.get(&r.message).copied()),
                ..Default::default()
            }
        });
        recorded.ledger_rows += inserted(
            ledger::Entity::insert_many(rows)
                .on_conflict_do_nothing_on([
                    ledger::Column::MessageId,
                    ledger::Column::Attribute,
                    ledger::Column::Ts,
                ])
                .exec_without_returning(&txn)
                .await?,
        );
    }
    let latest = newest_per_attribute(&readings);
    recorded.changes = changes(&txn, &latest).await?;
    recorded.events = raise_events(&txn, &recorded.changes).await?;
    for chunk in latest.chunks(ROWS_PER_STATEMENT) {
        let rows = chunk.iter().map(|r| {
            let (num, json) = r.columns();
            latest_value::ActiveModel {
                device_id: Set(r.device),
                attribute: Set(r.attribute.clone()),
                tenant_id: Set(r.tenant),
                ts: Set(r.ts),
                value_num: Set(num),
                value_json: Set(json),
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
            .exec_without_returning(&txn)
            .await?;
    }
    commands::settle(&txn, replies).await?;
    txn.commit().await?;
    Ok(recorded)
}

/// The changes the newest readings of leveled or watched attributes make to the stored latest
/// values (a redelivered message changes nothing: the latest value already is it; a late, older
/// value changes nothing either).
async fn changes(
    db: &impl ConnectionTrait,
    latest: &[&Reading],
) -> Result<Vec<Change>, StorageError> {
    let wanted: Vec<&&Reading> = latest
        .iter()
        .filter(|r| r.level.is_some() || r.watched)
        .collect();
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let mut devices: Vec<i64> = wanted.iter().map(|r| r.device).collect();
    devices.sort_unstable();
    devices.dedup();
    let mut stored: HashMap<(i64, String), latest_value::Model> = HashMap::new();
    for chunk in devices.chunks(ROWS_PER_STATEMENT) {
        let rows = latest_value::Entity::find()
            .filter(latest_value::Column::DeviceId.is_in(chunk.iter().copied()))
            .all(db)
            .await?;
        stored.extend(
            rows.into_iter()
                .map(|r| ((r.device_id, r.attribute.clone()), r)),
        );
    }
    let mut changes = Vec::new();
    for r in wanted {
        let before = stored.get(&(r.device, r.attribute.clone()));
        if before.is_some_and(|b| b.ts >= r.ts) {
            continue;
        }
        let previous_level = before
            .and_then(|b| b.level.clone())
            .unwrap_or_else(|| NORMAL_LEVEL.to_string());
        // An attribute without levels keeps the one it had (none: normal).
        let level = r.level.clone().unwrap_or_else(|| previous_level.clone());
        changes.push(Change {
            message: r.message.clone(),
            tenant: r.tenant,
            device: r.device,
            attribute: r.attribute.clone(),
            ts: r.ts,
            value: r.value.clone(),
            level,
            previous_level,
            previous: before.and_then(|b| {
                b.value_num
                    .and_then(serde_json::Number::from_f64)
                    .map(serde_json::Value::Number)
                    .or_else(|| b.value_json.clone())
            }),
        });
    }
    Ok(changes)
}

/// Raises an event for every attribute whose level changes to one other than normal, and clears
/// the attribute's open events when it changes.
async fn raise_events(db: &impl ConnectionTrait, changes: &[Change]) -> Result<u64, StorageError> {
    let now = Utc::now();
    let mut raised = 0;
    for change in changes.iter().filter(|c| c.level_changed()) {
        event::Entity::update_many()
            .col_expr(event::Column::ClearedAt, Expr::value(now))
            .filter(event::Column::DeviceId.eq(change.device))
            .filter(event::Column::Attribute.eq(change.attribute.clone()))
            .filter(event::Column::ClearedAt.is_null())
            .exec(db)
            .await?;
        if change.level != NORMAL_LEVEL {
            event::ActiveModel {
                tenant_id: Set(change.tenant),
                device_id: Set(change.device),
                attribute: Set(Some(change.attribute.clone())),
                level: Set(change.level.clone()),
                message: Set(format!(
                    "{} is {} ({})",
                    change.attribute, change.level, change.value
                )),
                raised_at: Set(change.ts),
                acknowledged_at: Set(None),
                acknowledged_by: Set(None),
                cleared_at: Set(None),
                ..Default::default()
            }
            .insert(db)
            .await?;
            raised += 1;
        }
    }
    Ok(raised)
}

/// Rows an `INSERT … ON CONFLICT DO NOTHING` added.
fn inserted(result: TryInsertResult<u64>) -> u64 {
    match result {
        TryInsertResult::Inserted(rows) => rows,
        TryInsertResult::Empty | TryInsertResult::Conflicted => 0,
    }
}

fn log_row(m: &LoggedMessage) -> message_log::ActiveModel {
    message_log::ActiveModel {
        tenant_id: Set(m.tenant),
        device_id: Set(m.device),
        direction: Set("inbound".into()),
        topic: Set(m.topic.clone()),
        payload: Set(m.payload.clone()),
        status: Set(if m.error.is_some() {
            "failed"
        } else {
            "processed"
        }
        .into()),
        error: Set(m.error.clone()),
        message_key: Set(m.key.clone()),
        received_at: Set(m.received_at),
        started_at: Set(Some(m.started_at)),
        processed_at: Set(Some(m.processed_at)),
        ..Default::default()
    }
}

/// The message-log ids of the messages the readings came from.
async fn message_ids(
    db: &impl ConnectionTrait,
    readings: &[&Reading],
) -> Result<HashMap<String, i64>, StorageError> {
    let mut keys: Vec<&str> = readings.iter().map(|r| r.message.as_str()).collect();
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

/// The newest reading of each device attribute in the batch (one row per upsert key: a
/// statement may not update the same row twice).
fn newest_per_attribute<'a>(readings: &[&'a Reading]) -> Vec<&'a Reading> {
    let mut newest: HashMap<(i64, &str), &Reading> = HashMap::new();
    for &r in readings {
        let slot = newest.entry((r.device, r.attribute.as_str())).or_insert(r);
        if r.ts >= slot.ts {
            *slot = r;
        }
    }
    newest.into_values().collect()
}
