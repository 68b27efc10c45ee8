//! The HTTP device API, for devices that cannot speak MQTT: they post telemetry, attributes,
//! events and command replies, and fetch their pending commands, signing every request with
//! their access token (`Authorization: Bearer TOKEN`, the same credentials as over MQTT). What
//! they post takes the MQTT path's durable way: the acquisition queue, pushed before the `202`.

use aos_core::access::{ClientCredentials, Identity};
use aos_core::acquisition::DeviceMessage;
use aos_core::live::{LiveKind, LiveUpdate};
use aos_core::queue::QueueError;
use aos_storage::repo::commands;
use aos_storage::repo::{Scope, devices};
use ntex::http::StatusCode;
use ntex::web::{self, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, ApiState, ErrorBody, Query, RawBody, Routes, limit};

pub fn routes(r: &mut impl Routes) {
    r.post("/device/{uid}/telemetry", telemetry)
        .post("/device/{uid}/attributes", attributes)
        .post("/device/{uid}/events", events)
        .get("/device/{uid}/commands", pending)
        .post("/device/{uid}/commands/reply", reply);
}

/// The device `uid` when the request carries its access token; 401 otherwise.
async fn signed_in(
    api: &super::Api,
    req: &HttpRequest,
    uid: &str,
) -> Result<(String, i64), ApiError> {
    let refused = || {
        ApiError::unauthorized(
            "send the device's access token: `Authorization: Bearer TOKEN` (aos device credentials)",
        )
    };
    let token = super::bearer_token(req).ok_or_else(refused)?;
    let clients = api.clients.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "this node does not sign devices in",
        )
    })?;
    let credentials = ClientCredentials {
        client_id: uid,
        username: Some(uid),
        password: token.as_bytes(),
        certificate: None,
    };
    match clients.authenticate(credentials).await {
        Ok(Some(Identity::Device { uid: found, tenant })) if found == uid => Ok((found, tenant)),
        _ => Err(refused()),
    }
}

/// What a device posted is in the acquisition queue.
#[derive(Serialize, ToSchema)]
pub(super) struct Accepted {
    /// Handed to the workers: stored shortly (see the message log).
    accepted: bool,
}

/// Pushes what the device posted to the acquisition queue under `aos/{uid}/{kind}`.
async fn acquire(
    api: ApiState,
    req: HttpRequest,
    uid: &str,
    kind: &str,
    body: RawBody,
) -> Result<HttpResponse, ApiError> {
    let (device, tenant) = signed_in(&api, &req, uid).await?;
    let topic = format!("aos/{device}/{kind}");
    let message = DeviceMessage {
        tenant,
        device: &device,
        topic: &topic,
        qos: 1,
        payload: body.0.into(),
    };
    match api.acquirer.acquire(message).await {
        Ok(()) => Ok(HttpResponse::Accepted().json(&Accepted { accepted: true })),
        Err(QueueError::Full(why)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            format!("the platform is behind ({why}); send it again later"),
        )),
        Err(err) => Err(ApiError::internal(err)),
    }
}

/// Post telemetry
///
/// The payload, in the device's message format (JSON by default), takes the same path as
/// `aos/{uid}/telemetry` over MQTT: a payload that does not decode is logged `failed` with the
/// reason.
#[utoipa::path(
    post,
    path = "/api/device/{uid}/telemetry",
    tag = "device-api",
    operation_id = "device_telemetry",
    params(("uid" = String, Path, description = "The device's id")),
    request_body(
        description = "The payload in the device's message format, up to 256 KiB",
        content((Object = "application/json"), ("application/octet-stream")),
    ),
    responses(
        (status = 202, description = "In the durable acquisition queue", body = Accepted),
        (status = 400, description = "The body could not be read", body = ErrorBody),
        (status = 401, description = "No token, or not this device's", body = ErrorBody),
        (status = 413, description = "The body is over 256 KiB", body = ErrorBody),
        (status = 503, description = "The queue is full (`busy`; retry later), or this node does not sign devices in", body = ErrorBody),
    ),
    security(("device_token" = [])),
)]
pub(super) async fn telemetry(
    api: ApiState,
    req: HttpRequest,
    uid: web::types::Path<String>,
    body: RawBody,
) -> Result<HttpResponse, ApiError> {
    acquire(api, req, &uid, "telemetry", body).await
}

/// Post attributes
///
/// Like `aos/{uid}/attributes` over MQTT.
#[utoipa::path(
    post,
    path = "/api/device/{uid}/attributes",
    tag = "device-api",
    operation_id = "device_attributes",
    params(("uid" = String, Path, description = "The device's id")),
    request_body(
        description = "The payload in the device's message format, up to 256 KiB",
        content((Object = "application/json"), ("application/octet-stream")),
    ),
    responses(
        (status = 202, description = "In the durable acquisition queue", body = Accepted),
        (status = 400, description = "The body could not be read", body = ErrorBody),
        (status = 401, description = "No token, or not this device's", body = ErrorBody),
        (status = 413, description = "The body is over 256 KiB", body = ErrorBody),
        (status = 503, description = "The queue is full (`busy`; retry later), or this node does not sign devices in", body = ErrorBody),
    ),
    security(("device_token" = [])),
)]
pub(super) async fn attributes(
    api: ApiState,
    req: HttpRequest,
    uid: web::types::Path<String>,
    body: RawBody,
) -> Result<HttpResponse, ApiError> {
    acquire(api, req, &uid, "attributes", body).await
}

/// Post events
///
/// Like `aos/{uid}/events` over MQTT.
#[utoipa::path(
    post,
    path = "/api/device/{uid}/events",
    tag = "device-api",
    operation_id = "device_events",
    params(("uid" = String, Path, description = "The device's id")),
    request_body(
        description = "The payload in the device's message format, up to 256 KiB",
        content((Object = "application/json"), ("application/octet-stream")),
    ),
    responses(
        (status = 202, description = "In the durable acquisition queue", body = Accepted),
        (status = 400, description = "The body could not be read", body = ErrorBody),
        (status = 401, description = "No token, or not this device's", body = ErrorBody),
        (status = 413, description = "The body is over 256 KiB", body = ErrorBody),
        (status = 503, description = "The queue is full (`busy`; retry later), or this node does not sign devices in", body = ErrorBody),
    ),
    security(("device_token" = [])),
)]
pub(super) async fn events(
    api: ApiState,
    req: HttpRequest,
    uid: web::types::Path<String>,
    body: RawBody,
) -> Result<HttpResponse, ApiError> {
    acquire(api, req, &uid, "events", body).await
}

/// Reply to a command
///
/// `{"id", "status": "ok" | "failed", "error"}` settles the device's own command, like
/// `aos/{uid}/commands/reply` over MQTT.
#[utoipa::path(
    post,
    path = "/api/device/{uid}/commands/reply",
    tag = "device-api",
    operation_id = "device_command_reply",
    params(("uid" = String, Path, description = "The device's id")),
    request_body(
        description = "The reply, up to 256 KiB",
        content = Object,
        example = json!({"id": 42, "status": "failed", "error": "the valve is stuck"}),
    ),
    responses(
        (status = 202, description = "In the durable acquisition queue", body = Accepted),
        (status = 400, description = "The body could not be read", body = ErrorBody),
        (status = 401, description = "No token, or not this device's", body = ErrorBody),
        (status = 413, description = "The body is over 256 KiB", body = ErrorBody),
        (status = 503, description = "The queue is full (`busy`; retry later), or this node does not sign devices in", body = ErrorBody),
    ),
    security(("device_token" = [])),
)]
pub(super) async fn reply(
    api: ApiState,
    req: HttpRequest,
    uid: web::types::Path<String>,
    body: RawBody,
) -> Result<HttpResponse, ApiError> {
    acquire(api, req, &uid, "commands/reply", body).await
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct PendingQuery {
    /// At most this many, 1 to 1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
}

/// A command for the device; it answers on `commands/reply` with the id.
#[derive(Serialize, ToSchema)]
pub(super) struct PendingCommand {
    id: i64,
    name: String,
    parameters: Value,
}

/// The commands handed to the device.
#[derive(Serialize, ToSchema)]
pub(super) struct PendingCommands {
    /// Oldest first.
    items: Vec<PendingCommand>,
}

/// Fetch pending commands
///
/// The commands waiting for the device, oldest first. They are `sent` now and are not given
/// again; the device answers each on `commands/reply`.
#[utoipa::path(
    get,
    path = "/api/device/{uid}/commands",
    tag = "device-api",
    operation_id = "device_pending_commands",
    params(("uid" = String, Path, description = "The device's id"), PendingQuery),
    responses(
        (status = 200, description = "The commands, now `sent`", body = PendingCommands),
        (status = 401, description = "No token, or not this device's", body = ErrorBody),
        (status = 422, description = "A parameter is wrong (`field` names it)", body = ErrorBody),
        (status = 503, description = "This node does not sign devices in", body = ErrorBody),
    ),
    security(("device_token" = [])),
)]
pub(super) async fn pending(
    api: ApiState,
    req: HttpRequest,
    uid: web::types::Path<String>,
    query: Query<PendingQuery>,
) -> Result<HttpResponse, ApiError> {
    let (device, tenant) = signed_in(&api, &req, &uid).await?;
    let found = devices::get(&api.storage, Scope::tenant(tenant), &device).await?;
    let taken = commands::take_pending(&api.storage, found.id, limit(query.0.limit)?).await?;
    let updates = taken
        .iter()
        .map(|c| LiveUpdate {
            kind: LiveKind::Command,
            device: device.clone(),
            data: json!({"id": c.id, "status": c.status, "at": c.sent_at}),
        })
        .collect();
    api.live.publish(tenant, updates).await;
    let items: Vec<PendingCommand> = taken
        .into_iter()
        .map(|c| PendingCommand {
            id: c.id,
            name: c.name,
            parameters: c.payload,
        })
        .collect();
    Ok(HttpResponse::Ok().json(&PendingCommands { items }))
}
