//! Signing in: a short-lived JWT access token and a rotating, revocable refresh token (stored
//! hashed); sign-out, password change and administrator reset; failed sign-ins throttled per
//! account and per client address; every outcome in the audit log.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use aos_core::Kv;
use aos_core::kv::KvError;

use aos_storage::entity::app_user;
use aos_storage::repo::audit::{self, AuditEvent};
use aos_storage::repo::{roles, tenants, tokens, users};
use aos_storage::{Storage, StorageError};
use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::password::{self, HashParams, PasswordError};
use crate::permissions::{Access, Denied, Grants, ObjectKind, Operation, Subject, authorize};
use crate::secret;

/// Sign-in parameters (`[auth.sign_in]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignInSettings {
    /// Lifetime of an access token.
    #[serde(with = "humantime_serde")]
    pub access_ttl: Duration,
    /// Lifetime of a refresh token (each refresh issues a new one).
    #[serde(with = "humantime_serde")]
    pub refresh_ttl: Duration,
    /// Failed sign-ins of one account, within `failure_window`, before it is held back.
    pub max_failures: u32,
    /// Failed sign-ins from one client address, within `failure_window`, before it is held back.
    pub max_failures_per_address: u32,
    /// How long failures count, and how long a held-back account or address waits.
    #[serde(with = "humantime_serde")]
    pub failure_window: Duration,
    /// argon2id memory (KiB), iterations and lanes for new password hashes.
    pub hash_memory_kib: u32,
    pub hash_iterations: u32,
    pub hash_parallelism: u32,
}

impl Default for SignInSettings {
    fn default() -> Self {
        let hash = HashParams::default();
        SignInSettings {
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            max_failures: 5,
            max_failures_per_address: 20,
            failure_window: Duration::from_secs(15 * 60),
            hash_memory_kib: hash.memory_kib,
            hash_iterations: hash.iterations,
            hash_parallelism: hash.parallelism,
        }
    }
}

impl SignInSettings {
    pub fn hash_params(&self) -> HashParams {
        HashParams {
            memory_kib: self.hash_memory_kib,
            iterations: self.hash_iterations,
            parallelism: self.hash_parallelism,
        }
    }
}

/// What a successful sign-in or refresh returns.
#[derive(Clone, Debug, Serialize)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: String,
    /// Seconds the access token is valid.
    pub expires_in: u64,
}

/// The claims of an access token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user's login.
    pub sub: String,
    pub uid: i64,
    pub tenant: Option<i64>,
    pub customer: Option<i64>,
    pub iat: i64,
    pub exp: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error("wrong login or password")]
    BadCredentials,
    #[error("too many failed sign-ins: try again in {} s", retry_after.as_secs().max(1))]
    Throttled { retry_after: Duration },
    #[error("this account (or its tenant) is disabled or locked: ask an administrator")]
    Disabled,
    #[error("the token is invalid or has expired: sign in again")]
    InvalidToken,
    #[error(
        "the new password must have at least {} characters",
        password::MIN_CHARS
    )]
    WeakPassword,
    #[error("not allowed: {0}")]
    Denied(#[from] Denied),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Password(#[from] PasswordError),
}

/// Failed attempts of one key (an account or an address) within the current window.
#[derive(Serialize, Deserialize)]
struct Failures {
    count: u32,
    /// When the window began (milliseconds since the Unix epoch).
    since_ms: i64,
}

/// Failed sign-ins per account and per address, within a window, in the key-value store: every
/// node of a cluster counts the same failures. A store that cannot be read does not stop
/// sign-ins (the password is still checked); it is logged.
struct Throttle {
    kv: Arc<dyn Kv>,
}

/// The key of an account's or an address's failures (hashed: logins and addresses hold
/// characters keys may not).
fn throttle_key(what: &str) -> String {
    format!("signin.{}", secret::lookup_hash(what))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Throttle {
    async fn failures(&self, key: &str) -> Option<(Failures, u64)> {
        match self.kv.get(&throttle_key(key)).await {
            Ok(entry) => {
                let entry = entry?;
                let failures = serde_json::from_slice(&entry.value).ok()?;
                Some((failures, entry.revision))
            }
            Err(err) => {
                tracing::warn!(%err, "cannot read sign-in failures; not throttling");
                None
            }
        }
    }

    async fn retry_after(&self, key: &str, max: u32, window: Duration) -> Option<Duration> {
        let (f, _) = self.failures(key).await?;
        let elapsed = Duration::from_millis(u64::try_from(now_ms() - f.since_ms).unwrap_or(0));
        (f.count >= max && elapsed < window).then(|| window - elapsed)
    }

    /// Counts one failure (compare-and-set: failures on several nodes at once all count).
    async fn failed(&self, key: &str, window: Duration) {
        let ttl = aos_core::kv::ttl(window);
        let at = now_ms();
        let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        for _ in 0..8 {
            let current = self.failures(key).await;
            let next = match &current {
                Some((f, _)) if at - f.since_ms < window_ms => Failures {
                    count: f.count + 1,
                    since_ms: f.since_ms,
                },
                _ => Failures {
                    count: 1,
                    since_ms: at,
                },
            };
            let value = bytes::Bytes::from(serde_json::to_vec(&next).unwrap_or_default());
            let written = match current {
                Some((_, revision)) => {
                    self.kv
                        .update(&throttle_key(key), value, revision, Some(ttl))
                        .await
                }
                None => self.kv.create(&throttle_key(key), value, Some(ttl)).await,
            };
            match written {
                Ok(_) => return,
                Err(KvError::RevisionMismatch { .. } | KvError::Exists(_)) => continue,
                Err(err) => {
                    tracing::warn!(%err, "cannot count a failed sign-in");
                    return;
                }
            }
        }
    }

    async fn clear(&self, key: &str) {
        if let Err(err) = self.kv.delete(&throttle_key(key)).await {
            tracing::warn!(%err, "cannot clear sign-in failures");
        }
    }
}

/// Users' sign-in, tokens and passwords.
pub struct Accounts {
    storage: Storage,
    settings: SignInSettings,
    encoding: EncodingKey,
    decoding: DecodingKey,
    throttle: Throttle,
    /// Verified against when the login is unknown, so both cases take as long.
    decoy_hash: String,
}

fn event(user: Option<&app_user::Model>, login: &str, action: &str, success: bool) -> AuditEvent {
    AuditEvent {
        tenant: user.and_then(|u| u.tenant_id),
        actor: format!("user:{login}"),
        action: action.into(),
        object_kind: Some("user".into()),
        object_id: Some(login.into()),
        success,
        detail: serde_json::Value::Null,
        ..Default::default()
    }
}

async fn verify(password: String, hash: String) -> bool {
    password::verify_off_thread(password, hash)
        .await
        .unwrap_or(false)
}

impl Accounts {
    /// The argon2id parameters new passwords are hashed with.
    pub fn hash_params(&self) -> HashParams {
        self.settings.hash_params()
    }

    /// `key` signs access tokens (HS256): at least 32 bytes, the same on every node. Failed
    /// sign-ins are counted in `kv` (shared by the nodes of a cluster).
    pub async fn new(
        storage: Storage,
        settings: SignInSettings,
        key: &[u8],
        kv: Arc<dyn Kv>,
    ) -> Result<Accounts, SignInError> {
        let decoy_hash =
            password::hash_off_thread(secret::generate(), settings.hash_params()).await?;
        Ok(Accounts {
            storage,
            encoding: EncodingKey::from_secret(key),
            decoding: DecodingKey::from_secret(key),
            settings,
            throttle: Throttle { kv },
            decoy_hash,
        })
    }

    /// Signs `login` in with `password` from `client`.
    pub async fn sign_in(
        &self,
        login: &str,
        password: &str,
        client: Option<IpAddr>,
    ) -> Result<Tokens, SignInError> {
        let window = self.settings.failure_window;
        let account_key = format!("login:{login}");
        let address_key = client.map(|a| format!("addr:{a}"));
        let held = self
            .throttle
            .retry_after(&account_key, self.settings.max_failures, window)
            .await;
        let held = match (held, &address_key) {
            (None, Some(k)) => {
                self.throttle
                    .retry_after(k, self.settings.max_failures_per_address, window)
                    .await
            }
            (held, _) => held,
        };
        if let Some(retry_after) = held {
            let mut refused = event(None, login, "sign_in.throttled", false);
            refused.client_addr = client.map(|a| a.to_string());
            audit::record(&self.storage, refused).await?;
            return Err(SignInError::Throttled { retry_after });
        }
        let user = match users::by_login(&self.storage, login).await {
            Ok(user) => Some(user),
            Err(StorageError::NotFound { .. }) => None,
            Err(err) => return Err(err.into()),
        };
        let hash = user
            .as_ref()
            .map_or(self.decoy_hash.clone(), |u| u.password_hash.clone());
        let verified = verify(password.to_string(), hash).await && user.is_some();
        let mut record = event(user.as_ref(), login, "sign_in", verified);
        record.client_addr = client.map(|a| a.to_string());
        audit::record(&self.storage, record).await?;
        let Some(user) = user.filter(|_| verified) else {
            self.throttle.failed(&account_key, window).await;
            if let Some(key) = address_key {
                self.throttle.failed(&key, window).await;
            }
            return Err(SignInError::BadCredentials);
        };
        let tenant_disabled = match user.tenant_id {
            Some(tenant) => tenants::is_disabled(&self.storage, tenant).await?,
            None => false,
        };
        if Self::shut_out(&user, tenant_disabled) {
            return Err(SignInError::Disabled);
        }
        self.throttle.clear(&account_key).await;
        let refresh = secret::generate();
        tokens::insert(
            &self.storage,
            user.id,
            secret::lookup_hash(&refresh),
            secret::generate(),
            self.refresh_expiry(),
        )
        .await?;
        self.tokens_for(&user, refresh).await
    }

    /// Whether `user` may not act: disabled or locked, or its tenant disabled.
    fn shut_out(user: &app_user::Model, tenant_disabled: bool) -> bool {
        user.disabled || user.locked || tenant_disabled
    }

    fn refresh_expiry(&self) -> chrono::DateTime<Utc> {
        Utc::now()
            + chrono::Duration::from_std(self.settings.refresh_ttl)
                .unwrap_or(chrono::Duration::days(30))
    }

    async fn tokens_for(
        &self,
        user: &app_user::Model,
        refresh: String,
    ) -> Result<Tokens, SignInError> {
        let now = Utc::now().timestamp();
        let ttl = self.settings.access_ttl.as_secs();
        let claims = Claims {
            sub: user.login.clone(),
            uid: user.id,
            tenant: user.tenant_id,
            customer: users::customer_of(&self.storage, user).await?,
            iat: now,
            exp: now + ttl as i64,
        };
        let access_token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
                .map_err(|_| SignInError::InvalidToken)?;
        Ok(Tokens {
            access_token,
            refresh_token: refresh,
            expires_in: ttl,
        })
    }

    /// Trades a refresh token for new tokens. The old refresh token stops working; presenting it
    /// again revokes every token issued from the same sign-in.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Tokens, SignInError> {
        let Some(old) = tokens::by_hash(&self.storage, &secret::lookup_hash(refresh_token)).await?
        else {
            return Err(SignInError::InvalidToken);
        };
        let (user, tenant_disabled) = users::by_id_with_tenant(&self.storage, old.user_id).await?;
        if old.revoked_at.is_some() {
            // A rotated-away or signed-out token again: a replay. End the whole sign-in.
            let revoked = tokens::revoke_family(&self.storage, &old.family).await?;
            let mut reuse = event(Some(&user), &user.login, "token.reuse", false);
            reuse.detail = serde_json::json!({ "revoked": revoked });
            audit::record(&self.storage, reuse).await?;
            return Err(SignInError::InvalidToken);
        }
        if old.expires_at < Utc::now() {
            return Err(SignInError::InvalidToken);
        }
        if Self::shut_out(&user, tenant_disabled) {
            return Err(SignInError::Disabled);
        }
        let refresh = secret::generate();
        tokens::rotate(
            &self.storage,
            &old,
            secret::lookup_hash(&refresh),
            self.refresh_expiry(),
        )
        .await?
        .ok_or(SignInError::InvalidToken)?;
        self.tokens_for(&user, refresh).await
    }

    /// Revokes the refresh token (and its family): the session ends.
    pub async fn sign_out(&self, refresh_token: &str) -> Result<(), SignInError> {
        let Some(token) =
            tokens::by_hash(&self.storage, &secret::lookup_hash(refresh_token)).await?
        else {
            return Err(SignInError::InvalidToken);
        };
        tokens::revoke_family(&self.storage, &token.family).await?;
        let user = users::by_id(&self.storage, token.user_id).await?;
        audit::record(
            &self.storage,
            event(Some(&user), &user.login, "sign_out", true),
        )
        .await?;
        Ok(())
    }

    /// Checks an access token's signature and expiry.
    pub fn verify(&self, access_token: &str) -> Result<Claims, SignInError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        jsonwebtoken::decode::<Claims>(access_token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|_| SignInError::InvalidToken)
    }

    /// The permission subject of a verified token: the user's current roles (a disabled user's
    /// tokens stop working at once).
    pub async fn subject(&self, claims: &Claims) -> Result<Subject, SignInError> {
        let (user, tenant_disabled) = users::by_id_with_tenant(&self.storage, claims.uid)
            .await
            .map_err(|_| SignInError::InvalidToken)?;
        if Self::shut_out(&user, tenant_disabled) {
            return Err(SignInError::Disabled);
        }
        let mut grants = Grants::default();
        for role in roles::of_user(&self.storage, user.id).await? {
            grants.merge(&Grants::from_stored(role.permissions, role.actions));
        }
        Ok(Subject {
            customer: users::customer_of(&self.storage, &user).await?,
            login: user.login,
            tenant: user.tenant_id,
            grants,
        })
    }

    /// The signed-in user changes its own password; every refresh token of it is revoked.
    pub async fn change_password(
        &self,
        login: &str,
        old: &str,
        new: &str,
    ) -> Result<(), SignInError> {
        let user = users::by_login(&self.storage, login)
            .await
            .map_err(|_| SignInError::BadCredentials)?;
        if !verify(old.to_string(), user.password_hash.clone()).await {
            audit::record(
                &self.storage,
                event(Some(&user), login, "user.password", false),
            )
            .await?;
            return Err(SignInError::BadCredentials);
        }
        self.set_password(&user, new, None).await?;
        audit::record(
            &self.storage,
            event(Some(&user), login, "user.password", true),
        )
        .await?;
        Ok(())
    }

    /// An administrator sets a new, generated password for `login` (returned to hand over).
    pub async fn reset_password(
        &self,
        admin: &Subject,
        login: &str,
    ) -> Result<String, SignInError> {
        let user = users::by_login(&self.storage, login).await?;
        let access = authorize(admin, ObjectKind::Users, Operation::Update, user.tenant_id)?;
        let password = password::generate();
        self.set_password(&user, &password, Some(access)).await?;
        let mut record = event(Some(&user), login, "user.password_reset", true);
        record.actor = format!("user:{}", admin.login);
        audit::record(&self.storage, record).await?;
        Ok(password)
    }

    async fn set_password(
        &self,
        user: &app_user::Model,
        new: &str,
        access: Option<Access>,
    ) -> Result<(), SignInError> {
        if !password::long_enough(new) {
            return Err(SignInError::WeakPassword);
        }
        let scope = match access {
            Some(Access::Tenant(scope)) => Some(scope),
            _ => None,
        };
        let hashed =
            password::hash_off_thread(new.to_string(), self.settings.hash_params()).await?;
        users::set_password(&self.storage, scope, &user.login, hashed).await?;
        tokens::revoke_user(&self.storage, user.id).await?;
        Ok(())
    }
}
