//! The broker's side of commands and device presence (see `aos_core::commands`): this node
//! delivers the commands offered on the bus to the device sessions it holds, says so, and tells
//! the bus when devices connect and disconnect.

use std::sync::Arc;

use aos_core::Bus;
use aos_core::access::Identity;
use aos_core::commands::{
    self, CommandDelivery, CommandSent, DELIVER_SUBJECT, Presence, PresenceChange, SENT_SUBJECT,
};
use ntex_mqtt::QoS;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::broker::{Broker, max_qos};
use crate::delivery::Outgoing;
use crate::message::{Message, min_qos};
use crate::session::Enqueued;
use crate::topic::matches;

impl Broker {
    /// Queues a command for the connected session it names, if this node holds it, it belongs
    /// to the command's tenant and it subscribes to the command's topic. Commands go with QoS 1
    /// (or the lower QoS the device subscribed with).
    pub fn deliver_command(&self, delivery: &CommandDelivery) -> bool {
        let Some(session) = self.session(&delivery.session) else {
            return false;
        };
        let is_the_device = matches!(&session.identity,
            Some(Identity::Device { uid, tenant }) if *uid == delivery.session && *tenant == delivery.tenant);
        if !is_the_device || !session.is_connected() {
            return false;
        }
        let (granted, sub_ids) = {
            let state = session.lock();
            let mut granted: Option<QoS> = None;
            let mut sub_ids = Vec::new();
            for (filter, (_, opts)) in state.subscriptions.iter() {
                if matches(filter, &delivery.topic) {
                    granted = Some(granted.map_or(opts.qos, |g| max_qos(g, opts.qos)));
                    sub_ids.extend(opts.id);
                }
            }
            (granted, sub_ids)
        };
        let Some(granted) = granted else {
            return false;
        };
        let mut message = Message::new(
            delivery.topic.as_str(),
            delivery.payload.clone().into(),
            QoS::AtLeastOnce,
            false,
        );
        message.tenant = Some(delivery.tenant);
        let qos = min_qos(message.qos, granted);
        let out = Outgoing::new(Arc::new(message), qos, false, sub_ids);
        session.enqueue(out, self.limits.queue) == Enqueued::Queued
    }

    /// Where the broker reports devices connecting and disconnecting.
    pub fn report_presence(&self, to: mpsc::UnboundedSender<Presence>) {
        let _ = self.presence.set(to);
    }

    /// Reports what a device did on connection `connection` (other identities are not
    /// reported).
    pub(crate) fn presence_changed(
        &self,
        identity: Option<&Identity>,
        change: PresenceChange,
        connection: u64,
    ) {
        if let (Some(Identity::Device { uid, tenant }), Some(to)) = (identity, self.presence.get())
        {
            let _ = to.send(Presence {
                device: uid.clone(),
                tenant: *tenant,
                node: String::new(),
                change,
                at_ms: chrono::Utc::now().timestamp_millis(),
                connection,
                session: String::new(),
            });
        }
    }
}

/// Serves commands and reports presence over the bus until `stop`.
pub async fn serve(
    broker: Arc<Broker>,
    bus: Arc<dyn Bus>,
    node: String,
    mut presence: mpsc::UnboundedReceiver<Presence>,
    stop: CancellationToken,
) {
    // Connections are numbered per process: the boot time makes a session unique for good.
    let boot = chrono::Utc::now().timestamp_millis();
    let mut offered = match bus.subscribe(DELIVER_SUBJECT).await {
        Ok(subscription) => subscription,
        Err(err) => {
            tracing::error!(%err, "cannot subscribe to commands; this node delivers none");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            next = offered.next() => {
                let Some(next) = next else { return };
                let delivery: CommandDelivery = match commands::decode(&next.payload) {
                    Ok(delivery) => delivery,
                    Err(err) => {
                        tracing::warn!(%err, "ignored a malformed command offer");
                        continue;
                    }
                };
                if broker.deliver_command(&delivery) {
                    tracing::debug!(id = delivery.id, session = %delivery.session, "command delivered");
                    let sent = CommandSent { id: delivery.id, node: node.clone() };
                    if let Err(err) = bus.publish(SENT_SUBJECT, commands::encode(&sent)).await {
                        tracing::warn!(%err, id = delivery.id, "cannot report a delivered command; it may be offered again");
                    }
                }
            }
            change = presence.recv() => {
                let Some(mut change) = change else { return };
                change.node.clone_from(&node);
                change.session = format!("{node}/{boot}/{}", change.connection);
                if let Err(err) = bus.publish(change.subject(), commands::encode(&change)).await {
                    tracing::warn!(%err, device = %change.device, "cannot report a device's presence");
                }
            }
        }
    }
}
