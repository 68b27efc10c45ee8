//! Ledger queries: one device's values of one or several attributes over a time range, raw or
//! aggregated per interval in the database.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, DatabaseBackend, EntityTrait, FromQueryResult, QueryFilter, QueryOrder,
    QuerySelect,
};

use super::{Scope, devices};
use crate::entity::ledger;
use crate::{Storage, StorageError};

/// Most points one answer holds; a longer range needs a coarser interval.
pub const MAX_POINTS: u64 = 10_000;
/// Most attributes one query names.
pub const MAX_ATTRIBUTES: usize = 20;

/// How the values of one interval are combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aggregate {
    Avg,
    Min,
    Max,
    Sum,
    Count,
}

impl std::str::FromStr for Aggregate {
    type Err = StorageError;

    fn from_str(text: &str) -> Result<Aggregate, StorageError> {
        Ok(match text {
            "avg" => Aggregate::Avg,
            "min" => Aggregate::Min,
            "max" => Aggregate::Max,
            "sum" => Aggregate::Sum,
            "count" => Aggregate::Count,
            _ => {
                return Err(StorageError::invalid(
                    "aggregate",
                    "must be avg, min, max, sum or count",
                ));
            }
        })
    }
}

impl Aggregate {
    /// The SQL of the aggregate, always a floating value (COUNT is an integer, and PostgreSQL
    /// widens some results to NUMERIC).
    fn sql(self, backend: DatabaseBackend) -> String {
        let aggregate = match self {
            Aggregate::Avg => "AVG(value_num)",
            Aggregate::Min => "MIN(value_num)",
            Aggregate::Max => "MAX(value_num)",
            Aggregate::Sum => "SUM(value_num)",
            Aggregate::Count => "COUNT(value_num)",
        };
        let float = match backend {
            DatabaseBackend::Postgres => "DOUBLE PRECISION",
            _ => "REAL",
        };
        format!("CAST({aggregate} AS {float})")
    }
}

/// What to read.
#[derive(Clone, Debug)]
pub struct SeriesQuery {
    pub attributes: Vec<String>,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Aggregate per interval of this many seconds; None: the raw values.
    pub every: Option<(i64, Aggregate)>,
}

/// One point of a series: a raw value, or an interval's aggregate stamped with its start.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub ts: DateTime<Utc>,
    pub value: serde_json::Value,
}

/// One attribute's points, oldest first.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub attribute: String,
    pub points: Vec<Point>,
    /// More raw values were in the range than [`MAX_POINTS`]: these are the newest.
    pub truncated: bool,
}

/// The SQL of the start (in Unix seconds) of the `step`-second interval holding `column`.
pub(crate) fn epoch_bucket(backend: DatabaseBackend, column: &str, step: i64) -> String {
    match backend {
        DatabaseBackend::Postgres => {
            format!("CAST(FLOOR(EXTRACT(EPOCH FROM {column}) / {step}) * {step} AS BIGINT)")
        }
        _ => format!("(CAST(strftime('%s', {column}) AS INTEGER) / {step}) * {step}"),
    }
}

/// The values of `device` (by id, as the scope sees it) the query asks for.
pub async fn series(
    storage: &Storage,
    scope: Scope,
    device: &str,
    query: &SeriesQuery,
) -> Result<Vec<Series>, StorageError> {
    if query.attributes.is_empty() || query.attributes.len() > MAX_ATTRIBUTES {
        return Err(StorageError::invalid(
            "attributes",
            format!("must name 1 to {MAX_ATTRIBUTES} attributes, separated by commas"),
        ));
    }
    if query.to <= query.from {
        return Err(StorageError::invalid("to", "must be later than `from`"));
    }
    let device = devices::get(storage, scope, device).await?;
    // More intervals than one answer holds: the newest ones, flagged truncated.
    let (from, truncated) = match query.every {
        Some((step, _)) if step >= 1 => {
            let span = chrono::Duration::seconds(step.saturating_mul(MAX_POINTS as i64));
            match query.to.checked_sub_signed(span) {
                Some(earliest) if earliest > query.from => (earliest, true),
                _ => (query.from, false),
            }
        }
        _ => (query.from, false),
    };
    let in_range = ledger::Entity::find()
        .filter(ledger::Column::DeviceId.eq(device.id))
        .filter(ledger::Column::Attribute.is_in(query.attributes.iter().map(String::as_str)))
        .filter(ledger::Column::Ts.gte(from))
        .filter(ledger::Column::Ts.lt(query.to));
    let mut series: Vec<Series> = query
        .attributes
        .iter()
        .map(|attribute| Series {
            attribute: attribute.clone(),
            points: Vec::new(),
            truncated,
        })
        .collect();
    match query.every {
        Some((step, aggregate)) => {
            if step < 1 {
                return Err(StorageError::invalid("interval", "must be at least 1s"));
            }
            #[derive(FromQueryResult)]
            struct Row {
                attribute: String,
                bucket: i64,
                value: Option<f64>,
            }
            let rows = in_range
                .filter(ledger::Column::ValueNum.is_not_null())
                .select_only()
                .column(ledger::Column::Attribute)
                .column_as(
                    Expr::cust(epoch_bucket(storage.backend(), "ts", step)),
                    "bucket",
                )
                .column_as(Expr::cust(aggregate.sql(storage.backend())), "value")
                .group_by(ledger::Column::Attribute)
                .group_by(Expr::cust("bucket"))
                .order_by_asc(Expr::cust("bucket"))
                .into_model::<Row>()
                .all(storage.db())
                .await?;
            for row in rows {
                // Rows come only for the attributes asked for.
                let Some(one) = series.iter_mut().find(|s| s.attribute == row.attribute) else {
                    continue;
                };
                one.points.push(Point {
                    ts: DateTime::from_timestamp(row.bucket, 0).unwrap_or(from),
                    value: row
                        .value
                        .map_or(serde_json::Value::Null, serde_json::Value::from),
                });
            }
            // The clipped range can start inside an interval: one more than fits.
            for one in &mut series {
                let over = one.points.len().saturating_sub(MAX_POINTS as usize);
                one.points.drain(..over);
            }
        }
        None => {
            for one in &mut series {
                let mut rows = in_range
                    .clone()
                    .filter(ledger::Column::Attribute.eq(one.attribute.as_str()))
                    .order_by_desc(ledger::Column::Ts)
                    .limit(MAX_POINTS + 1)
                    .all(storage.db())
                    .await?;
                one.truncated = rows.len() as u64 > MAX_POINTS;
                rows.truncate(MAX_POINTS as usize);
                one.points = rows
                    .into_iter()
                    .rev()
                    .map(|row| Point {
                        ts: row.ts,
                        value: row.value_num.map_or_else(
                            || row.value_json.unwrap_or(serde_json::Value::Null),
                            serde_json::Value::from,
                        ),
                    })
                    .collect();
            }
        }
    }
    Ok(series)
}
