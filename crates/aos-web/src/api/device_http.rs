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

use super::{ApiError, ApiState, Query, RawBody, limit};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/device/{uid}/telemetry", web::post().to(telemetry))
        .route("/device/{uid}/attributes", web::post().to(attributes))
        .route("/device/{uid}/events", web::post().to(events))
        .route("/device/{uid}/commands", web::get().to(pending))
        .route("/device/{uid}/commands/reply", web::post().to(reply));
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
    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(refused)?;
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
        password: token.trim().as_bytes(),
        certificate: None,
    };
    match clients.authenticate(credentials).await {
        Ok(Some(Identity::Device { uid: found, tenant })) if found == uid => Ok((found, tenant)),
        _ => Err(refused()),
    }
}

#[derive(Serialize)]
struct Accepted {
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

/// `POST /api/device/{uid}/telemetry` with the payload (the device's format) → 202.
async fn telemetry(
    api: ApiState,
    req: HttpRequest,
    uid: web::types::Path<String>,
    body: RawBody,
) -> Result<HttpResponse, ApiError> {
    acquire(api, req, &uid, "telemetry", body).await
}

/// `POST /api/device/{uid}/attributes` → 202.
async fn attributes(
    api: ApiState,
    req: HttpRequest,
    uid: web::types::Path<String>,
    body: RawBody,
) -> Result<HttpResponse, ApiError> {
    acquire(api, req, &uid, "attributes", body).await
}

/// `POST /api/device/{uid}/events` → 202.
async fn events(
    api: ApiState,
    req: HttpRequest,
    uid: web::types::Path<String>,
    body: RawBody,
) -> Result<HttpResponse, ApiError> {
    acquire(api, req, &uid, "events", body).await
}

/// `POST /api/device/{uid}/commands/reply {"id", "status", "error"}` → 202.
async fn reply(
    api: ApiState,
    req: HttpRequest,
    uid: web::types::Path<String>,
    body: RawBody,
) -> Result<HttpResponse, ApiError> {
    acquire(api, req, &uid, "commands/reply", body).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PendingQuery {
    limit: Option<u64>,
}

#[derive(Serialize)]
struct PendingCommand {
    id: i64,
    name: String,
    parameters: Value,
}

/// `GET /api/device/{uid}/commands?limit=` → `{"items": [{"id", "name", "parameters"}]}`: the
/// commands waiting for the device, oldest first, now `sent`; it answers each on
/// `commands/reply`.
async fn pending(
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
    Ok(HttpResponse::Ok().json(&json!({ "items": items })))
}
