//! Helpers for tests of the REST API: HTTP calls with a bearer token, a node with a known
//! administrator password, tenant `acme`, and refusals in the API's error shape.

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
