//! Publishes live updates (`aos_core::live`) once what they tell is stored — only for tenants
//! someone watches (a web node marks them in the key-value store), so that ingest pays nothing
//! for live updates nobody reads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aos_core::live::{self, LiveBatch, LiveUpdate, watch_key};
use aos_core::{Bus, Kv};

/// How long a tenant's watch mark is trusted before it is read again: a new watcher's first
/// updates come within it.
const WATCH_LOOKUP_TTL: Duration = Duration::from_secs(2);

pub struct LiveFeed {
    bus: Arc<dyn Bus>,
    kv: Arc<dyn Kv>,
    watched: Mutex<HashMap<i64, (bool, Instant)>>,
}

impl LiveFeed {
    pub fn new(bus: Arc<dyn Bus>, kv: Arc<dyn Kv>) -> LiveFeed {
        LiveFeed {
            bus,
            kv,
            watched: Mutex::new(HashMap::new()),
        }
    }

    /// Whether anyone watches `tenant` live.
    pub async fn watched(&self, tenant: i64) -> bool {
        let known = self
            .watched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&tenant)
            .filter(|(_, at)| at.elapsed() < WATCH_LOOKUP_TTL)
            .map(|(watched, _)| *watched);
        if let Some(watched) = known {
            return watched;
        }
        let watched = match self.kv.get(&watch_key(tenant)).await {
            Ok(found) => found.is_some(),
            Err(err) => {
                tracing::debug!(%err, "cannot read a live watch mark");
                false
            }
        };
        self.watched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(tenant, (watched, Instant::now()));
        watched
    }

    /// Publishes `updates` of `tenant` if someone watches it (best effort: a lost update is
    /// seen at the viewer's next refresh).
    pub async fn publish(&self, tenant: i64, updates: Vec<LiveUpdate>) {
        if updates.is_empty() || !self.watched(tenant).await {
            return;
        }
        let batch = LiveBatch { tenant, updates };
        if let Err(err) = self
            .bus
            .publish(&live::subject(tenant), aos_core::commands::encode(&batch))
            .await
        {
            tracing::debug!(%err, "cannot publish a live update");
        }
    }
}
