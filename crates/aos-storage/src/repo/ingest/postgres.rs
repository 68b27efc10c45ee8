//! A batch's rows on PostgreSQL: each kind of row in one statement over a JSON array
//! (`json_to_recordset`), whatever the batch's size. The statements keep one shape, so each is
//! parsed and planned once per connection, where a multi-row insert with a placeholder per value
//! is a new statement for every batch size and costs more to build and send than to store.
//!
//! Several workers write at once: a batch claims the latest values it replaces in one order
//! (device, attribute) before reading what they were, so concurrent batches wait for each other
//! instead of raising an event twice or deadlocking.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseBackend, EntityTrait, Statement};
use serde::{Serialize, Serializer};

use super::{BatchWrites, INBOUND, Logged, LoggedMessage, Reading};
use crate::StorageError;
use crate::entity::latest_value;

/// Statements over JSON arrays of rows.
pub(super) struct Bulk;

/// The log entries not there yet, then the ledger rows of the messages just logged (a message
/// logged before, by an earlier delivery, had its rows written with it) and of no message in the
/// batch (`carried` false: a workflow's saved values), in one statement: the ledger takes the new
/// entries' ids from the insert itself, and needs no conflict check (the batch's readings are
/// distinct). Answers the ledger rows added, then the keys logged, a row each.
const LOG_AND_LEDGER: &str = r#"
WITH logged AS (
    INSERT INTO message_log (tenant_id, device_id, direction, topic, payload, status, error,
                             message_key, received_at, started_at, processed_at)
    SELECT tenant_id, device_id, direction, topic, payload, status, error,
           message_key, received_at, started_at, processed_at
    FROM json_to_recordset($1::text::json) AS m(
        tenant_id bigint, device_id bigint, direction text, topic text, payload bytea,
        status text, error text, message_key text, received_at timestamptz,
        started_at timestamptz, processed_at timestamptz)
    ON CONFLICT (message_key) DO NOTHING
    RETURNING id, message_key
), stored AS (
    INSERT INTO ledger (tenant_id, device_id, attribute, ts, value_num, value_json, raw, level,
                        message_id)
    SELECT r.tenant_id, r.device_id, r.attribute, r.ts, r.value_num, r.value_json, r.raw,
           r.level, logged.id
    FROM json_to_recordset($2::text::json) AS r(
        message_key text, carried boolean, tenant_id bigint, device_id bigint, attribute text,
        ts timestamptz, value_num double precision, value_json json, raw json, level text)
    LEFT JOIN logged ON logged.message_key = r.message_key
    WHERE logged.id IS NOT NULL OR NOT r.carried
    RETURNING 1
)
SELECT NULL::text AS message_key, (SELECT count(*) FROM stored) AS ledger_rows
UNION ALL
SELECT message_key, NULL FROM logged"#;

/// The batch's newest readings as latest-value rows, in (device, attribute) order: what the
/// claim and the upsert insert (they differ in what a row already there does).
macro_rules! insert_latest {
    () => {
        r#"
INSERT INTO latest_value (device_id, attribute, tenant_id, ts, value_num, value_json, level)
SELECT device_id, attribute, tenant_id, ts, value_num, value_json, level
FROM json_to_recordset($1::text::json) AS r(
    device_id bigint, attribute text, tenant_id bigint, ts timestamptz,
    value_num double precision, value_json json, level text)
ORDER BY device_id, attribute
"#
    };
}

/// Claims the latest values the batch has no row for yet: inserted now (in the upsert's order),
/// a batch writing the same one at once waits for this one to commit.
const CLAIM_NEW_LATEST: &str = concat!(
    insert_latest!(),
    "ON CONFLICT (device_id, attribute) DO NOTHING
RETURNING device_id, attribute"
);

/// Locks (in the upsert's order) and reads the latest values the batch may replace.
const LOCK_LATEST: &str = r#"
SELECT l.device_id, l.attribute, l.tenant_id, l.ts, l.value_num, l.value_json, l.level
FROM latest_value l
JOIN json_to_recordset($1::text::json) AS k(device_id bigint, attribute text)
  ON l.device_id = k.device_id AND l.attribute = k.attribute
ORDER BY l.device_id, l.attribute
FOR UPDATE OF l"#;

/// An older value arriving late does not replace a newer one.
const UPSERT_LATEST: &str = concat!(
    insert_latest!(),
    "ON CONFLICT (device_id, attribute) DO UPDATE
SET ts = excluded.ts, value_num = excluded.value_num, value_json = excluded.value_json,
    level = excluded.level
WHERE latest_value.ts <= excluded.ts"
);

impl BatchWrites for Bulk {
    async fn log(
        db: &impl ConnectionTrait,
        messages: &[&LoggedMessage],
        readings: &[&Reading],
    ) -> Result<Logged, StorageError> {
        if messages.is_empty() && readings.is_empty() {
            return Ok(Logged {
                keys: HashSet::new(),
                ledger_rows: 0,
            });
        }
        let log: Vec<LogRow> = messages.iter().map(|m| LogRow::of(m)).collect();
        let carried: HashSet<&str> = messages.iter().map(|m| m.key.as_str()).collect();
        let ledger: Vec<LedgerRow> = readings
            .iter()
            .map(|r| LedgerRow::of(r, carried.contains(r.message.as_str())))
            .collect();
        let rows = db
            .query_all_raw(Statement::from_sql_and_values(
                DatabaseBackend::Postgres,
                LOG_AND_LEDGER,
                [json(&log)?.into(), json(&ledger)?.into()],
            ))
            .await?;
        let mut logged = Logged {
            keys: HashSet::with_capacity(rows.len()),
            ledger_rows: 0,
        };
        for row in rows {
            if let Some(key) = row.try_get::<Option<String>>("", "message_key")? {
                logged.keys.insert(key);
            }
            if let Some(added) = row.try_get::<Option<i64>>("", "ledger_rows")? {
                logged.ledger_rows = added.unsigned_abs();
            }
        }
        Ok(logged)
    }

    /// New rows are inserted first (they replace nothing), existing ones then locked: a
    /// batch holds every latest value it may change before it reads what they were, and takes
    /// them in one order, so batches written at once neither deadlock nor both see a change.
    async fn latest_before(
        db: &impl ConnectionTrait,
        latest: &[&Reading],
    ) -> Result<Vec<latest_value::Model>, StorageError> {
        if latest.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<LatestRow> = latest.iter().map(|r| LatestRow::of(r)).collect();
        let claimed = db
            .query_all_raw(statement(CLAIM_NEW_LATEST, &rows)?)
            .await?;
        let mut new = HashSet::with_capacity(claimed.len());
        for row in claimed {
            new.insert((
                row.try_get::<i64>("", "device_id")?,
                row.try_get::<String>("", "attribute")?,
            ));
        }
        let locked = latest_value::Entity::find()
            .from_raw_sql(statement(LOCK_LATEST, &rows)?)
            .all(db)
            .await?;
        Ok(locked
            .into_iter()
            .filter(|l| !new.contains(&(l.device_id, l.attribute.clone())))
            .collect())
    }

    async fn upsert_latest(
        db: &impl ConnectionTrait,
        latest: &[&Reading],
    ) -> Result<(), StorageError> {
        if latest.is_empty() {
            return Ok(());
        }
        let rows: Vec<LatestRow> = latest.iter().map(|r| LatestRow::of(r)).collect();
        db.execute_raw(statement(UPSERT_LATEST, &rows)?).await?;
        Ok(())
    }
}

/// `sql` with the rows as its one parameter.
fn statement(sql: &str, rows: &[impl Serialize]) -> Result<Statement, StorageError> {
    Ok(Statement::from_sql_and_values(
        DatabaseBackend::Postgres,
        sql,
        [json(rows)?.into()],
    ))
}

/// Rows as a JSON array (text: bound as is, cast by the statement).
fn json(rows: &[impl Serialize]) -> Result<String, StorageError> {
    serde_json::to_string(rows).map_err(|err| {
        StorageError::invalid("a batch", format!("cannot be written as JSON: {err}"))
    })
}

#[derive(Serialize)]
struct LogRow<'a> {
    tenant_id: i64,
    device_id: Option<i64>,
    direction: &'static str,
    topic: &'a str,
    #[serde(serialize_with = "bytea")]
    payload: &'a [u8],
    status: &'static str,
    error: Option<&'a str>,
    message_key: &'a str,
    #[serde(serialize_with = "timestamp")]
    received_at: &'a DateTime<Utc>,
    #[serde(serialize_with = "timestamp")]
    started_at: &'a DateTime<Utc>,
    #[serde(serialize_with = "timestamp")]
    processed_at: &'a DateTime<Utc>,
}

impl<'a> LogRow<'a> {
    fn of(m: &'a LoggedMessage) -> LogRow<'a> {
        LogRow {
            tenant_id: m.tenant,
            device_id: m.device,
            direction: INBOUND,
            topic: &m.topic,
            payload: &m.payload,
            status: m.status(),
            error: m.error.as_deref(),
            message_key: &m.key,
            received_at: &m.received_at,
            started_at: &m.started_at,
            processed_at: &m.processed_at,
        }
    }
}

#[derive(Serialize)]
struct LedgerRow<'a> {
    message_key: &'a str,
    /// Whether a message of the batch carries it.
    carried: bool,
    tenant_id: i64,
    device_id: i64,
    attribute: &'a str,
    #[serde(serialize_with = "timestamp")]
    ts: &'a DateTime<Utc>,
    value_num: Option<f64>,
    value_json: Option<&'a serde_json::Value>,
    raw: Option<&'a serde_json::Value>,
    level: Option<&'a str>,
}

impl<'a> LedgerRow<'a> {
    fn of(r: &'a Reading, carried: bool) -> LedgerRow<'a> {
        let (value_num, value_json) = r.columns();
        LedgerRow {
            message_key: &r.message,
            carried,
            tenant_id: r.tenant,
            device_id: r.device,
            attribute: &r.attribute,
            ts: &r.ts,
            value_num,
            value_json,
            raw: r.raw.as_ref(),
            level: r.level.as_deref(),
        }
    }
}

#[derive(Serialize)]
struct LatestRow<'a> {
    device_id: i64,
    attribute: &'a str,
    tenant_id: i64,
    #[serde(serialize_with = "timestamp")]
    ts: &'a DateTime<Utc>,
    value_num: Option<f64>,
    value_json: Option<&'a serde_json::Value>,
    level: Option<&'a str>,
}

impl<'a> LatestRow<'a> {
    fn of(r: &'a Reading) -> LatestRow<'a> {
        let (value_num, value_json) = r.columns();
        LatestRow {
            device_id: r.device,
            attribute: &r.attribute,
            tenant_id: r.tenant,
            ts: &r.ts,
            value_num,
            value_json,
            level: r.level.as_deref(),
        }
    }
}

/// A timestamp to the microsecond PostgreSQL keeps, cut as a bound timestamp is (not rounded:
/// a redelivered message's rows compare equal to the stored ones).
fn timestamp<S: Serializer>(ts: &&DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&ts.format("%Y-%m-%dT%H:%M:%S%.6fZ"))
}

/// Bytes in `bytea`'s hex input form.
fn bytea<S: Serializer>(bytes: &&[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&format_args!("\\x{}", hex::encode(bytes)))
}
