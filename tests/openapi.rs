//! The API's OpenAPI document and its page, through a running node: `/api/openapi.json` is an
//! OpenAPI 3 document with the main operations, the error shape and both ways of signing
//! requests; `/api/docs` serves the page that renders it; and every list the document names
//! answers a system administrator in the shape it documents, so the document and the server
//! agree.

mod common;

use common::api::{PASSWORD, access_token, acme, call, start};
use serde_json::{Value, json};

/// (status, content type, text) of a plain GET.
fn fetch(port: u16, path: &str) -> (u16, String, String) {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build(),
    );
    let response = agent
        .get(format!("http://127.0.0.1:{port}{path}"))
        .call()
        .expect("HTTP");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = response.into_body().read_to_string().unwrap_or_default();
    (status, content_type, text)
}

/// The component a `$ref` names.
fn component<'a>(doc: &'a Value, reference: &Value) -> &'a Value {
    let name = reference
        .as_str()
        .and_then(|r| r.strip_prefix("#/components/schemas/"))
        .unwrap_or_else(|| panic!("not a schema reference: {reference}"));
    &doc["components"]["schemas"][name]
}

/// The fields an object schema documents, each with its schema, and those it always has
/// (`allOf` parts merged).
fn fields(doc: &Value, schema: &Value) -> (serde_json::Map<String, Value>, Vec<String>) {
    let schema = match schema.get("$ref") {
        Some(reference) => component(doc, reference),
        None => schema,
    };
    let mut documented = schema["properties"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut required: Vec<String> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    for part in schema["allOf"].as_array().into_iter().flatten() {
        let (more, always) = fields(doc, part);
        documented.extend(more);
        required.extend(always);
    }
    (documented, required)
}

/// Whether `value` is of a JSON type a field's schema names (`"type": "string"` or
/// `"type": ["object", "null"]`); a schema that names none (a `$ref`, `oneOf`, any value)
/// admits it here.
fn of_documented_type(schema: &Value, value: &Value) -> bool {
    let named: Vec<&str> = match &schema["type"] {
        Value::String(one) => vec![one.as_str()],
        Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
        _ => return true,
    };
    named.iter().any(|t| match *t {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => false,
    })
}

#[test]
fn the_api_document_matches_the_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    acme(d);
    let node = start(d);
    let port = node.ports.http;

    // The document needs no sign-in.
    let (status, doc) = call(port, "GET", "/api/openapi.json", None, None);
    assert_eq!(status, 200, "{doc}");
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], json!("AOS REST API"));
    assert!(
        doc["info"]["version"]
            .as_str()
            .is_some_and(|v| !v.is_empty())
    );

    for (path, methods) in [
        ("/api/auth/sign-in", &["post"][..]),
        ("/api/auth/refresh", &["post"]),
        ("/api/me", &["get"]),
        ("/api/devices", &["get", "post"]),
        ("/api/devices/{uid}", &["get"]),
        ("/api/devices/{uid}/values", &["get"]),
        ("/api/devices/{uid}/commands", &["post"]),
        ("/api/commands", &["get"]),
        ("/api/commands/{id}", &["get"]),
        ("/api/events", &["get"]),
        ("/api/events/{id}/acknowledge", &["post"]),
        ("/api/workflows", &["get", "post"]),
        ("/api/workflows/{name}", &["get", "delete"]),
        ("/api/classes", &["get", "post"]),
        ("/api/users", &["get", "post"]),
        ("/api/tenants", &["get", "post"]),
        ("/api/nodes", &["get"]),
        ("/api/queues/{queue}/dead", &["get"]),
        ("/api/device/{uid}/telemetry", &["post"]),
        ("/api/device/{uid}/commands", &["get"]),
        ("/api/live", &["get"]),
        ("/api/version", &["get"]),
        ("/api/openapi.json", &["get"]),
    ] {
        let item = &doc["paths"][path];
        assert!(item.is_object(), "{path} is documented");
        for method in methods {
            let op = &item[*method];
            assert!(op.is_object(), "{method} {path} is documented");
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path} says what it answers"
            );
        }
    }

    // One error shape, which every refusal of a signed request documents.
    let error = &doc["components"]["schemas"]["ErrorBody"];
    assert_eq!(error["required"], json!(["error"]), "{error}");
    let detail = component(&doc, &error["properties"]["error"]["$ref"]);
    for field in ["code", "message", "field"] {
        assert!(detail["properties"][field].is_object(), "{detail}");
    }
    let refusal = &doc["paths"]["/api/devices"]["get"]["responses"]["401"]["content"]["application/json"]
        ["schema"]["$ref"];
    assert_eq!(refusal, &json!("#/components/schemas/ErrorBody"));

    // People sign with their access token (a JWT), devices with theirs; sign-in with neither.
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["type"], json!("http"), "{schemes}");
    assert_eq!(schemes["bearer"]["scheme"], json!("bearer"), "{schemes}");
    assert_eq!(schemes["bearer"]["bearerFormat"], json!("JWT"), "{schemes}");
    assert_eq!(
        schemes["device_token"]["scheme"],
        json!("bearer"),
        "{schemes}"
    );
    let security = |method: &str, path: &str| doc["paths"][path][method]["security"].clone();
    assert_eq!(security("get", "/api/devices"), json!([{"bearer": []}]));
    assert_eq!(
        security("post", "/api/device/{uid}/telemetry"),
        json!([{"device_token": []}])
    );
    assert_eq!(security("post", "/api/auth/sign-in"), Value::Null);
    assert_eq!(security("get", "/api/version"), Value::Null);

    // The page that renders it, from the node's own files.
    let (status, content_type, page) = fetch(port, "/api/docs");
    assert_eq!(status, 200, "{page}");
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(page.contains(r#"src="/ui/api-docs.js""#), "{page}");
    let (status, content_type, script) = fetch(port, "/ui/api-docs.js");
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("text/javascript"),
        "{content_type}"
    );
    assert!(script.contains("/api/openapi.json"));

    // Every list the document names answers a system administrator in the documented shape:
    // `{"items", "total"}`, each item with the fields its schema requires and no others, each
    // of a type the schema gives.
    let admin = access_token(port, "admin", PASSWORD);
    // Fields that hold what a user gave in whatever JSON type it took: a JSON Schema may be a
    // boolean as well as an object.
    for (name, schema) in [("any", json!(true)), ("none", json!(false))] {
        let body = json!({"name": name, "kind": "json", "schema": schema}).to_string();
        let (status, made) = call(
            port,
            "POST",
            "/api/formats?tenant=acme",
            Some(&admin),
            Some(&body),
        );
        assert_eq!(status, 201, "{made}");
    }
    let mut checked = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let op = &item["get"];
        let answer = &op["responses"]["200"]["content"]["application/json"]["schema"];
        let listed = answer["$ref"]
            .as_str()
            .is_some_and(|r| r.starts_with("#/components/schemas/Listed_"));
        let parameters = op["parameters"].as_array().cloned().unwrap_or_default();
        if !listed || parameters.iter().any(|p| p["required"] == json!(true)) {
            continue;
        }
        let tenant = parameters.iter().any(|p| p["name"] == json!("tenant"));
        let address = if tenant {
            format!("{path}?tenant=acme")
        } else {
            path.clone()
        };
        let (status, page) = call(port, "GET", &address, Some(&admin), None);
        assert_eq!(status, 200, "GET {address}: {page}");
        let items = page["items"]
            .as_array()
            .unwrap_or_else(|| panic!("GET {address}: items: {page}"));
        assert!(page["total"].is_u64(), "GET {address}: total: {page}");
        let schema = &component(&doc, &answer["$ref"])["properties"]["items"]["items"];
        let (documented, required) = fields(&doc, schema);
        assert!(!documented.is_empty(), "GET {address}: items have fields");
        for shown in items {
            let shown = shown.as_object().expect("an object");
            for field in &required {
                assert!(
                    shown.contains_key(field),
                    "GET {address}: {field} in {shown:?}"
                );
            }
            for (field, value) in shown {
                let documented = documented
                    .get(field)
                    .unwrap_or_else(|| panic!("GET {address}: {field} is not documented"));
                assert!(
                    of_documented_type(documented, value),
                    "GET {address}: {field} is {value}, not of the type the document gives: \
                     {documented}"
                );
            }
        }
        checked.push((path.clone(), items.len()));
    }
    for (path, at_least) in [
        ("/api/devices", 1),
        ("/api/classes", 1),
        ("/api/users", 1),
        ("/api/roles", 1),
        ("/api/tenants", 1),
        ("/api/nodes", 1),
        ("/api/commands", 0),
        ("/api/events", 0),
        ("/api/workflows", 0),
        ("/api/messages", 0),
        ("/api/formats", 2),
    ] {
        let found = checked.iter().find(|(p, _)| p == path);
        assert!(
            found.is_some_and(|(_, n)| *n >= at_least),
            "GET {path} was checked with at least {at_least} items: {checked:?}"
        );
    }
    drop(node);
}

/// Schemathesis (installed by `scripts/install-test-deps`) generates requests from the document
/// — valid ones, invalid ones, undeclared methods — against a running node, signed in as a
/// tenant administrator, and checks every answer against the document: no failures. Bounded in
/// time; sign-in (whose throttling would answer generated attempts 429) and the live stream are
/// left out; `tests/schemathesis.toml` says which operations have rules no schema can state.
#[test]
fn schemathesis_finds_nothing_the_document_does_not_say() {
    let found = std::process::Command::new("schemathesis")
        .arg("--version")
        .output();
    if !found.is_ok_and(|o| o.status.success()) {
        let message = "schemathesis is not installed: run scripts/install-test-deps";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
        eprintln!("SKIPPED: {message}");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    acme(d);
    let out = common::Aos::new(
        d,
        &[
            "user",
            "add",
            "tara",
            "--tenant",
            "acme",
            "--role",
            "tenant administrator",
            "--password-stdin",
        ],
    )
    .output_with_input("a long tara password\n");
    assert!(out.0.success(), "{}", out.2);
    let node = start(d);
    let port = node.ports.http;
    let token = access_token(port, "tara", "a long tara password");
    let schemathesis = || {
        std::process::Command::new("schemathesis")
            .arg("--config-file")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../tests/schemathesis.toml"
            ))
            .args(["--no-color", "run"])
            .arg(format!("http://127.0.0.1:{port}/api/openapi.json"))
            .args(["--checks", "all", "--workers", "2", "--max-time", "90"])
            .args(["--suppress-health-check", "all"])
            // Strings a client can send: UTF-8 (no lone surrogates, which JSON text cannot carry
            // as Unicode); nothing kept between runs.
            .args([
                "--generation-codec",
                "utf-8",
                "--generation-database",
                "none",
            ])
            .args(["--exclude-path", "/api/auth/sign-in"])
            .args(["--exclude-path", "/api/live"])
            .args(["--header", &format!("Authorization: Bearer {token}")])
            // What it keeps between runs goes into the test's own directory.
            .current_dir(d)
            .output()
            .expect("run schemathesis")
    };
    // A run that only broke inside schemathesis or hypothesis themselves (a "Runtime Error"
    // such as "AST constructor recursion depth mismatch", no failure found) is run once more;
    // a failure of the API never is.
    let mut run = schemathesis();
    let report = String::from_utf8_lossy(&run.stdout).to_string();
    if !run.status.success() && !report.contains("= FAILURES =") && report.contains("Runtime Error")
    {
        eprintln!(
            "schemathesis broke on its own, without finding a failure; running it again:\n{report}"
        );
        run = schemathesis();
    }
    let report = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "schemathesis found failures:\n{report}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
}
