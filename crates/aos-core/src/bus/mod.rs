//! The bus: publish/subscribe by subject between the parts of a node and between nodes.
//!
//! Subjects are dot-separated tokens (`device.42.status`). Subscription patterns may use `*` for
//! exactly one token and `>` as the last token for one or more remaining tokens — the NATS rules,
//! so the distributed backend maps one to one. Delivery is at-most-once: the bus is for live
//! notifications; anything that must not be lost goes through a [`crate::WorkQueue`].

mod memory;

pub use memory::MemoryBus;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusMessage {
    pub subject: String,
    pub payload: Bytes,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    #[error(
        "invalid subject `{0}`: use dot-separated non-empty tokens without spaces; wildcards `*` and `>` only in subscriptions, `>` only last"
    )]
    InvalidSubject(String),
    #[error("the bus is closed")]
    Closed,
    #[error("bus backend error: {0}")]
    Backend(String),
}

/// A live subscription; dropping it unsubscribes.
pub struct Subscription {
    rx: mpsc::Receiver<BusMessage>,
    _guard: Box<dyn Send + Sync>,
}

impl Subscription {
    /// A subscription fed through `rx`; `guard` is dropped (and so unsubscribes) with it.
    pub fn new(rx: mpsc::Receiver<BusMessage>, guard: Box<dyn Send + Sync>) -> Self {
        Subscription { rx, _guard: guard }
    }

    /// The next message, or `None` once the bus has closed.
    pub async fn next(&mut self) -> Option<BusMessage> {
        self.rx.recv().await
    }
}

#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Publishes to every matching subscriber (and to one member of each matching queue group).
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), BusError>;
    /// Subscribes to every message whose subject matches `pattern`.
    async fn subscribe(&self, pattern: &str) -> Result<Subscription, BusError>;
    /// Subscribes as a member of `group`: each matching message goes to one member of the group.
    async fn queue_subscribe(&self, pattern: &str, group: &str) -> Result<Subscription, BusError>;
    /// Whether other nodes share this bus (what one node publishes, another receives).
    fn spans_nodes(&self) -> bool {
        false
    }
    /// Counts the moments this node's connection to a shared bus may have lost messages (it
    /// came back after being lost, or the server dropped messages it could not take in time);
    /// `None` for a bus that loses nothing on its way (in-process).
    fn gaps(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}

fn valid_tokens(subject: &str) -> bool {
    !subject.is_empty()
        && subject
            .split('.')
            .all(|t| !t.is_empty() && !t.chars().any(char::is_whitespace))
}

/// Checks a subject to publish to: no wildcards.
pub fn validate_subject(subject: &str) -> Result<(), BusError> {
    if valid_tokens(subject) && !subject.split('.').any(|t| t == "*" || t == ">") {
        Ok(())
    } else {
        Err(BusError::InvalidSubject(subject.to_string()))
    }
}

/// Checks a subscription pattern: `*` tokens anywhere, `>` only as the last token.
pub fn validate_pattern(pattern: &str) -> Result<(), BusError> {
    let tokens: Vec<&str> = pattern.split('.').collect();
    let wildcard_misplaced = tokens.iter().enumerate().any(|(i, t)| {
        (*t == ">" && i + 1 != tokens.len()) || (t.len() > 1 && t.contains(['*', '>']))
    });
    if valid_tokens(pattern) && !wildcard_misplaced {
        Ok(())
    } else {
        Err(BusError::InvalidSubject(pattern.to_string()))
    }
}

/// Whether `subject` matches `pattern` under the rules above (both assumed valid).
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(pt), Some(st)) if pt == st => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_follow_nats_rules() {
        assert!(subject_matches("a.*.c", "a.b.c"));
        assert!(!subject_matches("a.*.c", "a.b.d"));
        assert!(!subject_matches("a.*", "a.b.c"));
        assert!(subject_matches("a.>", "a.b.c"));
        assert!(!subject_matches("a.>", "a"));
        assert!(subject_matches("a.b", "a.b"));
        assert!(!subject_matches("a.b", "a.b.c"));
    }

    #[test]
    fn patterns_and_subjects_are_validated() {
        assert!(validate_pattern("a.>.b").is_err());
        assert!(validate_pattern("a.b*").is_err());
        assert!(validate_pattern("a..b").is_err());
        assert!(validate_pattern("*.>").is_ok());
        assert!(validate_subject("a.*").is_err());
        assert!(validate_subject("a b").is_err());
        assert!(validate_subject("device.1.status").is_ok());
    }
}
