//! Helpers for black-box tests of the `aos` binary: free ports, a node process with its own data
//! directory, plain HTTP requests to its admin listener, and signals.

#![allow(dead_code)] // each test file uses a different part of these helpers

pub mod api;
pub mod cable;
pub mod cluster;
pub mod haproxy;
pub mod mqtt;
pub mod pki;
pub mod platform;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a node may take to become ready or to exit in these tests.
pub const PATIENCE: Duration = Duration::from_secs(30);

pub fn aos_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_aos"))
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The ports of one node.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub mqtt: u16,
    pub http: u16,
    pub admin: u16,
}

impl Ports {
    pub fn free() -> Ports {
        Ports {
            mqtt: free_port(),
            http: free_port(),
            admin: free_port(),
        }
    }

    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "AOS_BROKER__LISTEN".into(),
                format!("127.0.0.1:{}", self.mqtt),
            ),
            ("AOS_WEB__LISTEN".into(), format!("127.0.0.1:{}", self.http)),
            (
                "AOS_ADMIN__LISTEN".into(),
                format!("127.0.0.1:{}", self.admin),
            ),
        ]
    }
}

/// A running (or finished) `aos` process; killed on drop.
pub struct AosProcess {
    pub child: Child,
    pub ports: Ports,
    stderr: Arc<Mutex<String>>,
    stdout: Arc<Mutex<String>>,
}

fn drain(stream: impl Read + Send + 'static, into: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let mut text = into.lock().unwrap_or_else(|e| e.into_inner());
            text.push_str(&line);
            text.push('\n');
        }
    });
}

/// A builder for `aos` invocations in a data directory of their own.
pub struct Aos {
    cmd: Command,
    ports: Ports,
}

impl Aos {
    /// `aos ARGS` with free ports and `data_dir` as its data directory; the process environment
    /// is cleared of `AOS_*` variables so the developer's settings cannot leak in.
    pub fn new(data_dir: &Path, args: &[&str]) -> Aos {
        let ports = Ports::free();
        let mut cmd = Command::new(aos_bin());
        cmd.args(args)
            .current_dir(data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, _) in std::env::vars() {
            if key.starts_with("AOS_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("AOS_NODE__DATA_DIR", data_dir.join("data"))
            .env("AOS_NODE__SHUTDOWN_TIMEOUT", "10s")
            .env("RUST_LOG", "info");
        for (k, v) in ports.env() {
            cmd.env(k, v);
        }
        Aos { cmd, ports }
    }

    /// Runs another `aos` binary (a slim build) with the same set-up.
    pub fn program(&mut self, bin: &Path) {
        let mut cmd = Command::new(bin);
        cmd.args(self.cmd.get_args())
            .current_dir(self.cmd.get_current_dir().unwrap_or(Path::new(".")))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in self.cmd.get_envs() {
            match value {
                Some(value) => cmd.env(key, value),
                None => cmd.env_remove(key),
            };
        }
        self.cmd = cmd;
    }

    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Aos {
        self.cmd.env(key, value);
        self
    }

    /// On `ports` (those of a node that is gone: its successor at the same address).
    pub fn on_ports(mut self, ports: Ports) -> Aos {
        for (k, v) in ports.env() {
            self.cmd.env(k, v);
        }
        self.ports = ports;
        self
    }

    pub fn spawn(mut self) -> AosProcess {
        let mut child = self.cmd.spawn().expect("spawn aos");
        let stderr = Arc::new(Mutex::new(String::new()));
        let stdout = Arc::new(Mutex::new(String::new()));
        drain(child.stderr.take().expect("stderr"), stderr.clone());
        drain(child.stdout.take().expect("stdout"), stdout.clone());
        AosProcess {
            child,
            ports: self.ports,
            stderr,
            stdout,
        }
    }

    /// One more argument, which need not be UTF-8.
    pub fn arg(mut self, arg: impl AsRef<std::ffi::OsStr>) -> Aos {
        self.cmd.arg(arg);
        self
    }

    /// Runs to completion with `input` on standard input; returns (status, stdout, stderr).
    pub fn output_with_input(mut self, input: &str) -> (ExitStatus, String, String) {
        use std::io::Write;
        let mut child = self.cmd.stdin(Stdio::piped()).spawn().expect("spawn aos");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
        let out = child.wait_with_output().expect("run aos");
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs to completion; returns (status, stdout, stderr).
    pub fn output(mut self) -> (ExitStatus, String, String) {
        let out = self.cmd.output().expect("run aos");
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// Runs the management command `aos ARGS` with `dir` as data directory; returns its output and
/// fails the test when it does not succeed.
pub fn cli_ok(dir: &Path, args: &[&str]) -> String {
    let (status, out, err) = Aos::new(dir, args).output();
    assert!(status.success(), "aos {args:?} failed: {err}");
    out
}

/// A minimal HTTP/1.1 GET; returns (status, body).
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

impl AosProcess {
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn stdout(&self) -> String {
        self.stdout
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits (polling, with a deadline) until the node has logged `text`; panics with its log
    /// otherwise.
    pub fn wait_logged(&self, text: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.stderr().contains(text) {
            assert!(
                Instant::now() < deadline,
                "`{text}` not logged in time:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls `/ready` until it answers 200; panics with the node's log if it exits or times out.
    /// The value of an unlabelled metric on the node's `/metrics`.
    pub fn metric(&self, name: &str) -> u64 {
        let (_, text) = http_get(self.ports.admin, "/metrics").expect("GET /metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics"))
    }

    /// Waits (up to [`PATIENCE`]) until metric `name` reads `want`.
    pub fn wait_metric(&self, name: &str, want: u64) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let now = self.metric(name);
            if now == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} is {now}, not {want}, after {PATIENCE:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok((200, _)) = http_get(self.ports.admin, "/ready") {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "aos exited with {status} before it was ready:\n{}",
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "aos not ready after {PATIENCE:?}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: sending a signal to our own child process.
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0, "kill({signal}) failed");
    }

    /// Waits for the process to end; `None` if it is still running after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for AosProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A broker-only node in a temporary data directory, ready to accept MQTT clients.
pub struct Broker {
    pub process: AosProcess,
    env: Vec<(String, String)>,
    dir: tempfile::TempDir,
}

impl Broker {
    /// Starts `aos run --roles broker` open to anonymous clients with every topic allowed (what
    /// the protocol tests need), then `env` (`AOS_BROKER__…` settings, which may close it again).
    pub fn start(env: &[(&str, &str)]) -> Broker {
        let open = [
            ("AOS_BROKER__AUTH__ALLOW_ANONYMOUS", "true"),
            ("AOS_BROKER__AUTH__ACL_DEFAULT", "allow"),
        ];
        Broker::start_as_shipped(&[&open[..], env].concat())
    }

    /// Starts `aos run --roles broker` with the shipped defaults and `env`.
    pub fn start_as_shipped(env: &[(&str, &str)]) -> Broker {
        let dir = tempfile::tempdir().expect("tempdir");
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let process = Broker::spawn(dir.path(), &env);
        Broker { process, env, dir }
    }

    fn spawn(dir: &Path, env: &[(String, String)]) -> AosProcess {
        let mut aos = Aos::new(dir, &["run", "--roles", "broker"]);
        for (k, v) in env {
            aos = aos.env(k, v);
        }
        let mut process = aos.spawn();
        process.wait_ready();
        process
    }

    /// Kills the node with SIGKILL and starts it again on the same data directory (on new
    /// ports).
    pub fn crash_and_restart(&mut self) {
        self.process.signal(libc::SIGKILL);
        self.process.wait_exit(PATIENCE).expect("killed");
        self.process = Broker::spawn(self.dir.path(), &self.env);
    }

    pub fn port(&self) -> u16 {
        self.process.ports.mqtt
    }

    /// The value of an unlabelled metric on the node's `/metrics`.
    pub fn metric(&self, name: &str) -> u64 {
        self.process.metric(name)
    }
}
