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
use aos_core::config::Mode;
use aos_core::extensions::Extensions;
use aos_core::net::NetHost;
use aos_core::node::{Exit, NodeParts};
use aos_core::{Metrics, Node, NodeInfo, Settings};
use aos_seams::Seams;
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
    let cluster = &settings.core().cluster;
    if cluster.mode == Mode::Distributed && !storage_config.url.starts_with("postgres") {
        return exit(
            EXIT_CONFIG,
            "`cluster.mode` is `distributed`, whose nodes share one database: set `storage.url` (AOS_STORAGE__URL) to postgres://USER:PASSWORD@HOST:PORT/DATABASE",
        );
    }
    if cluster.mode == Mode::Distributed && cluster.nats_url.is_empty() {
        return exit(
            EXIT_CONFIG,
            "`cluster.mode` is `distributed`, whose nodes share NATS: set `cluster.nats_url` (AOS_CLUSTER__NATS_URL) to the NATS servers (nats://HOST:4222, comma-separated)",
        );
    }
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

/// Why a node could not start: the exit code and what to tell the operator.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn config(err: impl std::fmt::Display) -> Failure {
        Failure {
            code: EXIT_CONFIG,
            message: err.to_string(),
        }
    }

    fn failed(err: impl std::fmt::Display) -> Failure {
        Failure {
            code: EXIT_FAILURE,
            message: err.to_string(),
        }
    }
}

/// What a node has opened so far; [`Opened::close`] is the one way it is all released, however
/// the node ends.
#[derive(Default)]
struct Opened {
    net: Option<Arc<NetHost>>,
    seams: Option<Seams>,
    storage: Option<Storage>,
    /// Stops the credential watcher.
    watching: CancellationToken,
    admin: Option<AdminServer>,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
}

impl Opened {
    /// Releases everything in reverse order of opening; the seams get until `deadline` to make
    /// what the roles wrote durable. Returns what went wrong.
    async fn close(self, deadline: tokio::time::Instant) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(heartbeat) = self.heartbeat {
            heartbeat.abort();
        }
        if let Some(admin) = self.admin {
            admin.stop().await;
        }
        self.watching.cancel();
        if let Some(seams) = self.seams {
            match tokio::time::timeout_at(deadline, seams.close()).await {
                Ok(failed) => problems.extend(failed),
                Err(_) => problems.push("flushing the queue and state store timed out".into()),
            }
        }
        if let Some(storage) = self.storage
            && let Err(err) = storage.close().await
        {
            tracing::warn!(%err, "closing the database failed");
        }
        if let Some(net) = self.net {
            // A blocking join, off the async workers.
            let _ = tokio::task::spawn_blocking(move || net.stop()).await;
        }
        problems
    }
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
    let mut opened = Opened::default();
    let started = start_node(&settings, &enabled, &storage_config, &mut opened).await;
    let timeout = settings.core().node.shutdown_timeout;
    let node = match started {
        Ok(node) => node,
        Err(failure) => {
            opened.close(tokio::time::Instant::now() + timeout).await;
            return exit(failure.code, failure.message);
        }
    };

    let exit_reason = tokio::select! {
        signal = signals.recv() => {
            tracing::info!(signal, "shutdown requested");
            Exit::Requested
        }
        reason = node.wait() => reason,
    };

    let deadline = tokio::time::Instant::now() + timeout;
    let unclean = node.stop(timeout).await;
    if let Some(storage) = &opened.storage
        && let Err(err) = nodes::record_stop(storage, &node.info().id).await
    {
        tracing::warn!(%err, "could not record the node stop in the database");
    }
    // Everything the roles pushed is made durable before the process ends.
    let mut problems = opened.close(deadline).await;
    if !unclean.is_empty() {
        problems.insert(0, format!("roles not stopped cleanly: {unclean:?}"));
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

/// Opens what the node needs (recording it in `opened`), assembles the node and starts its
/// roles.
async fn start_node(
    settings: &Arc<Settings>,
    enabled: &[aos_core::RoleKind],
    storage_config: &StorageConfig,
    opened: &mut Opened,
) -> Result<Arc<Node>, Failure> {
    let core = settings.core();
    prepare_data_dir(&core.node.data_dir).map_err(|err| Failure::failed(format!("{err:#}")))?;
    let id = node_id(settings).map_err(|err| Failure::failed(format!("{err:#}")))?;
    let metrics = Metrics::default();
    let net = NetHost::start()
        .map_err(|err| Failure::failed(format!("cannot start the network thread: {err}")))?;
    let net = opened.net.insert(Arc::new(net)).clone();
    let seams =
        aos_seams::open(core, &id, &metrics)
            .await
            .map_err(|err| match err.is_configuration() {
                true => Failure::config(err),
                false => Failure::failed(err),
            })?;
    let seams = opened.seams.insert(seams).clone();
    let storage = open_storage(storage_config, &core.node.data_dir)
        .await
        .map_err(|err| Failure::failed(format!("{err:#}")))?;
    let storage = opened.storage.insert(storage).clone();
    if core.cluster.mode == Mode::Standalone && !core.cluster.ignore_other_nodes {
        alone_on(&storage, &id, core.node.heartbeat()).await?;
    }

    let auth: aos_auth::AuthSettings = settings.section("auth").map_err(Failure::config)?;
    auth.check().map_err(Failure::config)?;
    let admin_password = std::env::var("AOS_ADMIN_PASSWORD").ok();
    let hashing = auth.sign_in.hash_params();
    match aos_auth::bootstrap::first_admin(&storage, admin_password, hashing)
        .await
        .map_err(Failure::failed)?
    {
        // On standard output: standard error carries the logs (JSON lines, with --log-format json).
        Some(FirstAdmin::Generated(password)) => println!(
            "first start: created the system administrator `{}` with password {password}  (shown once: keep it now, or change it with `aos user passwd {}`)",
            aos_auth::bootstrap::FIRST_ADMIN,
            aos_auth::bootstrap::FIRST_ADMIN
        ),
        Some(FirstAdmin::Given) => tracing::info!(
            "first start: created the system administrator `{}` with the password of AOS_ADMIN_PASSWORD",
            aos_auth::bootstrap::FIRST_ADMIN
        ),
        None => {}
    }
    let changes = match seams.bus.subscribe(aos_core::changes::SUBJECT).await {
        Ok(changes) => Some(changes),
        Err(err) => {
            tracing::warn!(%err, "cannot follow announced changes; credentials are polled");
            None
        }
    };
    let clients = StorageClientDirectory::start(
        storage.clone(),
        auth.credential_poll,
        changes,
        opened.watching.clone(),
    )
    .await
    .map_err(|err| Failure::failed(format!("cannot read the credential change log: {err}")))?;
    let key = match (auth.token_key.as_deref(), core.cluster.mode) {
        (None, Mode::Distributed) => secret::shared_token_key(seams.kv.as_ref())
            .await
            .map_err(|err| Failure::failed(format!("cannot set up sign-in: {err}")))?,
        (configured, _) => secret::token_key(configured, &core.node.data_dir)
            .map_err(|err| Failure::config(format!("cannot set up sign-in: {err}")))?,
    };
    let accounts = Accounts::new(
        storage.clone(),
        auth.sign_in.clone(),
        &key,
        seams.kv.clone(),
    )
    .await
    .map_err(|err| Failure::config(format!("cannot set up sign-in: {err}")))?;
    let extensions = Extensions::default();
    extensions.insert(Arc::new(storage.clone()));
    extensions.insert(Arc::new(Clients(clients)));
    extensions.insert(Arc::new(accounts));
    let compiled = roles::compiled();
    // The sections were checked before the node was assembled (`effective_config`).
    let listeners = compiled
        .iter()
        .filter(|r| enabled.contains(&r.kind))
        .filter_map(|r| (r.listeners)(settings).ok())
        .flatten();
    let info = NodeInfo::new(
        id,
        compiled.iter().map(|r| r.kind).collect(),
        enabled.to_vec(),
        core.admin.listen.to_string(),
    )
    .with_listeners(listeners);
    let node = Arc::new(Node::new(NodeParts {
        info,
        settings: settings.clone(),
        bus: seams.bus,
        queue: seams.queue,
        kv: seams.kv,
        state: seams.state,
        metrics,
        net,
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

    let admin = AdminServer::start(node.clone(), core.admin.listen)
        .await
        .map_err(Failure::failed)?;
    let admin = opened.admin.insert(admin);
    let admin_addr = admin.local_addr;
    node.start()
        .await
        .map_err(|(role, err)| Failure::failed(format!("the {role} role cannot start: {err}")))?;
    tokio::spawn(node.clone().serve_control());
    if let Err(err) = nodes::record_start(&storage, node.info()).await {
        tracing::warn!(%err, "could not record the node in the database");
    }
    opened.heartbeat = Some(tokio::spawn(record_heartbeats(
        storage.clone(),
        node.info().id.clone(),
        core.node.heartbeat(),
    )));
    tracing::info!(
        node = %node.info().id,
        roles = ?enabled,
        admin = %admin_addr,
        data_dir = %core.node.data_dir.display(),
        "AOS node ready"
    );
    Ok(node)
}

/// A standalone node's embedded bus, queues and key-value store reach no other node: it starts
/// only if no other node uses its database now.
async fn alone_on(storage: &Storage, id: &str, heartbeat: Duration) -> Result<(), Failure> {
    let recent = chrono::Utc::now()
        - chrono::Duration::from_std(heartbeat * 3).unwrap_or(chrono::Duration::seconds(30));
    let others = nodes::list(storage)
        .await
        .map_err(|err| Failure::failed(format!("cannot read the nodes of the database: {err}")))?;
    let live: Vec<String> = others
        .into_iter()
        .filter(|n| n.id != id && n.stopped_at.is_none() && n.last_seen > recent)
        .map(|n| n.id)
        .collect();
    if live.is_empty() {
        return Ok(());
    }
    Err(Failure::config(format!(
        "another node uses this database now ({}), and this node runs standalone: its bus, work queues and key-value store would not reach that node. Run every node with `cluster.mode = \"distributed\"` (AOS_CLUSTER__MODE) on a shared NATS, stop the other node, or set `cluster.ignore_other_nodes = true` (AOS_CLUSTER__IGNORE_OTHER_NODES) to start anyway",
        live.join(", ")
    )))
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
