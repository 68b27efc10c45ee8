//! The bus on NATS core subjects: at-most-once, like the seam promises. A node's subjects are
//! `<prefix>.bus.<subject>`; the bus's own `*` / `>` wildcards are NATS's.

use std::time::Duration;

use aos_core::bus::{Bus, BusError, BusMessage, Subscription, validate_pattern, validate_subject};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::Nats;
use crate::names::bus_subject;

/// Messages a subscriber may have waiting before the oldest are dropped (at-most-once).
const BACKLOG: usize = 4096;

/// How long a subscription waits for the server to confirm it.
const CONFIRM: Duration = Duration::from_secs(10);

pub struct NatsBus {
    nats: Nats,
}

impl NatsBus {
    pub fn new(nats: Nats) -> Self {
        NatsBus { nats }
    }

    /// Subscribes, and returns once the server has the interest: a publish that follows (from
    /// this node, or from a node on the same server) reaches it.
    async fn open(&self, pattern: &str, group: Option<&str>) -> Result<Subscription, BusError> {
        validate_pattern(pattern)?;
        let client = &self.nats.client;
        let subject = bus_subject(&self.nats.prefix, pattern);
        let mut subscriber = match group {
            Some(group) => client.queue_subscribe(subject, group.to_string()).await,
            None => client.subscribe(subject).await,
        }
        .map_err(|err| BusError::Backend(err.to_string()))?;
        self.confirm().await?;
        let strip = format!("{}.bus.", self.nats.prefix);
        let (tx, rx) = mpsc::channel(BACKLOG);
        let forward = tokio::spawn(async move {
            while let Some(message) = subscriber.next().await {
                let Some(subject) = message.subject.as_str().strip_prefix(&strip) else {
                    continue;
                };
                let delivered = BusMessage {
                    subject: subject.to_string(),
                    payload: message.payload,
                };
                match tx.try_send(delivered) {
                    Ok(()) => {}
                    // A subscriber that does not keep up loses the oldest news, never the bus.
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::warn!(
                            subject,
                            "a bus subscriber is behind; a message was dropped"
                        );
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
        });
        Ok(Subscription::new(rx, Box::new(AbortOnDrop(forward))))
    }

    /// A round trip through the server on this connection: the server handles a connection's
    /// commands in order, so everything sent before it (subscriptions) is in place after it.
    async fn confirm(&self) -> Result<(), BusError> {
        let client = &self.nats.client;
        let inbox = client.new_inbox();
        let mut echo = client
            .subscribe(inbox.clone())
            .await
            .map_err(|err| BusError::Backend(err.to_string()))?;
        client
            .publish(inbox, Bytes::new())
            .await
            .map_err(|err| BusError::Backend(err.to_string()))?;
        match tokio::time::timeout(CONFIRM, echo.next()).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) | Err(_) => Err(BusError::Backend(
                "the NATS server did not confirm the subscription".into(),
            )),
        }
    }
}

/// Unsubscribes (by ending the forwarding task, which drops the NATS subscriber) when the
/// subscription is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[async_trait]
impl Bus for NatsBus {
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), BusError> {
        validate_subject(subject)?;
        self.nats
            .client
            .publish(bus_subject(&self.nats.prefix, subject), payload)
            .await
            .map_err(|err| BusError::Backend(err.to_string()))
    }

    async fn subscribe(&self, pattern: &str) -> Result<Subscription, BusError> {
        self.open(pattern, None).await
    }

    async fn queue_subscribe(&self, pattern: &str, group: &str) -> Result<Subscription, BusError> {
        self.open(pattern, Some(group)).await
    }

    fn spans_nodes(&self) -> bool {
        true
    }

    fn gaps(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.nats.gaps.clone())
    }
}
