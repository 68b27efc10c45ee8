//! The HTTP device API through the node's port: a device posts telemetry with its access token
//! and the value is stored like one sent over MQTT; it fetches its pending command (now `sent`,
//! and only once) and its reply settles it. Wrong or missing tokens, another device's token, an
//! oversize body: a 4xx in the error shape, and the node serves on.

mod common;

use std::time::{Duration, Instant};

use common::api::{access_token, acme, call, refused, start};
use common::{PATIENCE, cli_ok};
use serde_json::{Value, json};

/// (status, JSON body) of a device's request signed with `token`.
fn device_call(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> (u16, Value) {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build(),
    );
    let mut request = ureq::http::Request::builder()
        .method(method)
        .uri(format!("http://127.0.0.1:{port}{path}"));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = agent
        .run(request.body(body.to_vec()).expect("request"))
        .expect("HTTP");
    let status = response.status().as_u16();
    let text = response.into_body().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Polls `probe` until it gives a value (with a deadline).
fn eventually<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(Instant::now() < deadline, "{what} in time");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn devices_that_speak_http_send_data_and_take_commands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let olga_password = acme(d);
    cli_ok(
        d,
        &[
            "device", "add", "d-2", "--tenant", "acme", "--class", "sensor",
        ],
    );
    let d1 = common::platform::access_token(d, "d-1", "acme");
    let d2 = common::platform::access_token(d, "d-2", "acme");
    let node = start(d);
    let port = node.ports.http;
    let olga = access_token(port, "olga", &olga_password);

    // Telemetry over HTTP lands in the ledger like MQTT's.
    let (status, accepted) = device_call(
        port,
        "POST",
        "/api/device/d-1/telemetry",
        Some(&d1),
        br#"{"temperature": 21.5}"#,
    );
    assert_eq!(status, 202, "{accepted}");
    let latest = eventually("the value stored", || {
        let (_, shown) = call(port, "GET", "/api/devices/d-1", Some(&olga), None);
        let latest = shown["latest"].as_array().cloned().unwrap_or_default();
        (!latest.is_empty()).then_some(latest)
    });
    assert_eq!(
        (latest[0]["attribute"].clone(), latest[0]["value"].clone()),
        (json!("temperature"), json!(21.5))
    );
    let (status, _) = device_call(
        port,
        "POST",
        "/api/device/d-1/attributes",
        Some(&d1),
        br#"{"firmware": "1.2"}"#,
    );
    assert_eq!(status, 202);

    // Refusals: no token, a wrong one, another device's, too much.
    for token in [None, Some("not-the-token"), Some(d2.as_str())] {
        refused(
            device_call(port, "POST", "/api/device/d-1/telemetry", token, b"{}"),
            401,
            "unauthorized",
        );
    }
    refused(
        device_call(port, "GET", "/api/device/nobody/commands", Some(&d1), b""),
        401,
        "unauthorized",
    );
    let oversize = vec![b'x'; 300 * 1024];
    refused(
        device_call(
            port,
            "POST",
            "/api/device/d-1/telemetry",
            Some(&d1),
            &oversize,
        ),
        413,
        "too_large",
    );
    // A payload that is not JSON is taken, and logged failed with the reason.
    let (status, _) = device_call(
        port,
        "POST",
        "/api/device/d-1/telemetry",
        Some(&d1),
        b"not json",
    );
    assert_eq!(status, 202);
    eventually("the bad payload logged failed", || {
        let (_, failed) = call(
            port,
            "GET",
            "/api/messages?device=d-1&status=failed",
            Some(&olga),
            None,
        );
        (failed["total"] == json!(1)).then_some(())
    });

    // A command waits for the device, which takes it once and replies.
    let (status, command) = call(
        port,
        "POST",
        "/api/devices/d-1/commands",
        Some(&olga),
        Some(&json!({"name": "reboot", "parameters": {"delay": 5}}).to_string()),
    );
    assert_eq!(status, 201, "{command}");
    let id = command["id"].clone();
    let (status, pending) = device_call(port, "GET", "/api/device/d-1/commands", Some(&d1), b"");
    assert_eq!(status, 200, "{pending}");
    assert_eq!(
        pending["items"],
        json!([{"id": id, "name": "reboot", "parameters": {"delay": 5}}])
    );
    let (_, again) = device_call(port, "GET", "/api/device/d-1/commands", Some(&d1), b"");
    assert_eq!(again["items"], json!([]), "taken once");
    let path = format!("/api/commands/{id}");
    assert_eq!(
        call(port, "GET", &path, Some(&olga), None).1["status"],
        json!("sent")
    );
    // d-2 cannot settle d-1's command; d-1 can.
    let reply = json!({"id": id, "status": "ok"}).to_string();
    let (status, _) = device_call(
        port,
        "POST",
        "/api/device/d-2/commands/reply",
        Some(&d2),
        reply.as_bytes(),
    );
    assert_eq!(status, 202);
    let (status, _) = device_call(
        port,
        "POST",
        "/api/device/d-1/commands/reply",
        Some(&d1),
        reply.as_bytes(),
    );
    assert_eq!(status, 202);
    eventually("the command acknowledged", || {
        let (_, shown) = call(port, "GET", &path, Some(&olga), None);
        (shown["status"] == json!("acknowledged")).then_some(())
    });
    let (_, messages) = call(port, "GET", "/api/messages?device=d-2", Some(&olga), None);
    assert_eq!(
        messages["total"],
        json!(1),
        "d-2's reply is logged under d-2: {messages}"
    );
}
