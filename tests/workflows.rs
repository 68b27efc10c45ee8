//! Workflows through the real interfaces: imported with the CLI (checked, exported back),
//! triggered by a device connecting, by a level change and a threshold crossed in what a device
//! publishes over MQTT, and by a schedule; their actions send commands the device receives on
//! its command topic and answers, call an HTTP API (retrying a 5xx), branch on the answer and
//! save values. A failing workflow is logged `failed` and the pipeline keeps storing.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aos_storage::Storage;
use aos_storage::entity::{command, latest_value};
use common::mqtt::{Client5, options5};
use common::platform::{access_token, storage, wait_logged};
use common::{Aos, PATIENCE, cli_ok};
use rumqttc::v5::mqttbytes::QoS;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};

/// An HTTP API that answers the statuses given in turn (then 200) and keeps the bodies it got.
fn api(statuses: Vec<u16>) -> (u16, Arc<Mutex<Vec<Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let received = Arc::new(Mutex::new(Vec::new()));
    let seen = received.clone();
    std::thread::spawn(move || {
        let mut statuses = statuses.into_iter();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            seen.lock()
                .expect("lock")
                .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
            let status = statuses.next().unwrap_or(200);
            let answer = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: 11\r\nconnection: close\r\n\r\n{{\"ok\":true}}"
            );
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    (port, received)
}

fn import(dir: &Path, name: &str, document: &Value) -> (bool, String) {
    let file = dir.join(format!("{name}.json"));
    std::fs::write(&file, document.to_string()).expect("write");
    let (status, out, err) = Aos::new(
        dir,
        &[
            "workflow",
            "import",
            file.to_str().expect("utf8"),
            "--tenant",
            "acme",
        ],
    )
    .output();
    (status.success(), format!("{out}{err}"))
}

/// The results in a workflow's run log, oldest first.
fn runs(dir: &Path, name: &str) -> Vec<(String, String)> {
    let listed = cli_ok(dir, &["workflow", "runs", name, "--tenant", "acme"]);
    let mut rows: Vec<(String, String)> = listed
        .lines()
        .skip(1)
        .filter(|l| !l.starts_with(' '))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[2].to_string(), f[4..].join(" "))
        })
        .collect();
    rows.reverse();
    rows
}

/// The steps of workflow `name`'s newest run, as the CLI lists them (`3 http ok: …`).
fn newest_steps(dir: &Path, name: &str) -> Vec<String> {
    let listed = cli_ok(dir, &["workflow", "runs", name, "--tenant", "acme"]);
    listed
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with(' '))
        .map(|l| l.trim().to_string())
        .collect()
}

/// Waits (polling, with a deadline) until `done` holds of workflow `name`'s runs.
async fn wait_runs(
    dir: &Path,
    name: &str,
    done: impl Fn(&[(String, String)]) -> bool,
) -> Vec<(String, String)> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let found = runs(dir, name);
        if done(&found) {
            return found;
        }
        assert!(Instant::now() < deadline, "runs of {name}: {found:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn latest(storage: &Storage, attribute: &str) -> Option<latest_value::Model> {
    latest_value::Entity::find()
        .filter(latest_value::Column::Attribute.eq(attribute))
        .one(storage.db())
        .await
        .expect("query")
}

#[tokio::test]
async fn workflows_run_on_their_triggers_and_act() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    cli_ok(d, &["tenant", "add", "acme"]);
    cli_ok(d, &["class", "add", "sensor", "--tenant", "acme"]);
    cli_ok(
        d,
        &[
            "device", "add", "d-1", "--tenant", "acme", "--class", "sensor",
        ],
    );
    cli_ok(
        d,
        &[
            "interpreter",
            "set",
            "temperature",
            "--tenant",
            "acme",
            "--level",
            "warning:30:50",
            "--level",
            "faulty:50:",
        ],
    );
    let token = access_token(d, "d-1", "acme");
    let (port, received) = api(vec![500]);

    let cool_down = json!({
        "name": "cool-down",
        "trigger": {"kind": "level", "attribute": "temperature", "level": "faulty", "class": "sensor"},
        "actions": [
            {"assign": {"name": "target", "expression": "value - 20"}},
            {"command": {"name": "cool", "parameters": {"target": "=target", "reason": "=`${attribute} is ${level}`"}}},
            {"http": {"url": format!("http://127.0.0.1:{port}/alarms"), "method": "POST", "body": {"device": "=device", "value": "=value"},
                      "retries": 2, "timeout": "5s", "result": "answer"}},
            {"if": {"condition": "answer.status == 200", "then": [
                {"save": {"attribute": "alarm_sent", "value": true}}
            ]}}
        ]
    });
    let broken = json!({
        "name": "broken",
        "trigger": {"kind": "threshold", "attribute": "temperature", "above": 40},
        "actions": [{"http": {"url": "http://127.0.0.1:1/nowhere", "timeout": "2s"}}]
    });
    let hello = json!({
        "name": "hello",
        "trigger": {"kind": "device", "event": "connected"},
        "actions": [{"command": {"name": "configure", "parameters": {"interval": 10}}}]
    });
    let tick = json!({
        "name": "tick",
        "trigger": {"kind": "schedule", "cron": "* * * * * *"},
        "actions": [{"save": {"device": "d-1", "attribute": "heartbeat", "value": "=scheduled_at"}}]
    });
    for document in [&cool_down, &broken, &hello, &tick] {
        let (ok, out) = import(d, document["name"].as_str().expect("name"), document);
        assert!(ok, "{out}");
    }
    let exported: Value = serde_json::from_str(&cli_ok(
        d,
        &["workflow", "export", "cool-down", "--tenant", "acme"],
    ))
    .expect("json");
    assert_eq!(exported["actions"], cool_down["actions"]);
    assert_eq!(exported["enabled"], json!(true));
    // Wrong definitions are refused, saying where.
    let bad = json!({"name": "bad", "trigger": {"kind": "manual"},
                     "actions": [{"if": {"condition": "value >", "then": []}}]});
    let (ok, out) = import(d, "bad", &bad);
    assert!(
        !ok && out.contains("actions[0]") && out.contains("does not compile"),
        "{out}"
    );
    let bad =
        json!({"name": "bad", "trigger": {"kind": "schedule", "cron": "every day"}, "actions": []});
    let (ok, out) = import(d, "bad", &bad);
    assert!(!ok && out.contains("cron"), "{out}");

    let mut node = Aos::new(d, &["run"]).spawn();
    node.wait_ready();
    let storage = storage(d).await;
    let mut options = options5(node.ports.mqtt, "d-1");
    options.set_credentials("d-1", token.as_str());
    let (mut dev, _) = Client5::connect(options).await.expect("signs in");
    dev.subscribe("aos/d-1/commands", QoS::AtLeastOnce).await;

    // Connecting started `hello`: its command arrives.
    let configure: Value =
        serde_json::from_slice(&dev.publish_received().await.payload).expect("json");
    assert_eq!(configure["name"], json!("configure"));
    assert_eq!(configure["parameters"], json!({"interval": 10}));

    // 55 is faulty (cool-down) and above 40 (broken).
    dev.client
        .publish(
            "aos/d-1/telemetry",
            QoS::AtLeastOnce,
            false,
            r#"{"temperature": 55}"#,
        )
        .await
        .expect("publish");
    dev.puback().await;
    let cool: Value = serde_json::from_slice(&dev.publish_received().await.payload).expect("json");
    assert_eq!(cool["name"], json!("cool"));
    assert_eq!(
        cool["parameters"],
        json!({"target": 35, "reason": "temperature is faulty"})
    );
    dev.client
        .publish(
            "aos/d-1/commands/reply",
            QoS::AtLeastOnce,
            false,
            json!({"id": cool["id"], "status": "ok"}).to_string(),
        )
        .await
        .expect("publish");
    dev.puback().await;
    let runs_of_cool_down =
        wait_runs(d, "cool-down", |r| !r.is_empty() && r[0].0 != "running").await;
    assert_eq!(runs_of_cool_down.len(), 1, "{runs_of_cool_down:?}");
    assert_eq!(runs_of_cool_down[0].0, "ok", "{runs_of_cool_down:?}");
    // Its log says what each action did: the `if` took its `then`, whose save is step 4.then.1.
    let steps = newest_steps(d, "cool-down");
    let starts: Vec<&str> = steps
        .iter()
        .map(|s| s.split(':').next().unwrap_or_default())
        .collect();
    assert_eq!(
        starts,
        [
            "1 assign ok",
            "2 command ok",
            "3 http ok",
            "4 if ok",
            "4.then.1 save ok"
        ],
        "{steps:?}"
    );
    assert!(steps[0].contains("target = 35"), "{steps:?}");
    assert!(steps[2].contains("answered 200"), "{steps:?}");
    // The API failed once (500), was retried, and got the device's value.
    let bodies = received.lock().expect("lock").clone();
    assert_eq!(bodies, vec![json!({"device": "d-1", "value": 55}); 2]);
    assert_eq!(
        latest(&storage, "alarm_sent").await.map(|v| v.value_json),
        Some(Some(json!(true)))
    );
    let broken_runs = wait_runs(d, "broken", |r| !r.is_empty() && r[0].0 != "running").await;
    assert_eq!(broken_runs[0].0, "failed", "{broken_runs:?}");
    assert!(
        broken_runs[0].1.contains("action 1 (http)"),
        "{broken_runs:?}"
    );
    let steps = newest_steps(d, "broken");
    assert!(
        steps.len() == 1 && steps[0].starts_with("1 http failed"),
        "{steps:?}"
    );

    // The pipeline went on: the next value is stored, and staying faulty starts nothing new.
    dev.client
        .publish(
            "aos/d-1/telemetry",
            QoS::AtLeastOnce,
            false,
            r#"{"temperature": 60}"#,
        )
        .await
        .expect("publish");
    dev.puback().await;
    wait_logged(&storage, 3).await;
    let acknowledged = command::Entity::find_by_id(cool["id"].as_i64().expect("id"))
        .one(storage.db())
        .await
        .expect("query")
        .expect("command");
    assert_eq!(acknowledged.status, "acknowledged");

    // The schedule runs every second.
    wait_runs(d, "tick", |r| {
        r.iter().filter(|(result, _)| result == "ok").count() >= 2
    })
    .await;
    assert!(latest(&storage, "heartbeat").await.is_some());

    // By hand: a failing run says why; a disabled workflow does not run on its trigger.
    let (status, _, err) = Aos::new(
        d,
        &[
            "workflow", "run", "broken", "--tenant", "acme", "--device", "d-1",
        ],
    )
    .output();
    assert!(
        !status.success() && err.contains("failed: action 1 (http)"),
        "{err}"
    );
    cli_ok(d, &["workflow", "disable", "cool-down", "--tenant", "acme"]);
    assert_eq!(runs(d, "cool-down").len(), 1);
    assert_eq!(runs(d, "broken").len(), 2);
}
