//! The key-value seam: small shared state with revisions, TTL and compare-and-set — node
//! registration, leases for jobs that must run once per cluster, and similar coordination.
//!
//! The contract every backend keeps (and a subject-based store such as NATS JetStream KV can):
//!
//! - keys are dot-separated tokens of `A-Z a-z 0-9 - _ =` (`nodes.<id>`, `live.<tenant>`,
//!   `jobs.retention`), and [`Kv::list`] lists the keys below a token prefix;
//! - a TTL is whole seconds, at least one ([`ttl`] rounds a period up to one);
//! - every write returns the entry's new revision; revisions only grow.

mod memory;

pub use memory::MemoryKv;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvEntry {
    pub key: String,
    pub value: Bytes,
    pub revision: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KvError {
    #[error(
        "invalid key `{0}`: use dot-separated tokens of A-Z a-z 0-9 - _ =, at most 1024 characters"
    )]
    InvalidKey(String),
    #[error("invalid time to live {0:?}: use whole seconds, at least one")]
    InvalidTtl(Duration),
    #[error("key `{0}` already exists")]
    Exists(String),
    #[error("key `{key}` is at revision {current:?}, not the expected {expected}")]
    RevisionMismatch {
        key: String,
        expected: u64,
        current: Option<u64>,
    },
    #[error("key-value backend error: {0}")]
    Backend(String),
}

#[async_trait]
pub trait Kv: Send + Sync + 'static {
    /// The live entry at `key`, if any (an expired entry is absent).
    async fn get(&self, key: &str) -> Result<Option<KvEntry>, KvError>;
    /// Writes `value` unconditionally; `ttl` makes the entry expire unless written again.
    async fn put(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<u64, KvError>;
    /// Writes only if no live entry exists ([`KvError::Exists`] otherwise).
    async fn create(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<u64, KvError>;
    /// Writes only if the live entry is at `revision` ([`KvError::RevisionMismatch`] otherwise).
    async fn update(
        &self,
        key: &str,
        value: Bytes,
        revision: u64,
        ttl: Option<Duration>,
    ) -> Result<u64, KvError>;
    /// Removes the entry; removing an absent key is not an error.
    async fn delete(&self, key: &str) -> Result<(), KvError>;
    /// Removes the entry only if it is at `revision` (releasing a lease one still holds).
    async fn delete_if(&self, key: &str, revision: u64) -> Result<(), KvError>;
    /// Live entries whose key is below the token prefix `prefix` (`nodes` lists `nodes.a`,
    /// `nodes.b.c`, not `nodes` nor `nodes-x`), in key order.
    async fn list(&self, prefix: &str) -> Result<Vec<KvEntry>, KvError>;
}

/// Checks a key (or a list prefix): dot-separated non-empty tokens of `A-Z a-z 0-9 - _ =`.
pub fn validate_key(key: &str) -> Result<(), KvError> {
    let ok = key.len() <= 1024
        && key.split('.').all(|token| {
            !token.is_empty()
                && token
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '='))
        });
    if ok {
        Ok(())
    } else {
        Err(KvError::InvalidKey(key.to_string()))
    }
}

/// Checks a time to live: whole seconds, at least one.
pub fn validate_ttl(ttl: Option<Duration>) -> Result<(), KvError> {
    match ttl {
        Some(t) if t.subsec_nanos() != 0 || t < Duration::from_secs(1) => {
            Err(KvError::InvalidTtl(t))
        }
        _ => Ok(()),
    }
}

/// The time to live for something renewed every `period`-ish: `period` rounded up to whole
/// seconds, at least one.
pub fn ttl(period: Duration) -> Duration {
    let whole = period.as_secs() + u64::from(period.subsec_nanos() > 0);
    Duration::from_secs(whole.max(1))
}

/// The lease of a job that looks every second (command offers, workflow schedules): its holder
/// renews it at each look; when the holder stops, another node takes the job over within it.
pub const LOOK_LEASE: Duration = Duration::from_secs(3);

/// Takes the lease `key` for `holder` until `ttl` (whole seconds, see [`ttl`])
/// from now, or renews it if `holder` has it already; false when another holder has it.
pub async fn take_lease(
    kv: &dyn Kv,
    key: &str,
    holder: &str,
    ttl: Duration,
) -> Result<bool, KvError> {
    let value = Bytes::from(holder.to_string());
    match kv.create(key, value.clone(), Some(ttl)).await {
        Ok(_) => return Ok(true),
        Err(KvError::Exists(_)) => {}
        Err(err) => return Err(err),
    }
    let Some(held) = kv.get(key).await? else {
        // Expired in between: the next period tries again.
        return Ok(false);
    };
    if held.value != value {
        return Ok(false);
    }
    match kv.update(key, value, held.revision, Some(ttl)).await {
        Ok(_) => Ok(true),
        Err(KvError::RevisionMismatch { .. }) => Ok(false),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_dot_separated_tokens() {
        for good in ["nodes.aos-1", "live.42", "jobs.retention", "a=b"] {
            assert!(validate_key(good).is_ok(), "{good}");
        }
        for bad in ["", "nodes/", "a..b", ".a", "a.", "a b", "a*", "ü"] {
            assert!(validate_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ttls_are_whole_seconds() {
        assert_eq!(ttl(Duration::from_millis(900)), Duration::from_secs(1));
        assert_eq!(ttl(Duration::from_millis(2100)), Duration::from_secs(3));
        assert_eq!(ttl(Duration::ZERO), Duration::from_secs(1));
        assert!(validate_ttl(Some(Duration::from_millis(1500))).is_err());
        assert!(validate_ttl(Some(Duration::from_millis(999))).is_err());
        assert!(validate_ttl(Some(Duration::from_secs(2))).is_ok());
        assert!(validate_ttl(None).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn one_holder_per_lease_which_it_renews_until_it_stops() {
        let kv = MemoryKv::new();
        let ttl = Duration::from_secs(2);
        assert!(take_lease(&kv, "jobs.x", "node-a", ttl).await.expect("kv"));
        assert!(!take_lease(&kv, "jobs.x", "node-b", ttl).await.expect("kv"));
        assert!(take_lease(&kv, "jobs.y", "node-b", ttl).await.expect("kv"));
        // The holder renews its lease before it runs out, and keeps it.
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert!(take_lease(&kv, "jobs.x", "node-a", ttl).await.expect("kv"));
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert!(!take_lease(&kv, "jobs.x", "node-b", ttl).await.expect("kv"));
        // A holder that stopped renewing loses it once it expires.
        tokio::time::advance(ttl).await;
        assert!(take_lease(&kv, "jobs.x", "node-b", ttl).await.expect("kv"));
    }
}
