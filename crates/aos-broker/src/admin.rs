//! The broker view: what this node answers when the platform asks about its clients, retained
//! messages and traffic ([`aos_core::broker_admin`]), and the administrator's disconnect and
//! forget.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aos_core::access::Identity;
use aos_core::broker_admin::{
    self, Answer, Ask, ClientInfo, ClientQuery, MOST_LISTED, PREVIEW_BYTES, RetainedInfo,
    RetainedQuery, SUBSCRIPTIONS_SHOWN, SubscriptionInfo, Traffic,
};
use aos_core::bus::BusError;
use aos_core::{Bus, Subscription};
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::message::Message;
use crate::session::Session;
use crate::topic::{matches, valid_topic_filter};

/// Over how long the message rates are averaged.
const RATE_WINDOW: Duration = Duration::from_secs(5);

/// Subscribes this node to the platform's requests (before the role reports itself started, so
/// that a registered broker node answers).
pub async fn subscribe(bus: &dyn Bus) -> Result<Subscription, BusError> {
    bus.subscribe(broker_admin::SUBJECT).await
}

/// Answers the platform's requests until `stop`.
pub async fn serve(
    broker: Arc<Broker>,
    bus: Arc<dyn Bus>,
    node: String,
    mut requests: Subscription,
    stop: CancellationToken,
) {
    let mut meter = Meter::new(&broker);
    let mut tick = tokio::time::interval(RATE_WINDOW);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => meter.sample(&broker),
            request = requests.next() => {
                let Some(request) = request else { return };
                let answered = broker_admin::answer(bus.as_ref(), &node, &request.payload, |ask| {
                    answer(&broker, &node, &meter, ask)
                })
                .await;
                if let Err(err) = answered {
                    tracing::warn!(%err, "cannot answer the platform's request");
                }
            }
        }
    }
}

fn answer(broker: &Broker, node: &str, meter: &Meter, ask: Ask) -> Answer {
    match ask {
        Ask::Clients(query) => clients(broker, node, &query),
        Ask::Disconnect { client_id, tenant } => {
            let found = broker.disconnect(&client_id, tenant);
            if found {
                tracing::info!(%client_id, "client disconnected by an administrator");
            }
            Answer::Disconnected { found }
        }
        Ask::Retained(query) => retained(broker, &query),
        Ask::ForgetRetained { topic, tenant } => {
            let found = broker.forget_retained(&topic, tenant);
            if found {
                tracing::info!(%topic, "retained message forgotten by an administrator");
            }
            Answer::Forgot { found }
        }
        Ask::Traffic => Answer::Traffic(meter.traffic(broker, node)),
    }
}

fn clients(broker: &Broker, node: &str, query: &ClientQuery) -> Answer {
    let search = query.search.as_deref().map(str::to_lowercase);
    let mut found: Vec<Arc<Session>> = broker
        .sessions_now()
        .into_iter()
        .filter(|s| {
            s.of_tenant(query.tenant)
                && query.connected.is_none_or(|c| s.is_connected() == c)
                && search.as_deref().is_none_or(|text| {
                    s.client_id.to_lowercase().contains(text)
                        || name_of(s)
                            .1
                            .is_some_and(|n| n.to_lowercase().contains(text))
                })
        })
        .collect();
    let total = found.len() as u64;
    found.sort_unstable_by(|a, b| a.client_id.cmp(&b.client_id));
    found.truncate(query.first.min(MOST_LISTED));
    Answer::Clients {
        total,
        clients: found.iter().map(|s| client(s, node)).collect(),
    }
}

/// What kind of client opened a session, and its name: the device's id, the application's
/// name, or the username.
fn name_of(session: &Session) -> (&'static str, Option<&str>) {
    match (&session.identity, &session.username) {
        (Some(Identity::Device { uid, .. }), _) => ("device", Some(uid)),
        (Some(Identity::Application { name, .. }), _) => ("application", Some(name)),
        (None, username) => ("user", username.as_deref()),
    }
}

fn client(session: &Session, node: &str) -> ClientInfo {
    let (kind, name) = name_of(session);
    let state = session.lock();
    let link = state.link.as_ref();
    let mut subscriptions: Vec<SubscriptionInfo> = state
        .subscriptions
        .iter()
        .map(|(filter, (_, opts))| SubscriptionInfo {
            filter: filter.clone(),
            qos: opts.qos as u8,
        })
        .collect();
    subscriptions.sort_unstable_by(|a, b| a.filter.cmp(&b.filter));
    let subscription_count = subscriptions.len() as u64;
    subscriptions.truncate(SUBSCRIPTIONS_SHOWN);
    ClientInfo {
        client_id: session.client_id.to_string(),
        node: node.to_string(),
        connected: link.is_some(),
        address: link.and_then(|l| l.peer.address).map(|a| a.to_string()),
        protocol: link.map(|l| l.peer.protocol.name().to_string()),
        listener: link.map(|l| l.peer.listener.to_string()),
        connected_at: link
            .and_then(|l| chrono::DateTime::from_timestamp_millis(l.signed_in_at_ms))
            .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        keep_alive: link.map(|l| l.peer.keep_alive),
        kind: kind.to_string(),
        name: name.map(str::to_string),
        tenant: session.identity.as_ref().map(Identity::tenant),
        tenant_name: None,
        subscriptions,
        subscription_count,
        queued: state.queue.len() as u64,
        inflight: state.inflight.len() as u64,
        session_expiry: state.expiry.map(|e| e.as_secs()),
    }
}

fn retained(broker: &Broker, query: &RetainedQuery) -> Answer {
    if !valid_topic_filter(&query.filter) {
        return Answer::Refused {
            error: format!(
                "`{}` is not an MQTT topic filter: use topic levels separated by `/`, with `+` for one level and `#` last for the rest",
                query.filter
            ),
        };
    }
    let now = Instant::now();
    let mut found: Vec<Arc<Message>> = broker
        .retained_now()
        .into_iter()
        .filter(|m| {
            !m.is_expired(now)
                && query.tenant.is_none_or(|t| m.tenant == Some(t))
                && matches(&query.filter, &m.topic)
        })
        .collect();
    let total = found.len() as u64;
    found.sort_unstable_by(|a, b| a.topic.cmp(&b.topic));
    found.truncate(query.first.min(MOST_LISTED));
    let messages = found
        .iter()
        .map(|m| RetainedInfo {
            topic: m.topic.to_string(),
            qos: m.qos as u8,
            tenant: m.tenant,
            tenant_name: None,
            size: m.payload.len() as u64,
            text: preview(&m.payload),
            expires_in: m
                .expires_at
                .map(|at| at.saturating_duration_since(now).as_secs()),
        })
        .collect();
    Answer::Retained { total, messages }
}

/// The start of a payload as text, if it is UTF-8 (cut at a character boundary).
fn preview(payload: &[u8]) -> Option<String> {
    let head = &payload[..payload.len().min(PREVIEW_BYTES)];
    match std::str::from_utf8(head) {
        Ok(text) => Some(text.to_string()),
        // Cut inside a character: the whole characters before the cut.
        Err(err) if err.error_len().is_none() && payload.len() > PREVIEW_BYTES => {
            std::str::from_utf8(&head[..err.valid_up_to()])
                .ok()
                .map(str::to_string)
        }
        Err(_) => None,
    }
}

/// The broker's message counters as last sampled, and the rates between the last two samples.
struct Meter {
    at: Instant,
    totals: Totals,
    rates: [f64; 4],
}

/// Messages and bytes received and sent since the node started.
#[derive(Clone, Copy, Default)]
struct Totals {
    messages_in: u64,
    messages_out: u64,
    bytes_in: u64,
    bytes_out: u64,
}

impl Totals {
    fn of(broker: &Broker) -> Totals {
        let m = &broker.metrics;
        Totals {
            messages_in: m.messages_received.total(),
            messages_out: m.messages_sent.total(),
            bytes_in: m.bytes_received.get(),
            bytes_out: m.bytes_sent.get(),
        }
    }

    fn as_array(self) -> [u64; 4] {
        [
            self.messages_in,
            self.messages_out,
            self.bytes_in,
            self.bytes_out,
        ]
    }
}

impl Meter {
    fn new(broker: &Broker) -> Meter {
        Meter {
            at: Instant::now(),
            totals: Totals::of(broker),
            rates: [0.0; 4],
        }
    }

    fn sample(&mut self, broker: &Broker) {
        let (now, totals) = (Instant::now(), Totals::of(broker));
        let seconds = now.duration_since(self.at).as_secs_f64();
        if seconds > 0.0 {
            let (new, old) = (totals.as_array(), self.totals.as_array());
            for (rate, (new, old)) in self.rates.iter_mut().zip(new.iter().zip(old)) {
                *rate = new.saturating_sub(old) as f64 / seconds;
            }
        }
        (self.at, self.totals) = (now, totals);
    }

    fn traffic(&self, broker: &Broker, node: &str) -> Traffic {
        let (sessions, connections) = broker.session_counts();
        let totals = Totals::of(broker);
        let [messages_in, messages_out, bytes_in, bytes_out] = self.rates;
        Traffic {
            node: node.to_string(),
            connections: connections as u64,
            sessions: sessions as u64,
            retained: broker.metrics.retained.get().max(0) as u64,
            messages_in_per_second: messages_in,
            messages_out_per_second: messages_out,
            bytes_in_per_second: bytes_in,
            bytes_out_per_second: bytes_out,
            messages_in: totals.messages_in,
            messages_out: totals.messages_out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews_are_text_cut_at_a_character() {
        assert_eq!(preview(b"21.5").as_deref(), Some("21.5"));
        assert_eq!(preview(&[0xff, 0x00]), None);
        // Three bytes a character: the limit falls inside one.
        let long = "€".repeat(PREVIEW_BYTES);
        let cut = preview(long.as_bytes()).expect("text");
        assert_eq!(cut.len(), PREVIEW_BYTES / 3 * 3);
    }
}
