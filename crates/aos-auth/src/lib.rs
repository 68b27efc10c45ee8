//! `aos-auth`: authentication and authorization.
//!
//! Password hashing (argon2id, PHC strings), random secrets with their lookup hashes, roles and
//! the one permission check, the first start's administrator, and the client directory that
//! serves the broker's device and API-key logins from storage.

pub mod accounts;
pub mod bootstrap;
pub mod clients;
pub mod password;
pub mod permissions;
pub mod secret;

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The `[auth]` configuration section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// How often every node reads the credential change log: the longest a device keeps a live
    /// session (and a cached login) after its credentials changed.
    #[serde(with = "humantime_serde")]
    pub credential_poll: Duration,
    /// People's sign-in: token lifetimes, throttling, password hashing (`[auth.sign_in]`).
    pub sign_in: accounts::SignInSettings,
    /// The key that signs access tokens (hex, at least 32 bytes), the same on every node of a
    /// cluster. Unset: a key generated on first start and kept in `DATA_DIR/token.key`.
    pub token_key: Option<String>,
}

impl AuthSettings {
    /// Refuses settings that cannot work (argon2 parameters out of range), naming the key.
    pub fn check(&self) -> Result<(), String> {
        password::hash_password("a check", self.sign_in.hash_params())
            .map(drop)
            .map_err(|e| {
                format!(
                    "auth.sign_in: hash_memory_kib, hash_iterations and hash_parallelism do not make argon2id parameters: {e}"
                )
            })
    }
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            credential_poll: Duration::from_secs(2),
            sign_in: accounts::SignInSettings::default(),
            token_key: None,
        }
    }
}
