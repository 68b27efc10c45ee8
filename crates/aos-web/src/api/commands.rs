//! Commands to devices: send one, list them, follow one's status.

use aos_auth::permissions::{ObjectKind, Operation};
use aos_core::commands::CREATED_SUBJECT;
use aos_storage::repo::commands::{self, BatchTarget, CommandFilter, CommandRow, NewCommand};
use chrono::{DateTime, Utc};
use ntex::http::StatusCode;
use ntex::web::{self, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::{
    ApiError, ApiState, Caller, ErrorBody, InTenant, Json, Listed, Query, Routes, object_id, page,
};

/// How long a command waits for its device unless the request says.
const DEFAULT_EXPIRY: &str = "1d";

pub fn routes(r: &mut impl Routes) {
    r.post("/devices/{uid}/commands", send)
        .post("/command-batches", batch)
        .get("/commands", list)
        .get("/commands/{id}", get)
        .post("/commands/{id}/cancel", cancel);
}

/// A command to send.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CommandRequest {
    #[schema(value_type = super::schema::Name)]
    name: String,
    /// What the device gets with it (default `{}`).
    #[serde(default = "no_parameters")]
    #[schema(value_type = Object)]
    parameters: Value,
    /// How long it may wait for the device: `30s`, `1h`, `2days` (default 1d).
    #[schema(value_type = Option<super::schema::DurationText>)]
    expires_in: Option<String>,
}

impl CommandRequest {
    fn command(self) -> Result<NewCommand, ApiError> {
        let expires_in = self.expires_in.as_deref().unwrap_or(DEFAULT_EXPIRY);
        // A command that may not wait at all would expire before any device could take it.
        let expiry = humantime::parse_duration(expires_in)
            .ok()
            .filter(|d| !d.is_zero())
            .and_then(aos_storage::repo::expiry_after)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid",
                    format!(
                        "expires_in must be a duration longer than zero and ending before the year 10000, such as 30s, 1h or 2days, not `{expires_in}`"
                    ),
                )
                .field("expires_in")
            })?;
        Ok(NewCommand {
            name: self.name,
            parameters: self.parameters,
            expires_at: Some(expiry),
        })
    }
}

/// One command for many devices.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct BatchRequest {
    /// The batch's name.
    #[schema(value_type = super::schema::Name)]
    name: String,
    command: CommandRequest,
    /// Devices by id.
    #[serde(default)]
    #[schema(value_type = Vec<super::schema::Identifier>)]
    devices: Vec<String>,
    /// Every device of these classes.
    #[serde(default)]
    #[schema(value_type = Vec<super::schema::Name>)]
    classes: Vec<String>,
    /// Also devices registered in those classes later.
    #[serde(default)]
    include_future: bool,
}

/// A batch queued.
#[derive(Serialize, ToSchema)]
pub(super) struct BatchQueued {
    /// The batch's id (`GET /api/commands?batch=`).
    batch: i64,
    /// How many commands were queued now.
    queued: usize,
}

fn no_parameters() -> Value {
    json!({})
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// The tenant a system administrator acts in (a tenant's user always acts in its own).
    tenant: Option<String>,
    /// A device's id.
    device: Option<String>,
    /// `queued`, `sent`, `acknowledged`, `failed`, `expired` or `cancelled`.
    #[param(pattern = "^(queued|sent|acknowledged|failed|expired|cancelled)$")]
    status: Option<String>,
    /// A batch's id.
    batch: Option<i64>,
    /// Items per page, 1 to 1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
    /// Items to skip, up to 1,000,000 (default 0).
    #[param(maximum = 1_000_000)]
    offset: Option<u64>,
    /// `created_at`, `name` or `status`, `-field` for descending.
    sort: Option<String>,
}

/// A command and its status.
#[derive(Serialize, ToSchema)]
pub(super) struct CommandView {
    id: i64,
    /// The device's id.
    device: String,
    name: String,
    parameters: Value,
    /// `queued` → `sent` → `acknowledged` | `failed` | `expired`; or `queued` → `cancelled`.
    status: String,
    /// Why it failed, when it did.
    error: Option<String>,
    /// The batch it belongs to.
    batch: Option<i64>,
    created_at: DateTime<Utc>,
    sent_at: Option<DateTime<Utc>>,
    acknowledged_at: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
}

impl From<CommandRow> for CommandView {
    fn from(row: CommandRow) -> CommandView {
        let c = row.command;
        CommandView {
            id: c.id,
            device: row.device,
            name: c.name,
            parameters: c.payload,
            status: c.status,
            error: c.error,
            batch: c.batch_id,
            created_at: c.created_at,
            sent_at: c.sent_at,
            acknowledged_at: c.acknowledged_at,
            expires_at: c.expires_at,
        }
    }
}

/// Send a command to a device
///
/// The command is queued, and offered to the device at once (sent once it is connected and
/// subscribed).
#[utoipa::path(
    post,
    path = "/api/devices/{uid}/commands",
    tag = "commands",
    operation_id = "send_command",
    params(("uid" = String, Path, description = "The device's id"), InTenant),
    request_body = CommandRequest,
    responses(
        (status = 201, description = "Queued", body = CommandView),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such device or tenant", body = ErrorBody),
        (status = 413, description = "The body is over 256 KiB", body = ErrorBody),
        (status = 422, description = "The body or a parameter is wrong (`field` names it)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn send(
    api: ApiState,
    caller: Caller,
    uid: web::types::Path<String>,
    query: Query<InTenant>,
    body: Json<CommandRequest>,
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
    Ok(HttpResponse::Created().json(&CommandView::from(row)))
}

/// Send a command to many devices
///
/// The command is queued for every device named and every device of the classes named (and,
/// with `include_future`, those registered later).
#[utoipa::path(
    post,
    path = "/api/command-batches",
    tag = "commands",
    operation_id = "send_batch",
    params(InTenant),
    request_body = BatchRequest,
    responses(
        (status = 201, description = "Queued", body = BatchQueued),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such device, class or tenant", body = ErrorBody),
        (status = 413, description = "The body is over 256 KiB", body = ErrorBody),
        (status = 422, description = "The body or a parameter is wrong (`field` names it)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn batch(
    api: ApiState,
    caller: Caller,
    query: Query<InTenant>,
    body: Json<BatchRequest>,
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
    Ok(HttpResponse::Created().json(&BatchQueued {
        batch: created.id,
        queued,
    }))
}

/// List commands
///
/// Newest first unless sorted.
#[utoipa::path(
    get,
    path = "/api/commands",
    tag = "commands",
    operation_id = "list_commands",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of commands", body = Listed<CommandView>),
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
    let items: Vec<CommandView> = rows.into_iter().map(CommandView::from).collect();
    Ok(Listed::new(items, total).response())
}

/// Get a command and its status
#[utoipa::path(
    get,
    path = "/api/commands/{id}",
    tag = "commands",
    operation_id = "get_command",
    params(("id" = i64, Path, description = "The command's id"), InTenant),
    responses(
        (status = 200, description = "The command", body = CommandView),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such command or tenant", body = ErrorBody),
        (status = 422, description = "A parameter is wrong (`field` names it)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn get(
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
    Ok(HttpResponse::Ok().json(&CommandView::from(row)))
}

/// Cancel a command
///
/// A queued command is never sent then; one already sent (or done) cannot be cancelled
/// (`409` says its status). Audited.
#[utoipa::path(
    post,
    path = "/api/commands/{id}/cancel",
    tag = "commands",
    operation_id = "cancel_command",
    params(("id" = i64, Path, description = "The command's id"), InTenant),
    responses(
        (status = 200, description = "The command, cancelled", body = CommandView),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such command or tenant", body = ErrorBody),
        (status = 409, description = "It is not queued any more", body = ErrorBody),
        (status = 422, description = "A parameter is wrong (`field` names it)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn cancel(
    api: ApiState,
    caller: Caller,
    id: web::types::Path<String>,
    query: Query<InTenant>,
) -> Result<HttpResponse, ApiError> {
    let scope = caller
        .scope(
            &api,
            ObjectKind::Commands,
            Operation::Update,
            query.0.tenant.as_deref(),
        )
        .await?;
    let row = commands::cancel(&api.storage, scope, object_id(&id, "command")?).await?;
    let event = super::people::api_event(
        &caller,
        Some(scope.tenant),
        "command.cancel",
        "command",
        &row.command.id.to_string(),
    );
    aos_storage::repo::audit::record(&api.storage, event).await?;
    Ok(HttpResponse::Ok().json(&CommandView::from(row)))
}
