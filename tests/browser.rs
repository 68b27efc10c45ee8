//! The web client end to end in headless Chromium (`tests/browser/e2e.mjs`, playwright-core),
//! against a standalone node, with this test playing the MQTT device: sign in; create a class,
//! its model, a message format (a bad .proto refused at its field) and an interpreter in their
//! dialogs; register a device; see telemetry arrive and the chart grow live; read the chart (an
//! axis per unit, values on hover, a range dragged to zoom, a CSV of what it shows, a gap where
//! an averaged interval has no values); send a
//! command and see it acknowledged; acknowledge the alarm a level change raised and see it
//! counted again live when the value crosses into the level once more; use the keyboard and a
//! 390 px screen; write a workflow (its errors at the document), export it, delete it; rename a
//! spare device, give it a password and a token, delete it; add a user, make a custom role and
//! give it to the user in its edit dialog, see an API key refused with the error at its field
//! and then made (its secret shown once) and revoked, reset a password; read the message and
//! audit logs; in the broker view delete the device's retained status and close its connection
//! (the device told why); open the API's documentation page; then, as the system administrator, create a
//! tenant and follow it through a link, see the dead letters and the platform's audit log, see
//! the node on the platform page and switch its broker off and on. Screenshots of every page, in
//! light and dark, go to `target/browser-screenshots/`.
//!
//! Needs Debian's Chromium and `tests/browser/node_modules` (`tests/browser/setup.sh`, run by
//! `scripts/test`); without them it skips loudly, except under `CI=true`, where it fails.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::mqtt::{Client5, options5};
use common::platform::{access_token, printed};
use common::{Aos, PATIENCE, cli_ok};
use rumqttc::v5::mqttbytes::QoS;
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
/// The system administrator's password (it visits the platform page last).
const ADMIN_PASSWORD: &str = "a long admin password";

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser")
}

/// Whether Chromium, Node.js and the script's modules are here; says what is missing.
fn missing() -> Option<String> {
    let dir = browser_dir();
    if !Path::new(CHROMIUM).exists() {
        return Some(format!("{CHROMIUM} is not installed"));
    }
    if !dir.join("node_modules/playwright-core").exists() {
        return Some(format!(
            "{} has no node_modules (run tests/browser/setup.sh)",
            dir.display()
        ));
    }
    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => None,
        _ => Some("node is not installed".into()),
    }
}

/// Publishes `payload` as device telemetry with QoS 1 and waits for the PUBACK.
async fn publish(device: &mut Client5, payload: Value) {
    device
        .client
        .publish(
            "aos/sensor-1/telemetry",
            QoS::AtLeastOnce,
            false,
            payload.to_string(),
        )
        .await
        .expect("publish");
    device.puback().await;
}

// Several threads: this one waits on the script while the MQTT client keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_client_works_in_a_real_browser() {
    if let Some(what) = missing() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "browser test cannot run under CI: {what}"
        );
        eprintln!("\n*** SKIPPED the browser test: {what} ***\n");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    cli_ok(d, &["tenant", "add", "acme"]);
    let out = cli_ok(
        d,
        &[
            "user",
            "add",
            "tina",
            "--tenant",
            "acme",
            "--role",
            "tenant administrator",
        ],
    );
    let password = printed(&out, "password: ");
    // Temperatures of 90 and above are faulty (tenant-wide: the class is made in the page).
    cli_ok(
        d,
        &[
            "interpreter",
            "set",
            "temperature",
            "--tenant",
            "acme",
            "--level",
            "faulty:90:",
        ],
    );
    let mut node = Aos::new(d, &["run"])
        .env("AOS_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("AOS_NODE__SWITCHABLE_ROLES", "broker")
        // The platform page's "last seen" is shown moving on.
        .env("AOS_NODE__HEARTBEAT_INTERVAL", "1s")
        .spawn();
    node.wait_ready();
    let screenshots =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/browser-screenshots");
    // Only this run's screenshots count below.
    let _ = std::fs::remove_dir_all(&screenshots);

    let mut script = Command::new("node")
        .arg(browser_dir().join("e2e.mjs"))
        .env("AOS_URL", format!("http://127.0.0.1:{}", node.ports.http))
        .env("AOS_LOGIN", "tina")
        .env("AOS_PASSWORD", &password)
        .env("AOS_ADMIN_LOGIN", "admin")
        .env("AOS_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("SCREENSHOT_DIR", &screenshots)
        .env("CHROMIUM", CHROMIUM)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs");
    let mut to_script = script.stdin.take().expect("stdin");
    let (lines_tx, lines) = mpsc::channel::<String>();
    let stdout = script.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    // The script's next line (a step or DONE); its end is a failure told on its stderr.
    let next = |what: &str| -> String {
        lines
            .recv_timeout(PATIENCE * 2)
            .unwrap_or_else(|_| panic!("the browser script stopped before {what}"))
    };
    let mut go = || {
        to_script.write_all(b"GO\n").expect("tell the script");
        to_script.flush().expect("tell the script");
    };

    assert_eq!(next("creating the device"), "STEP device-created");
    // The page registered sensor-1 in class thermo: give it credentials and connect it.
    let token = access_token(d, "sensor-1", "acme");
    let mut options = options5(node.ports.mqtt, "sensor-1");
    options.set_credentials("sensor-1", token.as_str());
    let (mut device, _) = Client5::connect(options)
        .await
        .expect("the device signs in");
    device
        .subscribe("aos/sensor-1/commands", QoS::AtLeastOnce)
        .await;
    // A value of two hours ago (the device's own time): the 6-hour chart has a gap after it.
    let two_hours_ago = chrono::Utc::now().timestamp_millis() - 2 * 3600 * 1000;
    publish(
        &mut device,
        json!({"ts": two_hours_ago, "values": {"temperature": 20}}),
    )
    .await;
    publish(&mut device, json!({"temperature": 21.5})).await;
    go();

    assert_eq!(next("seeing the first value"), "STEP value-seen");
    publish(&mut device, json!({"temperature": 23, "humidity": 40})).await;
    publish(&mut device, json!({"temperature": 24.5, "humidity": 42})).await;
    go();

    assert_eq!(next("sending the command"), "STEP command-sent");
    go();
    // The command the page sent reaches the device, which says it is done.
    let command = tokio::time::timeout(PATIENCE, device.publish_received())
        .await
        .expect("the command arrives");
    let sent: Value = serde_json::from_slice(&command.payload).expect("JSON command");
    assert_eq!(sent["name"], json!("reboot"), "{sent}");
    assert_eq!(sent["parameters"], json!({"delay": 5}), "{sent}");
    device
        .client
        .publish(
            "aos/sensor-1/commands/reply",
            QoS::AtLeastOnce,
            false,
            json!({"id": sent["id"], "status": "ok"}).to_string(),
        )
        .await
        .expect("reply");
    device.puback().await;

    assert_eq!(next("raising an event"), "STEP raise-event");
    publish(&mut device, json!({"temperature": 95})).await;
    go();

    // Back to normal, then faulty again: the open alarm counts it (the page sees it live).
    let tina = common::api::access_token(node.ports.http, "tina", &password);
    assert_eq!(next("crossing again"), "STEP cross-again");
    publish(&mut device, json!({"temperature": 40})).await;
    // Stored before the next one (values of one batch count as the newest alone).
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let (_, shown) = common::api::call(
            node.ports.http,
            "GET",
            "/api/devices/sensor-1",
            Some(&tina),
            None,
        );
        let latest = shown["latest"].as_array().cloned().unwrap_or_default();
        if latest
            .iter()
            .any(|v| v["attribute"] == json!("temperature") && v["value"] == json!(40.0))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "temperature 40 never stored: {shown}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    publish(&mut device, json!({"temperature": 97})).await;
    // A retained status for the broker view.
    device
        .client
        .publish("aos/sensor-1/status", QoS::AtLeastOnce, true, "online")
        .await
        .expect("publish the status");
    device.puback().await;
    go();

    // The page closed the device's connection in the broker view: the device is told why.
    assert_eq!(next("disconnecting the device"), "STEP client-disconnected");
    let how = device.disconnected().await;
    assert!(how.contains("AdministrativeAction"), "{how}");
    go();

    assert_eq!(next("finishing"), "DONE");
    let status = script
        .wait_timeout_or_kill(Duration::from_secs(30))
        .expect("the script ends");
    assert!(status.success(), "the browser script failed");
    for page in [
        "dashboard",
        "devices",
        "device",
        "classes",
        "events",
        "events-dark",
        "users",
        "operations",
        "broker",
        "broker-dark",
        "broker-platform",
        "broker-platform-dark",
        "platform",
        "platform-dark",
        "phone-events",
        "api-docs",
        "api-docs-dark",
    ] {
        assert!(
            screenshots.join(format!("{page}.png")).exists(),
            "screenshot of {page}"
        );
    }
    drop(node);
}

trait WaitTimeout {
    fn wait_timeout_or_kill(&mut self, within: Duration) -> Option<std::process::ExitStatus>;
}

impl WaitTimeout for std::process::Child {
    /// Waits (polling, with a deadline) for the process to end; kills it after `within`.
    fn wait_timeout_or_kill(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                let _ = self.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
