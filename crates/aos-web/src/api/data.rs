//! What devices sent, as people look at it: the message log, the dashboard's key figures, and
//! the audit log.

use aos_auth::permissions::{ObjectKind, Operation};
use aos_storage::repo::messages::{self, MessageQuery};
use aos_storage::repo::{audit, kpis};
use chrono::{DateTime, Utc};
use ntex::web::{self, HttpResponse};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::{ApiError, ApiState, Caller, InTenant, Listed, Query, page};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/messages", web::get().to(list_messages))
        .route("/kpis", web::get().to(figures))
        .route("/audit", web::get().to(audit_log));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessagesQuery {
    tenant: Option<String>,
    device: Option<String>,
    status: Option<String>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    limit: Option<u64>,
    offset: Option<u64>,
    sort: Option<String>,
}

#[derive(Serialize)]
struct MessageView {
    id: i64,
    device: Option<String>,
    topic: String,
    status: String,
    error: Option<String>,
    received_at: DateTime<Utc>,
    processed_at: Option<DateTime<Utc>>,
    /// The payload as text when it is UTF-8, else as hex (`payload_hex`).
    payload: Option<String>,
    payload_hex: Option<String>,
}

/// `GET /api/messages?device=&status=&from=&to=&limit=&offset=&sort=` → newest first.
async fn list_messages(
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

#[derive(Serialize)]
struct DeviceFigures {
    total: u64,
    online: u64,
    offline: u64,
}

#[derive(Serialize)]
struct EventFigures {
    open: u64,
    unacknowledged: u64,
    by_level: BTreeMap<String, u64>,
}

#[derive(Serialize)]
struct MinuteCount {
    ts: DateTime<Utc>,
    count: u64,
}

#[derive(Serialize)]
struct MessageFigures {
    last_hour: u64,
    failed_last_hour: u64,
    per_minute: Vec<MinuteCount>,
}

#[derive(Serialize)]
struct CommandFigures {
    pending: u64,
}

#[derive(Serialize)]
struct Figures {
    devices: DeviceFigures,
    events: EventFigures,
    messages: MessageFigures,
    commands: CommandFigures,
}

/// `GET /api/kpis` → the key figures of what the caller may see.
async fn figures(
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    tenant: Option<String>,
    limit: Option<u64>,
    offset: Option<u64>,
    sort: Option<String>,
}

#[derive(Serialize)]
struct AuditView {
    id: i64,
    at: DateTime<Utc>,
    actor: String,
    action: String,
    object_kind: Option<String>,
    object_id: Option<String>,
    client_addr: Option<String>,
    success: bool,
    detail: serde_json::Value,
}

/// `GET /api/audit?limit=&offset=&sort=` → the tenant's security events, newest first (a system
/// administrator without `?tenant=` sees the platform's own).
async fn audit_log(
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
    let wanted = page(query.limit, query.offset, query.sort)?;
    let (found, total) = audit::search(&api.storage, tenant, &wanted).await?;
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
