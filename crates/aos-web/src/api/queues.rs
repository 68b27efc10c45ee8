//! Dead letters: the items a queue gave up on after `queue.max_attempts` deliveries, looked at
//! and given another chance, or dropped (system administrators only).

use aos_auth::permissions::{ObjectKind, Operation};
use aos_core::acquisition::{self, ACQUISITION_QUEUE};
use aos_core::queue::{
    Delivery, QueueError, dead_letter_queue, drop_dead_letters, replay_dead_letters,
};
use chrono::{DateTime, Utc};
use ntex::http::StatusCode;
use ntex::web::{self, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use aos_storage::repo::audit;

use super::{ApiError, ApiState, Caller, ErrorBody, Json, Listed, Query, Routes, page};

pub fn routes(r: &mut impl Routes) {
    r.get("/queues/{queue}/dead", list)
        .post("/queues/{queue}/dead/replay", replay)
        .post("/queues/{queue}/dead/drop", drop);
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// At most this many, 1 to 1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
    /// Skip this many of the oldest, up to 1,000,000 (the queue is read up to the page: keep it
    /// shallow). There is no `sort`: a queue has one order, oldest first.
    #[param(maximum = 1_000_000)]
    offset: Option<u64>,
}

/// Dead letters to give another chance, or to drop.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct DeadLetterIds {
    /// Their ids (unknown ones are skipped).
    #[serde(deserialize_with = "whole_numbers")]
    ids: Vec<u64>,
}

/// Ids as JSON numbers that are whole, written `7` or `7.0` (both are integers to JSON Schema).
fn whole_numbers<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
    let numbers: Vec<serde_json::Number> = Deserialize::deserialize(d)?;
    numbers
        .iter()
        .map(|n| {
            n.as_u64()
                .or_else(|| {
                    // serde_json reads a float's text to the nearest value only within an ulp
                    // or so (`1955733157590869.0` may come out `…868.8`): whole within that is whole.
                    n.as_f64()
                        .filter(|f| {
                            (f - f.round()).abs() <= f.abs() * f64::EPSILON
                                && (0.0..=u64::MAX as f64).contains(f)
                        })
                        .map(|f| f.round() as u64)
                })
                .ok_or_else(|| {
                    serde::de::Error::custom(format!("{n} is not an id (a whole number)"))
                })
        })
        .collect()
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

/// A payload for people: `{"text"}` when it is UTF-8, `{"hex"}` otherwise.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(super) enum Readable {
    Text(String),
    Hex(String),
}

fn readable(payload: &[u8]) -> Readable {
    match std::str::from_utf8(payload) {
        Ok(text) => Readable::Text(text.to_string()),
        Err(_) => Readable::Hex(hex::encode(payload)),
    }
}

/// A dead letter: the device messages it carries for the `acquisition` queue (one, or a group
/// of messages accepted together), else its payload.
#[derive(Serialize, ToSchema)]
pub(super) struct DeadLetter {
    id: u64,
    /// Deliveries it had.
    attempts: u32,
    /// Its size.
    bytes: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    messages: Vec<DeadMessage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<Readable>,
}

/// A device message the workers gave up on.
#[derive(Serialize, ToSchema)]
pub(super) struct DeadMessage {
    /// Names the message across redeliveries.
    key: String,
    /// The tenant's id.
    tenant: i64,
    /// The device's id.
    device: String,
    topic: String,
    received_at: Option<DateTime<Utc>>,
    payload: Readable,
}

/// A dead letter, its envelope opened when the queue's items are known.
fn item(queue: &str, delivery: &Delivery) -> DeadLetter {
    let mut shown = DeadLetter {
        id: delivery.id,
        attempts: delivery.attempt,
        bytes: delivery.payload.len(),
        messages: Vec::new(),
        payload: None,
    };
    match acquisition::unpack(delivery.payload.clone()) {
        Ok(messages) if queue == ACQUISITION_QUEUE => {
            shown.messages = messages
                .into_iter()
                .map(|message| DeadMessage {
                    key: message.key,
                    tenant: message.tenant,
                    device: message.device,
                    topic: message.topic,
                    received_at: DateTime::from_timestamp_millis(message.received_at_ms),
                    payload: readable(&message.payload),
                })
                .collect();
        }
        _ => shown.payload = Some(readable(&delivery.payload)),
    }
    shown
}

/// How many dead letters went back to their queue.
#[derive(Serialize, ToSchema)]
pub(super) struct Replayed {
    replayed: usize,
}

/// How many dead letters were dropped.
#[derive(Serialize, ToSchema)]
pub(super) struct Dropped {
    dropped: usize,
}

/// List dead letters
///
/// The items a queue gave up on after `queue.max_attempts` deliveries, oldest first (system
/// administrators).
#[utoipa::path(
    get,
    path = "/api/queues/{queue}/dead",
    tag = "platform",
    operation_id = "list_dead_letters",
    params(("queue" = String, Path, description = "`acquisition` (device messages) or `workflows` (workflow runs)"), ListQuery),
    responses(
        (status = 200, description = "A page of dead letters, oldest first", body = Listed<DeadLetter>),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "Not a system administrator", body = ErrorBody),
        (status = 404, description = "No such queue", body = ErrorBody),
        (status = 422, description = "A parameter is wrong (`field` names it)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn list(
    api: ApiState,
    caller: Caller,
    queue: web::types::Path<String>,
    query: Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.platform(ObjectKind::Nodes, Operation::View)?;
    let query = query.0;
    let wanted = page(query.limit, query.offset, None)?;
    let dead_queue = dead_letter_queue(&queue);
    let total = api.queue.depth(&dead_queue).await?.total();
    let skip = usize::try_from(wanted.offset).unwrap_or(usize::MAX);
    let read = skip.saturating_add(usize::try_from(wanted.limit).unwrap_or(usize::MAX));
    let dead = api.queue.browse(&dead_queue, read).await?;
    let items: Vec<DeadLetter> = dead.iter().skip(skip).map(|d| item(&queue, d)).collect();
    Ok(Listed::new(items, total).response())
}

/// Replay dead letters
///
/// Those items go back to the queue, their attempts from zero (system administrators).
#[utoipa::path(
    post,
    path = "/api/queues/{queue}/dead/replay",
    tag = "platform",
    operation_id = "replay_dead_letters",
    params(("queue" = String, Path, description = "`acquisition` (device messages) or `workflows` (workflow runs)")),
    request_body = DeadLetterIds,
    responses(
        (status = 200, description = "How many went back", body = Replayed),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "Not a system administrator", body = ErrorBody),
        (status = 404, description = "No such queue", body = ErrorBody),
        (status = 413, description = "The body is over 256 KiB", body = ErrorBody),
        (status = 422, description = "The body is wrong (`field` names it)", body = ErrorBody),
        (status = 503, description = "The queue is full (`busy`; retry later)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn replay(
    api: ApiState,
    caller: Caller,
    queue: web::types::Path<String>,
    body: Json<DeadLetterIds>,
) -> Result<HttpResponse, ApiError> {
    caller.platform(ObjectKind::Nodes, Operation::Update)?;
    let replayed = replay_dead_letters(api.queue.as_ref(), &queue, &body.0.ids).await?;
    tracing::info!(queue = %queue.as_str(), replayed, "dead letters replayed");
    Ok(HttpResponse::Ok().json(&Replayed { replayed }))
}

/// Drop dead letters
///
/// Those items are deleted for good (system administrators; audited).
#[utoipa::path(
    post,
    path = "/api/queues/{queue}/dead/drop",
    tag = "platform",
    operation_id = "drop_dead_letters",
    params(("queue" = String, Path, description = "`acquisition` (device messages) or `workflows` (workflow runs)")),
    request_body = DeadLetterIds,
    responses(
        (status = 200, description = "How many were dropped", body = Dropped),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "Not a system administrator", body = ErrorBody),
        (status = 404, description = "No such queue", body = ErrorBody),
        (status = 413, description = "The body is over 256 KiB", body = ErrorBody),
        (status = 422, description = "The body is wrong (`field` names it)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn drop(
    api: ApiState,
    caller: Caller,
    queue: web::types::Path<String>,
    body: Json<DeadLetterIds>,
) -> Result<HttpResponse, ApiError> {
    caller.platform(ObjectKind::Nodes, Operation::Delete)?;
    let dropped = drop_dead_letters(api.queue.as_ref(), &queue, &body.0.ids).await?;
    let mut event = super::people::api_event(&caller, None, "dead_letters.drop", "queue", &queue);
    event.detail = serde_json::json!({ "ids": body.0.ids, "dropped": dropped });
    audit::record(&api.storage, event).await?;
    Ok(HttpResponse::Ok().json(&Dropped { dropped }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Ids {
        #[serde(deserialize_with = "whole_numbers")]
        ids: Vec<u64>,
    }

    #[test]
    fn ids_written_as_floats_are_whole_numbers() {
        let read = |text: &str| serde_json::from_str::<Ids>(text).map(|i| i.ids);
        assert_eq!(
            read(r#"{"ids": [7, 7.0, 1955733157590869.0]}"#).expect("ids"),
            [7, 7, 1955733157590869]
        );
        assert!(read(r#"{"ids": [7.5]}"#).is_err());
        assert!(read(r#"{"ids": [-1]}"#).is_err());
    }
}
