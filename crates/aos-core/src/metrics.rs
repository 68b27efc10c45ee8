//! The node's metrics registry, rendered in the Prometheus text format on `/metrics`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::text::encode;
use prometheus_client::registry::{Metric, Registry};

/// A cloneable handle to the node's registry; every role registers its metrics here.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<(Registry, HashSet<String>)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            registry: Arc::new(Mutex::new((Registry::with_prefix("aos"), HashSet::new()))),
        }
    }
}

impl Metrics {
    /// Registers `metric` as `aos_<name>`. Keep the returned handle (metrics are cheap clones).
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        let mut guard = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let (registry, names) = &mut *guard;
        // A role switched off and on again registers its (same) metrics once more: only the
        // first registration counts, so each family is rendered once.
        if names.insert(name.to_string()) {
            registry.register(name, help, metric);
        }
    }

    /// The registry in the Prometheus / OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let guard = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &guard.0);
        out
    }
}
