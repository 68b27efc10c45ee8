//! The broker view: the MQTT clients the broker nodes hold, their retained messages and their
//! traffic, asked of every broker node on the bus (`aos_core::broker_admin`). System
//! administrators see every tenant's (or the one they name); a tenant's users with `clients`
//! in their roles see their tenant's clients and retained messages.

use std::collections::HashMap;

use aos_auth::permissions::{ObjectKind, Operation};
use aos_core::broker_admin::{
    self, Answer, Ask, AskError, ClientInfo, ClientQuery, Gathered, MOST_LISTED, RetainedInfo,
    RetainedQuery, Traffic,
};
use aos_core::topic::{MAX_TOPIC_LEN, valid_topic_filter};
use aos_storage::repo::{audit, tenants};
use ntex::http::StatusCode;
use ntex::web::HttpResponse;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, ApiState, Caller, ErrorBody, Json, Query, Routes};

pub fn routes(r: &mut impl Routes) {
    r.get("/broker/clients", clients)
        .post("/broker/clients/disconnect", disconnect)
        .get("/broker/retained", retained)
        .delete("/broker/retained", forget_retained)
        .get("/broker/traffic", traffic);
}

impl From<AskError> for ApiError {
    fn from(err: AskError) -> ApiError {
        match err {
            AskError::NoBroker => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                err.to_string(),
            ),
            other => ApiError::internal(other),
        }
    }
}

/// Whose clients the caller sees: a tenant's user its own tenant's; a system administrator
/// the tenant it names, or every tenant's (`None`).
async fn tenant_of(
    api: &ApiState,
    caller: &Caller,
    operation: Operation,
    tenant: Option<&str>,
) -> Result<Option<i64>, ApiError> {
    if caller.0.tenant.is_none() {
        caller.platform(ObjectKind::Brokers, operation)?;
        return match tenant {
            Some(name) => Ok(Some(super::tenant_named(api, name).await?)),
            None => Ok(None),
        };
    }
    Ok(Some(
        caller
            .scope(api, ObjectKind::Clients, operation, None)
            .await?
            .tenant,
    ))
}

/// What a list of the broker view holds: sorted by its key, named by its tenant.
trait Listed: Serialize {
    fn key(&self) -> &str;
    fn tenant(&mut self) -> (Option<i64>, &mut Option<String>);
}

impl Listed for ClientInfo {
    fn key(&self) -> &str {
        &self.client_id
    }

    fn tenant(&mut self) -> (Option<i64>, &mut Option<String>) {
        (self.tenant, &mut self.tenant_name)
    }
}

impl Listed for RetainedInfo {
    fn key(&self) -> &str {
        &self.topic
    }

    fn tenant(&mut self) -> (Option<i64>, &mut Option<String>) {
        (self.tenant, &mut self.tenant_name)
    }
}

/// The page `offset..offset + limit` of what the broker nodes listed, by key (what several
/// nodes listed, once: every node knows a retained message the store shares), with their
/// tenants' names. `total`: the nodes' count, at least what they listed.
async fn page_of<T: Listed>(
    api: &ApiState,
    mut items: Vec<T>,
    total: u64,
    silent: Vec<String>,
    (limit, offset): (usize, usize),
) -> Result<HttpResponse, ApiError> {
    items.sort_by(|a, b| a.key().cmp(b.key()));
    items.dedup_by(|a, b| a.key() == b.key());
    let total = total.max(items.len() as u64);
    let names: HashMap<i64, String> = tenants::list(&api.storage)
        .await?
        .into_iter()
        .map(|t| (t.id, t.name))
        .collect();
    let items: Vec<T> = items
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|mut item| {
            let (tenant, name) = item.tenant();
            *name = tenant.and_then(|t| names.get(&t).cloned());
            item
        })
        .collect();
    Ok(HttpResponse::Ok().json(&BrokerPage {
        items,
        total,
        silent,
    }))
}

/// A list's `limit` (default 50) and `offset` for the broker view: each broker node sends its
/// first `offset + limit`, so their sum is bounded by what one node lists.
fn window(limit: Option<u64>, offset: Option<u64>) -> Result<(usize, usize), ApiError> {
    let invalid = |field: &str, message: String| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message).field(field)
    };
    let limit = match usize::try_from(limit.unwrap_or(50)) {
        Ok(n @ 1..=MOST_LISTED) => n,
        _ => {
            return Err(invalid(
                "limit",
                format!("limit must be 1 to {MOST_LISTED}"),
            ));
        }
    };
    match usize::try_from(offset.unwrap_or(0)) {
        Ok(offset) if offset.saturating_add(limit) <= MOST_LISTED => Ok((limit, offset)),
        _ => Err(invalid(
            "offset",
            format!(
                "offset plus limit must be at most {MOST_LISTED}; narrow the list with `search` (or `filter`) instead"
            ),
        )),
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ClientsQuery {
    /// The tenant a system administrator looks at (default: every tenant's and the
    /// platform's); a tenant's user always sees its own.
    tenant: Option<String>,
    /// Part of the client id, device id, application name or username (any case).
    search: Option<String>,
    /// Only connected clients (`true`), or only sessions waiting for their client (`false`).
    connected: Option<bool>,
    /// Items per page, 1 to 500 (default 50); `offset + limit` at most 500.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u64>,
    /// Items to skip.
    #[param(maximum = 499)]
    offset: Option<u64>,
}

/// A page of the broker view, with the broker nodes that did not answer in time (what they
/// hold is missing from it).
#[derive(Serialize, ToSchema)]
pub(super) struct BrokerPage<T> {
    items: Vec<T>,
    /// How many match, on the nodes that answered.
    total: u64,
    /// The broker nodes that did not answer in time.
    silent: Vec<String>,
}

/// List MQTT clients
///
/// The sessions every broker node holds, connected or waiting for their client, by client id:
/// address (as the PROXY protocol gave it), protocol, listener, subscriptions, queued and
/// in-flight messages.
#[utoipa::path(
    get,
    path = "/api/broker/clients",
    tag = "broker",
    operation_id = "list_broker_clients",
    params(ClientsQuery),
    responses(
        (status = 200, description = "A page of clients by client id", body = BrokerPage<ClientInfo>),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not grant this", body = ErrorBody),
        (status = 404, description = "No such tenant", body = ErrorBody),
        (status = 422, description = "A parameter is wrong (`field` names it)", body = ErrorBody),
        (status = 503, description = "No broker node is running", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn clients(
    api: ApiState,
    caller: Caller,
    query: Query<ClientsQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.0;
    let tenant = tenant_of(&api, &caller, Operation::View, query.tenant.as_deref()).await?;
    let (limit, offset) = window(query.limit, query.offset)?;
    let ask = Ask::Clients(ClientQuery {
        tenant,
        search: query.search.filter(|s| !s.is_empty()),
        connected: query.connected,
        first: offset + limit,
    });
    let gathered = broker_admin::ask(api.bus.as_ref(), api.kv.as_ref(), ask).await?;
    let mut total = 0;
    let mut items = Vec::new();
    for reply in gathered.replies {
        if let Answer::Clients {
            total: count,
            clients,
        } = reply.answer
        {
            total += count;
            items.extend(clients);
        }
    }
    page_of(&api, items, total, gathered.silent, (limit, offset)).await
}

/// The client whose connection to close.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct DisconnectBody {
    client_id: String,
    /// The tenant a system administrator acts in (default: any); a tenant's user acts in its
    /// own.
    tenant: Option<String>,
}

/// Where the client was connected.
#[derive(Serialize, ToSchema)]
pub(super) struct Disconnected {
    client_id: String,
    node: String,
}

/// What no broker node that answered had, and which did not answer.
fn not_found(what: String, silent: &[String]) -> ApiError {
    if silent.is_empty() {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", what)
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!(
                "{what} on the broker nodes that answered; {} did not answer in time: try again",
                silent.join(", ")
            ),
        )
    }
}

/// Disconnect an MQTT client
///
/// Closes the client's connection (5.0: reason 0x98, administrative action). Its session
/// stays, its will goes out, and it may connect again: to keep a device out, disable it or
/// change its credentials. Audited.
#[utoipa::path(
    post,
    path = "/api/broker/clients/disconnect",
    tag = "broker",
    operation_id = "disconnect_broker_client",
    request_body = DisconnectBody,
    responses(
        (status = 200, description = "Its connection is closed", body = Disconnected),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not grant this", body = ErrorBody),
        (status = 404, description = "No such client is connected (or no such tenant)", body = ErrorBody),
        (status = 413, description = "The body is over 256 KiB", body = ErrorBody),
        (status = 422, description = "The body is wrong (`field` names it)", body = ErrorBody),
        (status = 503, description = "No broker node is running, or one did not answer", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn disconnect(
    api: ApiState,
    caller: Caller,
    body: Json<DisconnectBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.0;
    let tenant = tenant_of(&api, &caller, Operation::Update, body.tenant.as_deref()).await?;
    let ask = Ask::Disconnect {
        client_id: body.client_id.clone(),
        tenant,
    };
    let gathered = broker_admin::ask(api.bus.as_ref(), api.kv.as_ref(), ask).await?;
    let Some(node) = answered_by(&gathered, |a| {
        matches!(a, Answer::Disconnected { found: true })
    }) else {
        return Err(not_found(
            format!("no client `{}` is connected", body.client_id),
            &gathered.silent,
        ));
    };
    let mut event = super::people::api_event(
        &caller,
        tenant,
        "broker.disconnect",
        "client",
        &body.client_id,
    );
    event.detail = serde_json::json!({ "node": node });
    audit::record(&api.storage, event).await?;
    Ok(HttpResponse::Ok().json(&Disconnected {
        client_id: body.client_id,
        node,
    }))
}

/// The first node whose answer is `wanted`.
fn answered_by(gathered: &Gathered, wanted: impl Fn(&Answer) -> bool) -> Option<String> {
    gathered
        .replies
        .iter()
        .find(|r| wanted(&r.answer))
        .map(|r| r.node.clone())
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct RetainedListQuery {
    /// The tenant a system administrator looks at (default: every tenant's and the
    /// platform's); a tenant's user always sees its own.
    tenant: Option<String>,
    /// An MQTT topic filter (default `#`: every topic not starting with `$`).
    filter: Option<String>,
    /// Items per page, 1 to 500 (default 50); `offset + limit` at most 500.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u64>,
    /// Items to skip.
    #[param(maximum = 499)]
    offset: Option<u64>,
}

/// List retained messages
///
/// The retained messages the broker nodes hold whose topic matches `filter`, by topic, with
/// the start of their payload when it is text.
#[utoipa::path(
    get,
    path = "/api/broker/retained",
    tag = "broker",
    operation_id = "list_retained_messages",
    params(RetainedListQuery),
    responses(
        (status = 200, description = "A page of retained messages by topic", body = BrokerPage<RetainedInfo>),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not grant this", body = ErrorBody),
        (status = 404, description = "No such tenant", body = ErrorBody),
        (status = 422, description = "A parameter is wrong (`field` names it)", body = ErrorBody),
        (status = 503, description = "No broker node is running", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn retained(
    api: ApiState,
    caller: Caller,
    query: Query<RetainedListQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.0;
    let tenant = tenant_of(&api, &caller, Operation::View, query.tenant.as_deref()).await?;
    let (limit, offset) = window(query.limit, query.offset)?;
    let filter = query.filter.unwrap_or_else(|| "#".into());
    if !valid_topic_filter(&filter) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!("`{filter}` is not an MQTT topic filter: use topic levels separated by `/`, with `+` for one level and `#` last for the rest"),
        )
        .field("filter"));
    }
    let ask = Ask::Retained(RetainedQuery {
        tenant,
        filter,
        first: offset + limit,
    });
    let gathered = broker_admin::ask(api.bus.as_ref(), api.kv.as_ref(), ask).await?;
    // With a shared store every node knows every retained message: counted once per topic.
    let mut items = Vec::new();
    let mut total = 0;
    for reply in gathered.replies {
        if let Answer::Retained {
            total: count,
            messages,
        } = reply.answer
        {
            total = total.max(count);
            items.extend(messages);
        }
    }
    page_of(&api, items, total, gathered.silent, (limit, offset)).await
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ForgetQuery {
    /// The topic whose retained message goes.
    topic: String,
    /// The tenant a system administrator acts in (default: any); a tenant's user acts in its
    /// own.
    tenant: Option<String>,
}

/// Delete a retained message
///
/// Every broker node forgets the retained message of `topic` (new subscribers no longer
/// receive it); unlike an empty retained PUBLISH, nobody receives anything. Audited.
#[utoipa::path(
    delete,
    path = "/api/broker/retained",
    tag = "broker",
    operation_id = "delete_retained_message",
    params(ForgetQuery),
    responses(
        (status = 204, description = "It is gone"),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not grant this", body = ErrorBody),
        (status = 404, description = "No retained message on that topic (or no such tenant)", body = ErrorBody),
        (status = 422, description = "A parameter is wrong (`field` names it)", body = ErrorBody),
        (status = 503, description = "No broker node is running, or one did not answer", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn forget_retained(
    api: ApiState,
    caller: Caller,
    query: Query<ForgetQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.0;
    let tenant = tenant_of(&api, &caller, Operation::Delete, query.tenant.as_deref()).await?;
    if query.topic.is_empty() || query.topic.len() > MAX_TOPIC_LEN {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "say which topic: `topic` must be 1 to 65535 bytes",
        )
        .field("topic"));
    }
    let ask = Ask::ForgetRetained {
        topic: query.topic.clone(),
        tenant,
    };
    let gathered = broker_admin::ask(api.bus.as_ref(), api.kv.as_ref(), ask).await?;
    if answered_by(&gathered, |a| matches!(a, Answer::Forgot { found: true })).is_none() {
        return Err(not_found(
            format!("no retained message on `{}`", query.topic),
            &gathered.silent,
        ));
    }
    let event = super::people::api_event(
        &caller,
        tenant,
        "broker.retained.delete",
        "topic",
        &query.topic,
    );
    audit::record(&api.storage, event).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Every broker node's traffic.
#[derive(Serialize, ToSchema)]
pub(super) struct TrafficView {
    nodes: Vec<Traffic>,
    /// The broker nodes that did not answer in time.
    silent: Vec<String>,
}

/// Broker traffic
///
/// Each broker node's connections, sessions and retained messages, and its messages and bytes
/// in and out per second over the last five seconds (system administrators).
#[utoipa::path(
    get,
    path = "/api/broker/traffic",
    tag = "broker",
    operation_id = "broker_traffic",
    responses(
        (status = 200, description = "Each broker node's figures, by node id", body = TrafficView),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "Not a system administrator", body = ErrorBody),
        (status = 503, description = "No broker node is running", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn traffic(api: ApiState, caller: Caller) -> Result<HttpResponse, ApiError> {
    caller.platform(ObjectKind::Brokers, Operation::View)?;
    let gathered = broker_admin::ask(api.bus.as_ref(), api.kv.as_ref(), Ask::Traffic).await?;
    let mut nodes: Vec<Traffic> = gathered
        .replies
        .into_iter()
        .filter_map(|r| match r.answer {
            Answer::Traffic(traffic) => Some(traffic),
            _ => None,
        })
        .collect();
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(HttpResponse::Ok().json(&TrafficView {
        nodes,
        silent: gathered.silent,
    }))
}
