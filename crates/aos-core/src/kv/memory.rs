//! The in-process key-value store of a standalone node.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::time::Instant;

use super::{Kv, KvEntry, KvError, validate_key, validate_ttl};

struct Slot {
    value: Bytes,
    revision: u64,
    expires: Option<Instant>,
}

impl Slot {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|t| t > now)
    }
}

#[derive(Default)]
struct State {
    entries: BTreeMap<String, Slot>,
    revision: u64,
}

impl State {
    fn live(&self, key: &str, now: Instant) -> Option<&Slot> {
        self.entries.get(key).filter(|s| s.live(now))
    }

    /// Ok when the live entry at `key` is at `revision`.
    fn check_revision(&self, key: &str, revision: u64, now: Instant) -> Result<(), KvError> {
        let current = self.live(key, now).map(|s| s.revision);
        if current == Some(revision) {
            Ok(())
        } else {
            Err(KvError::RevisionMismatch {
                key: key.to_string(),
                expected: revision,
                current,
            })
        }
    }

    fn write(&mut self, key: &str, value: Bytes, ttl: Option<Duration>, now: Instant) -> u64 {
        self.revision += 1;
        self.entries.insert(
            key.to_string(),
            Slot {
                value,
                revision: self.revision,
                expires: ttl.map(|t| now + t),
            },
        );
        self.revision
    }
}

/// An in-process [`Kv`]. Expired entries are dropped lazily, on the next write.
#[derive(Default)]
pub struct MemoryKv {
    state: Mutex<State>,
}

impl MemoryKv {
    pub fn new() -> Self {
        MemoryKv::default()
    }

    fn with_state<R>(
        &self,
        key: &str,
        f: impl FnOnce(&mut State, Instant) -> Result<R, KvError>,
    ) -> Result<R, KvError> {
        validate_key(key)?;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut state, Instant::now())
    }
}

#[async_trait]
impl Kv for MemoryKv {
    async fn get(&self, key: &str) -> Result<Option<KvEntry>, KvError> {
        self.with_state(key, |state, now| {
            Ok(state.live(key, now).map(|slot| KvEntry {
                key: key.to_string(),
                value: slot.value.clone(),
                revision: slot.revision,
            }))
        })
    }

    async fn put(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<u64, KvError> {
        validate_ttl(ttl)?;
        self.with_state(key, |state, now| {
            state.entries.retain(|_, s| s.live(now));
            Ok(state.write(key, value, ttl, now))
        })
    }

    async fn create(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<u64, KvError> {
        validate_ttl(ttl)?;
        self.with_state(key, |state, now| {
            if state.live(key, now).is_some() {
                return Err(KvError::Exists(key.to_string()));
            }
            Ok(state.write(key, value, ttl, now))
        })
    }

    async fn update(
        &self,
        key: &str,
        value: Bytes,
        revision: u64,
        ttl: Option<Duration>,
    ) -> Result<u64, KvError> {
        validate_ttl(ttl)?;
        self.with_state(key, |state, now| {
            state.check_revision(key, revision, now)?;
            Ok(state.write(key, value, ttl, now))
        })
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.with_state(key, |state, _| {
            state.entries.remove(key);
            Ok(())
        })
    }

    async fn delete_if(&self, key: &str, revision: u64) -> Result<(), KvError> {
        self.with_state(key, |state, now| {
            state.check_revision(key, revision, now)?;
            state.entries.remove(key);
            Ok(())
        })
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KvEntry>, KvError> {
        validate_key(prefix)?;
        let below = format!("{prefix}.");
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        Ok(state
            .entries
            .range(below.clone()..)
            .take_while(|(k, _)| k.starts_with(&below))
            .filter(|(_, s)| s.live(now))
            .map(|(k, s)| KvEntry {
                key: k.clone(),
                value: s.value.clone(),
                revision: s.revision,
            })
            .collect())
    }
}
