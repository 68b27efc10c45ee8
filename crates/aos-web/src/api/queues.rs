//! Dead letters: the items a queue gave up on after `queue.max_attempts` deliveries, looked at
//! and given another chance (system administrators only).

use aos_auth::permissions::{ObjectKind, Operation};
use aos_core::acquisition::{ACQUISITION_QUEUE, Acquired};
use aos_core::queue::{Delivery, QueueError, dead_letter_queue, replay_dead_letters};
use ntex::http::StatusCode;
use ntex::web::{self, HttpResponse};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, ApiState, Caller, Json, Query, limit};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/queues/{queue}/dead", web::get().to(list))
        .route("/queues/{queue}/dead/replay", web::post().to(replay));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Replay {
    ids: Vec<u64>,
}

impl From<QueueError> for ApiError {
    fn from(err: QueueError) -> ApiError {
        match err {
            QueueError::InvalidName(_) | QueueError::NotDeclared(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", err.to_string())
            }
            QueueError::Full(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", err.to_string())
            }
            other => ApiError::internal(other),
        }
    }
}

/// A payload for people: text when it is UTF-8, hex otherwise.
fn readable(payload: &[u8]) -> Value {
    match std::str::from_utf8(payload) {
        Ok(text) => json!({ "text": text }),
        Err(_) => json!({ "hex": hex::encode(payload) }),
    }
}

/// A dead letter, its envelope opened when the queue's items are known.
fn item(queue: &str, delivery: &Delivery) -> Value {
    let mut shown = json!({
        "id": delivery.id,
        "attempts": delivery.attempt,
        "bytes": delivery.payload.len(),
    });
    match Acquired::decode(delivery.payload.clone()) {
        Ok(message) if queue == ACQUISITION_QUEUE => {
            shown["message"] = json!({
                "key": message.key,
                "tenant": message.tenant,
                "device": message.device,
                "topic": message.topic,
                "received_at": chrono::DateTime::from_timestamp_millis(message.received_at_ms),
                "payload": readable(&message.payload),
            });
        }
        _ => shown["payload"] = readable(&delivery.payload),
    }
    shown
}

/// `GET /api/queues/{queue}/dead?limit=` → the oldest dead letters first.
async fn list(
    api: ApiState,
    caller: Caller,
    queue: web::types::Path<String>,
    query: Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.platform(ObjectKind::Nodes, Operation::View)?;
    let max = limit(query.0.limit)? as usize;
    let dead = api.queue.browse(&dead_letter_queue(&queue), max).await?;
    let items: Vec<Value> = dead.iter().map(|d| item(&queue, d)).collect();
    Ok(HttpResponse::Ok().json(&json!({ "items": items })))
}

/// `POST /api/queues/{queue}/dead/replay {"ids": […]}` → how many went back to the queue.
async fn replay(
    api: ApiState,
    caller: Caller,
    queue: web::types::Path<String>,
    body: Json<Replay>,
) -> Result<HttpResponse, ApiError> {
    caller.platform(ObjectKind::Nodes, Operation::Update)?;
    let replayed = replay_dead_letters(api.queue.as_ref(), &queue, &body.0.ids).await?;
    tracing::info!(queue = %queue.as_str(), replayed, "dead letters replayed");
    Ok(HttpResponse::Ok().json(&json!({ "replayed": replayed })))
}
