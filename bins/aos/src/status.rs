//! `aos status`: every node of the deployment — from the database (every node that ever ran on
//! it) and, in a cluster, from the node registry in the shared key-value store (which nodes are
//! live now, their running roles and health).

use std::collections::HashMap;
use std::process::ExitCode;

use anyhow::Context;
use aos_core::Settings;
use aos_core::node::Registration;
use aos_storage::{Storage, StorageConfig, nodes};

use crate::run::runtime;
use crate::{EXIT_CONFIG, EXIT_FAILURE, fail};

pub fn status(settings: &Settings) -> ExitCode {
    let config: StorageConfig = match settings.section("storage") {
        Ok(c) => c,
        Err(err) => return fail(EXIT_CONFIG, err),
    };
    let result = runtime()
        .context("cannot start the runtime")
        .and_then(|rt| rt.block_on(report(settings, &config)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(EXIT_FAILURE, format!("{err:#}")),
    }
}

async fn report(settings: &Settings, config: &StorageConfig) -> anyhow::Result<()> {
    let core = settings.core();
    let storage = Storage::connect(config, &core.node.data_dir).await?;
    let known = nodes::list(&storage).await?;
    storage.close().await.ok();
    let mut registered: HashMap<String, Registration> = HashMap::new();
    if let Some(kv) = aos_seams::shared_kv(core, "aos status").await? {
        for node in aos_core::node::registered(kv.as_ref()).await? {
            registered.insert(node.info.id.clone(), node);
        }
    }
    println!(
        "{:<20} {:<8} {:<10} {:<20} {:<22} admin",
        "node", "state", "health", "roles", "last seen"
    );
    for node in known {
        let live = registered.get(&node.id);
        let state = match (live, node.stopped_at) {
            (Some(_), _) => "live",
            (None, Some(_)) => "stopped",
            (None, None) => "down",
        };
        let health = match live {
            Some(r) if r.health.ready => "ready",
            Some(_) => "not ready",
            None => "-",
        };
        let roles = match live {
            Some(r) => r
                .running_roles
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(","),
            None => node.enabled_roles.clone(),
        };
        println!(
            "{:<20} {:<8} {:<10} {:<20} {:<22} {}",
            node.id,
            state,
            health,
            roles,
            node.last_seen.format("%Y-%m-%dT%H:%M:%SZ"),
            node.admin_listen
        );
    }
    if core.kv.url.starts_with("memory") {
        println!("(standalone: a node's live state is on its admin listener, /node and /health)");
    }
    Ok(())
}
