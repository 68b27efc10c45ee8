//! The in-process bus of a standalone node.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

use super::{
    Bus, BusError, BusMessage, Subscription, subject_matches, validate_pattern, validate_subject,
};
use crate::metrics::Metrics;

/// Messages a subscriber may have waiting before newer ones are dropped for it (the bus never
/// blocks a publisher on a slow subscriber).
pub const SUBSCRIBER_CAPACITY: usize = 4096;

struct Subscriber {
    id: u64,
    pattern: String,
    group: Option<String>,
    tx: mpsc::Sender<BusMessage>,
}

#[derive(Default)]
struct Inner {
    subscribers: Mutex<Vec<Subscriber>>,
    next_id: AtomicU64,
    /// Round-robin position per queue group.
    group_turns: Mutex<HashMap<String, u64>>,
    dropped: Counter,
}

/// An in-process [`Bus`].
#[derive(Clone, Default)]
pub struct MemoryBus {
    inner: Arc<Inner>,
}

struct Unsubscribe {
    inner: Weak<Inner>,
    id: u64,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.upgrade() {
            lock(&inner.subscribers).retain(|s| s.id != self.id);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl MemoryBus {
    pub fn new(metrics: &Metrics) -> Self {
        let bus = MemoryBus::default();
        metrics.register(
            "bus_dropped_messages",
            "Bus messages dropped because a subscriber was too slow",
            bus.inner.dropped.clone(),
        );
        bus
    }

    fn add(&self, pattern: &str, group: Option<&str>) -> Result<Subscription, BusError> {
        validate_pattern(pattern)?;
        let (tx, rx) = mpsc::channel(SUBSCRIBER_CAPACITY);
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.inner.subscribers).push(Subscriber {
            id,
            pattern: pattern.to_string(),
            group: group.map(String::from),
            tx,
        });
        let guard = Unsubscribe {
            inner: Arc::downgrade(&self.inner),
            id,
        };
        Ok(Subscription::new(rx, Box::new(guard)))
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), BusError> {
        validate_subject(subject)?;
        let message = BusMessage {
            subject: subject.to_string(),
            payload,
        };
        let subscribers = lock(&self.inner.subscribers);
        // Queue groups: collect the matching members of each group, then pick one in turn.
        let mut groups: HashMap<&str, Vec<&Subscriber>> = HashMap::new();
        let mut targets: Vec<&Subscriber> = Vec::new();
        for sub in subscribers
            .iter()
            .filter(|s| subject_matches(&s.pattern, subject))
        {
            match &sub.group {
                Some(group) => groups.entry(group.as_str()).or_default().push(sub),
                None => targets.push(sub),
            }
        }
        if !groups.is_empty() {
            let mut turns = lock(&self.inner.group_turns);
            for (group, members) in groups {
                let turn = turns.entry(group.to_string()).or_default();
                targets.push(members[(*turn % members.len() as u64) as usize]);
                *turn = turn.wrapping_add(1);
            }
        }
        for sub in targets {
            if let Err(mpsc::error::TrySendError::Full(_)) = sub.tx.try_send(message.clone()) {
                self.inner.dropped.inc();
            }
        }
        Ok(())
    }

    async fn subscribe(&self, pattern: &str) -> Result<Subscription, BusError> {
        self.add(pattern, None)
    }

    async fn queue_subscribe(&self, pattern: &str, group: &str) -> Result<Subscription, BusError> {
        if group.is_empty() || group.contains(char::is_whitespace) {
            return Err(BusError::InvalidSubject(group.to_string()));
        }
        self.add(pattern, Some(group))
    }
}
