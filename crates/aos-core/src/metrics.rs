//! The node's metrics registry, rendered in the Prometheus text format on `/metrics`.

use std::sync::{Arc, Mutex};

use prometheus_client::encoding::text::encode;
use prometheus_client::registry::{Metric, Registry};

/// A cloneable handle to the node's registry; every role registers its metrics here.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            registry: Arc::new(Mutex::new(Registry::with_prefix("aos"))),
        }
    }
}

impl Metrics {
    /// Registers `metric` as `aos_<name>`. Keep the returned handle (metrics are cheap clones).
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .register(name, help, metric);
    }

    /// The registry in the Prometheus / OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }
}
