//! The kinds of role a node can run (a leaf: configuration, roles and the node all name them).

use std::fmt;

use serde::{Deserialize, Serialize};

/// The roles an `aos` node can run. Which of them a binary contains is decided by Cargo features
/// of `bins/aos`; which of those a node runs is decided by configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoleKind {
    Broker,
    Worker,
    Web,
}

impl RoleKind {
    /// Every role, in start order: the worker first (so queued work has a consumer), the broker
    /// last (so devices connect only once everything behind it runs). Nodes stop in reverse.
    pub const ALL: [RoleKind; 3] = [RoleKind::Worker, RoleKind::Web, RoleKind::Broker];

    pub fn as_str(self) -> &'static str {
        match self {
            RoleKind::Broker => "broker",
            RoleKind::Worker => "worker",
            RoleKind::Web => "web",
        }
    }

    /// The Cargo feature of `bins/aos` that links this role in.
    pub fn feature(self) -> &'static str {
        self.as_str()
    }

    pub fn parse(name: &str) -> Option<RoleKind> {
        RoleKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl fmt::Display for RoleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
