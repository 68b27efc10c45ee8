//! Helpers for tests of the REST API: HTTP calls with a bearer token, a node with a known
//! administrator password, tenant `acme`, and refusals in the API's error shape.

use std::io::{BufRead, BufReader};
use std::sync::mpsc;

use serde_json::{Value, json};

use super::Aos;

pub const PASSWORD: &str = "a long admin password";

/// (status, JSON body) of a request to the node's HTTP port.
pub fn call(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build();
    let agent = ureq::Agent::new_with_config(config);
    let mut request = ureq::http::Request::builder()
        .method(method)
        .uri(format!("http://127.0.0.1:{port}{path}"));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = match body {
        Some(body) => agent.run(
            request
                .header("content-type", "application/json")
                .body(body.to_string())
                .expect("request"),
        ),
        None => agent.run(request.body(()).expect("request")),
    }
    .expect("HTTP");
    let status = response.status().as_u16();
    let text = response.into_body().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

pub fn start(dir: &std::path::Path) -> super::AosProcess {
    let mut node = Aos::new(dir, &["run"])
        .env("AOS_ADMIN_PASSWORD", PASSWORD)
        .spawn();
    node.wait_ready();
    node
}

/// Tenant `acme` with class `sensor`, device `d-1` and the operator `olga`; returns olga's
/// password.
pub fn acme(dir: &std::path::Path) -> String {
    super::cli_ok(dir, &["tenant", "add", "acme"]);
    super::cli_ok(dir, &["class", "add", "sensor", "--tenant", "acme"]);
    super::cli_ok(
        dir,
        &[
            "device", "add", "d-1", "--tenant", "acme", "--class", "sensor",
        ],
    );
    let out = super::cli_ok(
        dir,
        &[
            "user", "add", "olga", "--tenant", "acme", "--role", "operator",
        ],
    );
    super::platform::printed(&out, "password: ")
}

/// An access token for `login`.
pub fn access_token(port: u16, login: &str, password: &str) -> String {
    let body = json!({"login": login, "password": password}).to_string();
    let (status, tokens) = call(port, "POST", "/api/auth/sign-in", None, Some(&body));
    assert_eq!(status, 200, "{tokens}");
    tokens["access_token"].as_str().expect("token").to_string()
}

/// Asserts a refusal: `status`, the error shape, and its code.
pub fn refused((status, body): (u16, Value), want: u16, code: &str) -> Value {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["error"]["code"], json!(code), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body["error"].clone()
}

/// Opens `GET /api/live` with `token`; its `event:`/`data:` pairs come out of the channel.
pub fn live(port: u16, token: &str) -> mpsc::Receiver<(String, Value)> {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build(),
    );
    let response = agent
        .get(format!("http://127.0.0.1:{port}/api/live"))
        .header("authorization", format!("Bearer {token}"))
        .call()
        .expect("live stream");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut event = String::new();
        for line in BufReader::new(response.into_body().into_reader())
            .lines()
            .map_while(Result::ok)
        {
            if let Some(name) = line.strip_prefix("event: ") {
                event = name.to_string();
            } else if let Some(data) = line.strip_prefix("data: ") {
                let data = serde_json::from_str(data).expect("JSON data");
                if tx.send((event.clone(), data)).is_err() {
                    break;
                }
            }
        }
    });
    rx
}

/// Waits for a live update of `kind` for which `wanted` holds.
pub fn wait_live(
    updates: &mpsc::Receiver<(String, Value)>,
    kind: &str,
    wanted: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + super::PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let (event, data) = updates
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no live `{kind}` update in time"));
        if event == kind && wanted(&data) {
            return data;
        }
    }
}
