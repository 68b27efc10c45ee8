//! The REST API's foundation through HTTP on the node's port: sign-in, who the caller is,
//! refresh with rotation, sign-out; every failure — wrong credentials, no or a bad token,
//! malformed JSON, unknown fields, wrong types, an oversize body, an unknown route — a 4xx in one
//! JSON shape, and the node serving on; tokens stay valid across a restart (the signing key is
//! kept in the data directory, owner-only).

mod common;

use std::os::unix::fs::PermissionsExt;

use common::api::{PASSWORD, access_token, acme, call, refused, start};
use serde_json::{Value, json};

#[test]
fn sign_in_tokens_and_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path());
    let port = node.ports.http;
    let sign_in = |login: &str, password: &str| {
        call(
            port,
            "POST",
            "/api/auth/sign-in",
            None,
            Some(&json!({"login": login, "password": password}).to_string()),
        )
    };

    let (status, tokens) = sign_in("admin", PASSWORD);
    assert_eq!(status, 200, "{tokens}");
    let access = tokens["access_token"]
        .as_str()
        .expect("access token")
        .to_string();
    let refresh = tokens["refresh_token"]
        .as_str()
        .expect("refresh token")
        .to_string();
    let (status, me) = call(port, "GET", "/api/me", Some(&access), None);
    assert_eq!(status, 200, "{me}");
    assert_eq!(
        (me["login"].clone(), me["tenant"].clone()),
        (json!("admin"), Value::Null)
    );

    refused(sign_in("admin", "wrong password"), 401, "unauthorized");
    refused(sign_in("nobody", PASSWORD), 401, "unauthorized");
    refused(
        call(port, "GET", "/api/me", None, None),
        401,
        "unauthorized",
    );
    refused(
        call(port, "GET", "/api/me", Some("not-a-token"), None),
        401,
        "unauthorized",
    );
    refused(
        call(
            port,
            "POST",
            "/api/auth/sign-in",
            None,
            Some("{\"login\": "),
        ),
        400,
        "malformed_json",
    );
    let unknown = refused(
        call(
            port,
            "POST",
            "/api/auth/sign-in",
            None,
            Some(&json!({"login": "admin", "password": PASSWORD, "otp": 1}).to_string()),
        ),
        422,
        "invalid",
    );
    assert_eq!(unknown["field"], json!("otp"));
    refused(
        call(
            port,
            "POST",
            "/api/auth/sign-in",
            None,
            Some(&json!({"login": "admin", "password": 5}).to_string()),
        ),
        422,
        "invalid",
    );
    let oversize = json!({"login": "admin", "password": "x".repeat(1024 * 1024)}).to_string();
    refused(
        call(port, "POST", "/api/auth/sign-in", None, Some(&oversize)),
        413,
        "too_large",
    );
    refused(
        call(port, "GET", "/api/nothing-here", Some(&access), None),
        404,
        "not_found",
    );

    // Refresh rotates: the new pair works, the spent refresh token is refused.
    let body = json!({"refresh_token": refresh}).to_string();
    let (status, rotated) = call(port, "POST", "/api/auth/refresh", None, Some(&body));
    assert_eq!(status, 200, "{rotated}");
    refused(
        call(port, "POST", "/api/auth/refresh", None, Some(&body)),
        401,
        "unauthorized",
    );
    let fresh = sign_in("admin", PASSWORD).1;
    let fresh_refresh = json!({"refresh_token": fresh["refresh_token"]}).to_string();
    let (status, _) = call(
        port,
        "POST",
        "/api/auth/sign-out",
        None,
        Some(&fresh_refresh),
    );
    assert_eq!(status, 204);
    refused(
        call(
            port,
            "POST",
            "/api/auth/refresh",
            None,
            Some(&fresh_refresh),
        ),
        401,
        "unauthorized",
    );
    let (status, version) = call(port, "GET", "/api/version", None, None);
    assert_eq!(status, 200, "served on after every refusal: {version}");

    // The signing key is kept, owner-only: a token outlives a restart.
    let key = dir.path().join("data/token.key");
    let mode = std::fs::metadata(&key)
        .expect("token.key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    drop(node);
    let node = start(dir.path());
    let (status, me) = call(node.ports.http, "GET", "/api/me", Some(&access), None);
    assert_eq!(status, 200, "{me}");
}

#[test]
fn commands_and_dead_letters_through_the_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let olga_password = acme(d);
    let node = start(d);
    let port = node.ports.http;
    let token = |login: &str, password: &str| access_token(port, login, password);
    let admin = token("admin", PASSWORD);
    let olga = token("olga", &olga_password);

    // A system administrator names the tenant; a tenant's user acts in its own.
    let send =
        json!({"name": "reboot", "parameters": {"delay": 5}, "expires_in": "1h"}).to_string();
    let missing = refused(
        call(
            port,
            "POST",
            "/api/devices/d-1/commands",
            Some(&admin),
            Some(&send),
        ),
        422,
        "invalid",
    );
    assert_eq!(missing["field"], json!("tenant"));
    let (status, created) = call(
        port,
        "POST",
        "/api/devices/d-1/commands?tenant=acme",
        Some(&admin),
        Some(&send),
    );
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        (created["status"].clone(), created["device"].clone()),
        (json!("queued"), json!("d-1"))
    );
    assert_eq!(created["parameters"], json!({"delay": 5}));
    let (status, by_olga) = call(
        port,
        "POST",
        "/api/devices/d-1/commands",
        Some(&olga),
        Some(&json!({"name": "blink"}).to_string()),
    );
    assert_eq!(status, 201, "{by_olga}");
    let (status, one) = call(
        port,
        "GET",
        &format!("/api/commands/{}", by_olga["id"]),
        Some(&olga),
        None,
    );
    assert_eq!((status, one["name"].clone()), (200, json!("blink")));
    let (status, listed) = call(
        port,
        "GET",
        "/api/commands?device=d-1&status=queued",
        Some(&olga),
        None,
    );
    assert_eq!(status, 200, "{listed}");
    let names: Vec<&Value> = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|c| &c["name"])
        .collect();
    assert_eq!(names, [&json!("blink"), &json!("reboot")], "newest first");

    refused(
        call(
            port,
            "POST",
            "/api/devices/nope/commands",
            Some(&olga),
            Some(&send),
        ),
        404,
        "not_found",
    );
    refused(
        call(port, "GET", "/api/commands/999999", Some(&olga), None),
        404,
        "not_found",
    );
    refused(
        call(port, "GET", "/api/commands/abc", Some(&olga), None),
        404,
        "not_found",
    );
    let bad = refused(
        call(port, "GET", "/api/commands?status=lost", Some(&olga), None),
        422,
        "invalid",
    );
    assert_eq!(bad["field"], json!("status"));
    let bad = refused(
        call(port, "GET", "/api/commands?limit=0", Some(&olga), None),
        422,
        "invalid",
    );
    assert_eq!(bad["field"], json!("limit"));
    refused(
        call(port, "GET", "/api/commands?color=red", Some(&olga), None),
        422,
        "invalid",
    );
    let bad = refused(
        call(
            port,
            "POST",
            "/api/devices/d-1/commands",
            Some(&olga),
            Some(&json!({"name": "x", "expires_in": "soon"}).to_string()),
        ),
        422,
        "invalid",
    );
    assert_eq!(bad["field"], json!("expires_in"));
    refused(
        call(
            port,
            "POST",
            "/api/devices/d-1/commands",
            Some(&olga),
            Some(&json!({"name": "x", "parameters": [1]}).to_string()),
        ),
        422,
        "invalid",
    );

    // A batch for a whole class.
    let batch = json!({"name": "fw-2", "command": {"name": "upgrade", "parameters": {"v": "2"}},
                       "classes": ["sensor"], "include_future": true})
    .to_string();
    let (status, made) = call(
        port,
        "POST",
        "/api/command-batches",
        Some(&olga),
        Some(&batch),
    );
    assert_eq!((status, made["queued"].clone()), (201, json!(1)), "{made}");
    let (_, in_batch) = call(
        port,
        "GET",
        &format!("/api/commands?batch={}", made["batch"]),
        Some(&olga),
        None,
    );
    assert_eq!(in_batch["items"][0]["name"], json!("upgrade"));
    let nothing = json!({"name": "x", "command": {"name": "y"}}).to_string();
    refused(
        call(
            port,
            "POST",
            "/api/command-batches",
            Some(&olga),
            Some(&nothing),
        ),
        422,
        "invalid",
    );
    let unknown = json!({"name": "x", "command": {"name": "y"}, "classes": ["nope"]}).to_string();
    refused(
        call(
            port,
            "POST",
            "/api/command-batches",
            Some(&olga),
            Some(&unknown),
        ),
        404,
        "not_found",
    );

    // Dead letters: the platform's administrators look and replay; tenant users may not.
    let (status, dead) = call(
        port,
        "GET",
        "/api/queues/acquisition/dead",
        Some(&admin),
        None,
    );
    assert_eq!(
        (status, dead["items"].clone(), dead["total"].clone()),
        (200, json!([]), json!(0)),
        "{dead}"
    );
    let bad = refused(
        call(
            port,
            "GET",
            "/api/queues/acquisition/dead?sort=-id",
            Some(&admin),
            None,
        ),
        422,
        "invalid",
    );
    assert_eq!(bad["field"], json!("sort"));
    let (status, replayed) = call(
        port,
        "POST",
        "/api/queues/acquisition/dead/replay",
        Some(&admin),
        Some(&json!({"ids": [12345]}).to_string()),
    );
    assert_eq!(
        (status, replayed["replayed"].clone()),
        (200, json!(0)),
        "{replayed}"
    );
    let (status, dropped) = call(
        port,
        "POST",
        "/api/queues/acquisition/dead/drop",
        Some(&admin),
        Some(&json!({"ids": [12345]}).to_string()),
    );
    assert_eq!(
        (status, dropped["dropped"].clone()),
        (200, json!(0)),
        "{dropped}"
    );
    let (_, audit) = call(
        port,
        "GET",
        "/api/audit?action=dead_letters.drop",
        Some(&admin),
        None,
    );
    assert_eq!(audit["total"], json!(1), "the drop is audited: {audit}");
    for (method, path) in [
        ("GET", "/api/queues/acquisition/dead"),
        ("POST", "/api/queues/acquisition/dead/drop"),
    ] {
        let body = (method == "POST").then(|| json!({"ids": [1]}).to_string());
        refused(
            call(port, method, path, Some(&olga), body.as_deref()),
            403,
            "forbidden",
        );
    }
    refused(
        call(port, "GET", "/api/queues/nothing/dead", Some(&admin), None),
        404,
        "not_found",
    );
}

#[tokio::test]
async fn events_are_listed_acknowledged_and_cleared() {
    use aos_storage::entity::{device, event};
    use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};

    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let olga_password = acme(d);
    // An alarm as a level change raises it (see tests/interpreters.rs for that path).
    let storage = common::platform::storage(d).await;
    let dev = device::Entity::find()
        .filter(device::Column::Uid.eq("d-1"))
        .one(storage.db())
        .await
        .expect("query")
        .expect("device");
    let raised = event::ActiveModel {
        tenant_id: Set(dev.tenant_id),
        device_id: Set(dev.id),
        attribute: Set(Some("temperature".into())),
        level: Set("faulty".into()),
        message: Set("temperature is faulty (55)".into()),
        raised_at: Set(chrono::Utc::now()),
        acknowledged_at: Set(None),
        acknowledged_by: Set(None),
        cleared_at: Set(None),
        ..Default::default()
    }
    .insert(storage.db())
    .await
    .expect("event");
    let node = start(d);
    let port = node.ports.http;
    let olga = access_token(port, "olga", &olga_password);

    let (status, open) = call(
        port,
        "GET",
        "/api/events?open=true&device=d-1",
        Some(&olga),
        None,
    );
    assert_eq!(status, 200, "{open}");
    assert_eq!(open["items"][0]["id"], json!(raised.id));
    assert_eq!(open["items"][0]["level"], json!("faulty"));
    assert_eq!(open["items"][0]["count"], json!(1), "{open}");
    // Narrowed by level, acknowledgement and time.
    let listed = |query: &str| {
        let (status, page) = call(
            port,
            "GET",
            &format!("/api/events?{query}"),
            Some(&olga),
            None,
        );
        assert_eq!(status, 200, "{query}: {page}");
        page["total"].as_u64().unwrap_or_default()
    };
    assert_eq!(listed("level=faulty"), 1);
    assert_eq!(listed("level=warning"), 0);
    assert_eq!(listed("acknowledged=false"), 1);
    assert_eq!(listed("acknowledged=true"), 0);
    assert_eq!(
        listed("from=2000-01-01T00:00:00Z&to=2999-01-01T00:00:00Z"),
        1
    );
    assert_eq!(listed("from=2999-01-01T00:00:00Z"), 0);
    assert_eq!(listed("to=2000-01-01T00:00:00Z"), 0);
    let path = |what: &str| format!("/api/events/{}/{what}", raised.id);
    let (status, acked) = call(port, "POST", &path("acknowledge"), Some(&olga), None);
    assert_eq!(status, 200, "{acked}");
    assert_eq!(acked["acknowledged_by"], json!("user:olga"));
    let (status, cleared) = call(port, "POST", &path("clear"), Some(&olga), None);
    assert_eq!(status, 200, "{cleared}");
    assert!(cleared["cleared_at"].is_string(), "{cleared}");
    // Doing either again changes nothing: the first time (and who) stays.
    let admin = access_token(port, "admin", PASSWORD);
    let again = |what: &str| {
        call(
            port,
            "POST",
            &format!("{}?tenant=acme", path(what)),
            Some(&admin),
            None,
        )
    };
    let (status, acked_again) = again("acknowledge");
    assert_eq!(status, 200, "{acked_again}");
    assert_eq!(acked_again["acknowledged_at"], acked["acknowledged_at"]);
    assert_eq!(acked_again["acknowledged_by"], json!("user:olga"));
    let (status, cleared_again) = again("clear");
    assert_eq!(status, 200, "{cleared_again}");
    assert_eq!(cleared_again["cleared_at"], cleared["cleared_at"]);
    let (_, open) = call(port, "GET", "/api/events?open=true", Some(&olga), None);
    assert_eq!(open["items"], json!([]));
    let (_, closed) = call(port, "GET", "/api/events?open=false", Some(&olga), None);
    assert_eq!(closed["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(listed("acknowledged=true"), 1);
    refused(
        call(port, "POST", "/api/events/999999/clear", Some(&olga), None),
        404,
        "not_found",
    );
    refused(
        call(port, "POST", "/api/events/x/acknowledge", Some(&olga), None),
        404,
        "not_found",
    );
    let bad = refused(
        call(port, "GET", "/api/events?open=maybe", Some(&olga), None),
        422,
        "invalid",
    );
    assert_eq!(bad["field"], json!("open"));
    assert!(
        bad["message"]
            .as_str()
            .unwrap_or_default()
            .contains("query string"),
        "{bad}"
    );
}

#[tokio::test]
async fn workflows_through_the_api() {
    use aos_storage::entity::latest_value;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let olga_password = acme(d);
    let node = start(d);
    let port = node.ports.http;
    let token = |login: &str, password: &str| access_token(port, login, password);
    let admin = token("admin", PASSWORD);
    let olga = token("olga", &olga_password);
    let document = json!({
        "name": "by-hand",
        "enabled": true,
        "trigger": {"kind": "manual"},
        "actions": [{"save": {"attribute": "api_run", "value": "=answer * 2"}}]
    });
    let import = |body: &Value, token: &str| {
        call(
            port,
            "POST",
            "/api/workflows?tenant=acme",
            Some(token),
            Some(&body.to_string()),
        )
    };
    let (status, created) = import(&document, &admin);
    assert_eq!(status, 201, "{created}");
    let (status, _) = import(&document, &admin);
    assert_eq!(status, 200, "the same name replaces it");
    let (status, exported) = call(
        port,
        "GET",
        "/api/workflows/by-hand?tenant=acme",
        Some(&admin),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(exported, document);
    refused(import(&document, &olga), 403, "forbidden");
    let bad = refused(
        import(
            &json!({"name": "x", "trigger": {"kind": "schedule", "cron": "never"}, "actions": []}),
            &admin,
        ),
        422,
        "invalid",
    );
    assert_eq!(bad["field"], json!("trigger"));
    let bad = refused(
        import(
            &json!({"name": "x", "trigger": {"kind": "manual"}, "actions": [{"assign": {"name": "v", "expression": "1 +"}}]}),
            &admin,
        ),
        422,
        "invalid",
    );
    assert_eq!(bad["field"], json!("actions"));
    refused(
        import(
            &json!({"name": "x", "trigger": {"kind": "manual"}, "actions": [], "owner": "me"}),
            &admin,
        ),
        422,
        "invalid",
    );

    // Run now: queued for the workers, logged, and its effect stored.
    let run = json!({"variables": {"device": "d-1", "answer": 21}}).to_string();
    let (status, _) = call(
        port,
        "POST",
        "/api/workflows/by-hand/run?tenant=acme",
        Some(&admin),
        Some(&run),
    );
    assert_eq!(status, 202);
    let deadline = std::time::Instant::now() + common::PATIENCE;
    let runs = loop {
        let (_, runs) = call(
            port,
            "GET",
            "/api/workflows/by-hand/runs?tenant=acme",
            Some(&admin),
            None,
        );
        if runs["items"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["result"] != json!("running")))
        {
            break runs;
        }
        assert!(std::time::Instant::now() < deadline, "{runs}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(runs["items"][0]["result"], json!("ok"), "{runs}");
    let storage = common::platform::storage(d).await;
    let saved = latest_value::Entity::find()
        .filter(latest_value::Column::Attribute.eq("api_run"))
        .one(storage.db())
        .await
        .expect("query")
        .expect("saved");
    assert_eq!(saved.value_num, Some(42.0));

    let (status, off) = call(
        port,
        "POST",
        "/api/workflows/by-hand/disable?tenant=acme",
        Some(&admin),
        None,
    );
    assert_eq!((status, off["enabled"].clone()), (200, json!(false)));
    let (status, listed) = call(
        port,
        "GET",
        "/api/workflows?tenant=acme",
        Some(&admin),
        None,
    );
    assert_eq!(
        (status, listed["items"].as_array().map(Vec::len)),
        (200, Some(1))
    );
    let (status, _) = call(
        port,
        "DELETE",
        "/api/workflows/by-hand?tenant=acme",
        Some(&admin),
        None,
    );
    assert_eq!(status, 204);
    refused(
        call(
            port,
            "GET",
            "/api/workflows/by-hand?tenant=acme",
            Some(&admin),
            None,
        ),
        404,
        "not_found",
    );
    refused(
        call(
            port,
            "POST",
            "/api/workflows/nope/run?tenant=acme",
            Some(&admin),
            Some("{}"),
        ),
        404,
        "not_found",
    );
}

#[tokio::test]
async fn a_command_sent_through_the_api_reaches_the_connected_device() {
    use common::mqtt::{Client5, options5};
    use rumqttc::v5::mqttbytes::QoS;

    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    acme(d);
    let device_token = common::platform::access_token(d, "d-1", "acme");
    let node = start(d);
    let mut options = options5(node.ports.mqtt, "d-1");
    options.set_credentials("d-1", device_token.as_str());
    let (mut device, _) = Client5::connect(options).await.expect("signs in");
    device.subscribe("aos/d-1/commands", QoS::AtLeastOnce).await;
    let port = node.ports.http;
    let admin = access_token(port, "admin", PASSWORD);
    let (status, created) = call(
        port,
        "POST",
        "/api/devices/d-1/commands?tenant=acme",
        Some(&admin),
        Some(&json!({"name": "blink", "parameters": {"times": 3}}).to_string()),
    );
    assert_eq!(status, 201, "{created}");
    let got: Value =
        serde_json::from_slice(&device.publish_received().await.payload).expect("json");
    assert_eq!(
        got,
        json!({"id": created["id"], "name": "blink", "parameters": {"times": 3}})
    );
    // The device is online, and what it publishes is its latest value.
    device
        .client
        .publish(
            "aos/d-1/telemetry",
            QoS::AtLeastOnce,
            false,
            r#"{"t": 21.5}"#,
        )
        .await
        .expect("publish");
    device.puback().await;
    let deadline = std::time::Instant::now() + common::PATIENCE;
    let shown = loop {
        let (status, shown) = call(
            port,
            "GET",
            "/api/devices/d-1?tenant=acme",
            Some(&admin),
            None,
        );
        assert_eq!(status, 200, "{shown}");
        if shown["latest"].as_array().is_some_and(|l| !l.is_empty()) {
            break shown;
        }
        assert!(std::time::Instant::now() < deadline, "{shown}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(shown["status"], json!("online"));
    assert_eq!(shown["latest"][0]["attribute"], json!("t"));
    assert_eq!(shown["latest"][0]["value"], json!(21.5));
}

#[test]
fn devices_are_registered_listed_and_shown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let olga_password = acme(d);
    let node = start(d);
    let port = node.ports.http;
    let olga = access_token(port, "olga", &olga_password);
    let create = |body: Value| {
        call(
            port,
            "POST",
            "/api/devices",
            Some(&olga),
            Some(&body.to_string()),
        )
    };

    let (status, made) = create(json!({"uid": "pump-7", "name": "Pump 7", "class": "sensor"}));
    assert_eq!(status, 201, "{made}");
    assert_eq!(
        (made["uid"].clone(), made["status"].clone()),
        (json!("pump-7"), json!("offline"))
    );
    refused(
        create(json!({"uid": "pump-7", "class": "sensor"})),
        409,
        "conflict",
    );
    let bad = refused(
        create(json!({"uid": "a/b", "class": "sensor"})),
        422,
        "invalid",
    );
    assert_eq!(bad["field"], json!("device id"));
    refused(
        create(json!({"uid": "x-1", "class": "nope"})),
        404,
        "not_found",
    );
    refused(create(json!({"uid": "x-1"})), 422, "invalid");

    let (status, all) = call(port, "GET", "/api/devices", Some(&olga), None);
    assert_eq!((status, all["total"].clone()), (200, json!(2)), "{all}");
    let (_, found) = call(
        port,
        "GET",
        "/api/devices?search=ump&status=offline",
        Some(&olga),
        None,
    );
    assert_eq!(found["items"].as_array().map(Vec::len), Some(1), "{found}");
    assert_eq!(found["items"][0]["name"], json!("Pump 7"));
    let (_, paged) = call(
        port,
        "GET",
        "/api/devices?limit=1&offset=1",
        Some(&olga),
        None,
    );
    assert_eq!(
        (paged["total"].clone(), paged["items"][0]["uid"].clone()),
        (json!(2), json!("pump-7"))
    );
    let bad = refused(
        call(port, "GET", "/api/devices?status=broken", Some(&olga), None),
        422,
        "invalid",
    );
    assert_eq!(bad["field"], json!("status"));
    refused(
        call(port, "GET", "/api/devices/nope", Some(&olga), None),
        404,
        "not_found",
    );
    let (status, one) = call(port, "GET", "/api/devices/pump-7", Some(&olga), None);
    assert_eq!((status, one["latest"].clone()), (200, json!([])));
}

#[test]
fn input_the_api_refuses_or_takes_as_a_no_op() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    acme(d);
    let device_token = common::platform::access_token(d, "d-1", "acme");
    let node = start(d);
    let port = node.ports.http;
    let admin = access_token(port, "admin", PASSWORD);
    let api = |method: &str, path: &str, body: Value| {
        call(port, method, path, Some(&admin), Some(&body.to_string()))
    };

    // Tenant names are identifiers; other names refuse control characters.
    let bad = refused(
        api("POST", "/api/tenants", json!({"name": "Bad Name!"})),
        422,
        "invalid",
    );
    assert!(
        bad["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("tenant name may hold only letters")),
        "{bad}"
    );
    refused(
        api(
            "POST",
            "/api/classes?tenant=acme",
            json!({"name": "bell\u{7}"}),
        ),
        422,
        "invalid",
    );
    // A gateway must be a device of a gateway class.
    let bad = refused(
        api(
            "POST",
            "/api/devices?tenant=acme",
            json!({"uid": "c-1", "class": "sensor", "gateway": "d-1"}),
        ),
        422,
        "invalid",
    );
    assert_eq!(bad["field"], json!("gateway"), "{bad}");
    // A value of the wrong type names its field too.
    let bad = refused(
        api(
            "POST",
            "/api/devices?tenant=acme",
            json!({"uid": 5, "class": "sensor"}),
        ),
        422,
        "invalid",
    );
    assert_eq!(bad["field"], json!("uid"), "{bad}");
    // Durations of zero and impossible levels.
    let bad = refused(
        api(
            "POST",
            "/api/devices/d-1/commands?tenant=acme",
            json!({"name": "blink", "expires_in": "0s"}),
        ),
        422,
        "invalid",
    );
    assert_eq!(bad["field"], json!("expires_in"), "{bad}");
    let bad = refused(
        api(
            "POST",
            "/api/api-keys?tenant=acme",
            json!({"name": "k", "grants": [{"filter": "x/#", "publish": true}], "expires_in": "0s"}),
        ),
        422,
        "invalid",
    );
    assert_eq!(bad["field"], json!("expires_in"), "{bad}");
    for levels in [
        json!([{"level": "warning", "min": 50, "max": 30}]),
        json!([{"level": "scorching", "min": 90}]),
    ] {
        refused(
            api(
                "PUT",
                "/api/interpreters/temperature?tenant=acme",
                json!({ "levels": levels }),
            ),
            422,
            "invalid",
        );
    }

    // Revoking a key twice keeps the first time.
    let (status, made) = api(
        "POST",
        "/api/api-keys?tenant=acme",
        json!({"name": "k", "grants": [{"filter": "x/#", "publish": true}]}),
    );
    assert_eq!(status, 201, "{made}");
    let revoke = || {
        call(
            port,
            "DELETE",
            "/api/api-keys/k?tenant=acme",
            Some(&admin),
            None,
        )
    };
    let (status, first) = revoke();
    assert_eq!(status, 200, "{first}");
    assert!(first["revoked_at"].is_string(), "{first}");
    let (status, second) = revoke();
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["revoked_at"], first["revoked_at"]);

    // The scheme of `Authorization` is case-insensitive.
    let (status, me) = ureq::get(&format!("http://127.0.0.1:{port}/api/me"))
        .header("authorization", &format!("bearer {admin}"))
        .call()
        .map(|r| {
            (
                r.status().as_u16(),
                r.into_body().read_to_string().unwrap_or_default(),
            )
        })
        .expect("HTTP");
    assert_eq!(status, 200, "{me}");

    // A device's reply to another device's command is logged failed, and settles nothing.
    let (status, _) = api(
        "POST",
        "/api/devices?tenant=acme",
        json!({"uid": "d-2", "class": "sensor"}),
    );
    assert_eq!(status, 201);
    let (status, theirs) = api(
        "POST",
        "/api/devices/d-2/commands?tenant=acme",
        json!({"name": "blink"}),
    );
    assert_eq!(status, 201, "{theirs}");
    let (status, _) = call(
        port,
        "POST",
        "/api/device/d-1/commands/reply",
        Some(&device_token),
        Some(&json!({"id": theirs["id"], "status": "ok"}).to_string()),
    );
    assert_eq!(status, 202);
    let deadline = std::time::Instant::now() + common::PATIENCE;
    let failed = loop {
        let (_, failed) = call(
            port,
            "GET",
            "/api/messages?tenant=acme&device=d-1&status=failed",
            Some(&admin),
            None,
        );
        if let Some(entry) = failed["items"].get(0) {
            break entry.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the failed reply in time"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.contains("not a command of device `d-1`")),
        "{failed}"
    );
    let path = format!("/api/commands/{}?tenant=acme", theirs["id"]);
    let (_, theirs) = call(port, "GET", &path, Some(&admin), None);
    assert_eq!(theirs["status"], json!("queued"), "{theirs}");
}
