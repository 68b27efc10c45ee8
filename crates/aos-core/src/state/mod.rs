//! The durable-state seam: records by key that a role keeps across restarts — the broker's
//! retained messages and persistent sessions.
//!
//! Writers stage changes without waiting (they may hold locks on their own state while they do)
//! and, where they promise durability to someone, wait for [`StateStore::durable`] before they
//! answer. Staged changes apply in the order they were staged; reads see them at once. A backend
//! makes them durable in groups, so a burst of changes costs one disk flush (or one round trip),
//! not one each.

pub mod disk;
mod memory;

pub use disk::DiskState;
pub use memory::MemoryState;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

/// One change to the stored records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateChange {
    Put {
        key: String,
        value: Bytes,
    },
    Delete {
        key: String,
    },
    /// Removes every record whose key starts with `prefix`.
    DeletePrefix {
        prefix: String,
    },
}

impl StateChange {
    pub fn put(key: impl Into<String>, value: impl Into<Bytes>) -> StateChange {
        StateChange::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    pub fn delete(key: impl Into<String>) -> StateChange {
        StateChange::Delete { key: key.into() }
    }

    pub fn delete_prefix(prefix: impl Into<String>) -> StateChange {
        StateChange::DeletePrefix {
            prefix: prefix.into(),
        }
    }
}

/// A record changed by a node sharing the store (this one included): its new value, or `None`
/// when it was deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateUpdate {
    pub key: String,
    pub value: Option<Bytes>,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum StateError {
    /// Writing failed; changes staged since then are not durable.
    #[error("the state store cannot write: {0}")]
    Write(String),
    /// Reading (or watching) failed; nothing was changed.
    #[error("the state store cannot be read: {0}")]
    Read(String),
    #[error("the state store is closed")]
    Closed,
}

#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// The records whose key starts with `prefix`, in key order (staged changes included).
    async fn load(&self, prefix: &str) -> Result<Vec<(String, Bytes)>, StateError>;
    /// Stages `changes`, to be applied in order after everything staged before; returns their
    /// position, for [`StateStore::durable`].
    fn stage(&self, changes: Vec<StateChange>) -> u64;
    /// The position of the latest staged changes.
    fn position(&self) -> u64;
    /// Waits until everything staged up to `position` is durable.
    async fn durable(&self, position: u64) -> Result<(), StateError>;
    /// Makes everything staged durable, then refuses further writes (node shutdown).
    async fn close(&self) -> Result<(), StateError>;
    /// Whether other nodes share the records (what one node stores, another reads).
    fn shared(&self) -> bool {
        false
    }
    /// The changes made from now on to the records under `prefix`, by any node sharing the store,
    /// in order (a change overwritten at once may be passed over: the last one is told).
    /// `None`: the store is this node's own, whose changes this node made itself.
    async fn watch(
        &self,
        _prefix: &str,
    ) -> Result<Option<mpsc::Receiver<StateUpdate>>, StateError> {
        Ok(None)
    }
}

/// Applies `change` to an ordered map of records (what every backend's view is); returns by how
/// many bytes (keys and values) the records grew or shrank.
pub(crate) fn apply(
    records: &mut std::collections::BTreeMap<String, Bytes>,
    change: &StateChange,
) -> i64 {
    let size = |key: &str, value: &Bytes| (key.len() + value.len()) as i64;
    match change {
        StateChange::Put { key, value } => {
            let old = records.insert(key.clone(), value.clone());
            size(key, value) - old.map_or(0, |old| size(key, &old))
        }
        StateChange::Delete { key } => records.remove(key).map_or(0, |old| -size(key, &old)),
        StateChange::DeletePrefix { prefix } => {
            let doomed: Vec<String> = records
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(prefix.as_str()))
                .map(|(k, _)| k.clone())
                .collect();
            doomed
                .into_iter()
                .filter_map(|key| records.remove(&key).map(|old| -size(&key, &old)))
                .sum()
        }
    }
}

/// The records of `records` under `prefix`, in key order.
pub(crate) fn under(
    records: &std::collections::BTreeMap<String, Bytes>,
    prefix: &str,
) -> Vec<(String, Bytes)> {
    records
        .range(prefix.to_string()..)
        .take_while(|(k, _)| k.starts_with(prefix))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}
