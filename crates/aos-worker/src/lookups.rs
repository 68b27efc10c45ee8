//! What the worker looks up in storage and reuses for a while (devices, compiled formats,
//! interpreters, workflows): they rarely change; a change announced on the bus
//! (`aos_core::changes`) empties them at once, and [`LOOKUP_TTL`] bounds a missed announcement.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aos_formats::{Format, FormatSpec};
use aos_storage::repo::formats;
use aos_storage::{Storage, StorageError};

/// How long a device, format, interpreter or workflow looked up is reused.
pub const LOOKUP_TTL: Duration = Duration::from_secs(60);

/// A compiled format, or why its stored definition cannot be used.
pub type Compiled = Arc<Result<Format, String>>;

/// Values kept for [`LOOKUP_TTL`] after they were looked up.
pub struct Cached<K, V> {
    entries: Mutex<HashMap<K, (V, Instant)>>,
}

impl<K: Eq + Hash, V: Clone> Default for Cached<K, V> {
    fn default() -> Self {
        Cached {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash, V: Clone> Cached<K, V> {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<K, (V, Instant)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The value of `key`, if it was looked up less than [`LOOKUP_TTL`] ago.
    pub fn get<Q: Eq + Hash + ?Sized>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        self.entries()
            .get(key)
            .filter(|(_, at)| at.elapsed() < LOOKUP_TTL)
            .map(|(value, _)| value.clone())
    }

    pub fn put(&self, key: K, value: V) {
        self.entries().insert(key, (value, Instant::now()));
    }

    /// Drops everything: what is looked up next comes from storage.
    pub fn forget(&self) {
        self.entries().clear();
    }
}

/// Message formats compiled once and reused: the pipeline reads inbound payloads with them, the
/// command dispatcher writes commands with them.
pub struct FormatCache {
    storage: Storage,
    entries: Cached<i64, Compiled>,
}

impl FormatCache {
    pub fn new(storage: Storage) -> FormatCache {
        FormatCache {
            storage,
            entries: Cached::default(),
        }
    }

    /// Drops the compiled formats (one may have changed).
    pub fn forget(&self) {
        self.entries.forget();
    }

    /// The formats with these ids, compiled, from the cache or storage.
    pub async fn get(
        &self,
        ids: impl Iterator<Item = i64>,
    ) -> Result<HashMap<i64, Compiled>, StorageError> {
        let mut found = HashMap::new();
        for id in ids {
            if found.contains_key(&id) {
                continue;
            }
            let compiled = match self.entries.get(&id) {
                Some(compiled) => compiled,
                None => {
                    let compiled = Arc::new(match formats::by_id(&self.storage, id).await? {
                        Some(stored) => Format::compile(&FormatSpec {
                            kind: &stored.kind,
                            proto_text: stored.proto_text.as_deref(),
                            proto_message: stored.proto_message.as_deref(),
                            json_schema: stored.json_schema.as_ref(),
                            mapping: Some(&stored.mapping),
                        })
                        .map_err(|e| format!("format `{}` cannot be used: {e}", stored.name)),
                        None => Err(format!("format {id} no longer exists")),
                    });
                    self.entries.put(id, compiled.clone());
                    compiled
                }
            };
            found.insert(id, compiled);
        }
        Ok(found)
    }
}
