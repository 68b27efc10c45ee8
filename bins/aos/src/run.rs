//! `aos run` and `aos migrate`: assembling a standalone node from the embedded backends.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use aos_auth::accounts::Accounts;
use aos_auth::bootstrap::FirstAdmin;
use aos_auth::clients::StorageClientDirectory;
use aos_auth::secret;
use aos_core::access::Clients;
use aos_core::admin::AdminServer;
use aos_core::bus::MemoryBus;
use aos_core::extensions::Extensions;
use aos_core::kv::MemoryKv;
use aos_core::net::NetHost;
use aos_core::node::{Exit, NodeParts};
use aos_core::queue::disk::DiskQueueConfig;
use aos_core::queue::{DiskQueue, WorkQueue};
use aos_core::state::DiskState;
use aos_core::{Metrics, Node, NodeInfo, Settings};
use aos_storage::{Storage, StorageConfig, nodes};
use tokio_util::sync::CancellationToken;

use crate::{EXIT_CONFIG, EXIT_FAILURE, effective_config, enabled_roles, roles};

pub(crate) fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("aos")
        .build()
}

fn exit(code: u8, err: impl std::fmt::Display) -> ExitCode {
    tracing::error!("{err}");
    ExitCode::from(code)
}

pub fn migrate(settings: &Settings) -> ExitCode {
    let storage_config: StorageConfig = match settings.section("storage") {
        Ok(c) => c,
        Err(err) => return exit(EXIT_CONFIG, err),
    };
    let result = runtime()
        .context("cannot start the runtime")
        .and_then(|rt| {
            rt.block_on(async {
                let storage =
                    Storage::connect(&storage_config, &settings.core().node.data_dir).await?;
                let applied = storage.migrate().await?;
                storage.close().await?;
                anyhow::Ok(applied)
            })
        });
    match result {
        Ok(applied) if applied.is_empty() => {
            println!("database is up to date");
            ExitCode::SUCCESS
        }
        Ok(applied) => {
            for name in applied {
                println!("applied {name}");
            }
            ExitCode::SUCCESS
        }
        Err(err) => exit(EXIT_FAILURE, format!("{err:#}")),
    }
}

pub fn run(settings: &Settings) -> ExitCode {
    // Everything the operator can get wrong in configuration is checked before anything starts.
    if let Err(err) = effective_config(settings) {
        return exit(EXIT_CONFIG, err);
    }
    let enabled = match enabled_roles(settings) {
        Ok(enabled) => enabled,
        Err(err) => return exit(EXIT_CONFIG, err),
    };
    let storage_config: StorageConfig = match settings.section("storage") {
        Ok(c) => c,
        Err(err) => return exit(EXIT_CONFIG, err),
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(err) => return exit(EXIT_FAILURE, format!("cannot start the runtime: {err}")),
    };
    let code = rt.block_on(run_node(
        Arc::new(settings.clone()),
        enabled,
        storage_config,
    ));
    // Roles may leave detached tasks (connections being torn down); do not wait for them.
    rt.shutdown_timeout(Duration::from_secs(1));
    code
}

/// The node id: configured, or generated once and kept in the data directory.
fn node_id(settings: &Settings) -> anyhow::Result<String> {
    let configured = &settings.core().node.id;
    if !configured.is_empty() {
        return Ok(configured.clone());
    }
    let path = settings.core().node.data_dir.join("node-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty() {
            return Ok(id.to_string());
        }
    }
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
        ^ u128::from(std::process::id()) << 64;
    let id = format!("aos-{:012x}", seed as u64 & 0xffff_ffff_ffff);
    std::fs::write(&path, &id).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(id)
}

fn prepare_data_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| {
        format!(
            "cannot create the data directory {} (key `node.data_dir`, environment variable AOS_NODE__DATA_DIR)",
            dir.display()
        )
    })
}

async fn run_node(
    settings: Arc<Settings>,
    enabled: Vec<aos_core::RoleKind>,
    storage_config: StorageConfig,
) -> ExitCode {
    // Installed first: a signal that arrives while the node starts must stop it, not kill it.
    let signals = match ShutdownSignals::install() {
        Ok(signals) => signals,
        Err(err) => {
            return exit(
                EXIT_FAILURE,
                format!("cannot install signal handlers: {err}"),
            );
        }
    };
    let core = settings.core();
    if let Err(err) = prepare_data_dir(&core.node.data_dir) {
        return exit(EXIT_FAILURE, format!("{err:#}"));
    }
    let id = match node_id(&settings) {
        Ok(id) => id,
        Err(err) => return exit(EXIT_FAILURE, format!("{err:#}")),
    };
    let metrics = Metrics::default();
    let net = match NetHost::start() {
        Ok(net) => Arc::new(net),
        Err(err) => {
            return exit(
                EXIT_FAILURE,
                format!("cannot start the network thread: {err}"),
            );
        }
    };
    let queue_dir = core.queue.resolved_dir(&core.node);
    let queue = match DiskQueue::open(
        DiskQueueConfig {
            dir: queue_dir.clone(),
            segment_bytes: core.queue.segment_bytes,
            commit_delay: core.queue.commit_delay,
            max_bytes: core.queue.max_bytes,
        },
        &metrics,
    ) {
        Ok(queue) => Arc::new(queue),
        Err(err) => {
            return exit(
                EXIT_FAILURE,
                format!(
                    "cannot open the work queue in {}: {err}",
                    queue_dir.display()
                ),
            );
        }
    };
    let state_dir = core.state.resolved_dir(&core.node);
    let state = match DiskState::open(&state_dir, &metrics) {
        Ok(state) => Arc::new(state),
        Err(err) => {
            let _ = queue.close().await;
            return exit(
                EXIT_FAILURE,
                format!(
                    "cannot open the state store in {} (key `state.dir`): {err}",
                    state_dir.display()
                ),
            );
        }
    };
    let storage = match open_storage(&storage_config, &core.node.data_dir).await {
        Ok(storage) => storage,
        Err(err) => {
            let _ = queue.close().await;
            let _ = state.close().await;
            return exit(EXIT_FAILURE, format!("{err:#}"));
        }
    };

    let auth: aos_auth::AuthSettings = match settings.section("auth") {
        Ok(auth) => auth,
        Err(err) => {
            close(&queue, &state, storage, &net).await;
            return exit(EXIT_CONFIG, err);
        }
    };
    if let Err(err) = auth.check() {
        close(&queue, &state, storage, &net).await;
        return exit(EXIT_CONFIG, err);
    }
    let admin_password = std::env::var("AOS_ADMIN_PASSWORD").ok();
    let hashing = auth.sign_in.hash_params();
    match aos_auth::bootstrap::first_admin(&storage, admin_password, hashing).await {
        // On standard output: standard error carries the logs (JSON lines, with --log-format json).
        Ok(Some(FirstAdmin::Generated(password))) => println!(
            "first start: created the system administrator `{}` with password {password}  (shown once: keep it now, or change it with `aos user passwd {}`)",
            aos_auth::bootstrap::FIRST_ADMIN,
            aos_auth::bootstrap::FIRST_ADMIN
        ),
        Ok(Some(FirstAdmin::Given)) => tracing::info!(
            "first start: created the system administrator `{}` with the password of AOS_ADMIN_PASSWORD",
            aos_auth::bootstrap::FIRST_ADMIN
        ),
        Ok(None) => {}
        Err(err) => {
            close(&queue, &state, storage, &net).await;
            return exit(EXIT_FAILURE, err);
        }
    }
    let watching = CancellationToken::new();
    let clients = match StorageClientDirectory::start(
        storage.clone(),
        auth.credential_poll,
        watching.clone(),
    )
    .await
    {
        Ok(clients) => clients,
        Err(err) => {
            close(&queue, &state, storage, &net).await;
            return exit(
                EXIT_FAILURE,
                format!("cannot read the credential change log: {err}"),
            );
        }
    };
    // Stops watching the credential change log when the node is done, whichever way it ends.
    let _watching = watching.clone().drop_guard();

    let accounts = match secret::token_key(auth.token_key.as_deref(), &core.node.data_dir) {
        Ok(key) => Accounts::new(storage.clone(), auth.sign_in.clone(), &key)
            .await
            .map_err(|e| e.to_string()),
        Err(err) => Err(err),
    };
    let accounts = match accounts {
        Ok(accounts) => accounts,
        Err(err) => {
            close(&queue, &state, storage, &net).await;
            return exit(EXIT_CONFIG, format!("cannot set up sign-in: {err}"));
        }
    };
    let extensions = Extensions::default();
    extensions.insert(Arc::new(storage.clone()));
    extensions.insert(Arc::new(Clients(clients)));
    extensions.insert(Arc::new(accounts));
    let compiled = roles::compiled();
    // The sections were checked before the node was assembled (`effective_config`).
    let listeners = compiled
        .iter()
        .filter(|r| enabled.contains(&r.kind))
        .filter_map(|r| (r.listeners)(&settings).ok())
        .flatten();
    let info = NodeInfo::new(
        id,
        compiled.iter().map(|r| r.kind).collect(),
        enabled.clone(),
        core.admin.listen.to_string(),
    )
    .with_listeners(listeners);
    let node = Arc::new(Node::new(NodeParts {
        info,
        settings: settings.clone(),
        bus: Arc::new(MemoryBus::new(&metrics)),
        queue: queue.clone(),
        kv: Arc::new(MemoryKv::new()),
        state: state.clone(),
        metrics,
        net: net.clone(),
        extensions,
        roles: compiled
            .iter()
            .filter(|r| enabled.contains(&r.kind))
            .map(|r| (r.make)())
            .collect(),
        switchable: core.node.switchable_roles.clone(),
        spare: compiled
            .iter()
            .filter(|r| core.node.switchable_roles.contains(&r.kind) && !enabled.contains(&r.kind))
            .map(|r| (r.make)())
            .collect(),
    }));

    let admin = match AdminServer::start(node.clone(), core.admin.listen).await {
        Ok(admin) => admin,
        Err(err) => {
            close(&queue, &state, storage, &net).await;
            return exit(EXIT_FAILURE, err);
        }
    };
    if let Err((role, err)) = node.start().await {
        admin.stop().await;
        close(&queue, &state, storage, &net).await;
        return exit(EXIT_FAILURE, format!("the {role} role cannot start: {err}"));
    }
    tokio::spawn(node.clone().serve_control());
    if let Err(err) = nodes::record_start(&storage, node.info()).await {
        tracing::warn!(%err, "could not record the node in the database");
    }
    let heartbeat = tokio::spawn(record_heartbeats(
        storage.clone(),
        node.info().id.clone(),
        core.node.heartbeat(),
    ));
    tracing::info!(
        node = %node.info().id,
        roles = ?enabled,
        admin = %admin.local_addr,
        data_dir = %core.node.data_dir.display(),
        "AOS node ready"
    );

    let exit_reason = tokio::select! {
        signal = signals.recv() => {
            tracing::info!(signal, "shutdown requested");
            Exit::Requested
        }
        reason = node.wait() => reason,
    };

    let timeout = core.node.shutdown_timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    let unclean = node.stop(timeout).await;
    // Everything the roles pushed is made durable before the process ends.
    let flushed = tokio::time::timeout_at(deadline, queue.close()).await;
    let state_flushed = tokio::time::timeout_at(deadline, state.close()).await;
    heartbeat.abort();
    if let Err(err) = nodes::record_stop(&storage, &node.info().id).await {
        tracing::warn!(%err, "could not record the node stop in the database");
    }
    admin.stop().await;
    watching.cancel();
    if let Err(err) = storage.close().await {
        tracing::warn!(%err, "closing the database failed");
    }
    stop_net(&net).await;

    let mut problems = Vec::new();
    if !unclean.is_empty() {
        problems.push(format!("roles not stopped cleanly: {unclean:?}"));
    }
    match flushed {
        Ok(Ok(())) => {}
        Ok(Err(err)) => problems.push(format!("queue flush failed: {err}")),
        Err(_) => problems.push("queue flush timed out".to_string()),
    }
    match state_flushed {
        Ok(Ok(())) => {}
        Ok(Err(err)) => problems.push(format!("state store flush failed: {err}")),
        Err(_) => problems.push("state store flush timed out".to_string()),
    }
    match exit_reason {
        Exit::Failed(failure) => exit(
            EXIT_FAILURE,
            format!("the {} role failed: {}", failure.role, failure.error),
        ),
        Exit::Requested if problems.is_empty() => {
            tracing::info!("AOS node stopped");
            ExitCode::SUCCESS
        }
        Exit::Requested => exit(
            EXIT_FAILURE,
            format!(
                "shutdown within {timeout:?} was incomplete: {}",
                problems.join("; ")
            ),
        ),
    }
}

async fn open_storage(config: &StorageConfig, data_dir: &Path) -> anyhow::Result<Storage> {
    let storage = Storage::connect(config, data_dir).await?;
    if config.migrate_on_start {
        for name in storage.migrate().await? {
            tracing::info!(migration = %name, "applied database migration");
        }
    } else {
        let pending = storage.pending_migrations().await?;
        if !pending.is_empty() {
            anyhow::bail!(
                "the database needs migrations ({}) and `storage.migrate_on_start` is off: run `aos migrate` first",
                pending.join(", ")
            );
        }
    }
    Ok(storage)
}

/// Keeps the node's `last_seen` in the database at its latest heartbeat until aborted at
/// shutdown (a crashed node keeps the time of its last one).
async fn record_heartbeats(storage: Storage, id: String, every: Duration) {
    let mut tick = tokio::time::interval(every);
    // The first tick is immediate, and the start was just recorded.
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(err) = nodes::record_seen(&storage, &id).await {
            tracing::warn!(%err, "could not record the node's heartbeat in the database");
        }
    }
}

/// Releases what a failed start had opened.
async fn close(queue: &DiskQueue, state: &DiskState, storage: Storage, net: &Arc<NetHost>) {
    if let Err(err) = queue.close().await {
        tracing::warn!(%err, "closing the work queue failed");
    }
    if let Err(err) = state.close().await {
        tracing::warn!(%err, "closing the state store failed");
    }
    let _ = storage.close().await;
    stop_net(net).await;
}

/// Stops the network thread (a blocking join) off the async workers.
async fn stop_net(net: &Arc<NetHost>) {
    let net = net.clone();
    let _ = tokio::task::spawn_blocking(move || net.stop()).await;
}

/// SIGTERM and SIGINT, both meaning "shut down gracefully".
struct ShutdownSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> std::io::Result<ShutdownSignals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(ShutdownSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn recv(mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}
