//! The MQTT client-credential seam: how the broker asks the platform who a CONNECT is (a device,
//! or an application with an API key), and learns whose credentials changed (their live sessions
//! must close). `aos-auth` serves it from storage; without it, the broker's configuration alone
//! decides.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// What a CONNECT presents.
#[derive(Clone, Copy, Debug)]
pub struct ClientCredentials<'a> {
    pub client_id: &'a str,
    pub username: Option<&'a str>,
    pub password: &'a [u8],
    /// SHA-256 (hex) of the client certificate the TLS listener verified, if any.
    pub certificate: Option<&'a str>,
}

/// One MQTT topic grant of an API key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TopicGrant {
    /// A topic filter.
    pub filter: String,
    #[serde(default)]
    pub publish: bool,
    #[serde(default)]
    pub subscribe: bool,
}

/// A client the platform knows (kept with the broker's persistent sessions).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Identity {
    /// A device: its id is its MQTT client id and its topic segment.
    Device { uid: String, tenant: i64 },
    /// An application or integration signed in with an API key: it may use the topics its
    /// grants name, and only messages of its own tenant reach it.
    Application {
        key: i64,
        name: String,
        tenant: i64,
        grants: Vec<TopicGrant>,
    },
}

impl Identity {
    pub fn tenant(&self) -> i64 {
        match self {
            Identity::Device { tenant, .. } | Identity::Application { tenant, .. } => *tenant,
        }
    }

    /// Whether a revocation concerns this identity.
    pub fn is_revoked_by(&self, revoked: &Revoked) -> bool {
        match (self, revoked) {
            (Identity::Device { uid, .. }, Revoked::Device(r)) => uid == r,
            (Identity::Application { key, .. }, Revoked::ApiKey(r)) => key == r,
            (identity, Revoked::Tenant(t)) => identity.tenant() == *t,
            _ => false,
        }
    }
}

/// Why a CONNECT is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientRefusal {
    /// Wrong password, token or key.
    BadCredentials,
    /// Valid credentials, but not for this client id, or the device is disabled.
    NotAuthorized,
    /// The directory cannot answer (storage unreachable).
    Unavailable,
}

/// Credentials that changed or were revoked: the live sessions they opened must close.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Revoked {
    /// A device (by id).
    Device(String),
    /// An API key (by its row id).
    ApiKey(i64),
    /// Every device and application of a tenant (by id): the tenant was disabled.
    Tenant(i64),
}

/// A revocation and when it was made: connections authenticated after it used the new
/// credentials, and stay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    pub revoked: Revoked,
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
}

#[async_trait]
pub trait ClientDirectory: Send + Sync + 'static {
    /// Checks a CONNECT's credentials. `Ok(None)`: they belong to nobody the platform knows, so
    /// other sources (the broker's configured users) decide.
    async fn authenticate(
        &self,
        credentials: ClientCredentials<'_>,
    ) -> Result<Option<Identity>, ClientRefusal>;

    /// Credentials that changed or were revoked, as they happen.
    fn revocations(&self) -> broadcast::Receiver<Revocation>;
}

/// The node's client directory, as a node extension.
#[derive(Clone)]
pub struct Clients(pub Arc<dyn ClientDirectory>);
