//! The `aos` binary as an operator meets it: start-up, readiness, shutdown, and the errors that
//! stop a bad start.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::{Aos, PATIENCE, http_get};

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

#[test]
fn a_standalone_node_becomes_ready_and_stops_cleanly_on_sigterm() {
    let dir = tempdir();
    let mut node = Aos::new(dir.path(), &["run"]).spawn();
    node.wait_ready();

    let (status, body) = http_get(node.ports.admin, "/node").expect("GET /node");
    assert_eq!(status, 200);
    let info: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    for role in ["broker", "worker", "web"] {
        assert!(
            info["enabled_roles"]
                .as_array()
                .is_some_and(|r| r.iter().any(|v| v == role)),
            "{role} should run by default: {info}"
        );
    }
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));

    let (status, body) = http_get(node.ports.admin, "/health").expect("GET /health");
    assert_eq!(status, 200, "{body}");
    let (status, metrics) = http_get(node.ports.admin, "/metrics").expect("GET /metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains("aos_queue_depth{"), "{metrics}");
    assert!(metrics.contains("# EOF"), "a complete exposition");

    // The roles' own listeners serve too.
    let (status, body) = http_get(node.ports.http, "/api/version").expect("GET /api/version");
    assert_eq!(status, 200, "{body}");
    std::net::TcpStream::connect(("127.0.0.1", node.ports.mqtt)).expect("MQTT listener accepts");

    // Standalone defaults: the SQLite database is created in the data directory.
    assert!(dir.path().join("data/aos.db").exists());

    let asked = Instant::now();
    node.signal(libc::SIGTERM);
    let status = node.wait_exit(PATIENCE).expect("aos exits after SIGTERM");
    assert!(status.success(), "exit status {status}:\n{}", node.stderr());
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}, beyond the configured 10s",
        asked.elapsed()
    );
    assert!(
        node.stderr().contains("AOS node stopped"),
        "{}",
        node.stderr()
    );
    // Every port is free again.
    TcpListener::bind(("127.0.0.1", node.ports.mqtt)).expect("MQTT port released");
    TcpListener::bind(("127.0.0.1", node.ports.admin)).expect("admin port released");
}

#[test]
fn sigint_stops_the_node_too_and_it_starts_again_on_the_same_data() {
    let dir = tempdir();
    let mut node = Aos::new(dir.path(), &["run"]).spawn();
    node.wait_ready();
    node.signal(libc::SIGINT);
    assert!(
        node.wait_exit(PATIENCE).expect("exits").success(),
        "{}",
        node.stderr()
    );
    let id = std::fs::read_to_string(dir.path().join("data/node-id")).expect("node id kept");

    let mut again = Aos::new(dir.path(), &["run"]).spawn();
    again.wait_ready();
    let (_, body) = http_get(again.ports.admin, "/node").expect("GET /node");
    let info: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        info["id"].as_str(),
        Some(id.trim()),
        "the node keeps its identity"
    );
}

#[test]
fn roles_can_be_chosen_at_run_time() {
    let dir = tempdir();
    let mut node = Aos::new(dir.path(), &["run", "--roles", "worker"]).spawn();
    node.wait_ready();
    let (_, body) = http_get(node.ports.admin, "/node").expect("GET /node");
    let info: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(info["enabled_roles"], serde_json::json!(["worker"]));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", node.ports.mqtt)).is_err(),
        "a worker-only node has no MQTT listener"
    );
    // Broker-only through the environment, with the nested-key rule.
    let dir = tempdir();
    let mut node = Aos::new(dir.path(), &["run"])
        .env("AOS_NODE__ROLES", "broker")
        .spawn();
    node.wait_ready();
    let (_, body) = http_get(node.ports.admin, "/node").expect("GET /node");
    assert!(body.contains(r#""enabled_roles":["broker"]"#), "{body}");
}

#[test]
fn a_config_file_that_is_not_toml_is_refused() {
    let dir = tempdir();
    let file = dir.path().join("aos.toml");
    std::fs::write(&file, "[node\nid = 1\n").expect("write");
    let (status, _, stderr) = Aos::new(dir.path(), &["run", "--config", "aos.toml"]).output();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("aos.toml"), "names the file: {stderr}");
    assert!(stderr.contains("line 1"), "says where: {stderr}");
}

#[test]
fn an_unknown_key_is_named_with_its_source() {
    let dir = tempdir();
    std::fs::write(dir.path().join("aos.toml"), "[broker]\ncolour = \"blue\"\n").expect("write");
    let (status, _, stderr) = Aos::new(dir.path(), &["run", "--config", "aos.toml"]).output();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("`broker.colour`"), "{stderr}");
    assert!(stderr.contains("config file aos.toml"), "{stderr}");
    assert!(
        stderr.contains("expected"),
        "says what is allowed: {stderr}"
    );

    let (status, _, stderr) = Aos::new(dir.path(), &["config"])
        .env("AOS_WEB__LISTN", "127.0.0.1:1")
        .output();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("`web.listn`"), "{stderr}");
    assert!(
        stderr.contains("environment variable AOS_WEB__LISTN"),
        "{stderr}"
    );

    let (status, _, stderr) = Aos::new(dir.path(), &["config"])
        .env("AOS_CONFIG", dir.path().join("missing.toml"))
        .output();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("missing.toml does not exist"), "{stderr}");
}

#[test]
fn a_value_of_the_wrong_form_says_what_was_expected() {
    let dir = tempdir();
    let (status, _, stderr) = Aos::new(dir.path(), &["run"])
        .env("AOS_BROKER__LISTEN", "not-an-address")
        .output();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("`broker.listen`"), "{stderr}");
    assert!(stderr.contains("AOS_BROKER__LISTEN"), "{stderr}");
    assert!(stderr.contains("socket address"), "{stderr}");

    let (status, _, stderr) = Aos::new(dir.path(), &["run", "--roles", "broker,brokr"]).output();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unknown role `brokr`"), "{stderr}");

    let (status, _, stderr) = Aos::new(dir.path(), &["run"])
        .env("AOS_NODE__ID", "node.one")
        .output();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("`node.one` cannot name a node"), "{stderr}");
}

#[test]
fn a_distributed_node_says_which_shared_service_is_missing() {
    let dir = tempdir();
    let (status, _, stderr) = Aos::new(dir.path(), &["run"])
        .env("AOS_CLUSTER__MODE", "distributed")
        .env("AOS_CLUSTER__NATS_URL", "nats://127.0.0.1:4222")
        .output();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("set `storage.url` (AOS_STORAGE__URL) to postgres://"),
        "{stderr}"
    );

    let (status, _, stderr) = Aos::new(dir.path(), &["run"])
        .env("AOS_CLUSTER__MODE", "distributed")
        .env("AOS_STORAGE__URL", "postgres://aos@127.0.0.1:1/aos")
        .output();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("set `cluster.nats_url` (AOS_CLUSTER__NATS_URL)"),
        "{stderr}"
    );

    // Configured, but nobody answers there: a start-up failure that names the address.
    let nobody = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = nobody.local_addr().expect("addr").port();
    drop(nobody);
    let (status, _, stderr) = Aos::new(dir.path(), &["run"])
        .env("AOS_CLUSTER__MODE", "distributed")
        .env("AOS_STORAGE__URL", "postgres://aos@127.0.0.1:1/aos")
        .env("AOS_CLUSTER__NATS_URL", format!("nats://127.0.0.1:{port}"))
        .output();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot connect to NATS at nats://127.0.0.1:{port}"
        )),
        "{stderr}"
    );
}

#[test]
fn moved_keys_and_unknown_backends_are_refused_by_name() {
    let dir = tempdir();
    let (status, _, stderr) = Aos::new(dir.path(), &["run"])
        .env("AOS_QUEUE__DIR", dir.path().join("q"))
        .output();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`queue.dir` (environment variable AOS_QUEUE__DIR) has moved: set `queue.disk.dir` (environment variable AOS_QUEUE__DISK__DIR) instead"),
        "{stderr}"
    );

    let (status, _, stderr) = Aos::new(dir.path(), &["run"])
        .env("AOS_QUEUE__URL", "rabbit://127.0.0.1")
        .output();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`queue.url` is `rabbit://127.0.0.1`, which names no backend this build has for it: use `disk:`"),
        "{stderr}"
    );
}

#[test]
fn a_taken_port_names_the_port_and_the_key_that_changes_it() {
    let dir = tempdir();
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let (status, _, stderr) = Aos::new(dir.path(), &["run"])
        .env("AOS_BROKER__LISTEN", format!("127.0.0.1:{port}"))
        .output();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("port {port} is already in use")),
        "{stderr}"
    );
    assert!(stderr.contains("`broker.listen`"), "{stderr}");
    assert!(stderr.contains("AOS_BROKER__LISTEN"), "{stderr}");

    let (status, _, stderr) = Aos::new(dir.path(), &["run"])
        .env("AOS_ADMIN__LISTEN", format!("127.0.0.1:{port}"))
        .output();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("AOS_ADMIN__LISTEN"), "{stderr}");
}

#[test]
fn config_prints_the_effective_configuration_with_secrets_redacted() {
    let dir = tempdir();
    let (status, stdout, stderr) = Aos::new(dir.path(), &["config"])
        .env(
            "AOS_STORAGE__URL",
            "postgres://aos:hunter2@db.example:5432/aos",
        )
        .env("AOS_WORKER__BATCH_SIZE", "64")
        .output();
    assert!(status.success(), "{stderr}");
    assert!(!stdout.contains("hunter2"), "{stdout}");
    assert!(
        stdout.contains("postgres://aos:<redacted>@db.example:5432/aos"),
        "{stdout}"
    );
    assert!(
        stdout.contains("batch_size = 64"),
        "environment applied: {stdout}"
    );
    assert!(
        stdout.contains("[broker]") && stdout.contains("[queue]"),
        "{stdout}"
    );
}

#[test]
fn migrate_applies_the_schema_once() {
    let dir = tempdir();
    let (status, stdout, stderr) = Aos::new(dir.path(), &["migrate"]).output();
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("applied m0001_nodes"), "{stdout}");
    let (status, stdout, _) = Aos::new(dir.path(), &["migrate"]).output();
    assert!(status.success());
    assert!(stdout.contains("up to date"), "{stdout}");
}

#[test]
fn version_lists_the_compiled_roles() {
    let dir = tempdir();
    let (status, stdout, _) = Aos::new(dir.path(), &["--version"]).output();
    assert!(status.success());
    assert!(
        stdout.contains("roles: worker, web, broker"),
        "the default build has every role: {stdout}"
    );
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempdir();
    let mut node = Aos::new(
        dir.path(),
        &["--log-format", "json", "run", "--roles", "worker"],
    )
    .spawn();
    node.wait_ready();
    node.signal(libc::SIGTERM);
    assert!(node.wait_exit(PATIENCE).expect("exits").success());
    let stderr = node.stderr();
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in &lines {
        let record: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(record.get("level").is_some(), "{line}");
    }
    assert!(stderr.contains("AOS node ready"), "{stderr}");
}

#[test]
fn the_documented_example_configuration_is_valid() {
    let dir = tempdir();
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/aos.toml");
    let (status, stdout, stderr) = Aos::new(
        dir.path(),
        &["--config", &example.display().to_string(), "config"],
    )
    .output();
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("[broker.auth]"), "{stdout}");

    // The three nodes of the cluster example too.
    let cluster = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/cluster");
    for name in ["all-roles.toml", "broker.toml", "worker-web.toml"] {
        let file = cluster.join(name);
        let (status, stdout, stderr) = Aos::new(
            dir.path(),
            &["--config", &file.display().to_string(), "config"],
        )
        .output();
        assert!(status.success(), "{name}: {stderr}");
        assert!(
            stdout.contains("mode = \"distributed\""),
            "{name}: {stdout}"
        );
        assert!(
            stdout.contains("url = \"nats:\""),
            "{name}: the seams on NATS: {stdout}"
        );
    }
}
