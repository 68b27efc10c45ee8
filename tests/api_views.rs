//! What the web client reads, through HTTP on the node's port: classes and formats, a device's
//! values over time (raw and aggregated per interval), the message log, the dashboard's figures,
//! users, roles, tenants, nodes and the audit log; lists paged and sorted one way; live updates
//! as Server-Sent Events; the web client's files and the security headers on every answer. Bad
//! input — a wrong sort, offset or aggregate, an unknown device — is a 4xx in the error shape.

mod common;

use chrono::{DateTime, Duration, Utc};
use common::api::{PASSWORD, access_token, acme, call, live, refused, start, wait_live};
use common::mqtt::{Client5, options5};
use common::{PATIENCE, cli_ok};
use rumqttc::v5::mqttbytes::QoS;
use serde_json::{Value, json};

fn points(series: &Value) -> Vec<Value> {
    series["series"][0]["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| p["value"].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_views_of_the_web_client() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let olga_password = acme(d);
    let device_token = common::platform::access_token(d, "d-1", "acme");
    let node = start(d);
    let port = node.ports.http;
    let admin = access_token(port, "admin", PASSWORD);
    let olga = access_token(port, "olga", &olga_password);
    let get = |path: &str, token: &str| call(port, "GET", path, Some(token), None);
    let post = |path: &str, token: &str, body: Value| {
        call(port, "POST", path, Some(token), Some(&body.to_string()))
    };

    // Live updates are subscribed before anything happens.
    let updates = live(port, &olga);

    // Classes: an operator sees them but cannot make them; an administrator can, once per name.
    refused(
        post("/api/classes", &olga, json!({"name": "meter"})),
        403,
        "forbidden",
    );
    let (status, made) = post(
        "/api/classes?tenant=acme",
        &admin,
        json!({"name": "meter", "is_gateway": true}),
    );
    assert_eq!(status, 201, "{made}");
    refused(
        post("/api/classes?tenant=acme", &admin, json!({"name": "meter"})),
        409,
        "conflict",
    );
    let (status, classes) = get("/api/classes?sort=-devices", &olga);
    assert_eq!(status, 200, "{classes}");
    assert_eq!(classes["total"], json!(2));
    assert_eq!(
        (
            classes["items"][0]["name"].clone(),
            classes["items"][0]["devices"].clone()
        ),
        (json!("sensor"), json!(1)),
        "{classes}"
    );
    assert_eq!(
        get("/api/formats", &olga).1,
        json!({"items": [], "total": 0})
    );

    // The device connects and sends four readings a minute apart, at yesterday's midnight.
    let mut options = options5(node.ports.mqtt, "d-1");
    options.set_credentials("d-1", device_token.as_str());
    let (mut device, _) = Client5::connect(options).await.expect("signs in");
    let online = wait_live(&updates, "device", |u| u["device"] == json!("d-1"));
    assert_eq!(online["status"], json!("online"));
    let midnight: DateTime<Utc> = (Utc::now() - Duration::days(1))
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc();
    for (minute, value) in [(0, 10.0), (1, 20.0), (2, 30.0), (3, 40.0)] {
        let ts = midnight + Duration::minutes(minute);
        let payload = json!({"ts": ts.to_rfc3339(), "values": {"temperature": value}});
        device
            .client
            .publish(
                "aos/d-1/telemetry",
                QoS::AtLeastOnce,
                false,
                payload.to_string(),
            )
            .await
            .expect("publish");
        device.puback().await;
    }
    let last = wait_live(&updates, "value", |u| u["value"] == json!(40.0));
    assert_eq!(
        (last["device"].clone(), last["attribute"].clone()),
        (json!("d-1"), json!("temperature"))
    );

    // Its values: raw, and per two minutes (avg, max, count).
    let range = format!(
        "attributes=temperature&from={}&to={}",
        midnight.format("%Y-%m-%dT%H:%M:%SZ"),
        (midnight + Duration::hours(1)).format("%Y-%m-%dT%H:%M:%SZ")
    );
    let (status, raw) = get(&format!("/api/devices/d-1/values?{range}"), &olga);
    assert_eq!(status, 200, "{raw}");
    assert_eq!(
        points(&raw),
        [json!(10.0), json!(20.0), json!(30.0), json!(40.0)]
    );
    for (aggregate, want) in [
        ("avg", [15.0, 35.0]),
        ("max", [20.0, 40.0]),
        ("count", [2.0, 2.0]),
    ] {
        let (status, per) = get(
            &format!("/api/devices/d-1/values?{range}&interval=2m&aggregate={aggregate}"),
            &olga,
        );
        assert_eq!(status, 200, "{per}");
        assert_eq!(
            points(&per),
            [json!(want[0]), json!(want[1])],
            "{aggregate}: {per}"
        );
        assert_eq!(
            per["series"][0]["points"][1]["ts"],
            json!(
                (midnight + Duration::minutes(2))
                    .format("%Y-%m-%dT%H:%M:%SZ")
                    .to_string()
            )
        );
    }
    let bad = refused(
        get(
            &format!("/api/devices/d-1/values?{range}&interval=2m&aggregate=median"),
            &olga,
        ),
        422,
        "invalid",
    );
    assert_eq!(bad["field"], json!("aggregate"));
    let bad = refused(
        get(
            &format!("/api/devices/d-1/values?{range}&interval=0s"),
            &olga,
        ),
        422,
        "invalid",
    );
    assert_eq!(bad["field"], json!("interval"));
    refused(
        get("/api/devices/d-1/values?attributes=", &olga),
        422,
        "invalid",
    );
    refused(
        get(&format!("/api/devices/nope/values?{range}"), &olga),
        404,
        "not_found",
    );

    // The message log: a payload that is not JSON is logged failed; filters and pages.
    device
        .client
        .publish("aos/d-1/telemetry", QoS::AtLeastOnce, false, "not json")
        .await
        .expect("publish");
    device.puback().await;
    let deadline = std::time::Instant::now() + PATIENCE;
    let failed = loop {
        let (status, failed) = get("/api/messages?device=d-1&status=failed", &olga);
        assert_eq!(status, 200, "{failed}");
        if failed["total"] == json!(1) {
            break failed;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the failed message is logged: {failed}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(failed["items"][0]["payload"], json!("not json"));
    assert!(
        failed["items"][0]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{failed}"
    );
    let (_, page) = get("/api/messages?device=d-1&limit=2&offset=1", &olga);
    assert_eq!(
        (
            page["total"].clone(),
            page["items"].as_array().map(Vec::len)
        ),
        (json!(5), Some(2)),
        "{page}"
    );
    let bad = refused(get("/api/messages?status=lost", &olga), 422, "invalid");
    assert_eq!(bad["field"], json!("status"));

    // Lists refuse what they cannot do, naming the parameter.
    for (query, field) in [
        ("sort=colour", "sort"),
        ("offset=5000000", "offset"),
        ("limit=0", "limit"),
        ("offset=-1", "offset"),
    ] {
        let bad = refused(get(&format!("/api/devices?{query}"), &olga), 422, "invalid");
        assert_eq!(bad["field"], json!(field), "{query}");
    }
    let (_, sorted) = get("/api/events?sort=-raised_at&limit=5", &olga);
    assert_eq!(sorted["total"], json!(0), "{sorted}");

    // The dashboard's figures.
    let (status, kpis) = get("/api/kpis", &olga);
    assert_eq!(status, 200, "{kpis}");
    assert_eq!(
        kpis["devices"],
        json!({"total": 1, "online": 1, "offline": 0})
    );
    assert_eq!(kpis["messages"]["last_hour"], json!(5), "{kpis}");
    assert_eq!(kpis["messages"]["failed_last_hour"], json!(1), "{kpis}");
    assert_eq!(
        kpis["messages"]["per_minute"].as_array().map(Vec::len),
        Some(61)
    );

    // People: users with roles, a too short password refused, the audit log.
    let bad = refused(
        post(
            "/api/users?tenant=acme",
            &admin,
            json!({"login": "vera", "password": "short"}),
        ),
        422,
        "invalid",
    );
    assert_eq!(bad["field"], json!("password"));
    let (status, vera) = post(
        "/api/users?tenant=acme",
        &admin,
        json!({"login": "vera", "password": "a good long password", "roles": ["viewer"]}),
    );
    assert_eq!(status, 201, "{vera}");
    assert_eq!(vera["roles"], json!(["viewer"]));
    access_token(port, "vera", "a good long password");
    refused(
        post(
            "/api/users",
            &olga,
            json!({"login": "x", "password": "a good long password"}),
        ),
        403,
        "forbidden",
    );
    let (_, users) = get("/api/users?tenant=acme&sort=-login", &admin);
    assert_eq!(users["items"][0]["login"], json!("vera"), "{users}");
    refused(get("/api/roles", &olga), 403, "forbidden");
    let (_, roles) = get("/api/roles?tenant=acme", &admin);
    assert!(
        roles["items"]
            .as_array()
            .expect("roles")
            .iter()
            .any(|r| r["name"] == json!("operator")),
        "{roles}"
    );
    let (_, audit) = get("/api/audit?tenant=acme&sort=-at", &admin);
    assert!(
        audit["items"].as_array().expect("audit").iter().any(|a| {
            (&a["action"], &a["actor"], &a["object_id"])
                == (&json!("user.create"), &json!("user:admin"), &json!("vera"))
        }),
        "{audit}"
    );
    // Narrowed down by who, what (exactly, or a family ending in a dot) and when.
    let (_, mine) = get("/api/audit?tenant=acme&user=admin&action=user.", &admin);
    let items = mine["items"].as_array().expect("audit");
    assert!(!items.is_empty(), "{mine}");
    assert!(
        items.iter().all(|a| a["actor"] == json!("user:admin")
            && a["action"].as_str().is_some_and(|x| x.starts_with("user."))),
        "{mine}"
    );
    let (_, exact) = get("/api/audit?tenant=acme&action=user.create", &admin);
    assert!(
        exact["items"]
            .as_array()
            .expect("audit")
            .iter()
            .all(|a| a["action"] == json!("user.create")),
        "{exact}"
    );
    for narrow in [
        "user=nobody",
        "from=2999-01-01T00:00:00Z",
        "to=2000-01-01T00:00:00Z",
    ] {
        let (_, none) = get(&format!("/api/audit?tenant=acme&{narrow}"), &admin);
        assert_eq!(none["total"], json!(0), "{narrow}: {none}");
    }
    refused(
        get("/api/audit?tenant=acme&from=yesterday", &admin),
        422,
        "invalid",
    );

    // The platform: tenants and nodes for system administrators only.
    refused(get("/api/tenants", &olga), 403, "forbidden");
    let (status, made) = post("/api/tenants", &admin, json!({"name": "globex"}));
    assert_eq!(status, 201, "{made}");
    let (_, tenants) = get("/api/tenants?sort=-name", &admin);
    assert_eq!(tenants["items"][0]["name"], json!("globex"));
    refused(get("/api/nodes", &olga), 403, "forbidden");
    let (status, nodes) = get("/api/nodes", &admin);
    assert_eq!(status, 200, "{nodes}");
    let me = &nodes["items"][0];
    assert_eq!(me["live"], json!(true), "{nodes}");
    assert_eq!(me["health"]["ready"], json!(true), "{nodes}");
    let mqtt = format!("127.0.0.1:{}", node.ports.mqtt);
    assert!(
        me["listeners"]
            .as_array()
            .expect("listeners")
            .iter()
            .any(|l| {
                (&l["role"], &l["protocol"], &l["address"])
                    == (&json!("broker"), &json!("mqtt"), &json!(mqtt))
            }),
        "{nodes}"
    );
    for role in ["broker", "worker", "web"] {
        assert!(
            me["enabled_roles"]
                .as_array()
                .expect("roles")
                .contains(&json!(role)),
            "{nodes}"
        );
    }
    let (_, me) = get("/api/me", &olga);
    assert_eq!(me["tenant_name"], json!("acme"));

    // The web client, and the headers every answer carries; CORS is closed by default.
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build(),
    );
    let index = agent
        .get(format!("http://127.0.0.1:{port}/"))
        .call()
        .expect("index");
    let headers = index.headers().clone();
    assert!(
        headers["content-security-policy"]
            .to_str()
            .expect("csp")
            .contains("script-src 'self'")
    );
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(
        index
            .into_body()
            .read_to_string()
            .expect("html")
            .contains("/ui/app.js")
    );
    let module = agent
        .get(format!("http://127.0.0.1:{port}/ui/pages/device.js"))
        .call()
        .expect("module");
    assert!(
        module.headers()["content-type"]
            .to_str()
            .expect("type")
            .starts_with("text/javascript")
    );
    let missing = agent
        .get(format!("http://127.0.0.1:{port}/ui/../Cargo.toml"))
        .call()
        .expect("answer");
    assert_eq!(missing.status().as_u16(), 404);
    let preflight = agent
        .run(
            ureq::http::Request::builder()
                .method("OPTIONS")
                .uri(format!("http://127.0.0.1:{port}/api/devices"))
                .header("origin", "https://elsewhere.example")
                .header("access-control-request-method", "GET")
                .body(())
                .expect("request"),
        )
        .expect("answer");
    assert!(
        preflight
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );

    // Still serving after every refusal; nothing stored was lost.
    let (_, raw) = get(&format!("/api/devices/d-1/values?{range}"), &olga);
    assert_eq!(points(&raw).len(), 4);
    cli_ok(d, &["tenant", "list"]);
}

#[test]
fn the_web_role_serves_https_when_given_a_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let pki = common::pki::Pki::new(d);
    let mut node = common::Aos::new(d, &["run"])
        .env("AOS_WEB__TLS__CERT", d.join("server.pem"))
        .env("AOS_WEB__TLS__KEY", d.join("server.key"))
        .env("AOS_WEB__CORS_ORIGINS", r#"["https://app.example"]"#)
        .spawn();
    node.wait_ready();
    let port = node.ports.http;
    let ca = ureq::tls::Certificate::from_pem(pki.ca.as_bytes()).expect("CA");
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(vec![
                        ca,
                    ])))
                    .build(),
            )
            .build(),
    );
    let answer = agent
        .get(format!("https://127.0.0.1:{port}/api/version"))
        .call()
        .expect("HTTPS");
    assert_eq!(answer.status().as_u16(), 200);
    assert!(answer.headers().contains_key("strict-transport-security"));
    // CORS opened for one origin: its preflight is answered, another origin's is not.
    let preflight = |origin: &str| {
        agent
            .run(
                ureq::http::Request::builder()
                    .method("OPTIONS")
                    .uri(format!("https://127.0.0.1:{port}/api/devices"))
                    .header("origin", origin)
                    .header("access-control-request-method", "GET")
                    .body(())
                    .expect("request"),
            )
            .map(|answer| {
                answer
                    .headers()
                    .get("access-control-allow-origin")
                    .and_then(|v| v.to_str().ok())
                    .map(String::from)
            })
            .unwrap_or(None)
    };
    assert_eq!(
        preflight("https://app.example").as_deref(),
        Some("https://app.example")
    );
    assert_eq!(preflight("https://elsewhere.example"), None);
    // Plain HTTP gets no answer from a TLS listener.
    assert!(
        common::http_get(port, "/api/version").map_or(true, |(status, _)| status != 200),
        "plain HTTP is not served"
    );
}

#[test]
fn a_node_switches_a_role_off_and_on_when_it_allows_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let mut node = common::Aos::new(d, &["run"])
        .env("AOS_ADMIN_PASSWORD", PASSWORD)
        .env("AOS_NODE__SWITCHABLE_ROLES", "broker")
        .spawn();
    node.wait_ready();
    let port = node.ports.http;
    let admin = access_token(port, "admin", PASSWORD);
    let nodes = || call(port, "GET", "/api/nodes", Some(&admin), None).1["items"][0].clone();
    let me = nodes();
    let id = me["id"].as_str().expect("id").to_string();
    assert_eq!(me["switchable_roles"], json!(["broker"]), "{me}");
    let switch = |role: &str, enabled: bool| {
        call(
            port,
            "PUT",
            &format!("/api/nodes/{id}/roles/{role}"),
            Some(&admin),
            Some(&json!({ "enabled": enabled }).to_string()),
        )
    };
    refused(switch("worker", false), 409, "conflict");
    refused(switch("colour", false), 404, "not_found");
    refused(
        call(
            port,
            "PUT",
            "/api/nodes/nope/roles/broker",
            Some(&admin),
            Some(r#"{"enabled": false}"#),
        ),
        404,
        "not_found",
    );
    let mqtt_open = || std::net::TcpStream::connect(("127.0.0.1", node.ports.mqtt)).is_ok();
    let eventually = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + PATIENCE;
        while !done() {
            assert!(std::time::Instant::now() < deadline, "{what} in time");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    assert!(mqtt_open());

    assert_eq!(switch("broker", false).0, 202);
    eventually("the MQTT listener closed", &|| !mqtt_open());
    eventually("the node reporting the broker off", &|| {
        !nodes()["running_roles"]
            .as_array()
            .is_some_and(|r| r.contains(&json!("broker")))
    });
    assert_eq!(switch("broker", true).0, 202);
    eventually("the MQTT listener open again", &|| mqtt_open());
    eventually("the node reporting the broker on", &|| {
        nodes()["running_roles"]
            .as_array()
            .is_some_and(|r| r.contains(&json!("broker")))
    });
    // The broker's metrics are rendered once, not once per start.
    let (_, metrics) = common::http_get(node.ports.admin, "/metrics").expect("metrics");
    assert_eq!(
        metrics.matches("# TYPE aos_broker_sessions ").count(),
        1,
        "{metrics}"
    );
    // And the web role, which serves the switch, never is switchable.
    let refused_start = common::Aos::new(d, &["run"])
        .env("AOS_NODE__SWITCHABLE_ROLES", "web")
        .output();
    assert!(!refused_start.0.success());
    assert!(
        refused_start.2.contains("switchable_roles"),
        "{}",
        refused_start.2
    );
}

#[test]
fn a_nodes_last_seen_is_its_latest_heartbeat() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = common::Aos::new(dir.path(), &["run"])
        .env("AOS_ADMIN_PASSWORD", PASSWORD)
        .env("AOS_NODE__HEARTBEAT_INTERVAL", "200ms")
        .spawn();
    node.wait_ready();
    let admin = access_token(node.ports.http, "admin", PASSWORD);
    let time = |node: &Value, key: &str| -> DateTime<Utc> {
        node[key]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .unwrap_or_else(|| panic!("{key} in {node}"))
            .with_timezone(&Utc)
    };
    let me =
        || call(node.ports.http, "GET", "/api/nodes", Some(&admin), None).1["items"][0].clone();
    let started = time(&me(), "started_at");
    // Heartbeat after heartbeat, the time moves on: it is not the start time.
    let mut seen = started;
    for beat in 1..=2 {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let now = time(&me(), "last_seen");
            if now > seen {
                seen = now;
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "heartbeat {beat} recorded in time (last seen {now}, started {started})"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    node.signal(libc::SIGTERM);
    assert!(node.wait_exit(PATIENCE).is_some_and(|s| s.success()));
}
