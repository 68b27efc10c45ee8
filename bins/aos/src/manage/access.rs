//! `aos role` and `aos apikey`: a tenant's own roles, and the API keys its applications sign in
//! with over MQTT.

use std::time::Duration;

use anyhow::bail;
use aos_auth::permissions::Grants;
use aos_auth::secret;
use aos_core::access::TopicGrant;
use aos_storage::Storage;
use aos_storage::repo::audit;
use aos_storage::repo::{api_keys, roles};
use clap::Subcommand;

use super::{cli_event, scope};

#[derive(Subcommand, Debug)]
pub enum RoleCommand {
    /// Create a role of a tenant.
    Add {
        name: String,
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        grants: RoleGrantArgs,
    },
    /// Replace the grants of a tenant's role (built-in roles cannot be changed).
    Set {
        name: String,
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        grants: RoleGrantArgs,
    },
    /// List the roles a tenant's users may be given.
    List {
        #[arg(long)]
        tenant: String,
    },
}

#[derive(clap::Args, Debug)]
pub struct RoleGrantArgs {
    /// KIND=LEVEL (repeatable): a kind of object (devices, classes, formats, interpreters,
    /// workflows, commands, events, messages, ledger, entities, users, roles, api_keys, audit)
    /// and a level (none, view, manage, full).
    #[arg(long = "grant", value_name = "KIND=LEVEL")]
    levels: Vec<String>,
    /// An advanced action (repeatable): validate, lock, disable.
    #[arg(long = "action", value_name = "ACTION")]
    actions: Vec<String>,
}

impl RoleGrantArgs {
    fn grants(&self) -> anyhow::Result<Grants> {
        Grants::parse_tenant_role(&self.levels, &self.actions).map_err(anyhow::Error::msg)
    }
}

#[derive(Subcommand, Debug)]
pub enum ApiKeyCommand {
    /// Create an API key of a tenant, printed once. Applications connect over MQTT with the
    /// username `apikey` and the key as password, and may use only the topics granted here; only
    /// the tenant's messages reach them.
    Add {
        name: String,
        #[arg(long)]
        tenant: String,
        /// A topic filter the key may publish to (repeatable).
        #[arg(long = "publish", value_name = "FILTER")]
        publish: Vec<String>,
        /// A topic filter the key may subscribe to (repeatable).
        #[arg(long = "subscribe", value_name = "FILTER")]
        subscribe: Vec<String>,
        /// How long the key is valid (for example 90d); default: until revoked.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<Duration>,
    },
    /// List the API keys of a tenant.
    List {
        #[arg(long)]
        tenant: String,
    },
    /// Revoke an API key: it no longer signs in, and the sessions it opened are closed.
    Revoke {
        name: String,
        #[arg(long)]
        tenant: String,
    },
}

/// One grant per filter, allowing what was asked for it.
fn topic_grants(publish: Vec<String>, subscribe: Vec<String>) -> Vec<TopicGrant> {
    let mut grants: Vec<TopicGrant> = Vec::new();
    for (filter, is_publish) in publish
        .into_iter()
        .map(|f| (f, true))
        .chain(subscribe.into_iter().map(|f| (f, false)))
    {
        let at = match grants.iter().position(|g| g.filter == filter) {
            Some(at) => at,
            None => {
                grants.push(TopicGrant {
                    filter,
                    publish: false,
                    subscribe: false,
                });
                grants.len() - 1
            }
        };
        if is_publish {
            grants[at].publish = true;
        } else {
            grants[at].subscribe = true;
        }
    }
    grants
}

fn shown_levels(permissions: &serde_json::Value) -> String {
    permissions
        .as_object()
        .map(|levels| {
            levels
                .iter()
                .filter(|(_, level)| level.as_str() != Some("none"))
                .map(|(kind, level)| format!("{kind}={}", level.as_str().unwrap_or("?")))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// Creates (`new`) or updates a tenant's role, audited with the grants it was given.
async fn save_role(
    storage: &Storage,
    tenant: &str,
    name: &str,
    args: &RoleGrantArgs,
    new: bool,
) -> anyhow::Result<()> {
    let scope = scope(storage, tenant).await?;
    let grants = args.grants()?;
    let action = if new {
        roles::create(storage, scope, name, grants.stored()).await?;
        "role.create"
    } else {
        roles::update(storage, scope, name, grants.stored()).await?;
        "role.update"
    };
    let mut event = cli_event(Some(scope.tenant), action, "role", name);
    event.detail = serde_json::to_value(&grants)?;
    audit::record(storage, event).await?;
    if new {
        println!("role `{name}` created in `{tenant}`");
    } else {
        println!("role `{name}` of `{tenant}` now grants what was given");
    }
    Ok(())
}

pub async fn roles(storage: &Storage, command: RoleCommand) -> anyhow::Result<()> {
    match command {
        RoleCommand::Add {
            name,
            tenant,
            grants,
        } => save_role(storage, &tenant, &name, &grants, true).await?,
        RoleCommand::Set {
            name,
            tenant,
            grants,
        } => save_role(storage, &tenant, &name, &grants, false).await?,
        RoleCommand::List { tenant } => {
            println!("{:<32} {:<9} grants", "name", "built-in");
            for role in roles::list(storage, scope(storage, &tenant).await?).await? {
                let actions: Vec<String> =
                    serde_json::from_value(role.actions.clone()).unwrap_or_default();
                println!(
                    "{:<32} {:<9} {} {}",
                    role.name,
                    role.builtin,
                    shown_levels(&role.permissions),
                    actions.join(" ")
                );
            }
        }
    }
    Ok(())
}

pub async fn api_keys(storage: &Storage, command: ApiKeyCommand) -> anyhow::Result<()> {
    match command {
        ApiKeyCommand::Add {
            name,
            tenant,
            publish,
            subscribe,
            expires_in,
        } => {
            if publish.is_empty() && subscribe.is_empty() {
                bail!("an API key needs at least one --publish or --subscribe topic filter");
            }
            let scope = scope(storage, &tenant).await?;
            let key = secret::generate();
            let expires_at = match expires_in {
                Some(d) => Some(chrono::Utc::now() + chrono::Duration::from_std(d)?),
                None => None,
            };
            let grants = topic_grants(publish, subscribe);
            let created = api_keys::create(
                storage,
                scope,
                api_keys::NewApiKey {
                    name: name.clone(),
                    prefix: secret::shown_prefix(&key),
                    key_hash: secret::lookup_hash(&key),
                    grants: grants.clone(),
                    expires_at,
                },
            )
            .await?;
            let mut event = cli_event(Some(scope.tenant), "api_key.create", "api_key", &name);
            event.detail = serde_json::json!({ "grants": grants });
            audit::record(storage, event).await?;
            println!(
                "API key `{}` created in `{tenant}`; connect with MQTT username `{}`",
                created.name,
                aos_auth::clients::API_KEY_USERNAME
            );
            println!("key: {key}  (shown once: keep it now)");
        }
        ApiKeyCommand::List { tenant } => {
            println!(
                "{:<24} {:<9} {:<8} {:<21} grants",
                "name", "prefix", "state", "expires"
            );
            for key in api_keys::list(storage, scope(storage, &tenant).await?).await? {
                let state = if key.revoked_at.is_some() {
                    "revoked"
                } else if key.expires_at.is_some_and(|at| at <= chrono::Utc::now()) {
                    "expired"
                } else {
                    "active"
                };
                let grants: Vec<String> = api_keys::grants(&key)
                    .iter()
                    .map(|g| {
                        let what = match (g.publish, g.subscribe) {
                            (true, true) => "pub+sub",
                            (true, false) => "pub",
                            _ => "sub",
                        };
                        format!("{what}:{}", g.filter)
                    })
                    .collect();
                let expires = key
                    .expires_at
                    .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string());
                println!(
                    "{:<24} {:<9} {:<8} {:<21} {}",
                    key.name,
                    key.prefix,
                    state,
                    expires.unwrap_or_else(|| "never".into()),
                    grants.join(" ")
                );
            }
        }
        ApiKeyCommand::Revoke { name, tenant } => {
            let scope = scope(storage, &tenant).await?;
            api_keys::revoke(storage, scope, &name).await?;
            audit::record(
                storage,
                cli_event(Some(scope.tenant), "api_key.revoke", "api_key", &name),
            )
            .await?;
            println!("API key `{name}` revoked; its sessions are being closed");
        }
    }
    Ok(())
}
