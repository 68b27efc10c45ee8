//! Interpreters of a tenant's attributes (checked by the worker's compiler before they are
//! saved), and the events their levels (or workflows) raise.

use sea_orm::Condition;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel,
    Order, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, TryIntoModel,
};

use super::paging::{self, Page};
use super::{Scope, check_name, classes};
use crate::entity::{device, event, interpreter};
use crate::{Storage, StorageError};

/// An interpreter to create.
#[derive(Clone, Debug, Default)]
pub struct NewInterpreter {
    pub attribute: String,
    /// The class it applies to; `None`: every class of the tenant.
    pub class: Option<String>,
    pub value_map: Option<serde_json::Value>,
    pub expression: Option<String>,
    pub levels: Option<serde_json::Value>,
}

/// Creates (or replaces) the interpreter of an attribute for a class or the whole tenant.
pub async fn save(
    storage: &Storage,
    scope: Scope,
    new: NewInterpreter,
) -> Result<interpreter::Model, StorageError> {
    if scope.customer.is_some() {
        return Err(StorageError::Forbidden(
            "customers cannot change interpreters",
        ));
    }
    check_name("attribute", &new.attribute)?;
    let class = match &new.class {
        Some(name) => Some(classes::by_name(storage.db(), scope, name).await?.id),
        None => None,
    };
    let existing = interpreter::Entity::find()
        .filter(interpreter::Column::TenantId.eq(scope.tenant))
        .filter(interpreter::Column::Attribute.eq(&new.attribute))
        .filter(match class {
            Some(id) => interpreter::Column::ClassId.eq(id),
            None => interpreter::Column::ClassId.is_null(),
        })
        .one(storage.db())
        .await?;
    let mut row = match existing {
        Some(row) => row.into_active_model(),
        None => interpreter::ActiveModel {
            tenant_id: Set(scope.tenant),
            class_id: Set(class),
            attribute: Set(new.attribute),
            ..Default::default()
        },
    };
    row.value_map = Set(new.value_map);
    row.expression = Set(new.expression);
    row.levels = Set(new.levels);
    row.enabled = Set(true);
    Ok(row.save(storage.db()).await?.try_into_model()?)
}

/// Deletes the interpreter of `attribute` for `class` (`None`: the tenant-wide one); its
/// values are stored as they come from then on.
pub async fn delete(
    storage: &Storage,
    scope: Scope,
    attribute: &str,
    class: Option<&str>,
) -> Result<(), StorageError> {
    if scope.customer.is_some() {
        return Err(StorageError::Forbidden(
            "customers cannot change interpreters",
        ));
    }
    let class = match class {
        Some(name) => Some(classes::by_name(storage.db(), scope, name).await?.id),
        None => None,
    };
    let deleted = interpreter::Entity::delete_many()
        .filter(interpreter::Column::TenantId.eq(scope.tenant))
        .filter(interpreter::Column::Attribute.eq(attribute))
        .filter(match class {
            Some(id) => interpreter::Column::ClassId.eq(id),
            None => interpreter::Column::ClassId.is_null(),
        })
        .exec(storage.db())
        .await?;
    if deleted.rows_affected == 0 {
        return Err(StorageError::not_found("interpreter", attribute));
    }
    Ok(())
}

pub async fn list(
    storage: &Storage,
    scope: Scope,
) -> Result<Vec<interpreter::Model>, StorageError> {
    Ok(interpreter::Entity::find()
        .filter(interpreter::Column::TenantId.eq(scope.tenant))
        .order_by_asc(interpreter::Column::Attribute)
        .all(storage.db())
        .await?)
}

/// Which events to list.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    /// Of this device only.
    pub device: Option<String>,
    /// Of this level only.
    pub level: Option<String>,
    /// Only those not cleared yet (`true`), or only cleared ones (`false`).
    pub open: Option<bool>,
    /// Only those acknowledged (`true`), or only those not acknowledged yet (`false`).
    pub acknowledged: Option<bool>,
    /// Only those whose last crossing is at or after this time.
    pub from: Option<chrono::DateTime<chrono::Utc>>,
    /// Only those raised before this time.
    pub to: Option<chrono::DateTime<chrono::Utc>>,
    pub page: Page,
}

/// What event lists sort by.
pub const EVENT_SORT_FIELDS: [&str; 4] = ["raised_at", "last_at", "level", "attribute"];

/// A page of the events of the scope's devices, newest first unless sorted (a customer sees its
/// own devices' only), each with its device's id, and how many match in all.
pub async fn events(
    storage: &Storage,
    scope: Scope,
    filter: &EventFilter,
) -> Result<(Vec<(event::Model, String)>, u64), StorageError> {
    let mut query = event::Entity::find()
        .filter(event::Column::TenantId.eq(scope.tenant))
        .find_also_related(device::Entity);
    if let Some(entity) = scope.customer {
        query = query.filter(device::Column::EntityId.eq(entity));
    }
    if let Some(uid) = &filter.device {
        query = query.filter(device::Column::Uid.eq(uid.as_str()));
    }
    if let Some(level) = &filter.level {
        query = query.filter(event::Column::Level.eq(level.as_str()));
    }
    query = match filter.open {
        Some(true) => query.filter(event::Column::ClearedAt.is_null()),
        Some(false) => query.filter(event::Column::ClearedAt.is_not_null()),
        None => query,
    };
    query = match filter.acknowledged {
        Some(true) => query.filter(event::Column::AcknowledgedAt.is_not_null()),
        Some(false) => query.filter(event::Column::AcknowledgedAt.is_null()),
        None => query,
    };
    if let Some(from) = filter.from {
        query = query.filter(
            Condition::any().add(event::Column::LastAt.gte(from)).add(
                Condition::all()
                    .add(event::Column::LastAt.is_null())
                    .add(event::Column::RaisedAt.gte(from)),
            ),
        );
    }
    if let Some(to) = filter.to {
        query = query.filter(event::Column::RaisedAt.lt(to));
    }
    let total = query.clone().count(storage.db()).await?;
    let query = paging::ordered(
        query,
        &filter.page,
        &[
            (EVENT_SORT_FIELDS[0], event::Column::RaisedAt),
            (EVENT_SORT_FIELDS[1], event::Column::LastAt),
            (EVENT_SORT_FIELDS[2], event::Column::Level),
            (EVENT_SORT_FIELDS[3], event::Column::Attribute),
        ],
        (event::Column::RaisedAt, Order::Desc),
        event::Column::Id,
    )?;
    let page = query
        .limit(filter.page.limit)
        .offset(filter.page.offset)
        .all(storage.db())
        .await?
        .into_iter()
        .filter_map(|(e, d)| Some((e, d?.uid)))
        .collect();
    Ok((page, total))
}

/// Acknowledges (`clear` false) or clears an event of the scope's devices.
pub async fn settle(
    storage: &Storage,
    scope: Scope,
    id: i64,
    by: &str,
    clear: bool,
) -> Result<event::Model, StorageError> {
    let event = event::Entity::find_by_id(id)
        .filter(event::Column::TenantId.eq(scope.tenant))
        .one(storage.db())
        .await?
        .ok_or_else(|| StorageError::not_found("event", id.to_string()))?;
    // A customer may settle only its own devices' events.
    let visible = super::devices::list(storage, scope).await?;
    if !visible.iter().any(|d| d.id == event.device_id) {
        return Err(StorageError::not_found("event", id.to_string()));
    }
    // Settling twice is a no-op that keeps the first time (and who): the update applies only
    // while the time is unset, so concurrent requests cannot overwrite each other either.
    let now = chrono::Utc::now();
    let update = event::Entity::update_many().filter(event::Column::Id.eq(id));
    let update = if clear {
        update
            .col_expr(event::Column::ClearedAt, Expr::value(now))
            .filter(event::Column::ClearedAt.is_null())
    } else {
        update
            .col_expr(event::Column::AcknowledgedAt, Expr::value(now))
            .col_expr(event::Column::AcknowledgedBy, Expr::value(by))
            .filter(event::Column::AcknowledgedAt.is_null())
    };
    update.exec(storage.db()).await?;
    event::Entity::find_by_id(id)
        .one(storage.db())
        .await?
        .ok_or_else(|| StorageError::not_found("event", id.to_string()))
}

/// An alarm to raise, or to count again if one of its device, attribute and level is open.
pub(crate) struct Alarm<'a> {
    pub tenant: i64,
    pub device: i64,
    pub attribute: Option<&'a str>,
    pub level: &'a str,
    pub message: String,
    /// The value that crossed into the level, as JSON text.
    pub value: Option<String>,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// Updates the open alarm of the device, attribute and level (one more crossing, its value,
/// time and message) or, if none is open, raises it; returns the alarm and whether it is new.
/// Alarms stay open until cleared, so a value crossing a threshold back and forth makes one
/// alarm, not one per crossing.
pub(crate) async fn raise_in(
    db: &impl ConnectionTrait,
    alarm: Alarm<'_>,
) -> Result<(event::Model, bool), StorageError> {
    let attribute = match alarm.attribute {
        Some(name) => event::Column::Attribute.eq(name),
        None => event::Column::Attribute.is_null(),
    };
    let open = event::Entity::find()
        .filter(event::Column::DeviceId.eq(alarm.device))
        .filter(attribute)
        .filter(event::Column::Level.eq(alarm.level))
        .filter(event::Column::ClearedAt.is_null())
        .one(db)
        .await?;
    if let Some(open) = open {
        let crossings = open.crossings + 1;
        let mut open = open.into_active_model();
        open.crossings = Set(crossings);
        open.last_value = Set(alarm.value);
        open.last_at = Set(Some(alarm.at));
        open.message = Set(alarm.message);
        return Ok((open.update(db).await?, false));
    }
    let raised = event::ActiveModel {
        tenant_id: Set(alarm.tenant),
        device_id: Set(alarm.device),
        attribute: Set(alarm.attribute.map(String::from)),
        level: Set(alarm.level.to_string()),
        message: Set(alarm.message),
        raised_at: Set(alarm.at),
        acknowledged_at: Set(None),
        acknowledged_by: Set(None),
        cleared_at: Set(None),
        crossings: Set(1),
        last_value: Set(alarm.value),
        last_at: Set(Some(alarm.at)),
        ..Default::default()
    }
    .insert(db)
    .await?;
    Ok((raised, true))
}

/// Raises an event for a device (a workflow's doing), or counts the open one of its attribute
/// and level again.
pub async fn raise(
    storage: &Storage,
    device: &device::Model,
    attribute: Option<&str>,
    level: &str,
    message: &str,
) -> Result<event::Model, StorageError> {
    check_name("event level", level)?;
    let alarm = Alarm {
        tenant: device.tenant_id,
        device: device.id,
        attribute,
        level,
        message: message.chars().take(1000).collect(),
        value: None,
        at: chrono::Utc::now(),
    };
    Ok(raise_in(storage.db(), alarm).await?.0)
}

/// Clears a device's open events (of one attribute, if given); returns how many.
pub async fn clear_open(
    storage: &Storage,
    device: &device::Model,
    attribute: Option<&str>,
) -> Result<u64, StorageError> {
    let mut query = event::Entity::update_many()
        .col_expr(event::Column::ClearedAt, Expr::value(chrono::Utc::now()))
        .filter(event::Column::DeviceId.eq(device.id))
        .filter(event::Column::ClearedAt.is_null());
    if let Some(attribute) = attribute {
        query = query.filter(event::Column::Attribute.eq(attribute));
    }
    Ok(query.exec(storage.db()).await?.rows_affected)
}
