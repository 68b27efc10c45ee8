//! Commands to devices: send one, list them, follow one's status.

use aos_auth::permissions::{ObjectKind, Operation};
use aos_core::commands::CREATED_SUBJECT;
use aos_storage::repo::commands::{self, BatchTarget, CommandFilter, CommandRow, NewCommand};
use chrono::Utc;
use ntex::http::StatusCode;
use ntex::web::{self, HttpResponse};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, ApiState, Caller, InTenant, Json, Listed, Query, object_id, page};

/// How long a command waits for its device unless the request says.
const DEFAULT_EXPIRY: &str = "1d";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/devices/{uid}/commands", web::post().to(send))
        .route("/command-batches", web::post().to(batch))
        .route("/commands", web::get().to(list))
        .route("/commands/{id}", web::get().to(get));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Send {
    name: String,
    #[serde(default = "no_parameters")]
    parameters: Value,
    /// How long it may wait for the device: `30s`, `1h`, `2days` (default 1d).
    expires_in: Option<String>,
}

impl Send {
    fn command(self) -> Result<NewCommand, ApiError> {
        let expires_in = self.expires_in.as_deref().unwrap_or(DEFAULT_EXPIRY);
        let expiry = humantime::parse_duration(expires_in)
            .ok()
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid",
                    format!("`{expires_in}` is not a duration (30s, 1h, 2days)"),
                )
                .field("expires_in")
            })?;
        Ok(NewCommand {
            name: self.name,
            parameters: self.parameters,
            expires_at: Some(Utc::now() + expiry),
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    name: String,
    command: Send,
    #[serde(default)]
    devices: Vec<String>,
    #[serde(default)]
    classes: Vec<String>,
    #[serde(default)]
    include_future: bool,
}

fn no_parameters() -> Value {
    json!({})
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    tenant: Option<String>,
    device: Option<String>,
    status: Option<String>,
    batch: Option<i64>,
    limit: Option<u64>,
    offset: Option<u64>,
    sort: Option<String>,
}

fn command_json(row: &CommandRow) -> Value {
    let c = &row.command;
    json!({
        "id": c.id,
        "device": row.device,
        "name": c.name,
        "parameters": c.payload,
        "status": c.status,
        "error": c.error,
        "batch": c.batch_id,
        "created_at": c.created_at,
        "sent_at": c.sent_at,
        "acknowledged_at": c.acknowledged_at,
        "expires_at": c.expires_at,
    })
}

/// `POST /api/devices/{uid}/commands {"name", "parameters", "expires_in"}` → 201, the command
/// (queued; sent once the device is connected and subscribed).
async fn send(
    api: ApiState,
    caller: Caller,
    uid: web::types::Path<String>,
    query: Query<InTenant>,
    body: Json<Send>,
) -> Result<HttpResponse, ApiError> {
    let scope = caller
        .scope(
            &api,
            ObjectKind::Commands,
            Operation::Create,
            query.0.tenant.as_deref(),
        )
        .await?;
    let new = body.0.command()?;
    let created = commands::create(&api.storage, scope, &uid, &new).await?;
    // The workers offer it now rather than at their next look.
    if let Err(err) = api
        .bus
        .publish(CREATED_SUBJECT, uid.as_str().to_string().into())
        .await
    {
        tracing::warn!(%err, "cannot tell the workers about a new command; it goes within a second");
    }
    let row = CommandRow {
        command: created,
        device: uid.into_inner(),
    };
    Ok(HttpResponse::Created().json(&command_json(&row)))
}

/// `POST /api/command-batches {"name", "command": {…}, "devices": […], "classes": […],
/// "include_future"}` → 201 `{"batch", "queued"}`: the command queued for every device named
/// and every device of the classes named (and, with `include_future`, those registered later).
async fn batch(
    api: ApiState,
    caller: Caller,
    query: Query<InTenant>,
    body: Json<Batch>,
) -> Result<HttpResponse, ApiError> {
    let scope = caller
        .scope(
            &api,
            ObjectKind::Commands,
            Operation::Create,
            query.0.tenant.as_deref(),
        )
        .await?;
    let body = body.0;
    let new = body.command.command()?;
    let target = BatchTarget {
        devices: body.devices,
        classes: body.classes,
        include_future: body.include_future,
    };
    let (created, queued) =
        commands::create_batch(&api.storage, scope, &body.name, &new, &target).await?;
    Ok(HttpResponse::Created().json(&json!({ "batch": created.id, "queued": queued })))
}

/// `GET /api/commands?device=&status=&batch=&limit=&offset=&sort=` → a page, newest first
/// unless sorted.
async fn list(
    api: ApiState,
    caller: Caller,
    query: Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.0;
    let scope = caller
        .scope(
            &api,
            ObjectKind::Commands,
            Operation::View,
            query.tenant.as_deref(),
        )
        .await?;
    let filter = CommandFilter {
        device: query.device,
        status: query.status,
        batch: query.batch,
        page: page(query.limit, query.offset, query.sort)?,
    };
    let (rows, total) = commands::list(&api.storage, scope, &filter).await?;
    let items: Vec<Value> = rows.iter().map(command_json).collect();
    Ok(Listed::new(items, total).response())
}

/// `GET /api/commands/{id}` → the command and its status.
async fn get(
    api: ApiState,
    caller: Caller,
    id: web::types::Path<String>,
    query: Query<InTenant>,
) -> Result<HttpResponse, ApiError> {
    let scope = caller
        .scope(
            &api,
            ObjectKind::Commands,
            Operation::View,
            query.0.tenant.as_deref(),
        )
        .await?;
    let row = commands::get(&api.storage, scope, object_id(&id, "command")?).await?;
    Ok(HttpResponse::Ok().json(&command_json(&row)))
}
