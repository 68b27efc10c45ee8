//! Message formats compiled once and reused: the pipeline reads inbound payloads with them, the
//! command dispatcher writes commands with them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aos_formats::{Format, FormatSpec};
use aos_storage::repo::formats;
use aos_storage::{Storage, StorageError};

/// How long a device, format or interpreter looked up is reused (they rarely change; a change
/// applies within this time).
pub const LOOKUP_TTL: Duration = Duration::from_secs(60);

/// A compiled format, or why its stored definition cannot be used.
pub type Compiled = Arc<Result<Format, String>>;

pub struct FormatCache {
    storage: Storage,
    entries: Mutex<HashMap<i64, (Compiled, Instant)>>,
}

impl FormatCache {
    pub fn new(storage: Storage) -> FormatCache {
        FormatCache {
            storage,
            entries: Mutex::new(HashMap::new()),
        }
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
            let cached = self
                .entries
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&id)
                .filter(|(_, at)| at.elapsed() < LOOKUP_TTL)
                .map(|(compiled, _)| compiled.clone());
            let compiled = match cached {
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
                    self.entries
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(id, (compiled.clone(), Instant::now()));
                    compiled
                }
            };
            found.insert(id, compiled);
        }
        Ok(found)
    }
}
