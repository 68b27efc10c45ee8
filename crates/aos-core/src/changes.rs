//! "Something people manage has changed": announced on the bus after a change made through
//! any node (the web role's API, the CLI of a cluster), so that every node drops what it cached
//! of formats, interpreters, workflows, classes and credentials at once instead of waiting for
//! its caches to age (which stays the safety net: the bus is at-most-once).

use bytes::Bytes;

use crate::Bus;

/// The subject of the announcement.
pub const SUBJECT: &str = "platform.changed";

/// Tells every node; a bus that cannot take it is logged (caches age anyway).
pub async fn announce(bus: &dyn Bus) {
    if let Err(err) = bus.publish(SUBJECT, Bytes::new()).await {
        tracing::warn!(%err, "cannot announce a change; other nodes see it within their cache time");
    }
}
