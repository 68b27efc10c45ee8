//! The hand-off of device messages to the platform: every PUBLISH of a signed-in device goes to
//! the acquisition queue, durably, before the broker acknowledges it (so an acknowledged message
//! is never lost). Other clients' messages are only routed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aos_core::access::Identity;
use aos_core::acquisition::{ACQUISITION_QUEUE, Acquired};
use aos_core::queue::{QueueError, WorkQueue};
use async_trait::async_trait;
use bytes::Bytes;

use crate::auth::Principal;
use crate::broker::{HookError, PublishHook};
use crate::message::Message;

pub struct AcquisitionHook {
    queue: Arc<dyn WorkQueue>,
    /// `{node id}-{start time}-`: with a counter, a key no other message of the cluster has.
    key_prefix: String,
    next: AtomicU64,
}

impl AcquisitionHook {
    pub fn new(queue: Arc<dyn WorkQueue>, node_id: &str) -> AcquisitionHook {
        AcquisitionHook {
            queue,
            key_prefix: format!("{node_id}-{:x}-", chrono::Utc::now().timestamp_millis()),
            next: AtomicU64::new(1),
        }
    }
}

#[async_trait]
impl PublishHook for AcquisitionHook {
    async fn accept(&self, publisher: &Principal, message: &Message) -> Result<(), HookError> {
        let Some(Identity::Device { uid, tenant }) = &publisher.identity else {
            return Ok(());
        };
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let envelope = Acquired {
            // Zero-padded: keys of one node run sort in arrival order (appends to the index).
            key: format!("{}{n:016x}", self.key_prefix),
            tenant: *tenant,
            device: uid.clone(),
            topic: message.topic.to_string(),
            qos: message.qos as u8,
            received_at_ms: chrono::Utc::now().timestamp_millis(),
            payload: Bytes::copy_from_slice(&message.payload),
        };
        match self.queue.push(ACQUISITION_QUEUE, envelope.encode()).await {
            Ok(_) => Ok(()),
            Err(QueueError::Full(why)) => Err(HookError::Busy(why)),
            Err(err) => Err(HookError::Failed(err.to_string())),
        }
    }
}
