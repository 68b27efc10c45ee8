//! Cargo features decide which roles are linked: a broker-only binary runs the broker, lists only
//! it, and refuses to run a role it does not contain.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{PATIENCE, http_get};

/// Builds `aos` with only the broker feature into its own target directory (so it never replaces
/// the full binary the other tests run).
fn build_broker_only() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = workspace.join("target/slim");
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--locked",
            "-p",
            "aos",
            "--no-default-features",
            "--features",
            "broker",
            "--target-dir",
        ])
        .arg(&target)
        .current_dir(&workspace)
        .status()
        .expect("run cargo");
    assert!(status.success(), "the broker-only build failed");
    target.join("debug/aos")
}

#[test]
fn a_broker_only_binary_runs_the_broker_and_refuses_other_roles() {
    let bin = build_broker_only();
    let dir = tempfile::tempdir().expect("tempdir");

    let version = Command::new(&bin).arg("--version").output().expect("run");
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(version.contains("(roles: broker)"), "{version}");

    let aos = |args: &[&str]| {
        let mut cmd = common::Aos::new(dir.path(), args);
        cmd.program(&bin);
        cmd
    };
    let (status, _, stderr) = aos(&["run", "--roles", "broker,web"]).output();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("role `web` is not compiled into this binary"),
        "{stderr}"
    );
    assert!(
        stderr.contains("--features web"),
        "names the feature: {stderr}"
    );

    let mut node = aos(&["run"]).spawn();
    node.wait_ready();
    let (_, body) = http_get(node.ports.admin, "/node").expect("GET /node");
    let info: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(info["compiled_roles"], serde_json::json!(["broker"]));
    assert_eq!(info["enabled_roles"], serde_json::json!(["broker"]));
    std::net::TcpStream::connect(("127.0.0.1", node.ports.mqtt)).expect("MQTT listener");
    node.signal(libc::SIGTERM);
    let exit = node.wait_exit(PATIENCE);
    assert!(
        exit.is_some_and(|status| status.success()),
        "{exit:?}: {}",
        node.stderr()
    );
}
