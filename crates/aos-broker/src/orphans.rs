//! What a dead broker node leaves behind in a cluster: the wills of its clients' connections,
//! and the persistent sessions it held. Every node keeps the will of each connection to it in
//! the shared store, under its own incarnation (and marks that it may have some); one node at a
//! time (a lease in the `Kv` seam, taken over within seconds when its holder stops) looks every
//! second for marked incarnations that are gone — no longer registered, or registered since a
//! restart — and publishes each of their wills once its will delay has passed since the death
//! was seen. A delayed will is dropped instead if its client's persistent session went on on a
//! live node meanwhile (MQTT 5: the session continued); a will without delay was due when the
//! connection died, and goes out whatever the client did since. Every few seconds the same node
//! ends the persistent sessions a dead node held once their session expiry has passed (nobody
//! else would: a session expires on the node holding it); it finds them in the session records
//! every node follows, by holder. The cost of a look grows with the number of nodes and with
//! what dead nodes left, never with the number of clients of live ones. (Every node reads the
//! registry each second anyway: it tells the broker which other broker nodes there are.)

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aos_core::RoleKind;
use aos_core::kv::{Kv, LOOK_LEASE, take_lease};
use aos_core::node::{Registration, registered};
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::persist::{Persistence, wall_ms};

/// The lease of the job.
const LEASE: &str = "jobs.broker-orphans";
/// How often the job looks at the wills.
const LOOK: Duration = Duration::from_secs(1);
/// How many looks apart it looks at the sessions.
const SESSIONS_EVERY: u32 = 5;
/// How many looks apart every node marks again that it may leave wills.
const MARK_EVERY: u32 = 30;
/// How long a node may take from its broker's start to its first registration (its roles start
/// first, and wait up to 30 s for a NATS cluster electing leaders): until then, and while its
/// registration could still be live, a broker incarnation never seen registered is not taken
/// for dead.
const STARTING: Duration = Duration::from_secs(30);

/// When each orphan was first seen with its node gone, by client id and that node.
type Orphans = HashMap<(String, String), Instant>;

/// Publishes the wills of the clients of dead broker nodes and ends their expired sessions,
/// while this node holds the lease, until `stop`. `node`: this node's id (the lease's holder)
/// and the nodes' heartbeat period.
pub async fn run(
    broker: Arc<Broker>,
    persistence: Arc<Persistence>,
    kv: Arc<dyn Kv>,
    (node, heartbeat): (String, Duration),
    stop: CancellationToken,
) {
    let (mut wills, mut sessions) = (Orphans::new(), Orphans::new());
    let mut registry = Registry::new(heartbeat, broker.incarnation.clone());
    let mut tick = tokio::time::interval(LOOK);
    for look in 0u32.. {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        // (Marked first as the broker started, before it had clients.)
        if look > 0 && look % MARK_EVERY == 0 {
            persistence.mark_holder();
        }
        // Never guessed from a registry that cannot be read.
        let read: Vec<Registration> = match registered(kv.as_ref()).await {
            Ok(read) => read,
            Err(err) => {
                tracing::warn!(%err, "cannot read the node registry; the dead nodes' clients wait");
                registry.unread();
                continue;
            }
        };
        broker.set_peers(
            read.iter()
                .filter(|r| r.running_roles.contains(&RoleKind::Broker))
                .map(|r| r.info.id.clone())
                .collect(),
        );
        registry.read(read.into_iter().filter_map(|r| {
            let at = chrono::DateTime::parse_from_rfc3339(&r.info.started_at).ok()?;
            Some((r.info.id, at.timestamp_millis()))
        }));
        match take_lease(kv.as_ref(), LEASE, &node, LOOK_LEASE).await {
            Ok(true) => {}
            Ok(false) => {
                wills.clear();
                sessions.clear();
                continue;
            }
            Err(err) => {
                tracing::warn!(%err, "cannot take the lease of the dead nodes' wills");
                continue;
            }
        }
        publish_wills(&broker, &persistence, &registry, &mut wills).await;
        if look % SESSIONS_EVERY == 0 {
            end_sessions(&broker, &persistence, &registry, &mut sessions);
        }
    }
}

/// What the node registry says of the broker incarnations, as read every second. A node that
/// restarted since an incarnation began is certain news; a node missing from the registry is
/// taken for dead only once it stayed missing for a heartbeat and more after the registry was
/// last unreadable (nodes whose store was out of reach for a while register again within one
/// heartbeat: their clients are not orphans); a node never seen registered, only once it is
/// older than a start and a registration's lifetime (it registers once its roles are up, and
/// its broker marks itself before that).
struct Registry {
    heartbeat: Duration,
    /// This node's broker incarnation (the one looking: alive).
    own: String,
    /// Each registered node's start (ms since the Unix epoch).
    started: HashMap<String, i64>,
    /// Since when each node known before is missing.
    missing: HashMap<String, Instant>,
}

impl Registry {
    fn new(heartbeat: Duration, own: String) -> Registry {
        Registry {
            heartbeat,
            own,
            started: HashMap::new(),
            missing: HashMap::new(),
        }
    }

    /// The registry was read: these nodes are registered now (id, start in ms since the Unix
    /// epoch).
    fn read(&mut self, nodes: impl IntoIterator<Item = (String, i64)>) {
        let now = Instant::now();
        let registered: HashMap<String, i64> = nodes.into_iter().collect();
        for node in self.started.keys() {
            if !registered.contains_key(node) {
                self.missing.entry(node.clone()).or_insert(now);
            }
        }
        self.missing
            .retain(|node, _| !registered.contains_key(node));
        // A node missing for good is forgotten, its absence kept in `missing`.
        self.started
            .retain(|node, _| !registered.contains_key(node));
        self.started.extend(registered);
    }

    /// The registry could not be read: absences seen so far prove nothing any more.
    fn unread(&mut self) {
        let now = Instant::now();
        for since in self.missing.values_mut() {
            *since = now;
        }
    }

    /// Whether the broker `incarnation` (`<node id>-<start, hex ms>`) still runs: its node is
    /// registered, or not missing for long, and has not started again since.
    fn alive(&self, incarnation: &str) -> bool {
        if incarnation == self.own {
            return true;
        }
        let Some((node, start)) = incarnation.rsplit_once('-') else {
            return false;
        };
        let Ok(start) = i64::from_str_radix(start, 16) else {
            return false;
        };
        if let Some(since) = self.missing.get(node) {
            return since.elapsed() < self.heartbeat + LOOK;
        }
        match self.started.get(node) {
            // The registry has the node's start in whole seconds; the broker starts after it.
            Some(&at) => at <= start,
            None => {
                let young = STARTING + self.heartbeat * 3;
                wall_ms().saturating_sub(start) < i64::try_from(young.as_millis()).unwrap_or(0)
            }
        }
    }
}

/// Publishes the wills of dead nodes, once their delay has passed; forgets a dead node once it
/// left nothing.
async fn publish_wills(
    broker: &Broker,
    persistence: &Persistence,
    registry: &Registry,
    orphaned: &mut Orphans,
) {
    let holders = match persistence.holders().await {
        Ok(holders) => holders,
        Err(err) => {
            tracing::warn!(%err, "cannot read which nodes left wills");
            return;
        }
    };
    let now = Instant::now();
    let mut still = Orphans::new();
    let with_sessions: HashSet<String> = broker.holders_elsewhere().into_iter().collect();
    for holder in holders.into_iter().filter(|h| !registry.alive(h)) {
        let wills = match persistence.wills_of(&holder).await {
            Ok(wills) => wills,
            Err(err) => {
                tracing::warn!(%err, node = %holder, "cannot read the wills a dead node left");
                continue;
            }
        };
        if wills.is_empty() && !with_sessions.contains(&holder) {
            persistence.forget_holder(&holder);
            continue;
        }
        for will in wills {
            let went_on = broker
                .holder_of(&will.client_id)
                .is_some_and(|h| h != holder && registry.alive(&h));
            if !will.delay.is_zero() && went_on {
                persistence.will_done(&will);
                continue;
            }
            let key = (will.client_id.clone(), holder.clone());
            let since = orphaned.get(&key).copied().unwrap_or(now);
            if now.duration_since(since) < will.delay {
                still.insert(key, since);
                continue;
            }
            tracing::info!(client_id = %will.client_id, node = %holder, "the client's broker node is gone: its will is published");
            persistence.will_done(&will);
            broker.publish(will.message);
            broker.metrics.orphan_wills.inc();
        }
    }
    *orphaned = still;
}

/// Ends the persistent sessions whose node is gone once their expiry has passed — counted from
/// their disconnection, or for those connected when their node died, from when that was seen.
fn end_sessions(
    broker: &Broker,
    persistence: &Persistence,
    registry: &Registry,
    orphaned: &mut Orphans,
) {
    let (now, wall) = (Instant::now(), wall_ms());
    let mut still = Orphans::new();
    let dead = broker
        .holders_elsewhere()
        .into_iter()
        .filter(|h| !registry.alive(h));
    for holder in dead {
        for (client_id, meta) in broker.sessions_held_by(&holder) {
            let key = (client_id, holder.clone());
            let seen = orphaned.get(&key).copied().unwrap_or(now);
            let since = match meta.disconnected_at_ms {
                Some(_) => meta.disconnected_at(now, wall),
                None => seen,
            };
            let expired = meta
                .expiry_secs
                .is_some_and(|secs| now.duration_since(since) >= Duration::from_secs(secs));
            if expired {
                tracing::info!(client_id = %key.0, node = %key.1, "the session's broker node is gone and it expired: ended");
                persistence.end_session(&key.0);
            } else {
                still.insert(key, seen);
            }
        }
    }
    *orphaned = still;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration(id: &str, started_ms: i64) -> [(String, i64); 1] {
        [(id.to_string(), started_ms)]
    }

    #[test]
    fn a_broker_is_alive_while_its_node_is_registered_and_not_restarted() {
        let mut registry = Registry::new(Duration::from_secs(3600), "n-0-1".into());
        registry.read(registration("n-1", 1_000_000));
        assert!(registry.alive(&format!("n-1-{:x}", 1_000_400)));
        assert!(
            !registry.alive(&format!("n-1-{:x}", 999_000)),
            "restarted since"
        );
        assert!(
            !registry.alive(&format!("n-2-{:x}", 1_000_400)),
            "never registered, and started long ago"
        );
        assert!(
            registry.alive(&format!("n-2-{:x}", wall_ms())),
            "never registered yet, just started"
        );
        assert!(registry.alive("n-0-1"), "the node looking");
        assert!(!registry.alive("garbage"));
        // Missing from one read: not dead before a heartbeat has passed (a store that was out of
        // reach, its registration not yet renewed).
        registry.read([]);
        assert!(registry.alive(&format!("n-1-{:x}", 1_000_400)));
        registry.unread();
        registry.read(registration("n-1", 1_000_000));
        assert!(registry.alive(&format!("n-1-{:x}", 1_000_400)));
        // Restarted: its earlier run is dead at once.
        registry.read(registration("n-1", 2_000_000));
        assert!(!registry.alive(&format!("n-1-{:x}", 1_000_400)));
    }

    #[test]
    fn a_node_missing_for_a_heartbeat_is_dead() {
        let mut registry = Registry::new(Duration::ZERO, "n-0-1".into());
        registry.read(registration("n-1", 1_000_000));
        registry.read([]);
        registry
            .missing
            .insert("n-1".into(), Instant::now() - LOOK * 2);
        assert!(!registry.alive(&format!("n-1-{:x}", 1_000_400)));
    }
}
