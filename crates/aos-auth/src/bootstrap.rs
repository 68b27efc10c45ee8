//! What a platform needs before anyone can sign in: the built-in roles, and on the very first
//! start a system administrator.

use aos_storage::repo::audit::{self, AuditEvent};
use aos_storage::repo::roles::{self, RoleGrants, SYSTEM_ADMINISTRATOR};
use aos_storage::repo::users::{self, NewUser};
use aos_storage::{Storage, StorageError};

use crate::password::{self, HashParams};
use crate::permissions::builtin_roles;

/// The login of the administrator created on the first start.
pub const FIRST_ADMIN: &str = "admin";

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Password(#[from] password::PasswordError),
    #[error(
        "AOS_ADMIN_PASSWORD must have at least {} characters",
        password::MIN_CHARS
    )]
    WeakPassword,
}

/// The first administrator's password, when this start created one.
pub enum FirstAdmin {
    /// From `AOS_ADMIN_PASSWORD`.
    Given,
    /// Generated: to be shown once.
    Generated(String),
}

/// Writes the built-in roles (new definitions apply to existing databases).
pub async fn ensure_roles(storage: &Storage) -> Result<(), StorageError> {
    let roles: Vec<(&str, RoleGrants)> = builtin_roles()
        .into_iter()
        .map(|(name, grants)| (name, grants.stored()))
        .collect();
    roles::ensure_builtin(storage, &roles).await
}

/// When the platform has no system administrator yet, creates `admin` with `admin_password`
/// (or a generated one, returned to be shown once), hashed with `params`.
pub async fn first_admin(
    storage: &Storage,
    admin_password: Option<String>,
    params: HashParams,
) -> Result<Option<FirstAdmin>, BootstrapError> {
    ensure_roles(storage).await?;
    if !users::list_platform(storage).await?.is_empty() {
        return Ok(None);
    }
    let (password, first) = match admin_password {
        Some(p) if !password::long_enough(&p) => return Err(BootstrapError::WeakPassword),
        Some(p) => (p, FirstAdmin::Given),
        None => {
            let p = password::generate();
            (p.clone(), FirstAdmin::Generated(p))
        }
    };
    let hash = password::hash_off_thread(password, params).await?;
    users::create_platform(
        storage,
        NewUser {
            login: FIRST_ADMIN.into(),
            name: "Administrator".into(),
            password_hash: hash,
            ..Default::default()
        },
    )
    .await?;
    roles::assign(storage, FIRST_ADMIN, SYSTEM_ADMINISTRATOR).await?;
    audit::record(
        storage,
        AuditEvent {
            actor: "system".into(),
            action: "user.create".into(),
            object_kind: Some("user".into()),
            object_id: Some(FIRST_ADMIN.into()),
            success: true,
            detail: serde_json::json!({ "first_start": true }),
            ..Default::default()
        },
    )
    .await?;
    Ok(Some(first))
}
