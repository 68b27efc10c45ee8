//! The hand-off of device messages to the platform: every PUBLISH of a signed-in device goes to
//! the acquisition queue, durably, before the broker acknowledges it (so an acknowledged message
//! is never lost). Other clients' messages are only routed.

use std::sync::Arc;

use aos_core::access::Identity;
use aos_core::acquisition::{Acquirer, DeviceMessage};
use aos_core::queue::{QueueError, WorkQueue};
use async_trait::async_trait;
use bytes::Bytes;

use crate::auth::Principal;
use crate::broker::{HookError, PublishHook};
use crate::message::Message;

pub struct AcquisitionHook {
    acquirer: Acquirer,
}

impl AcquisitionHook {
    pub fn new(queue: Arc<dyn WorkQueue>, node_id: &str) -> AcquisitionHook {
        AcquisitionHook {
            acquirer: Acquirer::new(queue, node_id, "mqtt"),
        }
    }
}

#[async_trait]
impl PublishHook for AcquisitionHook {
    async fn accept(&self, publisher: &Principal, message: &Message) -> Result<(), HookError> {
        let Some(Identity::Device { uid, tenant }) = &publisher.identity else {
            return Ok(());
        };
        let handed = DeviceMessage {
            tenant: *tenant,
            device: uid,
            topic: &message.topic[..],
            qos: message.qos as u8,
            payload: Bytes::copy_from_slice(&message.payload),
        };
        match self.acquirer.acquire(handed).await {
            Ok(()) => Ok(()),
            Err(QueueError::Full(why)) => Err(HookError::Busy(why)),
            Err(err) => Err(HookError::Failed(err.to_string())),
        }
    }
}
