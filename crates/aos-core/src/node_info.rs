//! What a node is and what it listens on, as it reports itself (a leaf: the node and the roles'
//! context both carry it).

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::kind::RoleKind;

/// A listener of a node: what it serves, how, where.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerInfo {
    /// The role it belongs to (`broker`, `web`), or `admin`.
    pub role: String,
    pub name: String,
    /// `mqtt`, `mqtt+tls`, `mqtt+ws`, `mqtt+wss`, `http`, `https`.
    pub protocol: String,
    /// The address it is bound to.
    pub address: String,
}

/// What a node is: reported on `/node` and in its registration.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: String,
    pub version: String,
    /// Roles linked into this binary.
    pub compiled_roles: Vec<RoleKind>,
    /// Roles this node runs.
    pub enabled_roles: Vec<RoleKind>,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub admin_listen: String,
    /// The listeners of its enabled roles and its admin listener.
    pub listeners: Vec<ListenerInfo>,
}

impl NodeInfo {
    pub fn new(
        id: String,
        compiled_roles: Vec<RoleKind>,
        enabled_roles: Vec<RoleKind>,
        admin_listen: String,
    ) -> Self {
        NodeInfo {
            id,
            version: crate::VERSION.to_string(),
            compiled_roles,
            enabled_roles,
            started_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            listeners: vec![ListenerInfo {
                role: "admin".into(),
                name: "admin".into(),
                protocol: "http".into(),
                address: admin_listen.clone(),
            }],
            admin_listen,
        }
    }

    /// Adds the listeners of its roles.
    pub fn with_listeners(mut self, listeners: impl IntoIterator<Item = ListenerInfo>) -> Self {
        self.listeners.extend(listeners);
        self
    }
}
