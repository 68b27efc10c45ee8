//! Commands on their way out (their life is in `aos_storage::repo::commands`), and devices'
//! presence. Workers offer the queued commands of online devices to the broker nodes over the bus
//! (the node holding the device's session delivers and says so), mark them `sent`, expire them,
//! and keep each device's status and last-seen time from the brokers' presence reports (starting
//! the workflows of devices connecting, disconnecting and first seen).
//!
//! A command is offered when it is created through the API (`commands.created`), when its device
//! subscribes (it has just connected), and otherwise by the worker holding the dispatch lease
//! once a `TICK` — again only after `REOFFER` if it still is not sent (the device did not
//! subscribe to its command topic, or a bus message was lost).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aos_core::commands::{
    self, CREATED_SUBJECT, CommandDelivery, CommandSent, DELIVER_SUBJECT, PRESENCE_PATTERN,
    Presence, PresenceChange, SENT_SUBJECT,
};
use aos_core::live::{LiveFeed, LiveKind, LiveUpdate};
use aos_core::node::{REGISTRATIONS, Registration};
use aos_core::{Bus, Kv, Subscription};
use aos_formats::command;
use aos_storage::Storage;
use aos_storage::entity::device;
use aos_storage::repo::commands::{self as stored, Deliverable};
use aos_storage::repo::devices;
use aos_workflows::{DeviceEvent, DeviceFacts};
use chrono::{DateTime, TimeZone, Utc};
use prometheus_client::metrics::counter::Counter;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::lookups::FormatCache;
use crate::workflows::Triggers;
use aos_core::kv::{LOOK_LEASE, take_lease};

/// How often queued commands are looked at (and expired ones marked).
const TICK: Duration = Duration::from_secs(1);
/// How long an offered command that was not sent waits before it is offered again.
const REOFFER: Duration = Duration::from_secs(30);
/// Commands offered per look.
const PER_LOOK: u64 = 500;
/// How old a session must be before its node's absence from the registry ends it (a broker
/// registers a moment after it starts accepting).
const LOST_GRACE: chrono::TimeDelta = chrono::TimeDelta::seconds(5);
/// Queue groups: each report is handled by one worker of the cluster.
const COMMANDS_GROUP: &str = "workers.commands";
const PRESENCE_GROUP: &str = "workers.presence";

/// Counters of commands (registered by the worker role).
#[derive(Clone, Default)]
pub struct CommandMetrics {
    pub offered: Counter,
    pub sent: Counter,
    pub expired: Counter,
}

pub struct Dispatcher {
    storage: Storage,
    bus: Arc<dyn Bus>,
    formats: Arc<FormatCache>,
    triggers: Arc<Triggers>,
    live: Arc<LiveFeed>,
    metrics: CommandMetrics,
    /// Commands this worker offered and when.
    offered: Mutex<HashMap<i64, Instant>>,
}

impl Dispatcher {
    pub fn new(
        storage: Storage,
        bus: Arc<dyn Bus>,
        formats: Arc<FormatCache>,
        triggers: Arc<Triggers>,
        live: Arc<LiveFeed>,
        metrics: CommandMetrics,
    ) -> Dispatcher {
        Dispatcher {
            storage,
            bus,
            formats,
            triggers,
            live,
            metrics,
            offered: Mutex::new(HashMap::new()),
        }
    }

    fn offered(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Instant>> {
        self.offered.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Offers the deliverable commands (through `session` only, if given; `again`: even those
    /// offered a moment ago).
    async fn offer(&self, session: Option<&str>, again: bool) {
        let pending = match stored::deliverable(&self.storage, session, PER_LOOK).await {
            Ok(pending) => pending,
            Err(err) => {
                tracing::warn!(%err, "cannot look queued commands up");
                return;
            }
        };
        let pending: Vec<Deliverable> = {
            let mut offered = self.offered();
            offered.retain(|_, at| at.elapsed() < REOFFER);
            pending
                .into_iter()
                .filter(|c| again || !offered.contains_key(&c.id))
                .collect()
        };
        if pending.is_empty() {
            return;
        }
        let formats = match self
            .formats
            .get(pending.iter().filter_map(|c| c.format))
            .await
        {
            Ok(formats) => formats,
            Err(err) => {
                tracing::warn!(%err, "cannot look outbound formats up");
                return;
            }
        };
        for pending in pending {
            let format = match pending.format.and_then(|id| formats.get(&id)) {
                None => Ok(None),
                Some(compiled) => compiled.as_ref().as_ref().map(Some).map_err(Clone::clone),
            };
            let payload = format.and_then(|format| {
                command::encode(format, pending.id, &pending.name, &pending.parameters)
            });
            let payload = match payload {
                Ok(payload) => payload,
                Err(reason) => {
                    tracing::info!(id = pending.id, device = %pending.device, %reason, "command cannot be written for its device");
                    if let Err(err) =
                        stored::mark_undeliverable(&self.storage, pending.id, &reason).await
                    {
                        tracing::warn!(%err, id = pending.id, "cannot mark a command failed");
                    }
                    continue;
                }
            };
            let (session, topic) = match &pending.gateway {
                Some(gateway) => (
                    gateway.clone(),
                    format!("aos/{gateway}/nodes/{}/commands", pending.device),
                ),
                None => (
                    pending.device.clone(),
                    format!("aos/{}/commands", pending.device),
                ),
            };
            let delivery = CommandDelivery {
                id: pending.id,
                tenant: pending.tenant,
                session,
                topic,
                payload,
            };
            match self
                .bus
                .publish(DELIVER_SUBJECT, commands::encode(&delivery))
                .await
            {
                Ok(()) => {
                    self.metrics.offered.inc();
                    self.offered().insert(pending.id, Instant::now());
                }
                Err(err) => tracing::warn!(%err, id = pending.id, "cannot offer a command"),
            }
        }
    }

    async fn sent(&self, report: &[u8]) {
        let sent: CommandSent = match commands::decode(report) {
            Ok(sent) => sent,
            Err(err) => {
                tracing::warn!(%err, "ignored a malformed command report");
                return;
            }
        };
        match stored::mark_sent(&self.storage, sent.id).await {
            Ok(Some(command)) => {
                self.metrics.sent.inc();
                let update = LiveUpdate {
                    kind: LiveKind::Command,
                    device: command.device,
                    data: json!({
                        "id": command.command.id,
                        "status": command.command.status,
                        "at": command.command.sent_at,
                    }),
                };
                self.live
                    .publish(command.command.tenant_id, vec![update])
                    .await;
            }
            Ok(None) => {}
            Err(err) => tracing::warn!(%err, id = sent.id, "cannot mark a command sent"),
        }
        self.offered().remove(&sent.id);
    }

    async fn presence(&self, report: &[u8]) {
        let presence: Presence = match commands::decode(report) {
            Ok(presence) => presence,
            Err(err) => {
                tracing::warn!(%err, "ignored a malformed presence report");
                return;
            }
        };
        let at = Utc
            .timestamp_millis_opt(presence.at_ms)
            .single()
            .unwrap_or_else(Utc::now);
        let event = match presence.change {
            PresenceChange::Subscribed => {
                self.offer(Some(&presence.device), true).await;
                return;
            }
            PresenceChange::Connected => DeviceEvent::Connected,
            PresenceChange::Disconnected => DeviceEvent::Disconnected,
        };
        let connected = presence.change == PresenceChange::Connected;
        let recorded = if connected {
            devices::session_began(
                &self.storage,
                &presence.device,
                &presence.session,
                &presence.node,
                at,
            )
            .await
        } else {
            devices::session_ended(&self.storage, &presence.device, &presence.session, at).await
        };
        let device = match recorded {
            Ok(Some((device, true))) => device,
            // Unknown, or about a session another one replaced: nothing changed.
            Ok(Some((_, false)) | None) => return,
            Err(err) => {
                tracing::warn!(%err, device = %presence.device, "cannot record a device's presence");
                return;
            }
        };
        self.announce(&device, event, at).await;
    }

    /// Tells watchers about a device going online or offline, and starts the workflows that
    /// watch for it.
    async fn announce(&self, device: &device::Model, event: DeviceEvent, at: DateTime<Utc>) {
        let connected = event == DeviceEvent::Connected;
        let update = LiveUpdate {
            kind: LiveKind::Device,
            device: device.uid.clone(),
            data: json!({
                "status": if connected { devices::ONLINE } else { devices::OFFLINE },
                "at": at,
            }),
        };
        self.live.publish(device.tenant_id, vec![update]).await;
        // Its first connection is when a device is first seen.
        let first = (connected && device.last_seen.is_none()).then_some(DeviceEvent::Registered);
        let workflows = match self.triggers.of(device.tenant_id).await {
            Ok(workflows) => workflows,
            Err(err) => {
                tracing::warn!(%err, "cannot look workflows up for a device's presence");
                return;
            }
        };
        let facts = DeviceFacts {
            uid: &device.uid,
            class: device.class_id,
        };
        let runs = [Some(event), first]
            .into_iter()
            .flatten()
            .flat_map(|event| workflows.on_device(facts, event, at.timestamp_millis()))
            .collect();
        self.triggers.start(runs).await;
    }

    /// The sessions of broker nodes that are gone — not registered any more (their
    /// registration expired), or restarted since — end: their devices are offline.
    async fn end_lost_sessions(&self, kv: &dyn Kv) {
        let before = Utc::now() - LOST_GRACE;
        let sessions = match devices::sessions_before(&self.storage, before).await {
            Ok(sessions) => sessions,
            Err(err) => {
                tracing::warn!(%err, "cannot look devices' sessions up");
                return;
            }
        };
        if sessions.is_empty() {
            return;
        }
        // Never guessed from a registry that cannot be read.
        let registered = match kv.list(REGISTRATIONS).await {
            Ok(entries) => entries,
            Err(err) => {
                tracing::warn!(%err, "cannot read the node registry; sessions are kept");
                return;
            }
        };
        let started: HashMap<String, DateTime<Utc>> = registered
            .iter()
            .filter_map(|entry| {
                let node: Registration = commands::decode(&entry.value).ok()?;
                let at = DateTime::parse_from_rfc3339(&node.info.started_at).ok()?;
                Some((node.info.id, at.with_timezone(&Utc)))
            })
            .collect();
        for (uid, session, node, began) in sessions {
            let lost = started.get(&node).is_none_or(|started| began < *started);
            if !lost {
                continue;
            }
            let now = Utc::now();
            match devices::session_ended(&self.storage, &uid, &session, now).await {
                Ok(Some((device, true))) => {
                    tracing::info!(device = %uid, node = %node, "the device's broker node is gone: offline");
                    self.announce(&device, DeviceEvent::Disconnected, now).await;
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(%err, device = %uid, "cannot end a lost session"),
            }
        }
    }

    async fn tick(&self, kv: &dyn Kv) {
        self.end_lost_sessions(kv).await;
        match stored::expire(&self.storage).await {
            Ok(0) => {}
            Ok(expired) => {
                tracing::info!(expired, "commands expired");
                self.metrics.expired.inc_by(expired);
            }
            Err(err) => tracing::warn!(%err, "cannot expire commands"),
        }
        self.offer(None, false).await;
    }
}

async fn listen(bus: &dyn Bus, pattern: &str, group: &str) -> Option<Subscription> {
    match bus.queue_subscribe(pattern, group).await {
        Ok(subscription) => Some(subscription),
        Err(err) => {
            tracing::error!(%err, pattern, "cannot subscribe; commands stay queued");
            None
        }
    }
}

/// Dispatches commands and records presence until `stop`.
pub async fn run(
    dispatcher: Arc<Dispatcher>,
    kv: Arc<dyn Kv>,
    node: String,
    stop: CancellationToken,
) {
    let bus = dispatcher.bus.clone();
    let (Some(mut sent), Some(mut presence), Some(mut created)) = (
        listen(bus.as_ref(), SENT_SUBJECT, COMMANDS_GROUP).await,
        listen(bus.as_ref(), PRESENCE_PATTERN, PRESENCE_GROUP).await,
        listen(bus.as_ref(), CREATED_SUBJECT, COMMANDS_GROUP).await,
    ) else {
        return;
    };
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            report = sent.next() => match report {
                Some(report) => dispatcher.sent(&report.payload).await,
                None => return,
            },
            report = presence.next() => match report {
                Some(report) => dispatcher.presence(&report.payload).await,
                None => return,
            },
            report = created.next() => match report {
                Some(report) => {
                    let device = String::from_utf8_lossy(&report.payload);
                    dispatcher.offer(Some(&device), false).await;
                }
                None => return,
            },
            _ = tick.tick() => {
                // One worker of the cluster looks per tick.
                match take_lease(kv.as_ref(), "jobs.commands", &node, LOOK_LEASE).await {
                    Ok(true) => dispatcher.tick(kv.as_ref()).await,
                    Ok(false) => {}
                    Err(err) => tracing::warn!(%err, "cannot take the command dispatch lease"),
                }
            }
        }
    }
}
