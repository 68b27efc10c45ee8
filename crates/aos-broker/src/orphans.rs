//! What a dead broker node leaves behind in a cluster: the wills of its clients' connections.
//! Every node keeps the will of each connection to it in the shared store, under the client id
//! and the node; one node at a time (a lease in the `Kv` seam, taken over within seconds when
//! its holder stops) looks every second for wills whose node is gone — no longer registered,
//! or registered since a restart — and publishes each once its will delay has passed since the
//! death was seen. A delayed will is dropped instead if its client connected to a live node
//! meanwhile (MQTT 5: the session went on); a will without delay was due when the connection
//! died, and goes out whatever the client did since.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aos_core::kv::{Kv, LOOK_LEASE, take_lease};
use aos_core::node::{REGISTRATIONS, Registration};
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::persist::Persistence;

/// The lease of the job.
const LEASE: &str = "jobs.broker-wills";
/// How often the job looks.
const LOOK: Duration = Duration::from_secs(1);

/// Publishes the wills of the clients of dead broker nodes, while this node holds the lease,
/// until `stop`. `node`: this node's id (the lease's holder).
pub async fn run(
    broker: Arc<Broker>,
    persistence: Arc<Persistence>,
    kv: Arc<dyn Kv>,
    node: String,
    stop: CancellationToken,
) {
    // When each will was first seen with its node gone (by client id and that node).
    let mut orphaned: HashMap<(String, String), Instant> = HashMap::new();
    let mut tick = tokio::time::interval(LOOK);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match take_lease(kv.as_ref(), LEASE, &node, LOOK_LEASE).await {
            Ok(true) => {}
            Ok(false) => {
                orphaned.clear();
                continue;
            }
            Err(err) => {
                tracing::warn!(%err, "cannot take the lease of the dead nodes' wills");
                continue;
            }
        }
        // Never guessed from a registry or wills that cannot be read.
        let started = match kv.list(REGISTRATIONS).await {
            Ok(entries) => entries
                .iter()
                .filter_map(|entry| {
                    let node: Registration = serde_json::from_slice(&entry.value).ok()?;
                    let at = chrono::DateTime::parse_from_rfc3339(&node.info.started_at).ok()?;
                    Some((node.info.id, at.timestamp_millis()))
                })
                .collect::<HashMap<String, i64>>(),
            Err(err) => {
                tracing::warn!(%err, "cannot read the node registry; wills wait");
                continue;
            }
        };
        let wills = match persistence.wills().await {
            Ok(wills) => wills,
            Err(err) => {
                tracing::warn!(%err, "cannot read the wills of connected clients");
                continue;
            }
        };
        let now = Instant::now();
        let mut still = HashMap::new();
        let back: HashSet<String> = wills
            .iter()
            .filter(|w| alive(&w.holder, &started))
            .map(|w| w.client_id.clone())
            .collect();
        for will in wills {
            if alive(&will.holder, &started) {
                continue;
            }
            if !will.delay.is_zero() && back.contains(&will.client_id) {
                persistence.will_done(&will);
                continue;
            }
            let key = (will.client_id.clone(), will.holder.clone());
            let since = orphaned.get(&key).copied().unwrap_or(now);
            if now.duration_since(since) < will.delay {
                still.insert(key, since);
                continue;
            }
            tracing::info!(client_id = %will.client_id, node = %will.holder, "the client's broker node is gone: its will is published");
            persistence.will_done(&will);
            broker.publish(will.message);
            broker.metrics.orphan_wills.inc();
        }
        orphaned = still;
    }
}

/// Whether the broker `incarnation` (`<node id>-<start, hex ms>`) still runs: its node is
/// registered, and has not started again since.
fn alive(incarnation: &str, started: &HashMap<String, i64>) -> bool {
    let Some((node, start)) = incarnation.rsplit_once('-') else {
        return false;
    };
    let Ok(start) = i64::from_str_radix(start, 16) else {
        return false;
    };
    // The registry has the node's start in whole seconds; the broker starts after it.
    started.get(node).is_some_and(|&at| at <= start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broker_is_alive_while_its_node_is_registered_and_not_restarted() {
        let started = HashMap::from([("n-1".to_string(), 1_000_000)]);
        assert!(alive(&format!("n-1-{:x}", 1_000_400), &started));
        assert!(
            !alive(&format!("n-1-{:x}", 999_000), &started),
            "restarted since"
        );
        assert!(!alive(&format!("n-2-{:x}", 1_000_400), &started), "gone");
        assert!(!alive("garbage", &started));
    }
}
