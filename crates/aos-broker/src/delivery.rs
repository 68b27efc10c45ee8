//! What a subscription was granted, and a message on its way to one session: shared by the
//! sessions that queue them and the store that keeps them ([`crate::persist`]).

use std::num::{NonZeroU16, NonZeroU32};
use std::sync::Arc;

use ntex_mqtt::QoS;

use crate::auth::ReadCheck;
use crate::message::Message;

/// 5.0 retain handling of a subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetainHandling {
    /// Send retained messages at every subscribe.
    Always,
    /// Send them only if the subscription did not exist yet.
    IfNew,
    /// Never send them.
    Never,
}

/// The options a subscription was granted with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubOptions {
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: RetainHandling,
    pub id: Option<NonZeroU32>,
    /// What delivery checks per message (the ACL's answer to the SUBSCRIBE).
    pub read: ReadCheck,
}

impl SubOptions {
    /// Whether retained messages are sent for this subscribe, given whether the subscription
    /// existed before (5.0 retain handling; 3.1.1 always sends them).
    pub fn wants_retained(&self, existed: bool) -> bool {
        match self.retain_handling {
            RetainHandling::Always => true,
            RetainHandling::IfNew => !existed,
            RetainHandling::Never => false,
        }
    }

    pub fn qos(qos: QoS, read: ReadCheck) -> SubOptions {
        SubOptions {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: RetainHandling::Always,
            id: None,
            read,
        }
    }
}

/// A message on its way to one session.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub message: Arc<Message>,
    /// The QoS it is delivered with (the lower of published and granted).
    pub qos: QoS,
    pub retain: bool,
    /// 5.0 subscription identifiers of the matching subscriptions.
    pub sub_ids: Vec<NonZeroU32>,
    /// Set once the message has been sent with QoS 1 or 2; kept for a resend.
    pub packet_id: Option<NonZeroU16>,
    /// Whether it is a resend.
    pub dup: bool,
    /// Its record in the session's stored queue (persistent sessions, QoS 1/2).
    pub record: Option<Record>,
}

/// Where a message queued for a persistent session is stored among the session's records.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Record {
    /// Queued by the node holding the session, numbered in the session's order.
    Own(u64),
    /// Stored by the node the message was published through, before it acknowledged it (the
    /// session was held by another node): that node's incarnation and message number.
    Routed(Arc<str>, u64),
}

impl Outgoing {
    /// The copy of `message` a subscription granted `granted` receives: the lower QoS, the
    /// retain flag only if it asked for retain-as-published.
    pub fn granted(
        message: &Arc<Message>,
        granted: QoS,
        retain_as_published: bool,
        sub_ids: Vec<NonZeroU32>,
    ) -> Self {
        let qos = crate::message::min_qos(message.qos, granted);
        let retain = retain_as_published && message.retain;
        Outgoing::new(message.clone(), qos, retain, sub_ids)
    }

    pub fn new(message: Arc<Message>, qos: QoS, retain: bool, sub_ids: Vec<NonZeroU32>) -> Self {
        Outgoing {
            message,
            qos,
            retain,
            sub_ids,
            packet_id: None,
            dup: false,
            record: None,
        }
    }
}
