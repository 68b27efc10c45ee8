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
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, ApiState, Caller, ErrorBody, InTenant, Json, Listed, Query, Routes, page};

pub fn routes(r: &mut impl Routes) {
    r.get("/devices", list)
        .post("/devices", create)
        .get("/devices/{uid}", get)
        .get("/devices/{uid}/values", values);
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// The tenant a system administrator acts in (a tenant's user always acts in its own).
    tenant: Option<String>,
    /// A class's name.
    class: Option<String>,
    /// `online` or `offline`.
    #[param(pattern = "^(online|offline)$")]
    status: Option<String>,
    /// Part of the id or the name.
    search: Option<String>,
    /// The children of this gateway (its id).
    gateway: Option<String>,
    /// Items per page, 1 to 1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
    /// Items to skip, up to 1,000,000 (default 0).
    #[param(maximum = 1_000_000)]
    offset: Option<u64>,
    /// `uid`, `name`, `status`, `last_seen` or `created_at`, `-field` for descending.
    sort: Option<String>,
}

/// A device to register.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateDevice {
    /// Its id (the MQTT client id), unique in the tenant.
    #[schema(value_type = super::schema::Identifier)]
    uid: String,
    /// Default: the id.
    #[schema(value_type = Option<super::schema::Name>)]
    name: Option<String>,
    /// Its class's name.
    #[schema(value_type = super::schema::Name)]
    class: String,
    /// The entity (customer) it belongs to.
    #[schema(value_type = Option<super::schema::Name>)]
    entity: Option<String>,
    /// The gateway it publishes through.
    #[schema(value_type = Option<super::schema::Identifier>)]
    gateway: Option<String>,
    /// Its message format, instead of its class's.
    #[schema(value_type = Option<super::schema::Name>)]
    format: Option<String>,
}

/// A device as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct DeviceView {
    pub uid: String,
    pub name: String,
    /// Its class's name.
    pub class: Option<String>,
    /// `online` or `offline`.
    pub status: String,
    pub last_seen: Option<DateTime<Utc>>,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
}

/// A latest value of an attribute.
#[derive(Serialize, ToSchema)]
pub struct LatestView {
    pub attribute: String,
    pub ts: DateTime<Utc>,
    /// A number, or the JSON value as sent.
    pub value: Value,
    /// What its interpreter made of it: `normal`, `warning`, `faulty`, …
    pub level: Option<String>,
}

/// A device and the latest value of each of its attributes.
#[derive(Serialize, ToSchema)]
pub(super) struct DeviceWithLatest {
    #[serde(flatten)]
    device: DeviceView,
    latest: Vec<LatestView>,
}

/// Names of the tenant's classes by id (devices show their class by name).
pub(super) async fn class_names(
    storage: &Storage,
    scope: Scope,
) -> Result<HashMap<i64, String>, ApiError> {
    Ok(classes::list(storage, scope)
        .await?
        .into_iter()
        .map(|c| (c.id, c.name))
        .collect())
}

pub(super) fn view(d: device::Model, classes: &HashMap<i64, String>) -> DeviceView {
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

/// List devices
///
/// The tenant's devices (a customer's user: its own), by id unless sorted.
#[utoipa::path(
    get,
    path = "/api/devices",
    tag = "devices",
    operation_id = "list_devices",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of devices", body = Listed<DeviceView>),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such tenant", body = ErrorBody),
        (status = 422, description = "A parameter is wrong (`field` names it)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn list(
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
        gateway: query.gateway,
        page: page(query.limit, query.offset, query.sort)?,
    };
    let (found, total) = devices::search(&api.storage, scope, &wanted).await?;
    let classes = class_names(&api.storage, scope).await?;
    let items = found.into_iter().map(|d| view(d, &classes)).collect();
    Ok(Listed::new(items, total).response())
}

/// Get a device and its latest values
#[utoipa::path(
    get,
    path = "/api/devices/{uid}",
    tag = "devices",
    operation_id = "get_device",
    params(("uid" = String, Path, description = "The device's id"), InTenant),
    responses(
        (status = 200, description = "The device", body = DeviceWithLatest),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such device or tenant", body = ErrorBody),
        (status = 422, description = "A parameter is wrong (`field` names it)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn get(
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

/// Register a device
#[utoipa::path(
    post,
    path = "/api/devices",
    tag = "devices",
    operation_id = "create_device",
    params(InTenant),
    request_body = CreateDevice,
    responses(
        (status = 201, description = "Registered", body = DeviceView),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such class, entity, gateway, format or tenant", body = ErrorBody),
        (status = 409, description = "The id is taken", body = ErrorBody),
        (status = 413, description = "The body is over 256 KiB", body = ErrorBody),
        (status = 422, description = "The body or a parameter is wrong (`field` names it)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn create(
    api: ApiState,
    caller: Caller,
    query: Query<InTenant>,
    body: Json<CreateDevice>,
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

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ValuesQuery {
    /// The tenant a system administrator acts in (a tenant's user always acts in its own).
    tenant: Option<String>,
    /// Attribute names, separated by commas (at most 20).
    #[param(pattern = "^[^,]+(,[^,]+){0,19}$")]
    attributes: String,
    /// Default: a day before `to`.
    from: Option<DateTime<Utc>>,
    /// Default: now.
    to: Option<DateTime<Utc>>,
    /// `30s`, `5m`, `1h`...: aggregate per interval (with `aggregate`, default avg).
    #[serde(default, with = "humantime_serde")]
    #[param(value_type = Option<String>, example = "5m")]
    interval: Option<std::time::Duration>,
    /// `avg`, `min`, `max`, `sum` or `count` (needs `interval`).
    #[param(pattern = "^(avg|min|max|sum|count)$")]
    aggregate: Option<String>,
}

/// A value at a time.
#[derive(Serialize, ToSchema)]
pub(super) struct PointView {
    /// The value's time, or the start of its interval.
    ts: DateTime<Utc>,
    value: Value,
}

/// The values of one attribute.
#[derive(Serialize, ToSchema)]
pub(super) struct SeriesView {
    attribute: String,
    /// Oldest first: at most 10,000 (raw values: the newest), or one per interval.
    points: Vec<PointView>,
    /// More values were in the range than the points hold.
    truncated: bool,
}

/// One series per attribute asked for.
#[derive(Serialize, ToSchema)]
pub(super) struct SeriesList {
    series: Vec<SeriesView>,
}

/// Values of a device over time
///
/// One series per attribute, oldest first: the raw values, or one aggregate of the numeric
/// values per interval (computed in the database), stamped with the interval's start.
#[utoipa::path(
    get,
    path = "/api/devices/{uid}/values",
    tag = "devices",
    operation_id = "device_values",
    params(("uid" = String, Path, description = "The device's id"), ValuesQuery),
    responses(
        (status = 200, description = "The series", body = SeriesList),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such device or tenant", body = ErrorBody),
        (status = 422, description = "A parameter is wrong (`field` names it)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn values(
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
                "must be given with an aggregate (e.g. interval=5m)",
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
