//! Roles and permissions: what a role grants, the built-in roles, and [`authorize`] — the one
//! function that decides every permission question (every API call goes through it).

use std::collections::{BTreeMap, BTreeSet};

use aos_storage::repo::Scope;
use aos_storage::repo::roles::RoleGrants;
use serde::{Deserialize, Serialize};

/// The kinds of objects permissions are given for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    Tenants,
    Entities,
    Users,
    Roles,
    ApiKeys,
    Devices,
    Classes,
    Formats,
    Interpreters,
    Workflows,
    Commands,
    Events,
    Messages,
    Ledger,
    Audit,
    Nodes,
    Brokers,
    /// A tenant's MQTT clients as the brokers hold them (connections, sessions) and its
    /// retained messages: the broker view of a tenant.
    Clients,
}

impl ObjectKind {
    pub const ALL: [ObjectKind; 18] = [
        ObjectKind::Tenants,
        ObjectKind::Entities,
        ObjectKind::Users,
        ObjectKind::Roles,
        ObjectKind::ApiKeys,
        ObjectKind::Devices,
        ObjectKind::Classes,
        ObjectKind::Formats,
        ObjectKind::Interpreters,
        ObjectKind::Workflows,
        ObjectKind::Commands,
        ObjectKind::Events,
        ObjectKind::Messages,
        ObjectKind::Ledger,
        ObjectKind::Audit,
        ObjectKind::Nodes,
        ObjectKind::Brokers,
        ObjectKind::Clients,
    ];

    /// Kinds that belong to the platform, not to a tenant: only platform users reach them.
    pub fn is_platform(self) -> bool {
        matches!(
            self,
            ObjectKind::Tenants | ObjectKind::Nodes | ObjectKind::Brokers
        )
    }

    /// Kinds a customer-bound user may reach at all (its own entity's part of them).
    fn is_customer_visible(self) -> bool {
        matches!(
            self,
            ObjectKind::Devices
                | ObjectKind::Commands
                | ObjectKind::Events
                | ObjectKind::Messages
                | ObjectKind::Ledger
        )
    }
}

/// How much of a kind a role grants; each level includes the ones before it.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    #[default]
    None,
    View,
    Manage,
    /// Manage and delete.
    Full,
}

/// Actions beyond the levels, granted one by one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdvancedAction {
    Validate,
    Lock,
    Disable,
}

/// What a role (or the union of a user's roles) grants.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    pub levels: BTreeMap<ObjectKind, Level>,
    pub actions: BTreeSet<AdvancedAction>,
}

impl Grants {
    pub fn level(&self, kind: ObjectKind) -> Level {
        self.levels.get(&kind).copied().unwrap_or_default()
    }

    /// The union of two grants: the higher level per kind, every action of either.
    pub fn merge(&mut self, other: &Grants) {
        for (kind, level) in &other.levels {
            let mine = self.levels.entry(*kind).or_default();
            *mine = (*mine).max(*level);
        }
        self.actions.extend(other.actions.iter().copied());
    }

    /// Grants as `kind=level` pairs (`devices=manage`) and action names (`lock`), for a role of a
    /// tenant (platform kinds are not grantable there).
    pub fn parse_tenant_role(levels: &[String], actions: &[String]) -> Result<Grants, String> {
        let mut grants = Grants::default();
        for pair in levels {
            let Some((kind, level)) = pair.split_once('=') else {
                return Err(format!(
                    "`{pair}` is not KIND=LEVEL (for example devices=manage)"
                ));
            };
            let kind: ObjectKind = named(kind, "object kind", ObjectKind::ALL.iter())?;
            if kind.is_platform() {
                return Err(format!(
                    "`{}` belongs to the platform: a tenant's role cannot grant it",
                    kind.name()
                ));
            }
            let level: Level = named(
                level,
                "level",
                [Level::None, Level::View, Level::Manage, Level::Full].iter(),
            )?;
            grants.levels.insert(kind, level);
        }
        for action in actions {
            grants.actions.insert(named(
                action,
                "action",
                [
                    AdvancedAction::Validate,
                    AdvancedAction::Lock,
                    AdvancedAction::Disable,
                ]
                .iter(),
            )?);
        }
        Ok(grants)
    }

    /// The grants as storage keeps them (JSON).
    pub fn stored(&self) -> RoleGrants {
        RoleGrants {
            permissions: serde_json::to_value(&self.levels).unwrap_or_default(),
            actions: serde_json::to_value(&self.actions).unwrap_or_default(),
        }
    }

    /// The grants a stored role holds (what cannot be read grants nothing).
    pub fn from_stored(permissions: serde_json::Value, actions: serde_json::Value) -> Grants {
        Grants {
            levels: serde_json::from_value(permissions).unwrap_or_default(),
            actions: serde_json::from_value(actions).unwrap_or_default(),
        }
    }

    fn with(levels: &[(Level, &[ObjectKind])], actions: &[AdvancedAction]) -> Grants {
        let mut grants = Grants::default();
        for (level, kinds) in levels {
            for kind in *kinds {
                grants.levels.insert(*kind, *level);
            }
        }
        grants.actions = actions.iter().copied().collect();
        grants
    }
}

/// One of `known` by its (serde) name, or an error listing them all.
fn named<'a, T>(name: &str, what: &str, known: impl Iterator<Item = &'a T>) -> Result<T, String>
where
    T: Serialize + serde::de::DeserializeOwned + 'a,
{
    serde_json::from_value(serde_json::Value::String(name.trim().to_string())).map_err(|_| {
        let names: Vec<String> = known
            .filter_map(|k| serde_json::to_value(k).ok())
            .filter_map(|v| v.as_str().map(String::from))
            .collect();
        format!("unknown {what} `{name}`: use one of {}", names.join(", "))
    })
}

impl ObjectKind {
    /// The kind's name, as in `kind=level` grants and stored roles.
    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default()
    }
}

/// What is asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    View,
    Create,
    Update,
    Delete,
    Act(AdvancedAction),
}

impl Operation {
    fn needs(self) -> Level {
        match self {
            Operation::View => Level::View,
            Operation::Create | Operation::Update | Operation::Act(_) => Level::Manage,
            Operation::Delete => Level::Full,
        }
    }
}

/// Who asks: a signed-in user with the union of its roles' grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    pub login: String,
    /// None: a platform user (system administrator).
    pub tenant: Option<i64>,
    /// The customer entity a customer-bound user belongs to.
    pub customer: Option<i64>,
    pub grants: Grants,
}

/// What an allowed request may touch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Platform objects (tenants, nodes, brokers).
    Platform,
    /// Rows of one tenant, through this scope.
    Tenant(Scope),
}

/// Why a request is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("your roles grant {has:?} on {kind:?}, and this needs {needs:?}")]
    Level {
        kind: ObjectKind,
        has: Level,
        needs: Level,
    },
    #[error("your roles do not grant the action {0:?}")]
    Action(AdvancedAction),
    #[error("{0:?} belong to the platform: only system administrators reach them")]
    PlatformOnly(ObjectKind),
    #[error("customers cannot reach {0:?}")]
    CustomerOnly(ObjectKind),
    #[error("say which tenant this is for")]
    NoTenant,
}

/// Decides whether `subject` may do `operation` on objects of `kind` of `tenant` (ignored for
/// platform kinds; a tenant user always acts in its own tenant), and through which scope.
pub fn authorize(
    subject: &Subject,
    kind: ObjectKind,
    operation: Operation,
    tenant: Option<i64>,
) -> Result<Access, Denied> {
    // Where the subject may act at all comes first, whatever its roles grant.
    if kind.is_platform() && subject.tenant.is_some() {
        return Err(Denied::PlatformOnly(kind));
    }
    if subject.customer.is_some() && !kind.is_customer_visible() {
        return Err(Denied::CustomerOnly(kind));
    }
    let has = subject.grants.level(kind);
    let needs = operation.needs();
    if has < needs {
        return Err(Denied::Level { kind, has, needs });
    }
    if let Operation::Act(action) = operation
        && !subject.grants.actions.contains(&action)
    {
        return Err(Denied::Action(action));
    }
    if kind.is_platform() {
        return Ok(Access::Platform);
    }
    match (subject.tenant, subject.customer) {
        // A tenant's user acts in its own tenant, whatever tenant the request names.
        (Some(own), Some(entity)) => Ok(Access::Tenant(Scope::customer(own, entity))),
        (Some(own), None) => Ok(Access::Tenant(Scope::tenant(own))),
        (None, _) => tenant
            .map(|t| Access::Tenant(Scope::tenant(t)))
            .ok_or(Denied::NoTenant),
    }
}

/// The built-in roles: (name, grants).
pub fn builtin_roles() -> Vec<(&'static str, Grants)> {
    use AdvancedAction::*;
    use ObjectKind::*;
    let tenant_kinds: Vec<ObjectKind> = ObjectKind::ALL
        .into_iter()
        .filter(|k| !k.is_platform())
        .collect();
    vec![
        (
            "system administrator",
            Grants::with(
                &[(Level::Full, &ObjectKind::ALL)],
                &[Validate, Lock, Disable],
            ),
        ),
        (
            "tenant administrator",
            Grants::with(&[(Level::Full, &tenant_kinds)], &[Validate, Lock, Disable]),
        ),
        (
            "operator",
            Grants::with(
                &[
                    (Level::Manage, &[Devices, Commands, Events]),
                    (
                        Level::View,
                        &[
                            Clients,
                            Entities,
                            Classes,
                            Formats,
                            Interpreters,
                            Workflows,
                            Messages,
                            Ledger,
                        ],
                    ),
                ],
                &[Validate],
            ),
        ),
        (
            "viewer",
            Grants::with(
                &[(
                    Level::View,
                    &[
                        Entities,
                        Devices,
                        Classes,
                        Formats,
                        Interpreters,
                        Workflows,
                        Commands,
                        Events,
                        Messages,
                        Ledger,
                    ],
                )],
                &[],
            ),
        ),
        (
            "customer",
            Grants::with(
                &[
                    (Level::View, &[Devices, Events, Messages, Ledger]),
                    (Level::Manage, &[Commands]),
                ],
                &[],
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(role: &str, tenant: Option<i64>, customer: Option<i64>) -> Subject {
        let grants = builtin_roles()
            .into_iter()
            .find(|(name, _)| *name == role)
            .map(|(_, g)| g)
            .unwrap_or_default();
        Subject {
            login: role.into(),
            tenant,
            customer,
            grants,
        }
    }

    #[test]
    fn tenant_users_act_only_in_their_own_tenant() {
        let admin = subject("tenant administrator", Some(1), None);
        // Naming another tenant does not reach it: the scope is always the user's own.
        assert_eq!(
            authorize(&admin, ObjectKind::Devices, Operation::Delete, Some(2)),
            Ok(Access::Tenant(Scope::tenant(1)))
        );
        assert_eq!(
            authorize(&admin, ObjectKind::Tenants, Operation::View, None),
            Err(Denied::PlatformOnly(ObjectKind::Tenants))
        );
        let root = subject("system administrator", None, None);
        assert_eq!(
            authorize(&root, ObjectKind::Devices, Operation::Create, Some(2)),
            Ok(Access::Tenant(Scope::tenant(2)))
        );
        assert_eq!(
            authorize(&root, ObjectKind::Devices, Operation::Create, None),
            Err(Denied::NoTenant)
        );
        assert_eq!(
            authorize(&root, ObjectKind::Nodes, Operation::Update, None),
            Ok(Access::Platform)
        );
    }

    #[test]
    fn levels_and_actions_are_enforced() {
        let operator = subject("operator", Some(1), None);
        assert!(authorize(&operator, ObjectKind::Devices, Operation::Update, None).is_ok());
        assert!(matches!(
            authorize(&operator, ObjectKind::Devices, Operation::Delete, None),
            Err(Denied::Level {
                needs: Level::Full,
                ..
            })
        ));
        assert!(matches!(
            authorize(&operator, ObjectKind::Users, Operation::View, None),
            Err(Denied::Level {
                has: Level::None,
                ..
            })
        ));
        let validate = Operation::Act(AdvancedAction::Validate);
        let lock = Operation::Act(AdvancedAction::Lock);
        assert!(authorize(&operator, ObjectKind::Devices, validate, None).is_ok());
        assert_eq!(
            authorize(&operator, ObjectKind::Devices, lock, None),
            Err(Denied::Action(AdvancedAction::Lock))
        );
        let viewer = subject("viewer", Some(1), None);
        assert!(authorize(&viewer, ObjectKind::Ledger, Operation::View, None).is_ok());
        assert!(authorize(&viewer, ObjectKind::Commands, Operation::Create, None).is_err());
        let nobody = subject("no such role", Some(1), None);
        assert!(authorize(&nobody, ObjectKind::Devices, Operation::View, None).is_err());
    }

    #[test]
    fn customers_reach_only_their_entity_and_their_kinds() {
        let customer = subject("customer", Some(1), Some(7));
        assert_eq!(
            authorize(&customer, ObjectKind::Devices, Operation::View, None),
            Ok(Access::Tenant(Scope::customer(1, 7)))
        );
        assert!(authorize(&customer, ObjectKind::Commands, Operation::Create, None).is_ok());
        // Even a role that grants more cannot lift a customer out of its kinds.
        let mut generous = subject("tenant administrator", Some(1), Some(7));
        generous.login = "customer-admin".into();
        assert_eq!(
            authorize(&generous, ObjectKind::Users, Operation::View, None),
            Err(Denied::CustomerOnly(ObjectKind::Users))
        );
    }

    #[test]
    fn merged_grants_take_the_higher_level_and_every_action() {
        let mut grants = subject("viewer", None, None).grants;
        grants.merge(&subject("operator", None, None).grants);
        assert_eq!(grants.level(ObjectKind::Devices), Level::Manage);
        assert_eq!(grants.level(ObjectKind::Commands), Level::Manage);
        assert!(grants.actions.contains(&AdvancedAction::Validate));
        let json = serde_json::to_value(&grants).expect("serialize");
        assert_eq!(json["levels"]["devices"], "manage");
        let back: Grants = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back, grants);
    }

    #[test]
    fn tenant_roles_are_parsed_with_clear_errors() {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let grants = Grants::parse_tenant_role(
            &strings(&["devices=manage", "classes=view"]),
            &strings(&["lock"]),
        )
        .expect("valid");
        assert_eq!(grants.level(ObjectKind::Devices), Level::Manage);
        assert_eq!(grants.level(ObjectKind::Classes), Level::View);
        assert_eq!(grants.level(ObjectKind::Users), Level::None);
        assert!(grants.actions.contains(&AdvancedAction::Lock));
        let stored = grants.stored();
        assert_eq!(
            Grants::from_stored(stored.permissions, stored.actions),
            grants
        );
        let error = |levels: &[&str], actions: &[&str]| {
            Grants::parse_tenant_role(&strings(levels), &strings(actions)).expect_err("invalid")
        };
        assert!(
            error(&["gadgets=view"], &[])
                .contains("unknown object kind `gadgets`: use one of tenants, entities")
        );
        assert!(error(&["devices"], &[]).contains("is not KIND=LEVEL"));
        assert!(error(&["devices=most"], &[]).contains("unknown level `most`"));
        assert!(error(&["nodes=view"], &[]).contains("belongs to the platform"));
        assert!(
            error(&[], &["fly"])
                .contains("unknown action `fly`: use one of validate, lock, disable")
        );
    }
}
