//! What devices sent, as people look at it: the message log, the dashboard's key figures, and
//! the audit log.

use aos_auth::permissions::{ObjectKind, Operation};
use aos_storage::repo::messages::{self, MessageQuery};
use aos_storage::repo::{audit, kpis};
use chrono::{DateTime, Utc};
use ntex::web::HttpResponse;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, ApiState, Caller, ErrorBody, InTenant, Listed, Query, Routes, page};

pub fn routes(r: &mut impl Routes) {
    r.get("/messages", list_messages)
        .get("/kpis", figures)
        .get("/audit", audit_log);
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct MessagesQuery {
    /// The tenant a system administrator acts in (a tenant's user always acts in its own).
    tenant: Option<String>,
    /// A device's id.
    device: Option<String>,
    /// `processed`, `failed` or `archived`.
    #[param(pattern = "^(processed|failed|archived)$")]
    status: Option<String>,
    /// Received at or after (RFC 3339).
    from: Option<DateTime<Utc>>,
    /// Received before (RFC 3339).
    to: Option<DateTime<Utc>>,
    /// Items per page, 1 to 1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
    /// Items to skip, up to 1,000,000 (default 0).
    #[param(maximum = 1_000_000)]
    offset: Option<u64>,
    /// `received_at`, `-received_at` for descending (the default).
    sort: Option<String>,
}

/// A message a device sent, as the log keeps it.
#[derive(Serialize, ToSchema)]
pub(super) struct MessageView {
    id: i64,
    /// The device's id (null when it was not known).
    device: Option<String>,
    topic: String,
    /// `processed`, `failed` or `archived`.
    status: String,
    /// Why processing failed, when it did.
    error: Option<String>,
    received_at: DateTime<Utc>,
    processed_at: Option<DateTime<Utc>>,
    /// The payload as text when it is UTF-8, else as hex (`payload_hex`).
    payload: Option<String>,
    payload_hex: Option<String>,
}

/// Search the message log
///
/// What devices sent, newest first.
#[utoipa::path(
    get,
    path = "/api/messages",
    tag = "data",
    operation_id = "list_messages",
    params(MessagesQuery),
    responses(
        (status = 200, description = "A page of messages", body = Listed<MessageView>),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such tenant", body = ErrorBody),
        (status = 422, description = "A parameter is wrong (`field` names it)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn list_messages(
    api: ApiState,
    caller: Caller,
    query: Query<MessagesQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.0;
    let scope = caller
        .scope(
            &api,
            ObjectKind::Messages,
            Operation::View,
            query.tenant.as_deref(),
        )
        .await?;
    let wanted = MessageQuery {
        device: query.device,
        status: query.status,
        from: query.from,
        to: query.to,
        page: page(query.limit, query.offset, query.sort)?,
    };
    let (rows, total) = messages::search(&api.storage, scope, &wanted).await?;
    let items = rows
        .into_iter()
        .map(|row| {
            let m = row.message;
            let (payload, payload_hex) = match String::from_utf8(m.payload) {
                Ok(text) => (Some(text), None),
                Err(bytes) => (None, Some(hex::encode(bytes.as_bytes()))),
            };
            MessageView {
                id: m.id,
                device: row.device,
                topic: m.topic,
                status: m.status,
                error: m.error,
                received_at: m.received_at,
                processed_at: m.processed_at,
                payload,
                payload_hex,
            }
        })
        .collect();
    Ok(Listed::new(items, total).response())
}

/// Devices by status.
#[derive(Serialize, ToSchema)]
pub(super) struct DeviceFigures {
    total: u64,
    online: u64,
    offline: u64,
}

/// Events not cleared yet.
#[derive(Serialize, ToSchema)]
pub(super) struct EventFigures {
    open: u64,
    unacknowledged: u64,
    /// Open events per level.
    by_level: BTreeMap<String, u64>,
}

/// Messages received in one minute.
#[derive(Serialize, ToSchema)]
pub(super) struct MinuteCount {
    /// The minute's start.
    ts: DateTime<Utc>,
    count: u64,
}

/// Messages received in the last hour.
#[derive(Serialize, ToSchema)]
pub(super) struct MessageFigures {
    last_hour: u64,
    failed_last_hour: u64,
    /// Every minute of the last hour, oldest first.
    per_minute: Vec<MinuteCount>,
}

/// Commands waiting for their devices.
#[derive(Serialize, ToSchema)]
pub(super) struct CommandFigures {
    pending: u64,
}

/// The dashboard's key figures.
#[derive(Serialize, ToSchema)]
pub(super) struct Figures {
    devices: DeviceFigures,
    events: EventFigures,
    messages: MessageFigures,
    commands: CommandFigures,
}

/// The dashboard's key figures
///
/// Devices, events, messages and commands, of what the caller may see.
#[utoipa::path(
    get,
    path = "/api/kpis",
    tag = "data",
    operation_id = "kpis",
    params(InTenant),
    responses(
        (status = 200, description = "The key figures", body = Figures),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such tenant", body = ErrorBody),
        (status = 422, description = "A parameter is wrong (`field` names it)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn figures(
    api: ApiState,
    caller: Caller,
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
    let k = kpis::of(&api.storage, scope, Utc::now()).await?;
    Ok(HttpResponse::Ok().json(&Figures {
        devices: DeviceFigures {
            total: k.devices_total,
            online: k.devices_online,
            offline: k.devices_total.saturating_sub(k.devices_online),
        },
        events: EventFigures {
            open: k.events_open,
            unacknowledged: k.events_unacknowledged,
            by_level: k.events_by_level,
        },
        messages: MessageFigures {
            last_hour: k.messages_last_hour,
            failed_last_hour: k.messages_failed_last_hour,
            per_minute: k
                .messages_per_minute
                .into_iter()
                .map(|(ts, count)| MinuteCount { ts, count })
                .collect(),
        },
        commands: CommandFigures {
            pending: k.commands_pending,
        },
    }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct AuditQuery {
    /// The tenant whose log a system administrator reads (without it: the platform's own).
    tenant: Option<String>,
    /// Only what this user did (its login).
    user: Option<String>,
    /// Only this action (`user.create`), or every action it starts when it ends with a dot
    /// (`user.`).
    action: Option<String>,
    /// At or after (RFC 3339).
    from: Option<DateTime<Utc>>,
    /// Before (RFC 3339).
    to: Option<DateTime<Utc>>,
    /// Items per page, 1 to 1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
    /// Items to skip, up to 1,000,000 (default 0).
    #[param(maximum = 1_000_000)]
    offset: Option<u64>,
    /// `at` or `action`, `-field` for descending.
    sort: Option<String>,
}

/// A security event.
#[derive(Serialize, ToSchema)]
pub(super) struct AuditView {
    id: i64,
    at: DateTime<Utc>,
    /// Who acted: `user:<login>`, `device:<id>`, `cli`, `system`.
    actor: String,
    /// What was done, e.g. `user.create`.
    action: String,
    object_kind: Option<String>,
    object_id: Option<String>,
    client_addr: Option<String>,
    success: bool,
    detail: serde_json::Value,
}

/// Read the audit log
///
/// The tenant's security events, newest first (a system administrator without `?tenant=` sees
/// the platform's own); `user`, `action`, `from` and `to` narrow them down.
#[utoipa::path(
    get,
    path = "/api/audit",
    tag = "people",
    operation_id = "list_audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "A page of security events", body = Listed<AuditView>),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such tenant", body = ErrorBody),
        (status = 422, description = "A parameter is wrong (`field` names it)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn audit_log(
    api: ApiState,
    caller: Caller,
    query: Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.0;
    let tenant = match (&caller.0.tenant, &query.tenant) {
        (None, None) => {
            caller.platform(ObjectKind::Tenants, Operation::View)?;
            None
        }
        _ => Some(
            caller
                .scope(
                    &api,
                    ObjectKind::Audit,
                    Operation::View,
                    query.tenant.as_deref(),
                )
                .await?
                .tenant,
        ),
    };
    let filter = audit::AuditFilter {
        actor: query.user.map(|login| format!("user:{login}")),
        action: query.action,
        from: query.from,
        to: query.to,
    };
    let wanted = page(query.limit, query.offset, query.sort)?;
    let (found, total) = audit::search(&api.storage, tenant, &filter, &wanted).await?;
    let items = found
        .into_iter()
        .map(|a| AuditView {
            id: a.id,
            at: a.at,
            actor: a.actor,
            action: a.action,
            object_kind: a.object_kind,
            object_id: a.object_id,
            client_addr: a.client_addr,
            success: a.success,
            detail: a.detail,
        })
        .collect();
    Ok(Listed::new(items, total).response())
}
