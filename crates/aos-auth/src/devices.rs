//! The device directory served from storage (the `aos_core::access` seam): device credentials
//! checked against their hashes with a cache, and a watcher of the credential change log that
//! drops cached entries and tells the broker which devices' live sessions to close — whichever
//! process (the API, the CLI, another node) made the change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aos_core::access::{DeviceDirectory, DeviceIdentity, DeviceRefusal};
use aos_storage::repo::audit::{self, AuditEvent};
use aos_storage::repo::devices::{self, DeviceLogin, LoginSecret, NewDevice};
use aos_storage::repo::{Scope, classes};
use aos_storage::{Storage, StorageError};
use async_trait::async_trait;
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::{password, secret};

/// The MQTT username with which a new device presents its class's provisioning key (as the
/// password) to register itself.
pub const PROVISION_USERNAME: &str = "provision";

fn unavailable(err: StorageError) -> DeviceRefusal {
    tracing::warn!(%err, "cannot check device credentials");
    DeviceRefusal::Unavailable
}

/// How long a successful check is reused without asking storage (changes end it sooner).
const CACHE_TTL: Duration = Duration::from_secs(300);

/// (username, client id, SHA-256 of the password): a cached successful CONNECT.
type CacheKey = (String, String, [u8; 32]);

pub struct StorageDeviceDirectory {
    storage: Storage,
    cache: Mutex<HashMap<CacheKey, (DeviceIdentity, Instant)>>,
    revoked: broadcast::Sender<String>,
}

impl StorageDeviceDirectory {
    /// Starts the directory, reading the change log every `poll` until `stop` is cancelled.
    pub async fn start(
        storage: Storage,
        poll: Duration,
        stop: CancellationToken,
    ) -> Result<Arc<StorageDeviceDirectory>, StorageError> {
        let mut last = devices::last_credential_change(&storage).await?;
        let (revoked, _) = broadcast::channel(1024);
        let directory = Arc::new(StorageDeviceDirectory {
            storage,
            cache: Mutex::new(HashMap::new()),
            revoked,
        });
        let watched = Arc::downgrade(&directory);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(poll);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let Some(directory) = watched.upgrade() else {
                    return;
                };
                match devices::credential_changes_since(&directory.storage, last).await {
                    Ok(changes) => {
                        for (id, uid) in changes {
                            last = id;
                            directory.forget(&uid);
                            tracing::info!(device = %uid, "device credentials changed: cached logins dropped, live session closed");
                            let _ = directory.revoked.send(uid);
                        }
                    }
                    Err(err) => {
                        tracing::warn!(%err, "cannot read the credential change log; retrying")
                    }
                }
            }
        });
        Ok(directory)
    }

    fn forget(&self, uid: &str) {
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, (identity, _)| identity.uid != uid);
    }

    /// A device presenting its class's provisioning key: registered in that class on its first
    /// CONNECT (its client id becomes its id), accepted as that device afterwards as long as it
    /// has no credentials of its own.
    async fn provision(
        &self,
        client_id: &str,
        key: &[u8],
    ) -> Result<DeviceIdentity, DeviceRefusal> {
        let key = std::str::from_utf8(key).map_err(|_| DeviceRefusal::BadCredentials)?;
        let class = classes::by_provisioning_key(&self.storage, &secret::lookup_hash(key))
            .await
            .map_err(unavailable)?
            .ok_or(DeviceRefusal::BadCredentials)?;
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
                // An invalid id, or one taken in another tenant, cannot be registered.
                let device = devices::create(&self.storage, scope, new)
                    .await
                    .map_err(|_| DeviceRefusal::NotAuthorized)?;
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
            return Err(DeviceRefusal::NotAuthorized);
        }
        Ok(DeviceIdentity {
            uid: device.uid,
            tenant: device.tenant_id,
        })
    }

    async fn verify(login: &DeviceLogin, password: &[u8]) -> Result<bool, DeviceRefusal> {
        let Ok(password) = std::str::from_utf8(password) else {
            return Ok(false);
        };
        match &login.secret {
            LoginSecret::TokenLookup(lookup) => Ok(secret::lookup_hash(password) == *lookup),
            LoginSecret::PasswordHash(hash) => {
                match password::verify_off_thread(password.to_string(), hash.clone()).await {
                    Ok(verified) => Ok(verified),
                    Err(password::PasswordError::MalformedHash(_)) => Ok(false),
                    Err(_) => Err(DeviceRefusal::Unavailable),
                }
            }
        }
    }
}

#[async_trait]
impl DeviceDirectory for StorageDeviceDirectory {
    async fn authenticate(
        &self,
        client_id: &str,
        username: &str,
        password: &[u8],
    ) -> Result<Option<DeviceIdentity>, DeviceRefusal> {
        let key: CacheKey = (
            username.to_string(),
            client_id.to_string(),
            Sha256::digest(password).into(),
        );
        if let Some((identity, at)) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            && at.elapsed() < CACHE_TTL
        {
            return Ok(Some(identity.clone()));
        }
        let identity = if username == PROVISION_USERNAME {
            self.provision(client_id, password).await?
        } else {
            let login = devices::login(&self.storage, username)
                .await
                .map_err(unavailable)?;
            let Some(login) = login else {
                return Ok(None);
            };
            if !Self::verify(&login, password).await? {
                return Err(DeviceRefusal::BadCredentials);
            }
            // A device connects as itself: its client id is its id.
            if login.disabled || login.uid != client_id {
                return Err(DeviceRefusal::NotAuthorized);
            }
            DeviceIdentity {
                uid: login.uid,
                tenant: login.tenant,
            }
        };
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, (identity.clone(), Instant::now()));
        Ok(Some(identity))
    }

    fn revocations(&self) -> broadcast::Receiver<String> {
        self.revoked.subscribe()
    }
}
