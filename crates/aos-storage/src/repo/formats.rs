//! Message formats of a tenant (checked by `aos-formats` before they are saved), and which
//! format a class's devices use.

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, EntityTrait,
    IntoActiveModel, PaginatorTrait, QueryFilter, QueryOrder,
};

use super::{Scope, check_name, classes, duplicate, unused};
use crate::entity::{device, device_class, message_format};
use crate::{Storage, StorageError};

/// Longest `.proto` text or JSON Schema accepted (they are read on every worker).
pub const MAX_SCHEMA_BYTES: usize = 256 * 1024;

/// A format to create.
#[derive(Clone, Debug, Default)]
pub struct NewFormat {
    pub name: String,
    /// `json`, `xml`, `protobuf` or `pms`.
    pub kind: String,
    pub proto_text: Option<String>,
    pub proto_message: Option<String>,
    pub json_schema: Option<serde_json::Value>,
    /// Attribute → JSON pointer mapping (`{}`: none).
    pub mapping: serde_json::Value,
    /// How commands are written (`true`), rather than how payloads are read.
    pub outbound: bool,
}

pub const INBOUND: &str = "inbound";
pub const OUTBOUND: &str = "outbound";

/// A `.proto` text or JSON Schema is read on every worker: bounded.
fn check_sizes(new: &NewFormat) -> Result<(), StorageError> {
    let schema_len = new.json_schema.as_ref().map_or(0, |s| s.to_string().len());
    if new.proto_text.as_ref().map_or(0, String::len) > MAX_SCHEMA_BYTES
        || schema_len > MAX_SCHEMA_BYTES
    {
        return Err(StorageError::invalid(
            "format",
            format!("has a .proto text or JSON Schema over {MAX_SCHEMA_BYTES} bytes"),
        ));
    }
    Ok(())
}

pub async fn create(
    storage: &Storage,
    scope: Scope,
    new: NewFormat,
) -> Result<message_format::Model, StorageError> {
    if scope.customer.is_some() {
        return Err(StorageError::Forbidden("customers cannot create formats"));
    }
    check_name("format name", &new.name)?;
    check_sizes(&new)?;
    message_format::ActiveModel {
        tenant_id: Set(scope.tenant),
        name: Set(new.name.clone()),
        kind: Set(new.kind),
        direction: Set(if new.outbound { OUTBOUND } else { INBOUND }.into()),
        proto_text: Set(new.proto_text),
        proto_message: Set(new.proto_message),
        json_schema: Set(new.json_schema),
        mapping: Set(new.mapping),
        created_at: Set(Utc::now()),
        ..Default::default()
    }
    .insert(storage.db())
    .await
    .map_err(duplicate("format", &new.name))
}

pub async fn list(
    storage: &Storage,
    scope: Scope,
) -> Result<Vec<message_format::Model>, StorageError> {
    Ok(message_format::Entity::find()
        .filter(message_format::Column::TenantId.eq(scope.tenant))
        .order_by_asc(message_format::Column::Name)
        .all(storage.db())
        .await?)
}

/// The format called `name` in the scope's tenant.
pub async fn by_name(
    db: &impl ConnectionTrait,
    scope: Scope,
    name: &str,
) -> Result<message_format::Model, StorageError> {
    message_format::Entity::find()
        .filter(message_format::Column::TenantId.eq(scope.tenant))
        .filter(message_format::Column::Name.eq(name))
        .one(db)
        .await?
        .ok_or_else(|| StorageError::not_found("format", name))
}

/// The format with this id (the worker's lookup; the device that names it is of its tenant).
pub async fn by_id(
    storage: &Storage,
    id: i64,
) -> Result<Option<message_format::Model>, StorageError> {
    Ok(message_format::Entity::find_by_id(id)
        .one(storage.db())
        .await?)
}

/// Sets (or, with `None`, clears) the inbound format of a class's devices, or with `outbound`
/// the format their commands are written in.
pub async fn set_class_format(
    storage: &Storage,
    scope: Scope,
    class: &str,
    format: Option<&str>,
    outbound: bool,
) -> Result<(), StorageError> {
    if scope.customer.is_some() {
        return Err(StorageError::Forbidden(
            "customers cannot change device classes",
        ));
    }
    let wanted = if outbound { OUTBOUND } else { INBOUND };
    let format = match format {
        Some(name) => {
            let found = by_name(storage.db(), scope, name).await?;
            if found.direction != wanted {
                return Err(StorageError::invalid(
                    "format",
                    format!(
                        "`{name}` is an {} format; this needs an {wanted} one",
                        found.direction
                    ),
                ));
            }
            Some(found.id)
        }
        None => None,
    };
    let mut class = classes::by_name(storage.db(), scope, class)
        .await?
        .into_active_model();
    if outbound {
        class.outbound_format_id = Set(format);
    } else {
        class.format_id = Set(format);
    }
    class.update(storage.db()).await?;
    Ok(())
}

/// Replaces the definition of format `name` (its kind, `.proto`, schema and mapping; its
/// direction stays): the classes and devices that use it read with the new one.
pub async fn update(
    storage: &Storage,
    scope: Scope,
    name: &str,
    new: NewFormat,
) -> Result<message_format::Model, StorageError> {
    if scope.customer.is_some() {
        return Err(StorageError::Forbidden("customers cannot change formats"));
    }
    check_sizes(&new)?;
    let found = by_name(storage.db(), scope, name).await?;
    let mut row = found.into_active_model();
    row.kind = Set(new.kind);
    row.proto_text = Set(new.proto_text);
    row.proto_message = Set(new.proto_message);
    row.json_schema = Set(new.json_schema);
    row.mapping = Set(new.mapping);
    Ok(row.update(storage.db()).await?)
}

/// Deletes a format no class or device uses.
pub async fn delete(storage: &Storage, scope: Scope, name: &str) -> Result<(), StorageError> {
    if scope.customer.is_some() {
        return Err(StorageError::Forbidden("customers cannot delete formats"));
    }
    let txn = storage.begin_write().await?;
    let format = by_name(&txn, scope, name).await?;
    let classes = device_class::Entity::find()
        .filter(
            Condition::any()
                .add(device_class::Column::FormatId.eq(format.id))
                .add(device_class::Column::OutboundFormatId.eq(format.id)),
        )
        .count(&txn)
        .await?;
    let devices = device::Entity::find()
        .filter(device::Column::FormatId.eq(format.id))
        .count(&txn)
        .await?;
    unused(
        "format",
        name,
        &[
            (classes, "class using it", "classes using it"),
            (devices, "device using it", "devices using it"),
        ],
    )?;
    message_format::Entity::delete_by_id(format.id)
        .exec(&txn)
        .await?;
    txn.commit().await?;
    Ok(())
}
