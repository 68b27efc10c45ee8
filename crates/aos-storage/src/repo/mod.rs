//! Repositories: every read and write of tenant-owned rows goes through a [`Scope`], so a query
//! made for one tenant cannot see or change another tenant's rows, and a customer-bound scope
//! sees only its own entity's devices and data.

pub mod api_keys;
pub mod audit;
pub mod class_model;
pub mod classes;
pub mod commands;
mod device_lookup;
pub mod devices;
pub mod entities;
pub mod formats;
pub mod ingest;
pub mod interpreters;
pub mod kpis;
pub mod ledger;
pub mod messages;
pub mod paging;
pub mod retention;
pub mod roles;
pub mod tenants;
pub mod tokens;
pub mod users;
pub mod workflows;

use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, SqlErr};

use crate::StorageError;
use crate::entity::org_entity;

/// On whose behalf a repository call is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scope {
    pub tenant: i64,
    /// A customer-bound caller: only this entity's devices and data.
    pub customer: Option<i64>,
}

impl Scope {
    pub fn tenant(tenant: i64) -> Scope {
        Scope {
            tenant,
            customer: None,
        }
    }

    pub fn customer(tenant: i64, entity: i64) -> Scope {
        Scope {
            tenant,
            customer: Some(entity),
        }
    }
}

/// The time `after` from now, if it is one the platform can store and write (RFC 3339: up to
/// the year 9999): the expiry of a command or an API key.
pub fn expiry_after(after: std::time::Duration) -> Option<chrono::DateTime<chrono::Utc>> {
    use chrono::Datelike;
    chrono::Duration::from_std(after)
        .ok()
        .and_then(|d| chrono::Utc::now().checked_add_signed(d))
        .filter(|at| at.year() <= 9999)
}

/// Longest name or identifier accepted anywhere.
pub const MAX_NAME: usize = 128;

/// Checks a display name: 1 to MAX_NAME characters, no control characters.
pub fn check_name(field: &'static str, value: &str) -> Result<(), StorageError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(StorageError::invalid(field, "must not be empty"));
    }
    if value.chars().count() > MAX_NAME {
        return Err(StorageError::invalid(
            field,
            format!("is longer than {MAX_NAME} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(StorageError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Checks an identifier used on the wire (login, device id, MQTT username): 1 to MAX_NAME of
/// letters, digits, `-`, `_`, `.`, `@` — nothing that means something in an MQTT topic.
pub fn check_identifier(field: &'static str, value: &str) -> Result<(), StorageError> {
    if value.is_empty() || value.len() > MAX_NAME {
        return Err(StorageError::invalid(
            field,
            format!("must be 1 to {MAX_NAME} characters"),
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@')))
    {
        return Err(StorageError::invalid(
            field,
            format!("may hold only letters, digits, `-`, `_`, `.` and `@` (found {bad:?})"),
        ));
    }
    Ok(())
}

/// Turns a unique-constraint violation into a clear duplicate error.
pub(crate) fn duplicate(what: &'static str, name: &str) -> impl FnOnce(DbErr) -> StorageError {
    let name = name.to_string();
    move |err| match err.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(_)) => StorageError::Duplicate { what, name },
        _ => StorageError::Db(err),
    }
}

/// Refuses to delete `what` `name` while anything is bound to it: `held` lists, for each kind
/// of thing, how many there are and its name in the singular and the plural.
pub(crate) fn unused(
    what: &'static str,
    name: &str,
    held: &[(u64, &str, &str)],
) -> Result<(), StorageError> {
    let held: Vec<String> = held
        .iter()
        .filter(|(n, ..)| *n > 0)
        .map(|(n, one, many)| format!("{n} {}", if *n == 1 { one } else { many }))
        .collect();
    if held.is_empty() {
        return Ok(());
    }
    Err(StorageError::InUse {
        what,
        name: name.to_string(),
        reason: format!(
            "it still has {}: change or delete them first",
            held.join(", ")
        ),
    })
}

/// The entity a new user or device is bound to: the one named (of the scope's tenant), else a
/// customer scope's own. A customer cannot bind anything to another entity.
pub(crate) async fn bound_entity(
    db: &impl ConnectionTrait,
    scope: Scope,
    name: Option<&str>,
) -> Result<Option<i64>, StorageError> {
    let Some(name) = name else {
        return Ok(scope.customer);
    };
    let entity = org_entity::Entity::find()
        .filter(org_entity::Column::TenantId.eq(scope.tenant))
        .filter(org_entity::Column::Name.eq(name))
        .one(db)
        .await?
        .ok_or_else(|| StorageError::not_found("entity", name))?;
    if scope.customer.is_some_and(|c| c != entity.id) {
        return Err(StorageError::Forbidden(
            "a customer can act for its own entity only",
        ));
    }
    Ok(Some(entity.id))
}
