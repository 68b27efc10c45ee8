//! Devices: list (filters, search, pages, sort), one with its latest values, register one, and
//! the values of its attributes over time.

use std::collections::HashMap;

use aos_auth::permissions::{ObjectKind, Operation};
use aos_storage::Storage;
use aos_storage::entity::device;
use aos_storage::repo::devices::{self, DeviceQuery, NewDevice};
use aos_storage::repo::ledger::{self, Aggregate, SeriesQuery};
use aos_storage::repo::{Scope, classes};
use chrono::{DateTime, Utc};
use ntex::web::{self, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ApiError, ApiState, Caller, InTenant, Json, Listed, Query, page};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/devices", web::get().to(list))
        .route("/devices", web::post().to(create))
        .route("/devices/{uid}", web::get().to(get))
        .route("/devices/{uid}/values", web::get().to(values));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    tenant: Option<String>,
    class: Option<String>,
    status: Option<String>,
    search: Option<String>,
    limit: Option<u64>,
    offset: Option<u64>,
    sort: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Create {
    uid: String,
    name: Option<String>,
    class: String,
    entity: Option<String>,
    gateway: Option<String>,
    format: Option<String>,
}

/// A device as the API shows it.
#[derive(Serialize)]
pub struct DeviceView {
    pub uid: String,
    pub name: String,
    pub class: Option<String>,
    pub status: String,
    pub last_seen: Option<DateTime<Utc>>,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
}

/// A latest value of an attribute.
#[derive(Serialize)]
pub struct LatestView {
    pub attribute: String,
    pub ts: DateTime<Utc>,
    pub value: Value,
    pub level: Option<String>,
}

#[derive(Serialize)]
struct DeviceWithLatest {
    #[serde(flatten)]
    device: DeviceView,
    latest: Vec<LatestView>,
}

/// Names of the tenant's classes by id (devices show their class by name).
async fn class_names(storage: &Storage, scope: Scope) -> Result<HashMap<i64, String>, ApiError> {
    Ok(classes::list(storage, scope)
        .await?
        .into_iter()
        .map(|c| (c.id, c.name))
        .collect())
}

fn view(d: device::Model, classes: &HashMap<i64, String>) -> DeviceView {
    DeviceView {
        class: classes.get(&d.class_id).cloned(),
        uid: d.uid,
        name: d.name,
        status: d.status,
        last_seen: d.last_seen,
        disabled: d.disabled,
        created_at: d.created_at,
    }
}

/// `GET /api/devices?class=&status=&search=&limit=&offset=&sort=` → a page and the total.
async fn list(
    api: ApiState,
    caller: Caller,
    query: Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.0;
    let scope = caller
        .scope(
            &api,
            ObjectKind::Devices,
            Operation::View,
            query.tenant.as_deref(),
        )
        .await?;
    let wanted = DeviceQuery {
        class: query.class,
        status: query.status,
        search: query.search,
        page: page(query.limit, query.offset, query.sort)?,
    };
    let (found, total) = devices::search(&api.storage, scope, &wanted).await?;
    let classes = class_names(&api.storage, scope).await?;
    let items = found.into_iter().map(|d| view(d, &classes)).collect();
    Ok(Listed::new(items, total).response())
}

/// `GET /api/devices/{uid}` → the device and its latest values.
async fn get(
    api: ApiState,
    caller: Caller,
    uid: web::types::Path<String>,
    query: Query<InTenant>,
) -> Result<HttpResponse, ApiError> {
    let scope = caller
        .scope(
            &api,
            ObjectKind::Devices,
            Operation::View,
            query.0.tenant.as_deref(),
        )
        .await?;
    let found = devices::get(&api.storage, scope, &uid).await?;
    let latest = devices::latest_values(&api.storage, &found)
        .await?
        .into_iter()
        .map(|v| LatestView {
            attribute: v.attribute,
            ts: v.ts,
            value: v
                .value_num
                .map_or_else(|| v.value_json.unwrap_or(Value::Null), Value::from),
            level: v.level,
        })
        .collect();
    let classes = class_names(&api.storage, scope).await?;
    Ok(HttpResponse::Ok().json(&DeviceWithLatest {
        device: view(found, &classes),
        latest,
    }))
}

/// `POST /api/devices {"uid", "name", "class", "entity", "gateway", "format"}` → 201.
async fn create(
    api: ApiState,
    caller: Caller,
    query: Query<InTenant>,
    body: Json<Create>,
) -> Result<HttpResponse, ApiError> {
    let scope = caller
        .scope(
            &api,
            ObjectKind::Devices,
            Operation::Create,
            query.0.tenant.as_deref(),
        )
        .await?;
    let body = body.0;
    let new = NewDevice {
        name: body.name.unwrap_or_else(|| body.uid.clone()),
        uid: body.uid,
        class: body.class,
        entity: body.entity,
        gateway: body.gateway,
        format: body.format,
    };
    let created = devices::create(&api.storage, scope, new).await?;
    let classes = class_names(&api.storage, scope).await?;
    Ok(HttpResponse::Created().json(&view(created, &classes)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ValuesQuery {
    tenant: Option<String>,
    /// Attribute names, separated by commas.
    attributes: String,
    /// Default: a day before `to`.
    from: Option<DateTime<Utc>>,
    /// Default: now.
    to: Option<DateTime<Utc>>,
    /// `30s`, `5m`, `1h`...: aggregate per interval (with `aggregate`, default avg).
    #[serde(default, with = "humantime_serde")]
    interval: Option<std::time::Duration>,
    aggregate: Option<String>,
}

#[derive(Serialize)]
struct PointView {
    ts: DateTime<Utc>,
    value: Value,
}

#[derive(Serialize)]
struct SeriesView {
    attribute: String,
    points: Vec<PointView>,
    truncated: bool,
}

#[derive(Serialize)]
struct SeriesList {
    series: Vec<SeriesView>,
}

/// `GET /api/devices/{uid}/values?attributes=a,b&from=&to=&interval=&aggregate=` → one series
/// per attribute, oldest first: the raw values, or one aggregate per interval.
async fn values(
    api: ApiState,
    caller: Caller,
    uid: web::types::Path<String>,
    query: Query<ValuesQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.0;
    let scope = caller
        .scope(
            &api,
            ObjectKind::Ledger,
            Operation::View,
            query.tenant.as_deref(),
        )
        .await?;
    let to = query.to.unwrap_or_else(Utc::now);
    let from = query.from.unwrap_or(to - chrono::Duration::days(1));
    let aggregate: Option<Aggregate> = query.aggregate.as_deref().map(str::parse).transpose()?;
    let every = match (query.interval, aggregate) {
        (Some(interval), aggregate) => Some((
            i64::try_from(interval.as_secs()).unwrap_or(i64::MAX),
            aggregate.unwrap_or(Aggregate::Avg),
        )),
        (None, Some(_)) => {
            return Err(aos_storage::StorageError::invalid(
                "interval",
                "an aggregate needs an interval (e.g. interval=5m)",
            )
            .into());
        }
        (None, None) => None,
    };
    let wanted = SeriesQuery {
        attributes: query
            .attributes
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(String::from)
            .collect(),
        from,
        to,
        every,
    };
    let series = ledger::series(&api.storage, scope, &uid, &wanted)
        .await?
        .into_iter()
        .map(|s| SeriesView {
            attribute: s.attribute,
            points: s
                .points
                .into_iter()
                .map(|p| PointView {
                    ts: p.ts,
                    value: p.value,
                })
                .collect(),
            truncated: s.truncated,
        })
        .collect();
    Ok(HttpResponse::Ok().json(&SeriesList { series }))
}
