//! `GET /api/live`: Server-Sent Events of what changes for the signed-in user — new values,
//! events, device status, command status — read from the workers' `live.{tenant}` bus messages.
//!
//! One bus subscription per node feeds every stream through a broadcast channel; each stream
//! keeps what its caller may see (its tenant, a customer's own devices). While a tenant has
//! watchers, the node marks it in the key-value store (`live.{tenant}`) so that workers publish
//! its updates at all: nobody watching costs ingest nothing.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aos_core::live::{LiveBatch, PATTERN, watch_key};
use aos_core::role::HealthCell;
use aos_core::{Bus, Kv};
use futures_util::stream;
use ntex::util::Bytes;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// How often a stream says it is alive (proxies close silent connections).
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// A stream ends after this long (an access token's default lifetime); the client reconnects
/// with a fresh token, so a revoked user stops receiving within it.
const STREAM_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// How often the watch marks are renewed (they live three times as long).
const WATCH_RENEWAL: Duration = Duration::from_secs(10);
/// Updates a slow stream may fall behind before it skips some.
const BACKLOG: usize = 1024;

/// The node's feed of live updates.
pub struct LiveHub {
    sender: broadcast::Sender<Arc<LiveBatch>>,
    /// Open streams per tenant.
    watchers: Mutex<HashMap<i64, usize>>,
    kv: Arc<dyn Kv>,
}

impl LiveHub {
    /// Subscribes to the bus and keeps the watch marks until `stop`.
    pub async fn start(
        bus: Arc<dyn Bus>,
        kv: Arc<dyn Kv>,
        stop: CancellationToken,
        health: &Arc<HealthCell>,
    ) -> Result<Arc<LiveHub>, aos_core::bus::BusError> {
        let (sender, _) = broadcast::channel(BACKLOG);
        let hub = Arc::new(LiveHub {
            sender,
            watchers: Mutex::new(HashMap::new()),
            kv,
        });
        let mut subscription = bus.subscribe(PATTERN).await?;
        let feeding = hub.clone();
        let stopping = stop.clone();
        health.supervise("the live-update subscription", &stop, async move {
            loop {
                tokio::select! {
                    _ = stopping.cancelled() => break,
                    message = subscription.next() => {
                        let Some(message) = message else { break };
                        match aos_core::commands::decode::<LiveBatch>(&message.payload) {
                            // No receivers is fine: nobody is watching on this node.
                            Ok(batch) => { let _ = feeding.sender.send(Arc::new(batch)); }
                            Err(err) => tracing::warn!(%err, "ignored a malformed live update"),
                        }
                    }
                }
            }
        });
        let renewing = hub.clone();
        let stopping = stop.clone();
        health.supervise("the live-watch renewal", &stop, async move {
            let mut tick = tokio::time::interval(WATCH_RENEWAL);
            loop {
                tokio::select! {
                    _ = stopping.cancelled() => break,
                    _ = tick.tick() => {
                        for tenant in renewing.watched() {
                            renewing.mark(tenant).await;
                        }
                    }
                }
            }
        });
        Ok(hub)
    }

    fn watchers(&self) -> std::sync::MutexGuard<'_, HashMap<i64, usize>> {
        self.watchers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn watched(&self) -> Vec<i64> {
        self.watchers().keys().copied().collect()
    }

    async fn mark(&self, tenant: i64) {
        if let Err(err) = self
            .kv
            .put(
                &watch_key(tenant),
                Default::default(),
                Some(WATCH_RENEWAL * 3),
            )
            .await
        {
            tracing::warn!(%err, tenant, "cannot mark a tenant as watched live");
        }
    }

    pub async fn watch(self: &Arc<Self>, tenant: i64) -> Watch {
        let first = {
            let mut watchers = self.watchers();
            let count = watchers.entry(tenant).or_insert(0);
            *count += 1;
            *count == 1
        };
        if first {
            self.mark(tenant).await;
        }
        Watch {
            hub: self.clone(),
            tenant,
            receiver: self.sender.subscribe(),
        }
    }
}

/// One open stream's place in the hub; leaving it (the stream ends) unregisters it.
pub struct Watch {
    hub: Arc<LiveHub>,
    tenant: i64,
    receiver: broadcast::Receiver<Arc<LiveBatch>>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut watchers = self.hub.watchers();
        if let Some(count) = watchers.get_mut(&self.tenant) {
            *count -= 1;
            if *count == 0 {
                watchers.remove(&self.tenant);
            }
        }
    }
}

/// The SSE frames of a batch, for a caller of `tenant` who sees `visible` devices (None: all).
fn frames(batch: &LiveBatch, tenant: i64, visible: Option<&HashSet<String>>) -> Option<Bytes> {
    if batch.tenant != tenant {
        return None;
    }
    let mut text = String::new();
    for update in &batch.updates {
        if visible.is_some_and(|v| !v.contains(&update.device)) {
            continue;
        }
        let mut data = update.data.clone();
        data["device"] = serde_json::Value::String(update.device.clone());
        text.push_str("event: ");
        text.push_str(update.kind.name());
        text.push_str("\ndata: ");
        text.push_str(&data.to_string());
        text.push_str("\n\n");
    }
    (!text.is_empty()).then(|| Bytes::from(text))
}

struct Streaming {
    watch: Watch,
    visible: Option<HashSet<String>>,
    ends: tokio::time::Instant,
    opened: bool,
}

/// The SSE body of one stream: `: ok` at once, the batches of `watch`'s tenant (only `visible`
/// devices' updates, when given), `: alive` every 15 s, and the end after 15 minutes.
pub fn events(
    watch: Watch,
    visible: Option<HashSet<String>>,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> {
    let state = Streaming {
        watch,
        visible,
        ends: tokio::time::Instant::now() + STREAM_LIFETIME,
        opened: false,
    };
    stream::unfold(state, |mut state| async move {
        if !state.opened {
            state.opened = true;
            return Some((Ok::<_, Infallible>(Bytes::from_static(b": ok\n\n")), state));
        }
        loop {
            let keep_alive = tokio::time::sleep(KEEP_ALIVE);
            let received = tokio::select! {
                _ = tokio::time::sleep_until(state.ends) => return None,
                _ = keep_alive => return Some((Ok(Bytes::from_static(b": alive\n\n")), state)),
                received = state.watch.receiver.recv() => received,
            };
            match received {
                Ok(batch) => {
                    let tenant = state.watch.tenant;
                    if let Some(frames) = frames(&batch, tenant, state.visible.as_ref()) {
                        return Some((Ok(frames), state));
                    }
                }
                // Fell behind: the client refetches on the next update anyway.
                Err(broadcast::error::RecvError::Lagged(skipped)) => {
                    tracing::debug!(skipped, "a live stream skipped updates");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aos_core::live::{LiveKind, LiveUpdate};

    fn batch() -> LiveBatch {
        LiveBatch {
            tenant: 1,
            updates: vec![
                LiveUpdate {
                    kind: LiveKind::Value,
                    device: "a".into(),
                    data: serde_json::json!({"attribute": "t", "value": 1}),
                },
                LiveUpdate {
                    kind: LiveKind::Device,
                    device: "b".into(),
                    data: serde_json::json!({"status": "online"}),
                },
            ],
        }
    }

    #[test]
    fn a_stream_gets_its_tenants_updates_it_may_see() {
        let all = frames(&batch(), 1, None).expect("frames");
        let text = std::str::from_utf8(&all).expect("utf-8");
        assert!(text.starts_with("event: value\ndata: {"));
        assert!(text.contains("\"device\":\"a\""));
        assert!(text.contains("event: device\n"));
        assert!(frames(&batch(), 2, None).is_none(), "another tenant's");
        let only_b: HashSet<String> = ["b".to_string()].into();
        let some = frames(&batch(), 1, Some(&only_b)).expect("frames");
        let text = std::str::from_utf8(&some).expect("utf-8");
        assert!(!text.contains("event: value"));
        assert!(text.contains("\"device\":\"b\""));
    }
}
