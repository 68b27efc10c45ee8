//! HAProxy (Debian's package, installed by `scripts/install-test-deps`) in front of test nodes,
//! configured from the shipped `deploy/haproxy.cfg`: its listeners moved to free loopback
//! ports, its servers pointed at the test's nodes, everything else as shipped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::{AosProcess, free_port};

pub struct Haproxy {
    child: Child,
    _dir: tempfile::TempDir,
    /// The MQTT (TCP) frontend's port.
    pub mqtt: u16,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The haproxy program; `None` (after a loud message) when it is missing outside CI.
fn program() -> Option<PathBuf> {
    let found = ["/usr/sbin/haproxy", "/usr/local/sbin/haproxy"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .or_else(|| {
            let out = Command::new("sh")
                .args(["-c", "command -v haproxy"])
                .output()
                .ok()?;
            let path = String::from_utf8(out.stdout).ok()?.trim().to_string();
            (!path.is_empty()).then(|| PathBuf::from(path))
        });
    if found.is_none() {
        aos_core::conformance::service_unavailable(
            "HAProxy",
            "PATH",
            "haproxy",
            &"no haproxy program (scripts/install-test-deps installs Debian's)",
        );
    }
    found
}

/// The shipped configuration with its frontends on free loopback ports and its servers the
/// given nodes (brokers on their main MQTT port, checked on their admin port).
fn configure(nodes: &[&AosProcess], mqtt: u16) -> String {
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/haproxy.cfg"
    ))
    .expect("deploy/haproxy.cfg");
    let mut out = String::new();
    let mut backend = String::new();
    for line in shipped.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["backend", name, ..] => backend = name.to_string(),
            ["bind", ":1883", ..] => {
                out.push_str(&format!("    bind 127.0.0.1:{mqtt}\n"));
                continue;
            }
            // The other frontends and backends are not under test: on ports of their own.
            ["bind", _, ..] => {
                out.push_str(&format!("    bind 127.0.0.1:{}\n", free_port()));
                continue;
            }
            ["server", name, _address, rest @ ..] => {
                let node = name
                    .strip_prefix("node")
                    .and_then(|n| n.parse::<usize>().ok())
                    .and_then(|n| nodes.get(n - 1));
                let Some(node) = node else { continue };
                let port = if backend == "aos_brokers" {
                    node.ports.mqtt
                } else {
                    free_port()
                };
                let rest = rest
                    .join(" ")
                    .replace("port 9090", &format!("port {}", node.ports.admin));
                out.push_str(&format!("    server {name} 127.0.0.1:{port} {rest}\n"));
                continue;
            }
            _ => {}
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

impl Haproxy {
    /// HAProxy in front of `nodes`; `None` when there is no haproxy (outside CI).
    pub fn start(nodes: &[&AosProcess]) -> Option<Haproxy> {
        let program = program()?;
        let dir = tempfile::tempdir().expect("tempdir");
        let mqtt = free_port();
        let config = dir.path().join("haproxy.cfg");
        std::fs::write(&config, configure(nodes, mqtt)).expect("write haproxy.cfg");
        let check = Command::new(&program)
            .arg("-c")
            .arg("-f")
            .arg(&config)
            .output()
            .expect("haproxy -c");
        assert!(
            check.status.success(),
            "the shipped configuration does not load: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let child = Command::new(&program)
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start haproxy");
        Some(Haproxy {
            child,
            _dir: dir,
            mqtt,
        })
    }
}
