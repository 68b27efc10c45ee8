//! The broker's authentication and authorization seam: every CONNECT, SUBSCRIBE and PUBLISH asks
//! an [`Authenticator`]. [`ConfigAuthenticator`] serves it from configuration (anonymous access,
//! static users with argon2 hashes, ordered ACL rules) and, given the platform's
//! [`ClientDirectory`], from stored credentials: a device may publish and subscribe only under
//! its own topic tree `aos/{device id}/#`; an application with an API key only where its grants
//! say.

use std::borrow::Cow;
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

/// Who a session belongs to, as the checks see it (borrowed from a [`Principal`] or a session).
#[derive(Clone, Copy, Debug)]
pub struct Reader<'a> {
    pub client_id: &'a str,
    pub username: Option<&'a str>,
    pub identity: Option<&'a Identity>,
}

impl Principal {
    pub fn reader(&self) -> Reader<'_> {
        Reader {
            client_id: &self.client_id,
            username: self.username.as_deref(),
            identity: self.identity.as_ref(),
        }
    }
}

/// What a granted subscription needs when a message is delivered through it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadCheck {
    /// Every message its filter matches may be read: nothing to check.
    Open,
    /// Only the platform's own messages outside the protected tree ([`is_protected`]): a cheap
    /// check of the message, no rules.
    Unprotected,
    /// Some matching topics are denied: [`Authenticator::may_read`] decides per message.
    Each,
}

/// The answer to a SUBSCRIBE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubscribeAccess {
    /// Nothing its filter matches may be read (SUBACK 0x80 / 0x87).
    Refused,
    Granted(ReadCheck),
}

#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    async fn authenticate(&self, request: &ConnectRequest) -> Result<Principal, Refusal>;
    fn may_publish(&self, who: &Principal, topic: &str) -> bool;
    /// `filter` is the topic filter without any `$share/{group}/` prefix. A subscription is
    /// refused only when nothing it matches may be read; otherwise the answer says what must be
    /// checked per message.
    fn may_subscribe(&self, who: &Principal, filter: &str) -> SubscribeAccess;
    /// Whether `who` may read a message on `topic` published by `tenant`'s client (`None`: by
    /// the platform's). Asked at delivery for subscriptions granted with [`ReadCheck::Each`].
    fn may_read(&self, who: Reader<'_>, topic: &str, tenant: Option<i64>) -> bool;
}

/// The topic tree of the platform's devices (`aos/{device}/...`, commands included).
pub const PLATFORM_TREE: &str = "aos";

/// Whether a message is a tenant's traffic: anything in the platform's tree, and whatever a
/// tenant's client publishes. Clients of the broker's own configuration (anonymous ones
/// included) reach it only through an ACL rule that names it — one whose filter does not begin
/// with a wildcard; neither `acl_default` nor a rule like `#` or `+/x` grants it.
pub fn is_protected(topic: &str, tenant: Option<i64>) -> bool {
    tenant.is_some() || first_level(topic) == PLATFORM_TREE
}

fn first_level(topic: &str) -> &str {
    topic.split('/').next().unwrap_or_default()
}

fn starts_with_wildcard(filter: &str) -> bool {
    matches!(first_level(filter), "+" | "#")
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
    /// Accept clients that send no username (off by default; they get only what the ACL grants,
    /// and never a tenant's traffic unless a rule names it).
    pub allow_anonymous: bool,
    pub users: Vec<StaticUser>,
    pub acl: Vec<AclRule>,
    /// What applies when no rule matches (`deny` by default; never grants a tenant's traffic).
    pub acl_default: Permission,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            allow_anonymous: false,
            users: Vec::new(),
            acl: Vec::new(),
            acl_default: Permission::Deny,
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

    /// The rules that apply to `who` for `action`, in order, with `%c` and `%u` substituted.
    fn rules<'a>(
        &'a self,
        who: Reader<'a>,
        action: Action,
    ) -> impl Iterator<Item = (Cow<'a, str>, Permission)> + 'a {
        self.config
            .acl
            .iter()
            .filter(move |rule| rule.action == Action::All || rule.action == action)
            .filter(move |rule| {
                rule.users.is_empty()
                    || who
                        .username
                        .is_some_and(|u| rule.users.iter().any(|r| r == u))
            })
            .filter_map(move |rule| Some((substitute(&rule.topic, who)?, rule.permission)))
    }

    /// The first rule matching `topic` decides, then `acl_default`; a protected topic is decided
    /// only by rules that name it (see [`is_protected`]).
    fn decide(&self, who: Reader<'_>, action: Action, topic: &str, protected: bool) -> bool {
        for (filter, permission) in self.rules(who, action) {
            if protected && starts_with_wildcard(&filter) {
                continue;
            }
            if matches(&filter, topic) {
                return permission == Permission::Allow;
            }
        }
        !protected && self.config.acl_default == Permission::Allow
    }

    /// What the rules grant a subscription to `requested`: the permissions the topics it matches
    /// get, separately for the platform's plain messages and for protected ones. A rule that
    /// covers the filter decides the rest of its region; one that only overlaps it decides a
    /// part.
    fn rules_access(&self, who: Reader<'_>, requested: &str) -> SubscribeAccess {
        let mut plain = Reach::default();
        let mut protected = Reach::default();
        // A filter inside the platform's tree matches protected messages only.
        let mut plain_decided = first_level(requested) == PLATFORM_TREE;
        let mut protected_decided = false;
        for (filter, permission) in self.rules(who, Action::Subscribe) {
            let covers = filter_covers(&filter, requested);
            if !covers && !filters_overlap(&filter, requested) {
                continue;
            }
            if !plain_decided && first_level(&filter) != PLATFORM_TREE {
                plain.add(permission);
                plain_decided = covers;
            }
            if !protected_decided && !starts_with_wildcard(&filter) {
                protected.add(permission);
                protected_decided = covers;
            }
            if plain_decided && protected_decided {
                break;
            }
        }
        if !plain_decided {
            plain.add(self.config.acl_default);
        }
        if !protected_decided {
            protected.add(Permission::Deny);
        }
        match (plain, protected) {
            (p, q) if !p.allow && !q.allow => SubscribeAccess::Refused,
            (p, q) if !p.deny && !q.deny => SubscribeAccess::Granted(ReadCheck::Open),
            (p, q) if !p.deny && !q.allow => SubscribeAccess::Granted(ReadCheck::Unprotected),
            _ => SubscribeAccess::Granted(ReadCheck::Each),
        }
    }
}

/// The permissions some topics of a region get.
#[derive(Clone, Copy, Default)]
struct Reach {
    allow: bool,
    deny: bool,
}

impl Reach {
    fn add(&mut self, permission: Permission) {
        match permission {
            Permission::Allow => self.allow = true,
            Permission::Deny => self.deny = true,
        }
    }
}

/// Replaces `%c` and `%u`; `None` when the rule needs a username the client does not have, or a
/// substituted value would change the filter's structure.
fn substitute<'a>(pattern: &'a str, who: Reader<'_>) -> Option<Cow<'a, str>> {
    if !pattern.contains('%') {
        return Some(Cow::Borrowed(pattern));
    }
    let unsafe_value = |v: &str| v.contains(['/', '+', '#']);
    let mut out = pattern.to_string();
    if out.contains("%c") {
        if unsafe_value(who.client_id) {
            return None;
        }
        out = out.replace("%c", who.client_id);
    }
    if out.contains("%u") {
        let user = who.username?;
        if unsafe_value(user) {
            return None;
        }
        out = out.replace("%u", user);
    }
    Some(Cow::Owned(out))
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
            None => self.decide(
                who.reader(),
                Action::Publish,
                topic,
                is_protected(topic, None),
            ),
        }
    }

    fn may_subscribe(&self, who: &Principal, requested: &str) -> SubscribeAccess {
        let granted = |covered: bool| {
            if covered {
                SubscribeAccess::Granted(ReadCheck::Open)
            } else {
                SubscribeAccess::Refused
            }
        };
        match &who.identity {
            Some(Identity::Device { uid, .. }) => {
                granted(filter_covers(&device_tree(uid), requested))
            }
            Some(Identity::Application { grants, .. }) => granted(
                grants
                    .iter()
                    .any(|g| g.subscribe && filter_covers(&g.filter, requested)),
            ),
            None => self.rules_access(who.reader(), requested),
        }
    }

    fn may_read(&self, who: Reader<'_>, topic: &str, tenant: Option<i64>) -> bool {
        match who.identity {
            // Devices and applications are checked at SUBSCRIBE, and kept to their tenant.
            Some(identity) => tenant.is_none_or(|t| t == identity.tenant()),
            None => self.decide(who, Action::Subscribe, topic, is_protected(topic, tenant)),
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

    fn rule(permission: Permission, action: Action, topic: &str, users: &[&str]) -> AclRule {
        AclRule {
            permission,
            action,
            topic: topic.into(),
            users: users.iter().map(|u| u.to_string()).collect(),
        }
    }

    fn granted(read: ReadCheck) -> SubscribeAccess {
        SubscribeAccess::Granted(read)
    }

    #[test]
    fn rules_apply_in_order_with_substitution() {
        let auth = ConfigAuthenticator::new(AuthConfig {
            acl: vec![
                rule(Permission::Allow, Action::All, "devices/%c/#", &[]),
                rule(Permission::Allow, Action::Subscribe, "#", &["ops"]),
                rule(Permission::Deny, Action::Subscribe, "secret/#", &[]),
            ],
            acl_default: Permission::Deny,
            ..AuthConfig::default()
        });
        let dev = who("d1", None);
        assert!(auth.may_publish(&dev, "devices/d1/telemetry"));
        assert!(!auth.may_publish(&dev, "devices/d2/telemetry"));
        assert_eq!(
            auth.may_subscribe(&dev, "devices/d1/cmd/+"),
            granted(ReadCheck::Open)
        );
        // Partly inside its tree: granted, each message checked.
        assert_eq!(
            auth.may_subscribe(&dev, "devices/+/cmd"),
            granted(ReadCheck::Each)
        );
        assert!(auth.may_read(dev.reader(), "devices/d1/cmd", None));
        assert!(!auth.may_read(dev.reader(), "devices/d2/cmd", None));
        assert_eq!(
            auth.may_subscribe(&dev, "other/#"),
            SubscribeAccess::Refused
        );
        let ops = who("dashboard", Some("ops"));
        assert_eq!(auth.may_subscribe(&ops, "#"), granted(ReadCheck::Each));
        assert!(auth.may_read(ops.reader(), "secret/x", None));
        assert!(!auth.may_publish(&ops, "devices/d1/cmd"));
        // A client id that would widen the filter is not substituted.
        assert!(!auth.may_publish(&who("+", None), "devices/x/telemetry"));
    }

    #[test]
    fn a_deny_rule_inside_a_wildcard_is_checked_per_message() {
        let auth = ConfigAuthenticator::new(AuthConfig {
            allow_anonymous: true,
            acl: vec![rule(
                Permission::Deny,
                Action::Subscribe,
                "test/nosubscribe",
                &[],
            )],
            acl_default: Permission::Allow,
            ..AuthConfig::default()
        });
        let anyone = who("c", None);
        assert_eq!(
            auth.may_subscribe(&anyone, "test/nosubscribe"),
            SubscribeAccess::Refused
        );
        for filter in ["#", "+/+", "test/#", "test/+"] {
            assert_eq!(
                auth.may_subscribe(&anyone, filter),
                granted(ReadCheck::Each),
                "{filter}"
            );
        }
        assert_eq!(
            auth.may_subscribe(&anyone, "other/#"),
            granted(ReadCheck::Unprotected)
        );
        assert!(!auth.may_read(anyone.reader(), "test/nosubscribe", None));
        assert!(auth.may_read(anyone.reader(), "test/other", None));
        assert!(auth.may_publish(&anyone, "test/nosubscribe"));
    }

    #[test]
    fn tenant_traffic_needs_a_rule_that_names_it() {
        let open = ConfigAuthenticator::new(AuthConfig {
            allow_anonymous: true,
            acl: vec![
                rule(Permission::Allow, Action::All, "#", &[]),
                rule(
                    Permission::Allow,
                    Action::Subscribe,
                    "aos/+/telemetry",
                    &["ops"],
                ),
            ],
            acl_default: Permission::Allow,
            ..AuthConfig::default()
        });
        let anyone = who("c", None);
        assert_eq!(
            open.may_subscribe(&anyone, "aos/#"),
            SubscribeAccess::Refused
        );
        assert_eq!(
            open.may_subscribe(&anyone, "#"),
            granted(ReadCheck::Unprotected)
        );
        assert!(!open.may_publish(&anyone, "aos/d1/commands"));
        assert!(!open.may_read(anyone.reader(), "aos/d1/telemetry", None));
        // A tenant application's message outside the tree is the tenant's too.
        assert!(!open.may_read(anyone.reader(), "plant/line-1", Some(7)));
        assert!(open.may_read(anyone.reader(), "plant/line-1", None));
        let ops = who("dash", Some("ops"));
        assert_eq!(
            open.may_subscribe(&ops, "aos/+/telemetry"),
            granted(ReadCheck::Open)
        );
        assert_eq!(open.may_subscribe(&ops, "aos/#"), granted(ReadCheck::Each));
        assert!(open.may_read(ops.reader(), "aos/d1/telemetry", Some(7)));
        assert!(!open.may_read(ops.reader(), "aos/d1/commands", None));
        assert_eq!(open.may_subscribe(&ops, "#"), granted(ReadCheck::Each));
    }

    #[test]
    fn the_defaults_grant_nothing() {
        let auth = ConfigAuthenticator::new(AuthConfig::default());
        let user = who("c", Some("tool"));
        assert_eq!(auth.may_subscribe(&user, "#"), SubscribeAccess::Refused);
        assert!(!auth.may_publish(&user, "a/b"));
    }

    #[tokio::test]
    async fn anonymous_clients_are_refused_by_default() {
        let auth = ConfigAuthenticator::new(AuthConfig::default());
        let request = ConnectRequest {
            client_id: "c".into(),
            username: None,
            password: None,
            peer: None,
            certificate: None,
            listener: "mqtt".into(),
        };
        assert_eq!(
            auth.authenticate(&request).await,
            Err(Refusal::NotAuthorized)
        );
    }
}
