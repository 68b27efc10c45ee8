//! The state store on a JetStream key-value bucket (`<prefix>_state`), shared by the nodes of a
//! deployment: a broker node keeps its persistent sessions and retained messages where any other
//! node can take them over.
//!
//! Staged changes go out in order, pipelined, from one writer task; a batch is durable once
//! JetStream has acknowledged every write in it (stored on a quorum of the bucket's replicas).
//! A write that fails sends the whole unacknowledged batch again, in order: puts and deletes are
//! idempotent, so the records end as staged. Deletions leave no marker behind for long (a
//! rollup whose marker expires after a second), so short-lived records — a session's queued
//! messages — do not pile up in the bucket.
//!
//! Keys are the store's dot-separated keys with each level encoded ([`encode_key`]), so a prefix
//! that ends with `.` is a subject filter: loading and watching a prefix reads only its records.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aos_core::state::{StateChange, StateError, StateStore, StateUpdate};
use async_nats::jetstream::consumer::push::OrderedConfig;
use async_nats::jetstream::consumer::{DeliverPolicy, ReplayPolicy};
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::kv::{Operation, Store};
use async_nats::jetstream::message::PublishMessage;
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{OnceCell, mpsc, watch};

use crate::{MARKER_TTL, Nats};

/// How long a failed write waits before the batch is sent again.
const RETRY: Duration = Duration::from_millis(250);
/// Changes sent before their acknowledgements are awaited.
const BATCH: usize = 1024;
/// Updates a watcher may have waiting before the oldest are dropped.
const WATCH_BACKLOG: usize = 4096;

pub struct JetStreamState {
    nats: Nats,
    /// The bucket, opened at first use: a node whose roles never use the store does not wait
    /// for it at start (JetStream may be electing leaders then).
    bucket: Arc<OnceCell<Store>>,
    staging: Mutex<Staging>,
    durable: watch::Receiver<Progress>,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

struct Staging {
    position: u64,
    /// `None` once closed.
    tx: Option<mpsc::UnboundedSender<(u64, Vec<StateChange>)>>,
}

#[derive(Clone, Copy, Default)]
struct Progress {
    durable: u64,
    closed: bool,
}

fn write_error(err: impl std::fmt::Display) -> StateError {
    StateError::Write(err.to_string())
}

impl JetStreamState {
    /// The deployment's state store. Its bucket is opened (and created the first time) now if
    /// JetStream answers at once — so it exists before work queues take their share of the
    /// servers' storage — else at first use: a node whose roles do not use it never waits for
    /// it (JetStream may be electing leaders as it starts).
    pub async fn open(nats: Nats) -> Result<JetStreamState, StateError> {
        let bucket = Arc::new(OnceCell::new());
        match nats.key_value(bucket_name(&nats)).await {
            Ok(store) => {
                let _ = bucket.set(store);
            }
            Err(err) => tracing::info!(%err, "the state bucket opens at first use"),
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let (progress, durable) = watch::channel(Progress::default());
        let writer = tokio::spawn(write(nats.clone(), bucket.clone(), rx, progress));
        Ok(JetStreamState {
            nats,
            bucket,
            staging: Mutex::new(Staging {
                position: 0,
                tx: Some(tx),
            }),
            durable,
            writer: Mutex::new(Some(writer)),
        })
    }

    async fn store(&self) -> Result<Store, StateError> {
        bucket(&self.nats, &self.bucket).await
    }

    fn staging(&self) -> std::sync::MutexGuard<'_, Staging> {
        self.staging.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn bucket_name(nats: &Nats) -> String {
    format!("{}_state", nats.prefix)
}

/// The deployment's state bucket, opened once (waiting out a NATS cluster electing leaders).
async fn bucket(nats: &Nats, cell: &OnceCell<Store>) -> Result<Store, StateError> {
    cell.get_or_try_init(|| {
        crate::patiently("the state bucket opens", || async {
            nats.key_value(bucket_name(nats)).await.map_err(write_error)
        })
    })
    .await
    .cloned()
}

/// The subject filter of the records under `prefix` in `store`, and whether a key under it must
/// still be checked (a prefix that does not end a level cannot be a filter of its own).
fn filter(store: &Store, prefix: &str) -> (String, bool) {
    match prefix.strip_suffix('.') {
        Some(levels) if !levels.is_empty() => {
            (format!("{}{}.>", store.prefix, encode_key(levels)), false)
        }
        _ => (format!("{}>", store.prefix), !prefix.is_empty()),
    }
}

/// Sends what is staged, in order, and reports how far it is durable.
async fn write(
    nats: Nats,
    cell: Arc<OnceCell<Store>>,
    mut rx: mpsc::UnboundedReceiver<(u64, Vec<StateChange>)>,
    progress: watch::Sender<Progress>,
) {
    let mut batch = Vec::new();
    let mut opened = None;
    loop {
        if rx.recv_many(&mut batch, BATCH).await == 0 {
            progress.send_modify(|p| p.closed = true);
            return;
        }
        let last = batch.last().map_or(0, |(position, _)| *position);
        let store = loop {
            if let Some(store) = &opened {
                break store;
            }
            match bucket(&nats, &cell).await {
                Ok(store) => opened = Some(store),
                Err(err) => {
                    tracing::warn!(%err, "the shared state store cannot be opened; trying again");
                    tokio::time::sleep(RETRY).await;
                }
            }
        };
        while let Err(err) = send(&nats, store, &batch).await {
            tracing::warn!(%err, "the shared state store did not take a write; sending again");
            tokio::time::sleep(RETRY).await;
        }
        batch.clear();
        progress.send_modify(|p| p.durable = last);
    }
}

/// Sends a batch of changes and waits for every acknowledgement.
async fn send(
    nats: &Nats,
    store: &Store,
    batch: &[(u64, Vec<StateChange>)],
) -> Result<(), StateError> {
    let mut acks: Vec<(PublishAckFuture, String)> = Vec::new();
    let failed = |key: &str, err: &dyn std::fmt::Display| {
        StateError::Write(format!("cannot store `{key}`: {err}"))
    };
    for change in batch.iter().flat_map(|(_, changes)| changes) {
        let message = match change {
            StateChange::Put { key, value } => {
                (key, PublishMessage::build().payload(value.clone()))
            }
            StateChange::Delete { key } => (
                key,
                PublishMessage::build()
                    .header("KV-Operation", "PURGE")
                    .header("Nats-Rollup", "sub")
                    .ttl(MARKER_TTL),
            ),
            StateChange::DeletePrefix { prefix } => {
                // Everything sent before is in place first: the purge must not pass it.
                for (ack, key) in acks.drain(..) {
                    ack.await.map_err(|err| failed(&key, &err))?;
                }
                purge(nats, store, prefix).await?;
                continue;
            }
        };
        let (key, message) = message;
        let subject = format!("{}{}", store.prefix, encode_key(key));
        let ack = nats
            .js
            .send_publish(subject, message)
            .await
            .map_err(|err| failed(key, &err))?;
        acks.push((ack, key.clone()));
    }
    for (ack, key) in acks {
        ack.await.map_err(|err| failed(&key, &err))?;
    }
    Ok(())
}

/// Removes every record under `prefix` (which ends a level: the broker's prefixes do).
async fn purge(nats: &Nats, store: &Store, prefix: &str) -> Result<(), StateError> {
    let levels = prefix.strip_suffix('.').unwrap_or(prefix);
    let filter = format!("{}{}.>", store.prefix, encode_key(levels));
    nats.js
        .get_stream(&store.stream_name)
        .await
        .map_err(write_error)?
        .purge()
        .filter(filter)
        .await
        .map_err(write_error)?;
    Ok(())
}

#[async_trait]
impl StateStore for JetStreamState {
    async fn load(&self, prefix: &str) -> Result<Vec<(String, Bytes)>, StateError> {
        // What this node staged is read back too.
        self.durable(self.position()).await?;
        let store = self.store().await?;
        let (filter_subject, check) = filter(&store, prefix);
        let read = |err: async_nats::Error| StateError::Read(err.to_string());
        let consumer = store
            .stream
            .create_consumer(OrderedConfig {
                deliver_subject: self.nats.client.new_inbox(),
                filter_subject,
                deliver_policy: DeliverPolicy::LastPerSubject,
                replay_policy: ReplayPolicy::Instant,
                ..Default::default()
            })
            .await
            .map_err(|err| read(err.into()))?;
        let mut records = BTreeMap::new();
        if consumer.cached_info().num_pending == 0 {
            return Ok(Vec::new());
        }
        let mut messages = consumer.messages().await.map_err(|err| read(err.into()))?;
        while let Some(message) = messages.next().await {
            let message = message.map_err(|err| read(err.into()))?;
            let info = message.info().map_err(|err| read(err.to_string().into()))?;
            let pending = info.pending;
            let key = message
                .subject
                .strip_prefix(&store.prefix)
                .and_then(decode_key);
            match key {
                Some(key) if !check || key.starts_with(prefix) => {
                    if operation(&message) == Operation::Put {
                        records.insert(key, message.payload.clone());
                    } else {
                        records.remove(&key);
                    }
                }
                Some(_) => {}
                None => {
                    tracing::warn!(subject = %message.subject, "a record of the shared state store has a key AOS does not write; ignored");
                }
            }
            if pending == 0 {
                break;
            }
        }
        Ok(records.into_iter().collect())
    }

    fn stage(&self, changes: Vec<StateChange>) -> u64 {
        let mut staging = self.staging();
        staging.position += 1;
        let position = staging.position;
        if let Some(tx) = &staging.tx {
            // The writer ends only with the store (close): nothing to send it to then.
            let _ = tx.send((position, changes));
        }
        position
    }

    fn position(&self) -> u64 {
        self.staging().position
    }

    async fn durable(&self, position: u64) -> Result<(), StateError> {
        let mut durable = self.durable.clone();
        let progress = durable
            .wait_for(|p| p.durable >= position || p.closed)
            .await
            .map_err(|_| StateError::Closed)?;
        if progress.durable >= position {
            Ok(())
        } else {
            Err(StateError::Closed)
        }
    }

    async fn close(&self) -> Result<(), StateError> {
        let position = {
            let mut staging = self.staging();
            staging.tx = None;
            staging.position
        };
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(writer) = writer {
            let _ = writer.await;
        }
        self.durable(position).await
    }

    fn shared(&self) -> bool {
        true
    }

    async fn watch(&self, prefix: &str) -> Result<Option<mpsc::Receiver<StateUpdate>>, StateError> {
        let store = self.store().await?;
        let (filter, check) = filter(&store, prefix);
        let key = filter
            .strip_prefix(&store.prefix)
            .unwrap_or(">")
            .to_string();
        let mut watch = store
            .watch(key)
            .await
            .map_err(|err| StateError::Read(format!("cannot watch: {err}")))?;
        let (tx, rx) = mpsc::channel(WATCH_BACKLOG);
        let prefix = prefix.to_string();
        tokio::spawn(async move {
            while let Some(entry) = watch.next().await {
                let entry = match entry {
                    Ok(entry) => entry,
                    Err(err) => {
                        tracing::warn!(%err, "watching the shared state store failed; watching again");
                        continue;
                    }
                };
                let Some(key) = decode_key(&entry.key) else {
                    continue;
                };
                if check && !key.starts_with(&prefix) {
                    continue;
                }
                let value = (entry.operation == Operation::Put).then_some(entry.value);
                if tx.send(StateUpdate { key, value }).await.is_err() {
                    return;
                }
            }
        });
        Ok(Some(rx))
    }
}

/// What a record's last message did (a put, unless its header says otherwise).
fn operation(message: &async_nats::jetstream::Message) -> Operation {
    match message
        .headers
        .as_ref()
        .and_then(|h| h.get("KV-Operation"))
        .map(|v| v.as_str())
    {
        Some("DEL") => Operation::Delete,
        Some("PURGE") => Operation::Purge,
        _ => Operation::Put,
    }
}

/// A store key as a bucket key: each dot-separated level keeps `A-Za-z0-9-_/` and writes any
/// other byte as `=XX`; an empty level is `=`. Levels stay levels, so a prefix is a filter.
pub(crate) fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 8);
    for (i, level) in key.split('.').enumerate() {
        if i > 0 {
            out.push('.');
        }
        if level.is_empty() {
            out.push('=');
        }
        for byte in level.bytes() {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'/') {
                out.push(char::from(byte));
            } else {
                out.push_str(&format!("={byte:02X}"));
            }
        }
    }
    out
}

/// The store key of a bucket key ([`encode_key`]); `None` for a key AOS does not write.
pub(crate) fn decode_key(encoded: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(encoded.len());
    for (i, level) in encoded.split('.').enumerate() {
        if i > 0 {
            bytes.push(b'.');
        }
        if level == "=" {
            continue;
        }
        let mut rest = level.as_bytes();
        while let Some((&byte, tail)) = rest.split_first() {
            if byte == b'=' {
                let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
                bytes.push(u8::from_str_radix(hex, 16).ok()?);
                rest = &tail[2..];
            } else {
                bytes.push(byte);
                rest = tail;
            }
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_level_by_level() {
        for key in [
            "broker.r.a/b",
            "broker.r.a..b",
            "broker.r..a",
            "broker.r.a.",
            "broker.s.5:héllo.q.12",
            "x=y *>",
        ] {
            let encoded = encode_key(key);
            assert!(
                encoded
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_/=.".contains(&b)),
                "{encoded}"
            );
            assert!(!encoded.contains(".."), "{encoded}");
            assert_eq!(decode_key(&encoded).as_deref(), Some(key));
        }
        assert_eq!(encode_key("broker.s.3:a b.meta"), "broker.s.3=3Aa=20b.meta");
        // A prefix's levels are the levels of every key under it.
        assert!(
            encode_key("broker.s.1:a.q.1").starts_with(&format!("{}.", encode_key("broker.s.1:a")))
        );
    }
}
