//! The device-credential seam: how the broker asks the platform whether a CONNECT is a known
//! device, and learns which devices' credentials changed (their live sessions must close).
//! `aos-auth` serves it from storage; without it, the broker's configuration alone decides.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::broadcast;

/// A device that proved who it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceIdentity {
    /// The device's id: its MQTT client id and its topic segment.
    pub uid: String,
    pub tenant: i64,
}

/// Why a device's CONNECT is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceRefusal {
    /// Wrong password or token.
    BadCredentials,
    /// Valid credentials, but not for this client id, or the device is disabled.
    NotAuthorized,
    /// The directory cannot answer (storage unreachable).
    Unavailable,
}

#[async_trait]
pub trait DeviceDirectory: Send + Sync + 'static {
    /// Checks a CONNECT's credentials. `Ok(None)`: `username` belongs to no device, so other
    /// sources (the broker's configured users) decide.
    async fn authenticate(
        &self,
        client_id: &str,
        username: &str,
        password: &[u8],
    ) -> Result<Option<DeviceIdentity>, DeviceRefusal>;

    /// Uids of devices whose credentials changed or were revoked, as they happen.
    fn revocations(&self) -> broadcast::Receiver<String>;
}

/// The node's device directory, as a node extension.
#[derive(Clone)]
pub struct Devices(pub Arc<dyn DeviceDirectory>);
