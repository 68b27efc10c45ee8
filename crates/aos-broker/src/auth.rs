//! The broker's authentication and authorization seam: every CONNECT, SUBSCRIBE and PUBLISH asks
//! an [`Authenticator`]. [`ConfigAuthenticator`] serves it from configuration (anonymous access,
//! static users with argon2 hashes, ordered ACL rules) and, given the platform's
//! [`DeviceDirectory`], from the devices' stored credentials: a device may publish and subscribe
//! only under its own topic tree `aos/{device id}/#`.

use std::net::SocketAddr;
use std::sync::Arc;

use aos_core::access::{DeviceDirectory, DeviceRefusal};

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
    /// The listener's name.
    pub listener: String,
}

/// Who a connection is, once authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub client_id: String,
    pub username: Option<String>,
    /// The device's id, when the client signed in with device credentials.
    pub device: Option<String>,
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
    devices: Option<Arc<dyn DeviceDirectory>>,
}

/// The topic tree of a device: everything it may publish and subscribe to.
pub fn device_tree(uid: &str) -> String {
    format!("aos/{uid}/#")
}

impl ConfigAuthenticator {
    pub fn new(config: AuthConfig) -> Self {
        ConfigAuthenticator {
            config,
            devices: None,
        }
    }

    /// Devices sign in with their stored credentials; other usernames with the configured ones.
    pub fn with_devices(config: AuthConfig, devices: Arc<dyn DeviceDirectory>) -> Self {
        ConfigAuthenticator {
            config,
            devices: Some(devices),
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
            device: None,
        };
        let Some(username) = &request.username else {
            return if self.config.allow_anonymous {
                Ok(principal)
            } else {
                Err(Refusal::NotAuthorized)
            };
        };
        if let Some(devices) = &self.devices {
            let password = request.password.as_deref().unwrap_or_default();
            match devices
                .authenticate(&request.client_id, username, password)
                .await
            {
                Ok(Some(device)) => {
                    principal.device = Some(device.uid);
                    return Ok(principal);
                }
                Ok(None) => {}
                Err(DeviceRefusal::BadCredentials) => return Err(Refusal::BadCredentials),
                Err(DeviceRefusal::NotAuthorized) => return Err(Refusal::NotAuthorized),
                Err(DeviceRefusal::Unavailable) => return Err(Refusal::Unavailable),
            }
        }
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
        if let Some(uid) = &who.device {
            return matches(&device_tree(uid), topic);
        }
        self.decide(who, Action::Publish, |filter, _| matches(filter, topic))
    }

    fn may_subscribe(&self, who: &Principal, requested: &str) -> bool {
        if let Some(uid) = &who.device {
            return filter_covers(&device_tree(uid), requested);
        }
        self.decide(
            who,
            Action::Subscribe,
            |filter, permission| match permission {
                Permission::Allow => filter_covers(filter, requested),
                Permission::Deny => filters_overlap(filter, requested),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(client: &str, user: Option<&str>) -> Principal {
        Principal {
            client_id: client.into(),
            username: user.map(String::from),
            device: None,
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
