//! Commands to devices: created `queued` — for one device, or as a batch for devices and whole
//! classes (optionally also devices registered later) —, offered to their device while it is
//! online, `sent` once the broker holding its session has it, then `acknowledged` or `failed` by
//! the device's reply, or `expired` when their time runs out first; a queued one may be
//! `cancelled` (it is never sent).

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, Order,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
};
use serde_json::{Value, json};

use super::device_lookup;
use super::paging::{self, Page};
use super::{Scope, check_name, classes};
use crate::entity::{command, command_batch, device, device_class};
use crate::{Storage, StorageError};

pub const QUEUED: &str = "queued";
pub const SENT: &str = "sent";
pub const ACKNOWLEDGED: &str = "acknowledged";
pub const FAILED: &str = "failed";
pub const EXPIRED: &str = "expired";
pub const CANCELLED: &str = "cancelled";
pub const STATUSES: [&str; 6] = [QUEUED, SENT, ACKNOWLEDGED, FAILED, EXPIRED, CANCELLED];

/// Largest command parameters accepted (they travel to small devices).
pub const MAX_PARAMETERS_BYTES: usize = 64 * 1024;

/// A command to create.
#[derive(Clone, Debug, PartialEq)]
pub struct NewCommand {
    pub name: String,
    /// A JSON object (`{}`: none).
    pub parameters: Value,
    /// When it expires if the device has not acknowledged it; `None`: never.
    pub expires_at: Option<DateTime<Utc>>,
}

impl NewCommand {
    fn check(&self) -> Result<(), StorageError> {
        check_name("command name", &self.name)?;
        if !self.parameters.is_object() {
            return Err(StorageError::invalid(
                "command parameters",
                format!("must be a JSON object, not {}", self.parameters),
            ));
        }
        if self.parameters.to_string().len() > MAX_PARAMETERS_BYTES {
            return Err(StorageError::invalid(
                "command parameters",
                format!("are larger than {MAX_PARAMETERS_BYTES} bytes"),
            ));
        }
        Ok(())
    }

    fn row(&self, tenant: i64, device: i64, batch: Option<i64>) -> command::ActiveModel {
        command::ActiveModel {
            tenant_id: Set(tenant),
            device_id: Set(device),
            batch_id: Set(batch),
            name: Set(self.name.clone()),
            payload: Set(self.parameters.clone()),
            status: Set(QUEUED.into()),
            error: Set(None),
            created_at: Set(Utc::now()),
            sent_at: Set(None),
            acknowledged_at: Set(None),
            expires_at: Set(self.expires_at),
            ..Default::default()
        }
    }
}

/// Queues a command for the device `uid`.
pub async fn create(
    storage: &Storage,
    scope: Scope,
    uid: &str,
    new: &NewCommand,
) -> Result<command::Model, StorageError> {
    new.check()?;
    let device = device_lookup::get(storage, scope, uid).await?;
    Ok(new
        .row(scope.tenant, device.id, None)
        .insert(storage.db())
        .await?)
}

/// What a batch is for: devices by id, whole classes by name, and whether devices registered
/// later in those classes get the command too.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchTarget {
    pub devices: Vec<String>,
    pub classes: Vec<String>,
    pub include_future: bool,
}

/// Creates a batch and queues its command for every device it targets now; returns the batch
/// and how many commands were queued.
pub async fn create_batch(
    storage: &Storage,
    scope: Scope,
    name: &str,
    new: &NewCommand,
    target: &BatchTarget,
) -> Result<(command_batch::Model, usize), StorageError> {
    check_name("batch name", name)?;
    new.check()?;
    if target.devices.is_empty() && target.classes.is_empty() {
        return Err(StorageError::invalid(
            "batch",
            "targets nothing: name devices or classes",
        ));
    }
    let txn = storage.begin_write().await?;
    let mut class_ids = Vec::with_capacity(target.classes.len());
    for class in &target.classes {
        class_ids.push(classes::by_name(&txn, scope, class).await?.id);
    }
    let mut targets: Vec<device::Model> = Vec::new();
    for uid in &target.devices {
        targets.push(device_lookup::get_in(&txn, scope, uid).await?);
    }
    if !class_ids.is_empty() {
        targets.extend(
            device_lookup::visible(scope)
                .filter(device::Column::ClassId.is_in(class_ids.iter().copied()))
                .all(&txn)
                .await?,
        );
    }
    targets.sort_by_key(|d| d.id);
    targets.dedup_by_key(|d| d.id);
    let batch = command_batch::ActiveModel {
        tenant_id: Set(scope.tenant),
        name: Set(name.to_string()),
        command: Set(json!({
            "name": new.name,
            "parameters": new.parameters,
            "expires_at": new.expires_at,
        })),
        target: Set(json!({ "devices": target.devices, "classes": class_ids })),
        include_future: Set(target.include_future),
        created_at: Set(Utc::now()),
        ..Default::default()
    }
    .insert(&txn)
    .await?;
    for chunk in targets.chunks(500) {
        command::Entity::insert_many(
            chunk
                .iter()
                .map(|d| new.row(scope.tenant, d.id, Some(batch.id))),
        )
        .exec_without_returning(&txn)
        .await?;
    }
    txn.commit().await?;
    Ok((batch, targets.len()))
}

/// Queues, for a device just registered, the commands of its tenant's batches that include
/// future devices of its class (and have not expired).
pub(crate) async fn queue_for_new_device(
    db: &impl ConnectionTrait,
    device: &device::Model,
) -> Result<(), StorageError> {
    let batches = command_batch::Entity::find()
        .filter(command_batch::Column::TenantId.eq(device.tenant_id))
        .filter(command_batch::Column::IncludeFuture.eq(true))
        .all(db)
        .await?;
    let now = Utc::now();
    for batch in batches {
        let for_class = batch.target["classes"]
            .as_array()
            .is_some_and(|c| c.iter().any(|id| id.as_i64() == Some(device.class_id)));
        let Ok(new) = stored_command(&batch.command) else {
            continue;
        };
        if for_class && new.expires_at.is_none_or(|at| at > now) {
            new.row(device.tenant_id, device.id, Some(batch.id))
                .insert(db)
                .await?;
        }
    }
    Ok(())
}

fn stored_command(stored: &Value) -> Result<NewCommand, StorageError> {
    let broken = || StorageError::invalid("stored batch command", "is not readable");
    Ok(NewCommand {
        name: stored["name"].as_str().ok_or_else(broken)?.to_string(),
        parameters: stored["parameters"].clone(),
        expires_at: serde_json::from_value(stored["expires_at"].clone()).map_err(|_| broken())?,
    })
}

/// A command with the id of its device.
#[derive(Clone, Debug, PartialEq)]
pub struct CommandRow {
    pub command: command::Model,
    pub device: String,
}

/// Which commands to list.
#[derive(Clone, Debug, Default)]
pub struct CommandFilter {
    pub device: Option<String>,
    pub status: Option<String>,
    pub batch: Option<i64>,
    pub page: Page,
}

/// What command lists sort by.
pub const SORT_FIELDS: [&str; 3] = ["created_at", "name", "status"];

/// A page of the commands the scope may see, newest first unless sorted, and how many match.
pub async fn list(
    storage: &Storage,
    scope: Scope,
    filter: &CommandFilter,
) -> Result<(Vec<CommandRow>, u64), StorageError> {
    if let Some(status) = &filter.status
        && !STATUSES.contains(&status.as_str())
    {
        return Err(StorageError::invalid(
            "status",
            format!("must be one of {}", STATUSES.join(", ")),
        ));
    }
    let mut query = command::Entity::find()
        .filter(command::Column::TenantId.eq(scope.tenant))
        .find_also_related(device::Entity);
    if let Some(entity) = scope.customer {
        query = query.filter(device::Column::EntityId.eq(entity));
    }
    if let Some(uid) = &filter.device {
        query = query.filter(device::Column::Uid.eq(uid.as_str()));
    }
    if let Some(status) = &filter.status {
        query = query.filter(command::Column::Status.eq(status.as_str()));
    }
    if let Some(batch) = filter.batch {
        query = query.filter(command::Column::BatchId.eq(batch));
    }
    let total = query.clone().count(storage.db()).await?;
    let rows = paging::ordered(
        query,
        &filter.page,
        &[
            (SORT_FIELDS[0], command::Column::CreatedAt),
            (SORT_FIELDS[1], command::Column::Name),
            (SORT_FIELDS[2], command::Column::Status),
        ],
        (command::Column::Id, Order::Desc),
        command::Column::Id,
    )?
    .limit(filter.page.limit)
    .offset(filter.page.offset)
    .all(storage.db())
    .await?;
    let page = rows
        .into_iter()
        .map(|(command, device)| CommandRow {
            command,
            device: device.map(|d| d.uid).unwrap_or_default(),
        })
        .collect();
    Ok((page, total))
}

/// The command `id`, if the scope may see it.
pub async fn get(storage: &Storage, scope: Scope, id: i64) -> Result<CommandRow, StorageError> {
    let mut query = command::Entity::find_by_id(id)
        .filter(command::Column::TenantId.eq(scope.tenant))
        .find_also_related(device::Entity);
    if let Some(entity) = scope.customer {
        query = query.filter(device::Column::EntityId.eq(entity));
    }
    match query.one(storage.db()).await? {
        Some((command, Some(device))) => Ok(CommandRow {
            command,
            device: device.uid,
        }),
        _ => Err(StorageError::not_found("command", id.to_string())),
    }
}

/// Cancels the queued command `id` (the scope's): it is never sent. One already sent (or
/// done) cannot be.
pub async fn cancel(storage: &Storage, scope: Scope, id: i64) -> Result<CommandRow, StorageError> {
    let mut row = get(storage, scope, id).await?;
    // Only while still queued: a delivery racing this one either took it first or never does.
    let cancelled = command::Entity::update_many()
        .col_expr(command::Column::Status, Expr::value(CANCELLED))
        .filter(command::Column::Id.eq(id))
        .filter(command::Column::Status.eq(QUEUED))
        .exec(storage.db())
        .await?;
    if cancelled.rows_affected == 0 {
        let now = get(storage, scope, id).await?;
        return Err(StorageError::InUse {
            what: "command",
            name: id.to_string(),
            reason: format!(
                "it is {} already: only a queued command can be cancelled",
                now.command.status
            ),
        });
    }
    row.command.status = CANCELLED.into();
    Ok(row)
}

/// A queued command whose device (or the gateway it is reached through) is online.
#[derive(Clone, Debug, PartialEq)]
pub struct Deliverable {
    pub id: i64,
    pub tenant: i64,
    pub name: String,
    pub parameters: Value,
    pub device: String,
    /// The gateway the device is reached through.
    pub gateway: Option<String>,
    /// The outbound format of the device's class; `None`: JSON.
    pub format: Option<i64>,
}

/// Queued, unexpired commands of online devices (a gateway's child nodes are online with it),
/// oldest first; only those that go through the session of `session` (the device, or the
/// gateway and its child nodes), if given.
pub async fn deliverable(
    storage: &Storage,
    session: Option<&str>,
    limit: u64,
) -> Result<Vec<Deliverable>, StorageError> {
    let now = Utc::now();
    let mut query = command::Entity::find()
        .filter(command::Column::Status.eq(QUEUED))
        .filter(
            command::Column::ExpiresAt
                .is_null()
                .or(command::Column::ExpiresAt.gt(now)),
        )
        .find_also_related(device::Entity)
        .filter(device::Column::Status.eq(device_lookup::ONLINE));
    if let Some(uid) = session {
        let Some(holder) = device::Entity::find()
            .filter(device::Column::Uid.eq(uid))
            .one(storage.db())
            .await?
        else {
            return Ok(Vec::new());
        };
        query = query.filter(
            device::Column::Id
                .eq(holder.id)
                .or(device::Column::GatewayId.eq(holder.id)),
        );
    }
    let found = query
        .order_by_asc(command::Column::Id)
        .limit(limit)
        .all(storage.db())
        .await?;
    let mut related: Vec<i64> = found
        .iter()
        .filter_map(|(_, d)| d.as_ref()?.gateway_id)
        .collect();
    related.sort_unstable();
    related.dedup();
    let gateways: std::collections::HashMap<i64, String> = device::Entity::find()
        .filter(device::Column::Id.is_in(related))
        .all(storage.db())
        .await?
        .into_iter()
        .map(|d| (d.id, d.uid))
        .collect();
    let mut class_ids: Vec<i64> = found
        .iter()
        .filter_map(|(_, d)| Some(d.as_ref()?.class_id))
        .collect();
    class_ids.sort_unstable();
    class_ids.dedup();
    let formats: std::collections::HashMap<i64, Option<i64>> = device_class::Entity::find()
        .filter(device_class::Column::Id.is_in(class_ids))
        .all(storage.db())
        .await?
        .into_iter()
        .map(|c| (c.id, c.outbound_format_id))
        .collect();
    Ok(found
        .into_iter()
        .filter_map(|(c, d)| {
            let d = d?;
            Some(Deliverable {
                id: c.id,
                tenant: c.tenant_id,
                name: c.name,
                parameters: c.payload,
                gateway: d.gateway_id.and_then(|g| gateways.get(&g).cloned()),
                format: formats.get(&d.class_id).copied().flatten(),
                device: d.uid,
            })
        })
        .collect())
}

/// Marks command `id` sent at `at` if it was still queued; whether it was.
async fn claim_sent(storage: &Storage, id: i64, at: DateTime<Utc>) -> Result<bool, StorageError> {
    let updated = command::Entity::update_many()
        .col_expr(command::Column::Status, Expr::value(SENT))
        .col_expr(command::Column::SentAt, Expr::value(at))
        .filter(command::Column::Id.eq(id))
        .filter(command::Column::Status.eq(QUEUED))
        .exec(storage.db())
        .await?;
    Ok(updated.rows_affected > 0)
}

/// Marks a command sent (if it was still queued); returns it then.
pub async fn mark_sent(storage: &Storage, id: i64) -> Result<Option<CommandRow>, StorageError> {
    if !claim_sent(storage, id, Utc::now()).await? {
        return Ok(None);
    }
    Ok(command::Entity::find_by_id(id)
        .find_also_related(device::Entity)
        .one(storage.db())
        .await?
        .map(|(command, device)| CommandRow {
            command,
            device: device.map(|d| d.uid).unwrap_or_default(),
        }))
}

/// The queued, unexpired commands of device `id` (oldest first, up to `limit`), handed to it now
/// — over HTTP, where the device asks — and so marked `sent`. Two concurrent askers never get
/// the same command: each is taken only if it was still queued.
pub async fn take_pending(
    storage: &Storage,
    device: i64,
    limit: u64,
) -> Result<Vec<command::Model>, StorageError> {
    let now = Utc::now();
    let waiting = command::Entity::find()
        .filter(command::Column::DeviceId.eq(device))
        .filter(command::Column::Status.eq(QUEUED))
        .filter(
            command::Column::ExpiresAt
                .is_null()
                .or(command::Column::ExpiresAt.gt(now)),
        )
        .order_by_asc(command::Column::Id)
        .limit(limit)
        .all(storage.db())
        .await?;
    let mut taken = Vec::with_capacity(waiting.len());
    for mut command in waiting {
        if claim_sent(storage, command.id, now).await? {
            command.status = SENT.to_string();
            command.sent_at = Some(now);
            taken.push(command);
        }
    }
    Ok(taken)
}

/// Marks a command failed before it reached its device (it cannot be put in its format).
pub async fn mark_undeliverable(
    storage: &Storage,
    id: i64,
    reason: &str,
) -> Result<(), StorageError> {
    command::Entity::update_many()
        .col_expr(command::Column::Status, Expr::value(FAILED))
        .col_expr(command::Column::Error, Expr::value(reason))
        .filter(command::Column::Id.eq(id))
        .filter(command::Column::Status.eq(QUEUED))
        .exec(storage.db())
        .await?;
    Ok(())
}

/// Marks expired the commands queued or sent whose time has run out; returns how many.
pub async fn expire(storage: &Storage) -> Result<u64, StorageError> {
    // Looked for first: a read does not wait for (or hold up) the ingest's writes on SQLite,
    // and most of the time nothing is due.
    let due = command::Entity::find()
        .filter(command::Column::Status.is_in([QUEUED, SENT]))
        .filter(command::Column::ExpiresAt.lte(Utc::now()))
        .one(storage.db())
        .await?;
    if due.is_none() {
        return Ok(0);
    }
    let updated = command::Entity::update_many()
        .col_expr(command::Column::Status, Expr::value(EXPIRED))
        .filter(command::Column::Status.is_in([QUEUED, SENT]))
        .filter(command::Column::ExpiresAt.lte(Utc::now()))
        .exec(storage.db())
        .await?;
    Ok(updated.rows_affected)
}

/// A device's reply to one of its commands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub device: i64,
    pub command: i64,
    /// `None`: done; `Some(reason)`: the device could not do it.
    pub error: Option<String>,
}

/// Whether command `id` was sent to device `device` (a reply to any other is refused).
pub async fn is_for(storage: &Storage, id: i64, device: i64) -> Result<bool, StorageError> {
    Ok(command::Entity::find_by_id(id)
        .filter(command::Column::DeviceId.eq(device))
        .count(storage.db())
        .await?
        > 0)
}

/// Settles the commands replied to (only a device's own commands, and only once).
pub(crate) async fn settle(
    db: &impl ConnectionTrait,
    replies: &[Reply],
) -> Result<(), StorageError> {
    let now = Utc::now();
    for reply in replies {
        let status = if reply.error.is_some() {
            FAILED
        } else {
            ACKNOWLEDGED
        };
        command::Entity::update_many()
            .col_expr(command::Column::Status, Expr::value(status))
            .col_expr(command::Column::Error, Expr::value(reply.error.clone()))
            .col_expr(command::Column::AcknowledgedAt, Expr::value(now))
            .filter(command::Column::Id.eq(reply.command))
            .filter(command::Column::DeviceId.eq(reply.device))
            .filter(command::Column::Status.is_in([QUEUED, SENT]))
            .exec(db)
            .await?;
    }
    Ok(())
}
