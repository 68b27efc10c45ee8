//! The client directory served from storage (the `aos_core::access` seam): device credentials
//! (password, access token, client certificate), class provisioning keys and API keys, checked
//! against their hashes with a cache, and a watcher of the credential change log that drops
//! cached entries and tells the broker which live sessions to close — whichever process (the
//! API, the CLI, another node) made the change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aos_core::access::{
    ClientCredentials, ClientDirectory, ClientRefusal, Identity, Revocation, Revoked,
};
use aos_storage::repo::audit::{self, AuditEvent};
use aos_storage::repo::devices::{self, DeviceLogin, LoginSecret, NewDevice};
use aos_storage::repo::{Scope, api_keys, classes, tenants};
use aos_storage::{Storage, StorageError};
use async_trait::async_trait;
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::{password, secret};

/// The MQTT username with which a new device presents its class's provisioning key (as the
/// password) to register itself.
pub const PROVISION_USERNAME: &str = "provision";

/// The MQTT username with which an application presents an API key (as the password).
pub const API_KEY_USERNAME: &str = "apikey";

fn unavailable(err: StorageError) -> ClientRefusal {
    tracing::warn!(%err, "cannot check device credentials");
    ClientRefusal::Unavailable
}

/// Registers a device that presented its class's provisioning key (write transactions wait for
/// SQLite's single writer, so many devices registering at once only queue). A storage failure
/// tells the device the server is unavailable (it retries), never that it is not authorized.
async fn register(
    storage: &Storage,
    scope: Scope,
    new: NewDevice,
) -> Result<aos_storage::entity::device::Model, ClientRefusal> {
    match devices::create(storage, scope, new.clone()).await {
        Ok(device) => Ok(device),
        // Registered meanwhile by another connection with the same id.
        Err(StorageError::Duplicate { .. }) => devices::get(storage, scope, &new.uid)
            .await
            // Taken in another tenant.
            .map_err(|_| ClientRefusal::NotAuthorized),
        // An id that cannot be a device's.
        Err(StorageError::Invalid { .. } | StorageError::Forbidden(_)) => {
            Err(ClientRefusal::NotAuthorized)
        }
        Err(err) => Err(unavailable(err)),
    }
}

/// How long a successful check is reused without asking storage (changes end it sooner).
const CACHE_TTL: Duration = Duration::from_secs(300);

/// (username, client id, certificate fingerprint, SHA-256 of the password): a cached successful
/// CONNECT.
type CacheKey = (Option<String>, String, Option<String>, [u8; 32]);

pub struct StorageClientDirectory {
    storage: Storage,
    cache: Mutex<HashMap<CacheKey, (Identity, Instant)>>,
    revoked: broadcast::Sender<Revocation>,
}

impl StorageClientDirectory {
    /// Starts the directory, reading the change log every `poll` until `stop` is cancelled.
    /// Reads the credential change log every `poll`, and at once when a change is announced on
    /// `changes` (see `aos_core::changes`).
    pub async fn start(
        storage: Storage,
        poll: Duration,
        mut changes: Option<aos_core::Subscription>,
        stop: CancellationToken,
    ) -> Result<Arc<StorageClientDirectory>, StorageError> {
        let mut last = devices::last_credential_change(&storage).await?;
        let (revoked, _) = broadcast::channel(1024);
        let directory = Arc::new(StorageClientDirectory {
            storage,
            cache: Mutex::new(HashMap::new()),
            revoked,
        });
        let watched = Arc::downgrade(&directory);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(poll);
            loop {
                let announced = async {
                    match &mut changes {
                        Some(changes) => changes.next().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                    _ = announced => {}
                }
                let Some(directory) = watched.upgrade() else {
                    return;
                };
                match devices::credential_changes_since(&directory.storage, last).await {
                    Ok(changes) => {
                        for (id, revoked) in changes {
                            last = id;
                            directory.forget(&revoked.revoked);
                            tracing::info!(
                                ?revoked,
                                "credentials changed: cached logins dropped, live sessions closed"
                            );
                            let _ = directory.revoked.send(revoked);
                        }
                    }
                    Err(err) => {
                        tracing::warn!(%err, "cannot read the credential change log; retrying");
                    }
                }
            }
        });
        Ok(directory)
    }

    fn forget(&self, revoked: &Revoked) {
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, (identity, _)| !identity.is_revoked_by(revoked));
    }

    /// A device presenting its class's provisioning key: registered in that class on its first
    /// CONNECT (its client id becomes its id), accepted as that device afterwards as long as it
    /// has no credentials of its own.
    async fn provision(&self, client_id: &str, key: &[u8]) -> Result<Identity, ClientRefusal> {
        let key = std::str::from_utf8(key).map_err(|_| ClientRefusal::BadCredentials)?;
        let class = classes::by_provisioning_key(&self.storage, &secret::lookup_hash(key))
            .await
            .map_err(unavailable)?
            .ok_or(ClientRefusal::BadCredentials)?;
        let scope = Scope::tenant(class.tenant_id);
        let device = match devices::get(&self.storage, scope, client_id).await {
            Ok(device) => device,
            Err(StorageError::NotFound { .. }) => {
                let new = NewDevice {
                    uid: client_id.to_string(),
                    name: client_id.to_string(),
                    class: class.name.clone(),
                    ..Default::default()
                };
                let device = register(&self.storage, scope, new).await?;
                let registered = AuditEvent {
                    tenant: Some(class.tenant_id),
                    actor: format!("device:{client_id}"),
                    action: "device.register".into(),
                    object_kind: Some("device".into()),
                    object_id: Some(client_id.to_string()),
                    success: true,
                    detail: serde_json::json!({ "provisioned_by_class": class.name }),
                    ..Default::default()
                };
                audit::record(&self.storage, registered)
                    .await
                    .map_err(unavailable)?;
                tracing::info!(device = %client_id, class = %class.name, "device registered with its class's provisioning key");
                device
            }
            Err(err) => return Err(unavailable(err)),
        };
        // The key speaks only for devices of its class that have no credentials of their own:
        // it cannot take over a device that signs in with a password or token.
        let own_credentials = devices::credentials_of(&self.storage, &device)
            .await
            .map_err(unavailable)?;
        if device.class_id != class.id || device.disabled || !own_credentials.is_empty() {
            return Err(ClientRefusal::NotAuthorized);
        }
        Ok(Identity::Device {
            uid: device.uid,
            tenant: device.tenant_id,
        })
    }

    async fn verify(login: &DeviceLogin, password: &[u8]) -> Result<bool, ClientRefusal> {
        let Ok(password) = std::str::from_utf8(password) else {
            return Ok(false);
        };
        match &login.secret {
            LoginSecret::TokenLookup(lookup) => Ok(secret::lookup_hash(password) == *lookup),
            LoginSecret::Certificate => Ok(true),
            LoginSecret::PasswordHash(hash) => {
                match password::verify_off_thread(password.to_string(), hash.clone()).await {
                    Ok(verified) => Ok(verified),
                    Err(password::PasswordError::MalformedHash(_)) => Ok(false),
                    Err(_) => Err(ClientRefusal::Unavailable),
                }
            }
        }
    }

    /// An application presenting an API key: the key's tenant and topic grants, until the key
    /// expires.
    async fn application(&self, key: &[u8]) -> Result<(Identity, Instant), ClientRefusal> {
        let key = std::str::from_utf8(key).map_err(|_| ClientRefusal::BadCredentials)?;
        let key = api_keys::by_hash(&self.storage, &secret::lookup_hash(key))
            .await
            .map_err(unavailable)?
            .ok_or(ClientRefusal::BadCredentials)?;
        let mut until = Instant::now() + CACHE_TTL;
        if let Some(expires) = key.expires_at {
            let left = (expires - chrono::Utc::now()).to_std().unwrap_or_default();
            until = until.min(Instant::now() + left);
        }
        let identity = Identity::Application {
            key: key.id,
            grants: api_keys::grants(&key),
            name: key.name,
            tenant: key.tenant_id,
        };
        Ok((identity, until))
    }

    /// A device signing in with its password, its access token or its client certificate.
    fn device(login: DeviceLogin, client_id: &str) -> Result<Identity, ClientRefusal> {
        // A device connects as itself: its client id is its id.
        if login.disabled || login.uid != client_id {
            return Err(ClientRefusal::NotAuthorized);
        }
        Ok(Identity::Device {
            uid: login.uid,
            tenant: login.tenant,
        })
    }

    /// Who the credentials name, and until when that answer may be reused.
    async fn identify(
        &self,
        credentials: ClientCredentials<'_>,
    ) -> Result<Option<(Identity, Instant)>, ClientRefusal> {
        let cached_until = Instant::now() + CACHE_TTL;
        let client_id = credentials.client_id;
        // A registered client certificate names its device, whatever the username says.
        if let Some(fingerprint) = credentials.certificate
            && let Some(login) = devices::login_by_certificate(&self.storage, fingerprint)
                .await
                .map_err(unavailable)?
        {
            return Ok(Some((Self::device(login, client_id)?, cached_until)));
        }
        let Some(username) = credentials.username else {
            return Ok(None);
        };
        let password = credentials.password;
        match username {
            PROVISION_USERNAME => Ok(Some((
                self.provision(client_id, password).await?,
                cached_until,
            ))),
            API_KEY_USERNAME => Ok(Some(self.application(password).await?)),
            _ => {
                let login = devices::login(&self.storage, username)
                    .await
                    .map_err(unavailable)?;
                let Some(login) = login else {
                    return Ok(None);
                };
                if !Self::verify(&login, password).await? {
                    return Err(ClientRefusal::BadCredentials);
                }
                Ok(Some((Self::device(login, client_id)?, cached_until)))
            }
        }
    }
}

#[async_trait]
impl ClientDirectory for StorageClientDirectory {
    async fn authenticate(
        &self,
        credentials: ClientCredentials<'_>,
    ) -> Result<Option<Identity>, ClientRefusal> {
        let key: CacheKey = (
            credentials.username.map(String::from),
            credentials.client_id.to_string(),
            credentials.certificate.map(String::from),
            Sha256::digest(credentials.password).into(),
        );
        if let Some((identity, until)) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            && Instant::now() < *until
        {
            return Ok(Some(identity.clone()));
        }
        let Some((identity, until)) = self.identify(credentials).await? else {
            return Ok(None);
        };
        // A disabled tenant's clients stay out (its change log entry closed their sessions).
        if tenants::is_disabled(&self.storage, identity.tenant())
            .await
            .map_err(unavailable)?
        {
            return Err(ClientRefusal::NotAuthorized);
        }
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, (identity.clone(), until));
        Ok(Some(identity))
    }

    fn revocations(&self) -> broadcast::Receiver<Revocation> {
        self.revoked.subscribe()
    }
}
