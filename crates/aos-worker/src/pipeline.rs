//! The acquisition pipeline: a batch of device messages from the queue becomes message-log
//! entries, ledger rows and latest values, written in one transaction before the batch is
//! acknowledged. A message that cannot be understood (unknown device, bad topic, a payload that
//! does not decode) is logged `failed` with the reason; the others of its batch go on.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use aos_core::acquisition::{self, Acquired};
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

/// A queue item read as a device message, with the route its topic names.
struct Routed {
    delivery: u64,
    envelope: Acquired,
    route: Result<pms::Route, String>,
}

/// What a batch needs, looked up once for all its messages.
struct Lookups {
    /// Devices by id (uid), those of the batch and the children found on the way.
    known: HashMap<String, DeviceRef>,
    formats: HashMap<i64, Compiled>,
    interpreters: HashMap<i64, Arc<TenantInterpreters>>,
    /// The workflows of tenants that have any.
    automations: HashMap<i64, Arc<TenantWorkflows>>,
}

/// One message of a batch, from its queue item to what storing it did.
struct Item {
    delivery: u64,
    /// Its message-log entry (failed, with the reason, when it was not understood).
    message: LoggedMessage,
    kind: Option<MessageKind>,
    readings: Vec<Reading>,
    reply: Option<Reply>,
    /// Stored, so acknowledged; otherwise delivered again.
    stored: bool,
}

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

    /// Drops what it looked up: devices, formats, interpreters (something changed).
    pub fn forget(&self) {
        self.devices.forget();
        self.formats.forget();
        self.interpreters.forget();
    }

    /// The compiled formats it uses (shared with whoever else writes or reads device payloads).
    pub fn formats(&self) -> Arc<FormatCache> {
        self.formats.clone()
    }

    /// Processes a batch; returns the ids of the deliveries that cannot be read or have a
    /// message that could not be stored (to be delivered again). The phases: route and decode the envelopes, look up
    /// what the batch needs, interpret each message, store them (as a whole, else one by one,
    /// so that one message storage refuses does not hold back the others), then tell about
    /// what was stored (live updates, workflow triggers).
    pub async fn process(&self, batch: &[Delivery]) -> Vec<u64> {
        let started = Utc::now();
        let (routed, mut retry) = self.route(batch);
        let mut lookups = match self.look_up(&routed).await {
            Ok(lookups) => lookups,
            Err(err) => {
                tracing::error!(%err, "cannot look devices, formats, interpreters or workflows up; the batch will be delivered again");
                return batch.iter().map(|d| d.id).collect();
            }
        };
        let mut items = Vec::with_capacity(routed.len());
        for routed in routed {
            items.push(self.understand(routed, &mut lookups, started).await);
        }
        let changes = self.store_all(&mut items).await;
        let stored = Stored {
            items: &items,
            changes: &changes,
        };
        if let Some(live) = &self.live {
            stored.publish_live(live, &lookups.known).await;
        }
        if let Some(triggers) = &self.triggers {
            triggers
                .start(stored.runs(&lookups.automations, &lookups.known))
                .await;
        }
        // A queue item is delivered again whole when any of its messages was not stored (those
        // stored already are then written nothing twice).
        retry.extend(
            items
                .iter()
                .filter(|item| !item.stored)
                .map(|item| item.delivery),
        );
        retry.sort_unstable();
        retry.dedup();
        retry
    }

    /// Route and decode: each message of each readable queue item (one message, or a group of
    /// them) with the route its topic names (or why it names none); and the items that cannot
    /// be read.
    fn route(&self, batch: &[Delivery]) -> (Vec<Routed>, Vec<u64>) {
        let mut routed = Vec::with_capacity(batch.len());
        let mut unreadable = Vec::new();
        for delivery in batch {
            match acquisition::unpack(delivery.payload.clone()) {
                Ok(messages) => routed.extend(messages.into_iter().map(|envelope| Routed {
                    delivery: delivery.id,
                    route: pms::route(&envelope.device, &envelope.topic),
                    envelope,
                })),
                Err(err) => {
                    // Nothing names its tenant or device, so it cannot be logged; perhaps a
                    // newer node's format. Never dropped: given back, it ends among the dead
                    // letters after `queue.max_attempts`, where an operator sees and replays it.
                    tracing::error!(id = delivery.id, %err, "a queue item cannot be read; it is given back");
                    self.metrics.failed.inc();
                    unreadable.push(delivery.id);
                }
            }
        }
        (routed, unreadable)
    }

    /// Look up, once per batch: the devices named, their formats, and each tenant's
    /// interpreters and workflows.
    async fn look_up(&self, routed: &[Routed]) -> Result<Lookups, StorageError> {
        let mut wanted: Vec<&str> = Vec::new();
        for r in routed {
            wanted.push(&r.envelope.device);
            if let Ok(route) = &r.route {
                wanted.push(&route.device);
            }
        }
        let known = self.devices(&wanted).await?;
        let formats = self
            .formats
            .get(known.values().filter_map(|d| d.format))
            .await?;
        let mut tenants: Vec<i64> = routed.iter().map(|r| r.envelope.tenant).collect();
        tenants.sort_unstable();
        tenants.dedup();
        let mut interpreters = HashMap::new();
        let mut automations = HashMap::new();
        for tenant in tenants {
            interpreters.insert(tenant, self.interpreters(tenant).await?);
            if let Some(triggers) = &self.triggers {
                let workflows = triggers.of(tenant).await?;
                // Tenants without workflows cost nothing more per message.
                if !workflows.is_empty() {
                    automations.insert(tenant, workflows);
                }
            }
        }
        Ok(Lookups {
            known,
            formats,
            interpreters,
            automations,
        })
    }

    /// Interpret: what one message says (its readings, or the command reply it is), or why it
    /// failed — the message-log entry either way.
    async fn understand(
        &self,
        routed: Routed,
        lookups: &mut Lookups,
        started: DateTime<Utc>,
    ) -> Item {
        let Routed {
            delivery,
            envelope,
            route,
        } = routed;
        let kind = route.as_ref().ok().map(|r| r.kind);
        let received = Utc
            .timestamp_millis_opt(envelope.received_at_ms)
            .single()
            .unwrap_or(started);
        let interpreted = self
            .interpret(
                &envelope,
                route,
                &mut lookups.known,
                &lookups.formats,
                received,
            )
            .await
            .and_then(|understood| {
                let rules = lookups
                    .interpreters
                    .get(&envelope.tenant)
                    .map(|r| r.as_ref());
                let watch = lookups
                    .automations
                    .get(&envelope.tenant)
                    .map(|w| w.as_ref());
                let logged_under = understood.logged_under;
                self.readings(&envelope, understood.parts, rules, watch)
                    .map(|readings| (logged_under, readings, understood.reply))
                    .map_err(|reason| (Some(logged_under), reason))
            });
        let (device, error, readings, reply) = match interpreted {
            Ok((logged_under, readings, reply)) => (Some(logged_under), None, readings, reply),
            Err((device, reason)) => (device, Some(reason), Vec::new(), None),
        };
        if let Some(reason) = &error {
            tracing::info!(key = %envelope.key, device = %envelope.device, topic = %envelope.topic, %reason, "device message failed");
        }
        Item {
            delivery,
            kind,
            readings,
            reply,
            stored: false,
            message: LoggedMessage {
                key: envelope.key,
                tenant: envelope.tenant,
                device,
                topic: envelope.topic,
                payload: envelope.payload.to_vec(),
                received_at: received,
                started_at: started,
                processed_at: Utc::now(),
                error,
            },
        }
    }

    /// Store: the batch in one transaction, else each message on its own; marks what was
    /// stored and returns the latest-value changes it made.
    async fn store_all(&self, items: &mut [Item]) -> Vec<ingest::Change> {
        let messages: Vec<&LoggedMessage> = items.iter().map(|i| &i.message).collect();
        let readings: Vec<&Reading> = items.iter().flat_map(|i| &i.readings).collect();
        let replies: Vec<Reply> = items.iter().filter_map(|i| i.reply.clone()).collect();
        match self.store(&messages, &readings, &replies).await {
            Ok(recorded) => {
                self.count(&messages, &recorded);
                items.iter_mut().for_each(|i| i.stored = true);
                return recorded.changes;
            }
            Err(err) => {
                tracing::warn!(%err, size = items.len(), "the batch could not be stored; storing its messages one by one");
            }
        }
        let mut changes = Vec::new();
        for item in items.iter_mut() {
            let message = std::slice::from_ref(&item.message);
            match self
                .store(message, &item.readings, item.reply.as_slice())
                .await
            {
                Ok(recorded) => {
                    self.count(message, &recorded);
                    changes.extend(recorded.changes);
                    item.stored = true;
                }
                Err(err) => {
                    tracing::error!(key = %item.message.key, %err, "a message could not be stored; it will be delivered again");
                }
            }
        }
        changes
    }

    /// Writes messages and readings (one writer at a time on SQLite).
    async fn store(
        &self,
        messages: &[impl Borrow<LoggedMessage>],
        readings: &[impl Borrow<Reading>],
        replies: &[Reply],
    ) -> Result<Recorded, StorageError> {
        let _turn = match &self.serial_writes {
            Some(lock) => Some(lock.lock().await),
            None => None,
        };
        ingest::record(&self.storage, messages, readings, replies).await
    }

    fn count(&self, messages: &[impl Borrow<LoggedMessage>], recorded: &Recorded) {
        let failed = messages
            .iter()
            .filter(|m| Borrow::<LoggedMessage>::borrow(*m).error.is_some())
            .count() as u64;
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

/// What a batch stored: the after-store phase tells about it.
struct Stored<'a> {
    items: &'a [Item],
    changes: &'a [ingest::Change],
}

impl Stored<'_> {
    /// The items stored and understood (not logged as failed).
    fn taken(&self) -> impl Iterator<Item = &Item> {
        self.items
            .iter()
            .filter(|i| i.stored && i.message.error.is_none())
    }
    /// Live updates of the stored messages' values, the events their level changes raised and
    /// the command replies they settled, per watched tenant.
    async fn publish_live(&self, live: &LiveFeed, known: &HashMap<String, DeviceRef>) {
        let mut tenants: Vec<i64> = self.taken().map(|i| i.message.tenant).collect();
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
            for item in self.taken().filter(|i| i.message.tenant == tenant) {
                for r in &item.readings {
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
                if let Some((reply, uid)) = item
                    .reply
                    .as_ref()
                    .and_then(|r| Some((r, uids.get(&r.device)?)))
                {
                    updates.push(LiveUpdate {
                        kind: LiveKind::Command,
                        device: uid.to_string(),
                        data: json!({
                            "id": reply.command,
                            "status": if reply.error.is_some() { stored_commands::FAILED } else { stored_commands::ACKNOWLEDGED },
                            "error": reply.error,
                            "at": item.message.processed_at,
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
        for item in self.taken() {
            let (Some(workflows), Some(kind)) = (
                automations.get(&item.message.tenant),
                item.kind.and_then(MessageKind::name),
            ) else {
                continue;
            };
            let mut by_device: Vec<(i64, serde_json::Map<String, serde_json::Value>)> = Vec::new();
            for r in &item.readings {
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
                    runs.extend(workflows.on_message(&item.message.key, facts, kind, &values));
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
