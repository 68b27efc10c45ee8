//! The key-value store on a JetStream key-value bucket (one per deployment, named by its
//! prefix). Revisions are stream sequences, so they only grow. A TTL rides on each write as the
//! `Nats-TTL` header (per-message TTL, NATS 2.11; the bucket is created with limit markers), and
//! compare-and-set is `Nats-Expected-Last-Subject-Sequence`.

use std::time::Duration;

use aos_core::kv::{Kv, KvEntry, KvError, validate_key, validate_ttl};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::kv::{self, Operation, Store};
use async_nats::jetstream::message::PublishMessage;
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::TryStreamExt;

use crate::Nats;
use crate::names::bucket;

pub struct JetStreamKv {
    nats: Nats,
    store: Store,
}

fn backend(err: impl std::fmt::Display) -> KvError {
    KvError::Backend(err.to_string())
}

impl JetStreamKv {
    /// Opens the deployment's bucket, creating it on first use.
    pub async fn open(nats: Nats) -> Result<JetStreamKv, KvError> {
        let store = crate::patiently("the key-value bucket opens", || Self::bucket(&nats)).await?;
        Ok(JetStreamKv { nats, store })
    }

    async fn bucket(nats: &Nats) -> Result<Store, KvError> {
        nats.key_value(bucket(&nats.prefix)).await.map_err(backend)
    }

    fn subject(&self, key: &str) -> String {
        format!("{}{key}", self.store.prefix)
    }

    /// Writes `value` at `key` with an optional TTL, if the key's last write is at `expected`
    /// (0: no write at all); `None`: unconditionally. Returns the new revision, or `None` when
    /// the expectation failed.
    async fn write(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
        expected: Option<u64>,
    ) -> Result<Option<u64>, KvError> {
        let mut message = PublishMessage::build().payload(value);
        if let Some(ttl) = ttl {
            message = message.ttl(ttl);
        }
        if let Some(expected) = expected {
            message = message.expected_last_subject_sequence(expected);
        }
        let sent = self
            .nats
            .js
            .send_publish(self.subject(key), message)
            .await
            .map_err(backend)?;
        match sent.await {
            Ok(ack) => Ok(Some(ack.sequence)),
            Err(err) if err.kind() == PublishErrorKind::WrongLastSequence => Ok(None),
            Err(err) => Err(backend(err)),
        }
    }

    /// The key's last write, live or a marker (its revision is what a conditional write must
    /// expect).
    async fn last(&self, key: &str) -> Result<Option<kv::Entry>, KvError> {
        self.store.entry(key).await.map_err(backend)
    }

    async fn live(&self, key: &str) -> Result<Option<kv::Entry>, KvError> {
        Ok(self
            .last(key)
            .await?
            .filter(|e| e.operation == Operation::Put))
    }
}

#[async_trait]
impl Kv for JetStreamKv {
    async fn get(&self, key: &str) -> Result<Option<KvEntry>, KvError> {
        validate_key(key)?;
        Ok(self.live(key).await?.map(|e| KvEntry {
            key: e.key,
            value: e.value,
            revision: e.revision,
        }))
    }

    async fn put(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<u64, KvError> {
        validate_key(key)?;
        validate_ttl(ttl)?;
        self.write(key, value, ttl, None)
            .await?
            .ok_or_else(|| backend("an unconditional write was refused"))
    }

    async fn create(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<u64, KvError> {
        validate_key(key)?;
        validate_ttl(ttl)?;
        if let Some(revision) = self.write(key, value.clone(), ttl, Some(0)).await? {
            return Ok(revision);
        }
        // Something was written before: a live entry refuses; a delete or expiry marker is
        // replaced, expecting exactly that marker (a concurrent creator loses).
        match self.last(key).await? {
            Some(e) if e.operation == Operation::Put => Err(KvError::Exists(key.to_string())),
            Some(marker) => self
                .write(key, value, ttl, Some(marker.revision))
                .await?
                .ok_or_else(|| KvError::Exists(key.to_string())),
            // The marker expired in between: the key is as new.
            None => self
                .write(key, value, ttl, Some(0))
                .await?
                .ok_or_else(|| KvError::Exists(key.to_string())),
        }
    }

    async fn update(
        &self,
        key: &str,
        value: Bytes,
        revision: u64,
        ttl: Option<Duration>,
    ) -> Result<u64, KvError> {
        validate_key(key)?;
        validate_ttl(ttl)?;
        let current = self.live(key).await?.map(|e| e.revision);
        if current != Some(revision) {
            return Err(KvError::RevisionMismatch {
                key: key.to_string(),
                expected: revision,
                current,
            });
        }
        match self.write(key, value, ttl, Some(revision)).await? {
            Some(new) => Ok(new),
            None => Err(KvError::RevisionMismatch {
                key: key.to_string(),
                expected: revision,
                current: self.live(key).await?.map(|e| e.revision),
            }),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        validate_key(key)?;
        self.store.delete(key).await.map_err(backend)
    }

    async fn delete_if(&self, key: &str, revision: u64) -> Result<(), KvError> {
        validate_key(key)?;
        let current = self.live(key).await?.map(|e| e.revision);
        let refused = || KvError::RevisionMismatch {
            key: key.to_string(),
            expected: revision,
            current,
        };
        if current != Some(revision) {
            return Err(refused());
        }
        self.store
            .delete_expect_revision(key, Some(revision))
            .await
            .map_err(|err| match err.kind() {
                kv::UpdateErrorKind::WrongLastRevision => refused(),
                _ => backend(err),
            })
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KvEntry>, KvError> {
        validate_key(prefix)?;
        let below = format!("{prefix}.");
        let keys: Vec<String> = self
            .store
            .keys()
            .await
            .map_err(backend)?
            .try_filter(|key| std::future::ready(key.starts_with(&below)))
            .try_collect()
            .await
            .map_err(backend)?;
        let mut entries = Vec::with_capacity(keys.len());
        for key in keys {
            // Gone since it was listed: not listed.
            if let Some(e) = self.live(&key).await? {
                entries.push(KvEntry {
                    key: e.key,
                    value: e.value,
                    revision: e.revision,
                });
            }
        }
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(entries)
    }
}
