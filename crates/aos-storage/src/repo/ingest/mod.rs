//! Device messages into storage: a batch's message-log entries, ledger rows and latest values in
//! one transaction, idempotent — a redelivered message (same key) writes nothing again: its
//! first delivery's outcome stands.
//!
//! The statements differ by database: SQLite (one writer at a time) takes multi-row inserts
//! built by sea-orm ([`portable`]); PostgreSQL, written by several workers at once, takes each
//! kind of row as one constant-shape statement over a JSON array and locks the latest values a
//! batch replaces in one order ([`postgres`]).

mod portable;
mod postgres;

use std::borrow::Borrow;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseBackend};

use super::commands::{self, Reply};
use super::interpreters;
use crate::entity::latest_value;
use crate::{Storage, StorageError};

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
    fn columns(&self) -> (Option<f64>, Option<&serde_json::Value>) {
        match self.value.as_f64() {
            Some(n) => (Some(n), None),
            None => (None, Some(&self.value)),
        }
    }
}

impl LoggedMessage {
    /// The message log's `status`.
    fn status(&self) -> &'static str {
        if self.error.is_some() {
            "failed"
        } else {
            "processed"
        }
    }
}

/// The message log's `direction` of device messages.
const INBOUND: &str = "inbound";

/// What a batch writes, by database.
trait BatchWrites {
    /// Adds the message-log entries not there yet, and the ledger rows of the readings
    /// (distinct) [`to_store`].
    async fn log(
        db: &impl ConnectionTrait,
        messages: &[&LoggedMessage],
        readings: &[&Reading],
    ) -> Result<Logged, StorageError>;
    /// The stored latest values the batch's newest readings may replace, where its changes are
    /// wanted (and, where writers run side by side, locked until the batch commits).
    async fn latest_before(
        db: &impl ConnectionTrait,
        latest: &[&Reading],
    ) -> Result<Vec<latest_value::Model>, StorageError>;
    /// Makes the newest readings the latest values, unless a newer value is stored.
    async fn upsert_latest(
        db: &impl ConnectionTrait,
        latest: &[&Reading],
    ) -> Result<(), StorageError>;
}

/// What the log step of a batch added.
struct Logged {
    /// The keys of the messages logged now. A message logged by an earlier delivery had its
    /// values stored with it: the first outcome stands.
    keys: HashSet<String>,
    ledger_rows: u64,
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
    let messages: Vec<&LoggedMessage> = messages.iter().map(Borrow::borrow).collect();
    let readings = distinct(readings.iter().map(Borrow::borrow));
    let txn = storage.begin_write().await?;
    let recorded = match storage.backend() {
        DatabaseBackend::Postgres => {
            write::<postgres::Bulk>(&txn, &messages, &readings, replies).await?
        }
        _ => write::<portable::Rows>(&txn, &messages, &readings, replies).await?,
    };
    txn.commit().await?;
    Ok(recorded)
}

async fn write<W: BatchWrites>(
    db: &impl ConnectionTrait,
    messages: &[&LoggedMessage],
    readings: &[&Reading],
    replies: &[Reply],
) -> Result<Recorded, StorageError> {
    let logged = W::log(db, messages, readings).await?;
    let latest = newest_per_attribute(&to_store(messages, &logged.keys, readings));
    let before = W::latest_before(db, &latest).await?;
    let changes = changes(&latest, before);
    let events = raise_events(db, &changes).await?;
    W::upsert_latest(db, &latest).await?;
    commands::settle(db, replies).await?;
    Ok(Recorded {
        messages: logged.keys.len() as u64,
        ledger_rows: logged.ledger_rows,
        events,
        changes,
    })
}

/// Whether a reading's change from the stored latest value is wanted: its attribute has levels,
/// or a workflow watches it.
fn wanted(reading: &Reading) -> bool {
    reading.level.is_some() || reading.watched
}

/// The changes the newest readings of leveled or watched attributes make to the stored latest
/// values `before` (a redelivered message changes nothing: the latest value already is it; a
/// late, older value changes nothing either).
fn changes(latest: &[&Reading], before: Vec<latest_value::Model>) -> Vec<Change> {
    let stored: HashMap<(i64, String), latest_value::Model> = before
        .into_iter()
        .map(|r| ((r.device_id, r.attribute.clone()), r))
        .collect();
    let mut changes = Vec::new();
    for r in latest.iter().filter(|r| wanted(r)) {
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
    changes
}

/// Raises (or counts again: [`interpreters::raise_in`]) the alarm of every attribute whose level
/// changes to one other than normal; returns how many were raised anew.
async fn raise_events(db: &impl ConnectionTrait, changes: &[Change]) -> Result<u64, StorageError> {
    let mut raised = 0;
    for change in changes
        .iter()
        .filter(|c| c.level_changed() && c.level != NORMAL_LEVEL)
    {
        let alarm = interpreters::Alarm {
            tenant: change.tenant,
            device: change.device,
            attribute: Some(&change.attribute),
            level: &change.level,
            message: format!(
                "{} is {} ({})",
                change.attribute, change.level, change.value
            ),
            value: Some(change.value.to_string()),
            at: change.ts,
        };
        if interpreters::raise_in(db, alarm).await?.1 {
            raised += 1;
        }
    }
    Ok(raised)
}

/// The readings a batch stores: those of the messages it logs now, and those of no message in
/// the batch (a workflow's saved values). A message logged by an earlier delivery had its
/// values stored then.
fn to_store<'a>(
    messages: &[&LoggedMessage],
    logged_now: &HashSet<String>,
    readings: &[&'a Reading],
) -> Vec<&'a Reading> {
    let carried: HashSet<&str> = messages.iter().map(|m| m.key.as_str()).collect();
    readings
        .iter()
        .filter(|r| logged_now.contains(&r.message) || !carried.contains(r.message.as_str()))
        .copied()
        .collect()
}

/// The readings without repeats: of the readings of one device attribute at one time from one
/// message (a payload naming a value twice), the last one.
fn distinct<'a>(readings: impl Iterator<Item = &'a Reading>) -> Vec<&'a Reading> {
    let mut last: HashMap<(&str, i64, &str, DateTime<Utc>), usize> = HashMap::new();
    let mut kept: Vec<Option<&Reading>> = Vec::new();
    for r in readings {
        match last.entry((r.message.as_str(), r.device, r.attribute.as_str(), r.ts)) {
            Entry::Occupied(mut at) => {
                kept[*at.get()] = None;
                at.insert(kept.len());
            }
            Entry::Vacant(at) => {
                at.insert(kept.len());
            }
        }
        kept.push(Some(r));
    }
    kept.into_iter().flatten().collect()
}

/// The newest reading of each device attribute in the batch (one row per upsert key: a
/// statement may not update the same row twice), ordered by device and attribute: writers that
/// lock latest values in one order never wait for each other in a circle.
fn newest_per_attribute<'a>(readings: &[&'a Reading]) -> Vec<&'a Reading> {
    let mut newest: HashMap<(i64, &str), &Reading> = HashMap::new();
    for &r in readings {
        let slot = newest.entry((r.device, r.attribute.as_str())).or_insert(r);
        if r.ts >= slot.ts {
            *slot = r;
        }
    }
    let mut newest: Vec<&Reading> = newest.into_values().collect();
    newest.sort_unstable_by(|a, b| (a.device, &a.attribute).cmp(&(b.device, &b.attribute)));
    newest
}
