//! The acquisition pipeline: a batch of device messages from the queue becomes message-log
//! entries, ledger rows and latest values, written in one transaction before the batch is
//! acknowledged. A message that cannot be understood (unknown device, bad topic, a payload that
//! does not decode) is logged `failed` with the reason; the others of its batch go on.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use aos_core::acquisition::Acquired;
use aos_core::live::{LiveFeed, LiveKind, LiveUpdate};
use aos_core::queue::Delivery;
use aos_formats::interpret::{self, InterpreterSpec, TenantInterpreters};
use aos_formats::{Format, Sample, command};
use aos_storage::repo::audit::{self, AuditEvent};
use aos_storage::repo::commands::{self as stored_commands, Reply};
use aos_storage::repo::devices::{self, DeviceRef};
use aos_storage::repo::ingest::{self, LoggedMessage, Reading, Recorded};
use aos_storage::repo::{Scope, interpreters};
use aos_storage::{Storage, StorageError};
use aos_workflows::{DeviceEvent, DeviceFacts, TenantWorkflows};
use chrono::{DateTime, TimeZone, Utc};
use prometheus_client::metrics::counter::Counter;
use sea_orm::DbBackend;
use serde_json::json;

use crate::lookups::{Cached, Compiled, FormatCache};
use crate::pms::{self, MessageKind};
use crate::workflows::Triggers;

/// Counters of the pipeline (registered by the worker role).
#[derive(Clone, Default)]
pub struct PipelineMetrics {
    pub processed: Counter,
    pub failed: Counter,
    pub ledger_rows: Counter,
}

pub struct Pipeline {
    storage: Storage,
    devices: Cached<String, DeviceRef>,
    formats: Arc<FormatCache>,
    interpreters: Cached<i64, Arc<TenantInterpreters>>,
    engine: interpret::Engine,
    /// Starts the workflows stored messages trigger (none: no workflows, as in tests of
    /// storage alone).
    triggers: Option<Arc<Triggers>>,
    /// Tells people watching about stored values, events and command replies.
    live: Option<Arc<LiveFeed>>,
    /// SQLite takes one writer at a time: its batches are written one after the other.
    serial_writes: Option<tokio::sync::Mutex<()>>,
    pub metrics: PipelineMetrics,
}

/// What one message gave.
struct Understood {
    /// The device it is logged under.
    logged_under: i64,
    /// The samples of each device it is about (several for a gateway's message about its
    /// children).
    parts: Vec<(DeviceRef, Vec<Sample>)>,
    /// A device's reply to a command.
    reply: Option<Reply>,
}

/// What one message gave, or why it failed (and the device to log that under).
type Interpreted = Result<Understood, (Option<i64>, String)>;

/// What devices without a format send: JSON, read as is.
static PLAIN_JSON: LazyLock<Format> = LazyLock::new(Format::plain_json);

impl Pipeline {
    pub fn new(storage: Storage, metrics: PipelineMetrics) -> Pipeline {
        let serial = storage.db().get_database_backend() == DbBackend::Sqlite;
        Pipeline {
            formats: Arc::new(FormatCache::new(storage.clone())),
            storage,
            devices: Cached::default(),
            interpreters: Cached::default(),
            engine: interpret::engine(),
            serial_writes: serial.then(|| tokio::sync::Mutex::new(())),
            triggers: None,
            live: None,
            metrics,
        }
    }

    /// Publishes live updates of what it stores.
    pub fn with_live(mut self, live: Arc<LiveFeed>) -> Pipeline {
        self.live = Some(live);
        self
    }

    /// Starts the workflows that stored messages trigger.
    pub fn with_triggers(mut self, triggers: Arc<Triggers>) -> Pipeline {
        self.triggers = Some(triggers);
        self
    }

    /// The compiled formats it uses (shared with whoever else writes or reads device payloads).
    pub fn formats(&self) -> Arc<FormatCache> {
        self.formats.clone()
    }

    /// Processes a batch; returns the ids of the deliveries that could not be stored (to be
    /// delivered again). When the batch cannot be stored as a whole, its messages are stored one
    /// by one, so that one message storage refuses does not hold back the others.
    pub async fn process(&self, batch: &[Delivery]) -> Vec<u64> {
        let started = Utc::now();
        let envelopes: Vec<(u64, Acquired)> = batch
            .iter()
            .filter_map(|d| match Acquired::decode(d.payload.clone()) {
                Ok(envelope) => Some((d.id, envelope)),
                Err(err) => {
                    // Nothing names its tenant or device: it cannot even be logged.
                    tracing::error!(id = d.id, %err, "dropped an unreadable queue item");
                    self.metrics.failed.inc();
                    None
                }
            })
            .collect();
        let routes: Vec<Result<pms::Route, String>> = envelopes
            .iter()
            .map(|(_, e)| pms::route(&e.device, &e.topic))
            .collect();
        let mut wanted: Vec<&str> = Vec::new();
        for ((_, envelope), route) in envelopes.iter().zip(&routes) {
            wanted.push(&envelope.device);
            if let Ok(route) = route {
                wanted.push(&route.device);
            }
        }
        let mut known = match self.devices(&wanted).await {
            Ok(known) => known,
            Err(err) => {
                tracing::error!(%err, "cannot look devices up; the batch will be delivered again");
                return batch.iter().map(|d| d.id).collect();
            }
        };
        let formats = match self
            .formats
            .get(known.values().filter_map(|d| d.format))
            .await
        {
            Ok(formats) => formats,
            Err(err) => {
                tracing::error!(%err, "cannot look formats up; the batch will be delivered again");
                return batch.iter().map(|d| d.id).collect();
            }
        };
        let mut tenants: Vec<i64> = envelopes.iter().map(|(_, e)| e.tenant).collect();
        tenants.sort_unstable();
        tenants.dedup();
        let mut interpreters = HashMap::new();
        let mut automations = HashMap::new();
        for tenant in tenants {
            let found = match &self.triggers {
                Some(triggers) => triggers.of(tenant).await.map(Some),
                None => Ok(None),
            };
            match (self.interpreters(tenant).await, found) {
                (Ok(rules), Ok(workflows)) => {
                    interpreters.insert(tenant, rules);
                    // Tenants without workflows cost nothing more per message.
                    automations.extend(workflows.filter(|w| !w.is_empty()).map(|w| (tenant, w)));
                }
                (Err(err), _) | (_, Err(err)) => {
                    tracing::error!(%err, "cannot look interpreters or workflows up; the batch will be delivered again");
                    return batch.iter().map(|d| d.id).collect();
                }
            }
        }
        let mut ids = Vec::with_capacity(envelopes.len());
        let mut messages = Vec::with_capacity(envelopes.len());
        let mut readings: Vec<Vec<Reading>> = Vec::with_capacity(envelopes.len());
        let mut replies: Vec<Option<Reply>> = Vec::with_capacity(envelopes.len());
        let mut kinds = Vec::with_capacity(envelopes.len());
        for ((id, envelope), route) in envelopes.into_iter().zip(routes) {
            kinds.push(route.as_ref().ok().map(|r| r.kind));
            let received = Utc
                .timestamp_millis_opt(envelope.received_at_ms)
                .single()
                .unwrap_or(started);
            let interpreted = self
                .interpret(&envelope, route, &mut known, &formats, received)
                .await
                .and_then(|understood| {
                    let rules = interpreters.get(&envelope.tenant).map(|r| r.as_ref());
                    let watch = automations.get(&envelope.tenant).map(|w| w.as_ref());
                    let logged_under = understood.logged_under;
                    self.readings(&envelope, understood.parts, rules, watch)
                        .map(|readings| (logged_under, readings, understood.reply))
                        .map_err(|reason| (Some(logged_under), reason))
                });
            let (device, error, samples_of_message, reply) = match interpreted {
                Ok((logged_under, readings, reply)) => (Some(logged_under), None, readings, reply),
                Err((device, reason)) => (device, Some(reason), Vec::new(), None),
            };
            if let Some(reason) = &error {
                tracing::info!(key = %envelope.key, device = %envelope.device, topic = %envelope.topic, %reason, "device message failed");
            }
            ids.push(id);
            readings.push(samples_of_message);
            replies.push(reply);
            messages.push(LoggedMessage {
                key: envelope.key,
                tenant: envelope.tenant,
                device,
                topic: envelope.topic,
                payload: envelope.payload.to_vec(),
                received_at: received,
                started_at: started,
                processed_at: Utc::now(),
                error,
            });
        }
        let all: Vec<Reading> = readings.iter().flatten().cloned().collect();
        let all_replies: Vec<Reply> = replies.iter().flatten().cloned().collect();
        let mut retry = Vec::new();
        let mut stored = vec![true; messages.len()];
        let mut changes = Vec::new();
        match self.store(&messages, &all, &all_replies).await {
            Ok(recorded) => {
                self.count(&messages, &recorded);
                changes = recorded.changes;
            }
            Err(err) => {
                tracing::warn!(%err, size = messages.len(), "the batch could not be stored; storing its messages one by one");
                let each = ids.into_iter().zip(&messages).zip(&readings).zip(&replies);
                for (i, (((id, message), readings), reply)) in each.enumerate() {
                    let one = self
                        .store(std::slice::from_ref(message), readings, reply.as_slice())
                        .await;
                    match one {
                        Ok(recorded) => {
                            self.count(std::slice::from_ref(message), &recorded);
                            changes.extend(recorded.changes);
                        }
                        Err(err) => {
                            tracing::error!(key = %message.key, %err, "a message could not be stored; it will be delivered again");
                            stored[i] = false;
                            retry.push(id);
                        }
                    }
                }
            }
        }
        let happened = Happened {
            messages: &messages,
            readings: &readings,
            kinds: &kinds,
            stored: &stored,
            changes: &changes,
        };
        if let Some(live) = &self.live {
            happened.publish_live(live, &replies, &known).await;
        }
        if let Some(triggers) = &self.triggers {
            triggers.start(happened.runs(&automations, &known)).await;
        }
        retry
    }

    /// Writes messages and readings (one writer at a time on SQLite).
    async fn store(
        &self,
        messages: &[LoggedMessage],
        readings: &[Reading],
        replies: &[Reply],
    ) -> Result<Recorded, StorageError> {
        let _turn = match &self.serial_writes {
            Some(lock) => Some(lock.lock().await),
            None => None,
        };
        ingest::record(&self.storage, messages, readings, replies).await
    }

    fn count(&self, messages: &[LoggedMessage], recorded: &Recorded) {
        let failed = messages.iter().filter(|m| m.error.is_some()).count() as u64;
        self.metrics.failed.inc_by(failed);
        self.metrics
            .processed
            .inc_by(messages.len() as u64 - failed);
        self.metrics.ledger_rows.inc_by(recorded.ledger_rows);
    }

    /// The devices a message is about and their samples, or why it failed. The publisher's
    /// format decodes the payload (a gateway's speaks for its children): on a child node's topic
    /// for that child, and on a gateway's own topic as `{"nodes": {"child id": …}}` for several.
    async fn interpret(
        &self,
        envelope: &Acquired,
        route: Result<pms::Route, String>,
        known: &mut HashMap<String, DeviceRef>,
        formats: &HashMap<i64, Compiled>,
        received: DateTime<Utc>,
    ) -> Interpreted {
        // The publisher was signed in as a device of this tenant when the broker took the message.
        let publisher = known
            .get(&envelope.device)
            .filter(|d| d.tenant == envelope.tenant)
            .cloned()
            .ok_or_else(|| (None, format!("unknown device `{}`", envelope.device)))?;
        let failed = |reason: String| (Some(publisher.id), reason);
        let route = route.map_err(failed)?;
        let own_format = match publisher.format.and_then(|id| formats.get(&id)) {
            Some(compiled) => Some(compiled.as_ref().as_ref().map_err(|e| failed(e.clone()))?),
            None => None,
        };
        let format: &Format = own_format.unwrap_or(&PLAIN_JSON);
        // A gateway's message on a child node's topic is about that child.
        let child = match &route.gateway {
            Some(_) => Some(
                self.child(&publisher, &route.device, known)
                    .await
                    .map_err(failed)?,
            ),
            None => None,
        };
        let about = child.as_ref().map_or(publisher.id, |c| c.id);
        if route.kind == MessageKind::CommandReply {
            let (command, error) = command::read_reply(own_format, &envelope.payload)
                .map_err(|reason| (Some(about), reason))?;
            let uid = child.as_ref().map_or(&publisher.uid, |c| &c.uid);
            let own = stored_commands::is_for(&self.storage, command, about)
                .await
                .map_err(|err| {
                    (
                        Some(about),
                        format!("the reply could not be checked: {err}"),
                    )
                })?;
            if !own {
                return Err((
                    Some(about),
                    format!(
                        "replies to command {command}, which is not a command of device `{uid}`"
                    ),
                ));
            }
            return Ok(Understood {
                logged_under: about,
                parts: Vec::new(),
                reply: Some(Reply {
                    device: about,
                    command,
                    error,
                }),
            });
        }
        if let Some(child) = child {
            let samples = format
                .decode(&envelope.payload, received)
                .map_err(|reason| (Some(about), reason))?;
            return Ok(Understood {
                logged_under: about,
                parts: vec![(child, samples)],
                reply: None,
            });
        }
        let value = format.read(&envelope.payload).map_err(failed)?;
        let nodes = value.get("nodes").and_then(serde_json::Value::as_object);
        match nodes {
            Some(nodes) if publisher.is_gateway => {
                let mut parts = Vec::with_capacity(nodes.len());
                for (uid, part) in nodes {
                    let child = self.child(&publisher, uid, known).await.map_err(failed)?;
                    let samples = format
                        .samples(part, received)
                        .map_err(|reason| failed(format!("node `{uid}`: {reason}")))?;
                    parts.push((child, samples));
                }
                Ok(Understood {
                    logged_under: publisher.id,
                    parts,
                    reply: None,
                })
            }
            _ => {
                let samples = format.samples(&value, received).map_err(failed)?;
                Ok(Understood {
                    logged_under: publisher.id,
                    parts: vec![(publisher, samples)],
                    reply: None,
                })
            }
        }
    }

    /// A child node of `gateway`: a known one, or one registered now when the gateway's class
    /// registers unknown children (audited).
    async fn child(
        &self,
        gateway: &DeviceRef,
        uid: &str,
        known: &mut HashMap<String, DeviceRef>,
    ) -> Result<DeviceRef, String> {
        let not_a_child = || format!("`{uid}` is not a child node of gateway `{}`", gateway.uid);
        if !known.contains_key(uid) {
            let found = self
                .devices(&[uid])
                .await
                .map_err(|e| format!("cannot look child node `{uid}` up: {e}"))?;
            known.extend(found);
        }
        if let Some(child) = known.get(uid) {
            return if child.tenant == gateway.tenant && child.gateway == Some(gateway.id) {
                Ok(child.clone())
            } else {
                Err(not_a_child())
            };
        }
        if gateway.child_class.is_none() {
            return Err(format!(
                "{} (its class does not register unknown children)",
                not_a_child()
            ));
        }
        let child = devices::register_child(&self.storage, gateway, uid)
            .await
            .map_err(|e| format!("cannot register child node `{uid}`: {e}"))?;
        let registered = AuditEvent {
            tenant: Some(gateway.tenant),
            actor: format!("device:{}", gateway.uid),
            action: "device.register".into(),
            object_kind: Some("device".into()),
            object_id: Some(uid.to_string()),
            success: true,
            detail: serde_json::json!({ "gateway": gateway.uid }),
            ..Default::default()
        };
        if let Err(err) = audit::record(&self.storage, registered).await {
            tracing::warn!(%err, device = %uid, "the registration of a child node was not audited");
        }
        tracing::info!(device = %uid, gateway = %gateway.uid, "child node registered by its gateway");
        if let Some(triggers) = &self.triggers {
            match triggers.of(gateway.tenant).await {
                Ok(workflows) => {
                    let facts = DeviceFacts {
                        uid: &child.uid,
                        class: child.class,
                    };
                    let at = Utc::now().timestamp_millis();
                    triggers
                        .start(workflows.on_device(facts, DeviceEvent::Registered, at))
                        .await;
                }
                Err(err) => tracing::warn!(%err, "cannot look workflows up for a registration"),
            }
        }
        self.devices.put(uid.to_string(), child.clone());
        known.insert(uid.to_string(), child.clone());
        Ok(child)
    }

    /// The readings of a message's samples, each through its attribute's interpreter (the
    /// device's class's, else the tenant's), if any.
    fn readings(
        &self,
        envelope: &Acquired,
        parts: Vec<(DeviceRef, Vec<Sample>)>,
        rules: Option<&TenantInterpreters>,
        watch: Option<&TenantWorkflows>,
    ) -> Result<Vec<Reading>, String> {
        let mut readings = Vec::new();
        for (device, samples) in parts {
            for sample in samples {
                let (value, raw, level) =
                    match rules.and_then(|r| r.find(device.class, &sample.attribute)) {
                        None => (sample.value, None, None),
                        Some(Err(unusable)) => return Err(unusable.clone()),
                        Some(Ok(interpreter)) => {
                            let done = interpreter
                                .apply(&self.engine, &sample.value)
                                .map_err(|e| format!("`{}`: {e}", sample.attribute))?;
                            (done.value, done.raw, done.level)
                        }
                    };
                readings.push(Reading {
                    message: envelope.key.clone(),
                    tenant: envelope.tenant,
                    device: device.id,
                    watched: watch.is_some_and(|w| w.watches(&sample.attribute)),
                    attribute: sample.attribute,
                    ts: sample.ts,
                    value,
                    raw,
                    level,
                });
            }
        }
        Ok(readings)
    }

    /// The interpreters of a tenant, compiled, from the cache or storage.
    async fn interpreters(&self, tenant: i64) -> Result<Arc<TenantInterpreters>, StorageError> {
        if let Some(rules) = self.interpreters.get(&tenant) {
            return Ok(rules);
        }
        let stored = interpreters::list(&self.storage, Scope::tenant(tenant)).await?;
        let specs = stored
            .iter()
            .filter(|i| i.enabled)
            .map(|i| InterpreterSpec {
                class: i.class_id,
                attribute: &i.attribute,
                value_map: i.value_map.as_ref(),
                expression: i.expression.as_deref(),
                levels: i.levels.as_ref(),
            });
        let rules = Arc::new(TenantInterpreters::compile(&self.engine, specs));
        self.interpreters.put(tenant, rules.clone());
        Ok(rules)
    }

    /// The devices named (those that exist), from the cache or storage.
    async fn devices(&self, uids: &[&str]) -> Result<HashMap<String, DeviceRef>, StorageError> {
        let mut found = HashMap::new();
        let mut missing = Vec::new();
        for uid in uids {
            match self.devices.get(*uid) {
                Some(device) => {
                    found.insert(uid.to_string(), device);
                }
                None => missing.push(*uid),
            }
        }
        if !missing.is_empty() {
            missing.sort_unstable();
            missing.dedup();
            let loaded = devices::refs_by_uid(&self.storage, &missing).await?;
            for device in loaded {
                self.devices.put(device.uid.clone(), device.clone());
                found.insert(device.uid.clone(), device);
            }
        }
        Ok(found)
    }
}

/// What a processed batch did, for the workflows it starts.
struct Happened<'a> {
    messages: &'a [LoggedMessage],
    readings: &'a [Vec<Reading>],
    kinds: &'a [Option<MessageKind>],
    /// Which messages were stored.
    stored: &'a [bool],
    changes: &'a [ingest::Change],
}

impl Happened<'_> {
    /// Live updates of the stored messages' values, the events their level changes raised and
    /// the command replies they settled, per watched tenant.
    async fn publish_live(
        &self,
        live: &LiveFeed,
        replies: &[Option<Reply>],
        known: &HashMap<String, DeviceRef>,
    ) {
        let mut tenants: Vec<i64> = self
            .messages
            .iter()
            .zip(self.stored)
            .filter(|(m, stored)| **stored && m.error.is_none())
            .map(|(m, _)| m.tenant)
            .collect();
        tenants.sort_unstable();
        tenants.dedup();
        let mut watched = Vec::new();
        for tenant in tenants {
            if live.watched(tenant).await {
                watched.push(tenant);
            }
        }
        if watched.is_empty() {
            return;
        }
        let uids: HashMap<i64, &str> = known.values().map(|d| (d.id, d.uid.as_str())).collect();
        for tenant in watched {
            let mut updates = Vec::new();
            let each = self
                .messages
                .iter()
                .zip(self.readings)
                .zip(replies)
                .zip(self.stored);
            for (((message, readings), reply), stored) in each {
                if message.tenant != tenant || !*stored || message.error.is_some() {
                    continue;
                }
                for r in readings {
                    if let Some(uid) = uids.get(&r.device) {
                        updates.push(LiveUpdate {
                            kind: LiveKind::Value,
                            device: uid.to_string(),
                            data: json!({
                                "attribute": r.attribute,
                                "ts": r.ts,
                                "value": r.value,
                                "level": r.level,
                            }),
                        });
                    }
                }
                if let Some((reply, uid)) =
                    reply.as_ref().and_then(|r| Some((r, uids.get(&r.device)?)))
                {
                    updates.push(LiveUpdate {
                        kind: LiveKind::Command,
                        device: uid.to_string(),
                        data: json!({
                            "id": reply.command,
                            "status": if reply.error.is_some() { stored_commands::FAILED } else { stored_commands::ACKNOWLEDGED },
                            "error": reply.error,
                            "at": message.processed_at,
                        }),
                    });
                }
            }
            for change in self.changes {
                let raised = change.level_changed() && change.level != ingest::NORMAL_LEVEL;
                if let (true, true, Some(uid)) =
                    (change.tenant == tenant, raised, uids.get(&change.device))
                {
                    updates.push(LiveUpdate {
                        kind: LiveKind::Event,
                        device: uid.to_string(),
                        data: json!({
                            "attribute": change.attribute,
                            "level": change.level,
                            "raised_at": change.ts,
                        }),
                    });
                }
            }
            live.publish(tenant, updates).await;
        }
    }

    /// The workflow runs the stored messages and the latest-value changes start.
    fn runs(
        &self,
        automations: &HashMap<i64, Arc<TenantWorkflows>>,
        known: &HashMap<String, DeviceRef>,
    ) -> Vec<aos_workflows::Triggered> {
        let mut runs = Vec::new();
        if automations.is_empty() {
            return runs;
        }
        let devices: HashMap<i64, &DeviceRef> = known.values().map(|d| (d.id, d)).collect();
        let facts = |id: i64| {
            devices.get(&id).map(|d| DeviceFacts {
                uid: &d.uid,
                class: d.class,
            })
        };
        let each = self
            .messages
            .iter()
            .zip(self.readings)
            .zip(self.kinds)
            .zip(self.stored);
        for (((message, readings), kind), stored) in each {
            let (Some(workflows), Some(kind), true, None) = (
                automations.get(&message.tenant),
                kind.and_then(MessageKind::name),
                *stored,
                &message.error,
            ) else {
                continue;
            };
            let mut by_device: Vec<(i64, serde_json::Map<String, serde_json::Value>)> = Vec::new();
            for r in readings {
                match by_device.iter_mut().find(|(d, _)| *d == r.device) {
                    Some((_, values)) => {
                        values.insert(r.attribute.clone(), r.value.clone());
                    }
                    None => by_device.push((
                        r.device,
                        [(r.attribute.clone(), r.value.clone())]
                            .into_iter()
                            .collect(),
                    )),
                }
            }
            for (device, values) in by_device {
                if let Some(facts) = facts(device) {
                    runs.extend(workflows.on_message(&message.key, facts, kind, &values));
                }
            }
        }
        for change in self.changes {
            if let (Some(workflows), Some(facts)) =
                (automations.get(&change.tenant), facts(change.device))
            {
                runs.extend(workflows.on_change(change, facts));
            }
        }
        runs
    }
}
