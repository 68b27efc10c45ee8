//! The broker's authentication and authorization seam: every CONNECT, SUBSCRIBE and PUBLISH asks
//! an [`Authenticator`]. [`ConfigAuthenticator`] serves it from configuration (anonymous access,
//! static users with argon2 hashes, ordered ACL rules) and, given the platform's
//! [`ClientDirectory`], from stored credentials: a device may publish and subscribe only under
//! its own topic tree `aos/{device id}/#`; an application with an API key only where its grants
//! say.

use std::net::SocketAddr;
use std::sync::Arc;

use aos_core::access::{ClientCredentials, ClientDirectory, ClientRefusal, Identity};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::topic::matches;

/// What a client presents in CONNECT.
#[derive(Clone, Debug)]
pub struct ConnectRequest {
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<Vec<u8>>,
    pub peer: Option<SocketAddr>,
    /// SHA-256 (hex) of the client certificate the TLS listener verified.
    pub certificate: Option<String>,
    /// The listener's name.
    pub listener: String,
}

/// Who a connection is, once authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub client_id: String,
    pub username: Option<String>,
    /// Who the platform knows the client as (a device, an application with an API key); `None`
    /// for anonymous clients and the broker's configured users.
    pub identity: Option<Identity>,
    /// When authentication began (milliseconds since the Unix epoch; set by the listener).
    pub signed_in_at_ms: i64,
}

impl Principal {
    /// The tenant whose messages alone reach this client (devices and applications); `None`:
    /// every message its subscriptions match.
    pub fn tenant(&self) -> Option<i64> {
        self.identity.as_ref().map(Identity::tenant)
    }
}

/// Why a CONNECT is refused (mapped to the 3.1.1 return code / 5.0 reason code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Unknown user or wrong password (0x04 / 0x86).
    BadCredentials,
    /// Known, but not allowed to connect (0x05 / 0x87).
    NotAuthorized,
    /// The authentication backend is unavailable (0x03 / 0x88).
    Unavailable,
}

#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    async fn authenticate(&self, request: &ConnectRequest) -> Result<Principal, Refusal>;
    fn may_publish(&self, who: &Principal, topic: &str) -> bool;
    /// `filter` is the topic filter without any `$share/{group}/` prefix.
    fn may_subscribe(&self, who: &Principal, filter: &str) -> bool;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    Allow,
    Deny,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Publish,
    Subscribe,
    All,
}

/// One ACL rule. Rules are checked in order; the first that applies decides.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclRule {
    pub permission: Permission,
    pub action: Action,
    /// A topic filter; `%c` stands for the client id, `%u` for the username.
    pub topic: String,
    /// Usernames the rule applies to; empty: everyone (anonymous clients included).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticUser {
    pub username: String,
    /// An argon2 PHC string (`aos` can make one: see docs/broker.md).
    pub password_hash: String,
}

/// The `[broker.auth]` section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Accept clients that send no username.
    pub allow_anonymous: bool,
    pub users: Vec<StaticUser>,
    pub acl: Vec<AclRule>,
    /// What applies when no rule matches.
    pub acl_default: Permission,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            allow_anonymous: true,
            users: Vec::new(),
            acl: Vec::new(),
            acl_default: Permission::Allow,
        }
    }
}

/// [`Authenticator`] served by configuration, and by the platform's device directory if given.
pub struct ConfigAuthenticator {
    config: AuthConfig,
    clients: Option<Arc<dyn ClientDirectory>>,
}

/// The topic tree of a device: everything it may publish and subscribe to.
pub fn device_tree(uid: &str) -> String {
    format!("aos/{uid}/#")
}

impl ConfigAuthenticator {
    pub fn new(config: AuthConfig) -> Self {
        ConfigAuthenticator {
            config,
            clients: None,
        }
    }

    /// Devices and applications sign in with their stored credentials; other usernames with the
    /// configured ones.
    pub fn with_clients(config: AuthConfig, clients: Arc<dyn ClientDirectory>) -> Self {
        ConfigAuthenticator {
            config,
            clients: Some(clients),
        }
    }

    fn decide(
        &self,
        who: &Principal,
        action: Action,
        applies: impl Fn(&str, Permission) -> bool,
    ) -> bool {
        for rule in &self.config.acl {
            if rule.action != Action::All && rule.action != action {
                continue;
            }
            if !rule.users.is_empty()
                && !who
                    .username
                    .as_ref()
                    .is_some_and(|u| rule.users.iter().any(|r| r == u))
            {
                continue;
            }
            let Some(filter) = substitute(&rule.topic, who) else {
                continue;
            };
            if applies(&filter, rule.permission) {
                return rule.permission == Permission::Allow;
            }
        }
        self.config.acl_default == Permission::Allow
    }
}

/// Replaces `%c` and `%u`; `None` when the rule needs a username the client does not have, or a
/// substituted value would change the filter's structure.
fn substitute(pattern: &str, who: &Principal) -> Option<String> {
    let unsafe_value = |v: &str| v.contains(['/', '+', '#']);
    let mut out = pattern.to_string();
    if out.contains("%c") {
        if unsafe_value(&who.client_id) {
            return None;
        }
        out = out.replace("%c", &who.client_id);
    }
    if out.contains("%u") {
        let user = who.username.as_deref()?;
        if unsafe_value(user) {
            return None;
        }
        out = out.replace("%u", user);
    }
    Some(out)
}

/// Whether every topic matching `inner` also matches `outer`.
pub fn filter_covers(outer: &str, inner: &str) -> bool {
    let mut o = outer.split('/');
    let mut i = inner.split('/');
    loop {
        match (o.next(), i.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(level)) if level != "#" => {}
            (Some(a), Some(b)) if a == b && a != "+" && a != "#" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether some topic matches both filters.
pub fn filters_overlap(a: &str, b: &str) -> bool {
    let mut x = a.split('/');
    let mut y = b.split('/');
    loop {
        match (x.next(), y.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (Some(l), Some(r)) if l == "+" || r == "+" || l == r => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[async_trait]
impl Authenticator for ConfigAuthenticator {
    async fn authenticate(&self, request: &ConnectRequest) -> Result<Principal, Refusal> {
        let mut principal = Principal {
            client_id: request.client_id.clone(),
            username: request.username.clone(),
            identity: None,
            signed_in_at_ms: 0,
        };
        if let Some(clients) = &self.clients {
            let credentials = ClientCredentials {
                client_id: &request.client_id,
                username: request.username.as_deref(),
                password: request.password.as_deref().unwrap_or_default(),
                certificate: request.certificate.as_deref(),
            };
            match clients.authenticate(credentials).await {
                Ok(Some(identity)) => {
                    principal.identity = Some(identity);
                    return Ok(principal);
                }
                Ok(None) => {}
                Err(ClientRefusal::BadCredentials) => return Err(Refusal::BadCredentials),
                Err(ClientRefusal::NotAuthorized) => return Err(Refusal::NotAuthorized),
                Err(ClientRefusal::Unavailable) => return Err(Refusal::Unavailable),
            }
        }
        let Some(username) = &request.username else {
            return if self.config.allow_anonymous {
                Ok(principal)
            } else {
                Err(Refusal::NotAuthorized)
            };
        };
        let Some(user) = self.config.users.iter().find(|u| &u.username == username) else {
            return Err(Refusal::BadCredentials);
        };
        let Ok(password) = String::from_utf8(request.password.clone().unwrap_or_default()) else {
            return Err(Refusal::BadCredentials);
        };
        let verified =
            aos_auth::password::verify_off_thread(password, user.password_hash.clone()).await;
        match verified {
            Ok(true) => Ok(principal),
            Err(aos_auth::password::PasswordError::Hash(_)) => Err(Refusal::Unavailable),
            Ok(false) | Err(_) => Err(Refusal::BadCredentials),
        }
    }

    fn may_publish(&self, who: &Principal, topic: &str) -> bool {
        match &who.identity {
            Some(Identity::Device { uid, .. }) => matches(&device_tree(uid), topic),
            Some(Identity::Application { grants, .. }) => grants
                .iter()
                .any(|g| g.publish && matches(&g.filter, topic)),
            None => self.decide(who, Action::Publish, |filter, _| matches(filter, topic)),
        }
    }

    fn may_subscribe(&self, who: &Principal, requested: &str) -> bool {
        match &who.identity {
            Some(Identity::Device { uid, .. }) => filter_covers(&device_tree(uid), requested),
            Some(Identity::Application { grants, .. }) => grants
                .iter()
                .any(|g| g.subscribe && filter_covers(&g.filter, requested)),
            None => self.decide(
                who,
                Action::Subscribe,
                |filter, permission| match permission {
                    Permission::Allow => filter_covers(filter, requested),
                    Permission::Deny => filters_overlap(filter, requested),
                },
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(client: &str, user: Option<&str>) -> Principal {
        Principal {
            client_id: client.into(),
            username: user.map(String::from),
            identity: None,
            signed_in_at_ms: 0,
        }
    }

    #[test]
    fn covers_and_overlaps() {
        assert!(filter_covers("a/#", "a/b/+"));
        assert!(filter_covers("a/+", "a/b"));
        assert!(!filter_covers("a/+", "a/#"));
        assert!(!filter_covers("a/b", "a/+"));
        assert!(filter_covers("#", "#"));
        assert!(filters_overlap("#", "secret/x"));
        assert!(filters_overlap("a/+/c", "a/b/+"));
        assert!(!filters_overlap("a/b", "a/c"));
        assert!(!filters_overlap("a/b", "a/b/c"));
    }

    #[test]
    fn rules_apply_in_order_with_substitution() {
        let auth = ConfigAuthenticator::new(AuthConfig {
            acl: vec![
                AclRule {
                    permission: Permission::Allow,
                    action: Action::All,
                    topic: "devices/%c/#".into(),
                    users: vec![],
                },
                AclRule {
                    permission: Permission::Allow,
                    action: Action::Subscribe,
                    topic: "#".into(),
                    users: vec!["ops".into()],
                },
                AclRule {
                    permission: Permission::Deny,
                    action: Action::Subscribe,
                    topic: "secret/#".into(),
                    users: vec![],
                },
            ],
            acl_default: Permission::Deny,
            ..AuthConfig::default()
        });
        let dev = who("d1", None);
        assert!(auth.may_publish(&dev, "devices/d1/telemetry"));
        assert!(!auth.may_publish(&dev, "devices/d2/telemetry"));
        assert!(auth.may_subscribe(&dev, "devices/d1/cmd/+"));
        assert!(!auth.may_subscribe(&dev, "devices/+/cmd"));
        assert!(!auth.may_subscribe(&dev, "#"));
        let ops = who("dashboard", Some("ops"));
        assert!(auth.may_subscribe(&ops, "#"));
        assert!(!auth.may_publish(&ops, "devices/d1/cmd"));
        // A client id that would widen the filter is not substituted.
        assert!(!auth.may_publish(&who("+", None), "devices/x/telemetry"));
    }
}
