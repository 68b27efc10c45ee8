//! The key-value seam: small shared state with revisions, TTL and compare-and-set — node
//! registration, leases for jobs that must run once per cluster, and similar coordination.
//!
//! Keys use the characters `A-Z a-z 0-9 - _ / = .`, which every backend accepts. Every write
//! returns the entry's new revision; revisions only grow.

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
    #[error("invalid key `{0}`: use 1 to 1024 characters of A-Z a-z 0-9 - _ / = .")]
    InvalidKey(String),
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
    /// Live entries whose key starts with `prefix`, in key order.
    async fn list(&self, prefix: &str) -> Result<Vec<KvEntry>, KvError>;
}

pub fn validate_key(key: &str) -> Result<(), KvError> {
    let ok = !key.is_empty()
        && key.len() <= 1024
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '/' | '=' | '.'));
    if ok {
        Ok(())
    } else {
        Err(KvError::InvalidKey(key.to_string()))
    }
}
