//! Looking after a tenant through the API: entities, API keys (shown once, revoked), message
//! formats and interpreters checked before they are saved, a class's formats and model, devices
//! changed, disabled, deleted, given credentials and registered from CSV. Every wrong request is
//! a 4xx naming what is wrong, and nothing stored is touched by it.

mod common;

use common::api::{PASSWORD, access_token, acme, call, refused, start};
use serde_json::{Value, json};

#[test]
fn a_tenant_is_looked_after_through_the_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let first_password = acme(d);
    let node = start(d);
    let port = node.ports.http;
    let admin = access_token(port, "admin", PASSWORD);
    let send = |method: &str, path: &str, body: Option<Value>| {
        let path = if path.contains('?') {
            format!("{path}&tenant=acme")
        } else {
            format!("{path}?tenant=acme")
        };
        call(
            port,
            method,
            &path,
            Some(&admin),
            body.map(|b| b.to_string()).as_deref(),
        )
    };

    // Entities.
    let (status, made) = send(
        "POST",
        "/api/entities",
        Some(json!({"name": "north", "kind": "customer"})),
    );
    assert_eq!(status, 201, "{made}");
    let bad = refused(
        send(
            "POST",
            "/api/entities",
            Some(json!({"name": "x", "kind": "planet"})),
        ),
        422,
        "invalid",
    );
    assert_eq!(bad["field"], json!("kind"));
    refused(
        send("POST", "/api/entities", Some(json!({"name": "north"}))),
        409,
        "conflict",
    );
    let (_, entities) = send("GET", "/api/entities", None);
    assert_eq!(
        entities["items"][0]["kind"],
        json!("customer"),
        "{entities}"
    );

    // API keys: the secret is shown once, never listed; revoked keys say so.
    let (status, key) = send(
        "POST",
        "/api/api-keys",
        Some(
            json!({"name": "dashboard", "grants": [{"filter": "aos/+/telemetry", "subscribe": true}], "expires_in": "90d"}),
        ),
    );
    assert_eq!(status, 201, "{key}");
    assert!(
        key["secret"].as_str().is_some_and(|s| s.len() >= 32),
        "{key}"
    );
    let (_, keys) = send("GET", "/api/api-keys", None);
    assert!(keys["items"][0].get("secret").is_none(), "{keys}");
    assert_eq!(
        keys["items"][0]["grants"][0]["filter"],
        json!("aos/+/telemetry")
    );
    let bad = refused(
        send(
            "POST",
            "/api/api-keys",
            Some(json!({"name": "x", "grants": [{"filter": "a/#/b", "publish": true}]})),
        ),
        422,
        "invalid",
    );
    assert!(
        bad["message"].as_str().is_some_and(|m| m.contains("a/#/b")),
        "{bad}"
    );
    let (status, revoked) = send("DELETE", "/api/api-keys/dashboard", None);
    assert_eq!(status, 200, "{revoked}");
    assert!(revoked["revoked_at"].is_string());
    refused(
        send("DELETE", "/api/api-keys/nothing", None),
        404,
        "not_found",
    );

    // Formats and interpreters are compiled before they are saved.
    let bad = refused(
        send(
            "POST",
            "/api/formats",
            Some(json!({"name": "p", "kind": "protobuf", "proto": "message {", "message": "M"})),
        ),
        422,
        "invalid",
    );
    assert_eq!(
        bad["field"],
        json!("proto"),
        "the part that is wrong: {bad}"
    );
    let bad = refused(
        send(
            "POST",
            "/api/formats",
            Some(json!({"name": "j", "kind": "json", "schema": {"type": 12}})),
        ),
        422,
        "invalid",
    );
    assert_eq!(bad["field"], json!("schema"), "{bad}");
    let (status, format) = send(
        "POST",
        "/api/formats",
        Some(
            json!({"name": "xml-in", "kind": "xml", "mapping": {"attributes": {"temperature": "/t"}}}),
        ),
    );
    assert_eq!(status, 201, "{format}");
    let (status, _) = send(
        "PUT",
        "/api/classes/sensor/formats",
        Some(json!({"inbound": "xml-in"})),
    );
    assert_eq!(status, 204);
    let (_, class) = send("GET", "/api/classes/sensor", None);
    assert_eq!(class["format"], json!("xml-in"), "{class}");
    let (status, _) = send(
        "PUT",
        "/api/classes/sensor/formats",
        Some(json!({"inbound": null})),
    );
    assert_eq!(status, 204);
    assert_eq!(
        send("GET", "/api/classes/sensor", None).1["format"],
        Value::Null
    );
    refused(
        send(
            "PUT",
            "/api/classes/sensor/formats",
            Some(json!({"inbound": "nope"})),
        ),
        404,
        "not_found",
    );
    let bad = refused(
        send(
            "PUT",
            "/api/interpreters/temperature",
            Some(json!({"expression": "value +* 2"})),
        ),
        422,
        "invalid",
    );
    assert_eq!(bad["field"], json!("interpreter"));
    let (status, set) = send(
        "PUT",
        "/api/interpreters/temperature",
        Some(
            json!({"class": "sensor", "expression": "value / 10.0", "levels": [{"level": "faulty", "min": 50}]}),
        ),
    );
    assert_eq!(status, 200, "{set}");
    let (_, interpreters) = send("GET", "/api/interpreters", None);
    assert_eq!(
        interpreters["items"][0]["class"],
        json!("sensor"),
        "{interpreters}"
    );

    // A class's model, replaced as a whole and checked.
    let model = json!({
        "functions": ["climate"],
        "attributes": [
            {"name": "temperature", "data_type": "number", "unit": "°C", "kind": "measurement", "function": "climate"},
            {"name": "door", "data_type": "string", "unit": null, "kind": "operational", "function": null}
        ],
        "command_groups": [{"name": "maintenance", "commands": [{"name": "reboot", "parameters": {"delay": 0}}]}]
    });
    let (status, saved) = send("PUT", "/api/classes/sensor/model", Some(model.clone()));
    assert_eq!(status, 200, "{saved}");
    assert_eq!(saved["attributes"][0]["function"], json!("climate"));
    assert_eq!(
        send("GET", "/api/classes/sensor/model", None).1["command_groups"],
        model["command_groups"]
    );
    let mut wrong = model.clone();
    wrong["attributes"][1]["data_type"] = json!("colour");
    let bad = refused(
        send("PUT", "/api/classes/sensor/model", Some(wrong)),
        422,
        "invalid",
    );
    assert_eq!(bad["field"], json!("attributes"));
    assert_eq!(
        send("GET", "/api/classes/sensor/model", None).1["attributes"],
        model["attributes"],
        "kept"
    );

    // Roles of the tenant: made, changed, checked.
    let (status, role) = send(
        "POST",
        "/api/roles",
        Some(json!({"name": "technician", "permissions": {"devices": "manage", "events": "view"}})),
    );
    assert_eq!(status, 201, "{role}");
    assert_eq!(role["permissions"]["devices"], json!("manage"), "{role}");
    let bad = refused(
        send(
            "POST",
            "/api/roles",
            Some(json!({"name": "x", "permissions": {"tenants": "full"}})),
        ),
        422,
        "invalid",
    );
    assert_eq!(bad["field"], json!("permissions"));
    refused(
        send("POST", "/api/roles", Some(json!({"name": "operator"}))),
        409,
        "conflict",
    );
    let (status, role) = send(
        "PUT",
        "/api/roles/technician",
        Some(json!({"permissions": {"devices": "view"}})),
    );
    assert_eq!(status, 200, "{role}");
    assert_eq!(role["permissions"]["devices"], json!("view"));
    refused(
        send(
            "PUT",
            "/api/roles/operator",
            Some(json!({"permissions": {}})),
        ),
        403,
        "forbidden",
    );

    // Users: changed, disabled (its token stops at once), a password reset, one's own changed.
    let olga_password = first_password;
    let olga = access_token(port, "olga", &olga_password);
    let (status, changed) = send(
        "PATCH",
        "/api/users/olga",
        Some(json!({"name": "Olga K.", "email": "olga@acme.example"})),
    );
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["roles"], json!(["operator"]), "{changed}");
    // Her roles replaced, in force at her next request.
    let (status, changed) = send(
        "PATCH",
        "/api/users/olga",
        Some(json!({"roles": ["technician"]})),
    );
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["roles"], json!(["technician"]), "{changed}");
    let (_, me) = call(port, "GET", "/api/me", Some(&olga), None);
    assert_eq!(
        me["grants"]["permissions"]["devices"],
        json!("view"),
        "{me}"
    );
    // A role that does not exist, or the platform's, changes nothing.
    for wrong in ["no such role", "system administrator"] {
        let (status, body) = send(
            "PATCH",
            "/api/users/olga",
            Some(json!({"roles": ["operator", wrong], "name": "Changed"})),
        );
        assert!(status == 404 || status == 422, "{status} {body}");
    }
    let (_, users) = send("GET", "/api/users", None);
    let olga_now = users["items"]
        .as_array()
        .and_then(|items| items.iter().find(|u| u["login"] == "olga"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(olga_now["roles"], json!(["technician"]), "{olga_now}");
    assert_eq!(olga_now["name"], json!("Olga K."), "{olga_now}");
    send(
        "PATCH",
        "/api/users/olga",
        Some(json!({"roles": ["operator"]})),
    );
    for not_an_address in [
        "not-an-address",
        "olga@",
        "@acme.example",
        "olga k@acme.example",
    ] {
        refused(
            send(
                "PATCH",
                "/api/users/olga",
                Some(json!({ "email": not_an_address })),
            ),
            422,
            "invalid",
        );
    }
    refused(
        send(
            "PATCH",
            "/api/users/nobody",
            Some(json!({"disabled": true})),
        ),
        404,
        "not_found",
    );
    let mine = |token: &str, body: Value| {
        call(
            port,
            "POST",
            "/api/me/password",
            Some(token),
            Some(&body.to_string()),
        )
    };
    refused(
        mine(
            &olga,
            json!({"current": "wrong", "new": "a new long password"}),
        ),
        401,
        "unauthorized",
    );
    refused(
        mine(&olga, json!({"current": olga_password, "new": "short"})),
        422,
        "invalid",
    );
    assert_eq!(
        mine(
            &olga,
            json!({"current": olga_password, "new": "a new long password"})
        )
        .0,
        204
    );
    let olga = access_token(port, "olga", "a new long password");
    let (status, reset) = call(
        port,
        "POST",
        "/api/users/olga/password-reset",
        Some(&admin),
        None,
    );
    assert_eq!(status, 200, "{reset}");
    access_token(port, "olga", reset["password"].as_str().expect("password"));
    refused(
        call(
            port,
            "POST",
            "/api/users/nobody/password-reset",
            Some(&admin),
            None,
        ),
        404,
        "not_found",
    );
    assert_eq!(
        send("PATCH", "/api/users/olga", Some(json!({"disabled": true}))).0,
        200
    );
    refused(
        call(port, "GET", "/api/me", Some(&olga), None),
        403,
        "forbidden",
    );

    // Devices: registered from CSV (bad rows reported by line), changed, given a token, deleted.
    let csv = "uid,name,class\npump-1,Pump 1,sensor\npump-2,,sensor\npump-3,Pump 3,nope\nbad id,x,sensor\n";
    let (status, imported) = call(
        port,
        "POST",
        "/api/devices/import?tenant=acme",
        Some(&admin),
        Some(csv),
    );
    assert_eq!(status, 200, "{imported}");
    assert_eq!(imported["created"], json!(2), "{imported}");
    let lines: Vec<Value> = imported["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["line"].clone())
        .collect();
    assert_eq!(lines, [json!(4), json!(5)], "{imported}");
    refused(
        call(
            port,
            "POST",
            "/api/devices/import?tenant=acme",
            Some(&admin),
            Some("a,b\n1,2\n"),
        ),
        422,
        "invalid",
    );
    assert_eq!(
        send("GET", "/api/devices/pump-2", None).1["name"],
        json!("pump-2")
    );

    let (status, changed) = send(
        "PATCH",
        "/api/devices/pump-1",
        Some(json!({"name": "Pump one", "disabled": true})),
    );
    assert_eq!(status, 200, "{changed}");
    assert_eq!(
        (changed["name"].clone(), changed["disabled"].clone()),
        (json!("Pump one"), json!(true))
    );
    refused(
        send(
            "PATCH",
            "/api/devices/pump-1",
            Some(json!({"colour": "red"})),
        ),
        422,
        "invalid",
    );

    let (status, issued) = send("POST", "/api/devices/pump-2/credentials", Some(json!({})));
    assert_eq!(status, 201, "{issued}");
    let token = issued["token"].as_str().expect("token").to_string();
    // The token works on the HTTP device API; the disabled device's does not.
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build(),
    );
    let post = |uid: &str, token: &str| {
        agent
            .post(format!(
                "http://127.0.0.1:{port}/api/device/{uid}/telemetry"
            ))
            .header("authorization", format!("Bearer {token}"))
            .send("{\"temperature\": 215}")
            .expect("HTTP")
            .status()
            .as_u16()
    };
    assert_eq!(post("pump-2", &token), 202);
    let (_, issued) = send(
        "POST",
        "/api/devices/pump-1/credentials",
        Some(json!({"kind": "token"})),
    );
    assert_eq!(
        post("pump-1", issued["token"].as_str().expect("token")),
        401,
        "disabled"
    );
    let bad = refused(
        send(
            "POST",
            "/api/devices/pump-2/credentials",
            Some(json!({"kind": "password", "username": "p2"})),
        ),
        422,
        "invalid",
    );
    assert_eq!(bad["field"], json!("password"));

    let (status, _) = send("DELETE", "/api/devices/pump-2", None);
    assert_eq!(status, 204);
    refused(send("GET", "/api/devices/pump-2", None), 404, "not_found");
    refused(
        send("DELETE", "/api/devices/pump-2", None),
        404,
        "not_found",
    );
    // Every node drops its cached logins of the device as it reads the credential change log.
    let deadline = std::time::Instant::now() + common::PATIENCE;
    while post("pump-2", &token) != 401 {
        assert!(
            std::time::Instant::now() < deadline,
            "a deleted device signs in no more"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (_, all) = send("GET", "/api/devices", None);
    assert_eq!(all["total"], json!(2), "d-1 and pump-1 remain: {all}");
}

/// Entities renamed, moved (never under themselves) and deleted once nothing is bound to them;
/// a custom role deleted once nobody has it; classes, formats and interpreters changed and
/// deleted once nothing uses them; a tenant disabled — its users and devices shut out at once,
/// their live sessions closed — and enabled again.
#[tokio::test(flavor = "multi_thread")]
async fn what_a_tenant_made_is_changed_and_removed() {
    use common::mqtt::{Client3, options3};

    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let olga_password = acme(d);
    let device_token = common::platform::access_token(d, "d-1", "acme");
    let node = start(d);
    let port = node.ports.http;
    let admin = access_token(port, "admin", PASSWORD);
    let send = |method: &str, path: &str, body: Option<Value>| {
        let joiner = if path.contains('?') { '&' } else { '?' };
        call(
            port,
            method,
            &format!("{path}{joiner}tenant=acme"),
            Some(&admin),
            body.map(|b| b.to_string()).as_deref(),
        )
    };

    // Entities: east holds east-1; moving east under east-1 would loop.
    for (name, parent) in [("east", None), ("east-1", Some("east")), ("north", None)] {
        let (status, made) = send(
            "POST",
            "/api/entities",
            Some(json!({"name": name, "kind": "unit", "parent": parent})),
        );
        assert_eq!(status, 201, "{made}");
    }
    let wrong = refused(
        send(
            "PATCH",
            "/api/entities/east",
            Some(json!({"parent": "east-1"})),
        ),
        422,
        "invalid",
    );
    assert_eq!(wrong["field"], json!("parent"));
    let (status, moved) = send(
        "PATCH",
        "/api/entities/east-1",
        Some(json!({"name": "west", "parent": null})),
    );
    assert_eq!(status, 200, "{moved}");
    assert_eq!(
        moved,
        json!({"name": "west", "kind": "unit", "parent": null, "created_at": moved["created_at"]})
    );
    refused(
        send(
            "PATCH",
            "/api/entities/north",
            Some(json!({"name": "west"})),
        ),
        409,
        "conflict",
    );
    let (status, user) = send(
        "POST",
        "/api/users",
        Some(
            json!({"login": "nina", "password": "a long password", "entity": "north", "roles": ["viewer"]}),
        ),
    );
    assert_eq!(status, 201, "{user}");
    let held = refused(send("DELETE", "/api/entities/north", None), 409, "conflict");
    assert!(
        held["message"]
            .as_str()
            .is_some_and(|m| m.contains("1 user")),
        "{held}"
    );
    assert_eq!(send("DELETE", "/api/entities/east", None).0, 204);
    refused(send("DELETE", "/api/entities/east", None), 404, "not_found");

    // Roles: a custom role goes once nobody has it; built-in roles never.
    let (status, _) = send(
        "POST",
        "/api/roles",
        Some(json!({"name": "auditor", "permissions": {"audit": "view"}})),
    );
    assert_eq!(status, 201);
    let (status, _) = send(
        "PATCH",
        "/api/users/nina",
        Some(json!({"roles": ["viewer", "auditor"]})),
    );
    assert_eq!(status, 200);
    refused(send("DELETE", "/api/roles/auditor", None), 409, "conflict");
    let (status, _) = send(
        "PATCH",
        "/api/users/nina",
        Some(json!({"roles": ["viewer"]})),
    );
    assert_eq!(status, 200);
    assert_eq!(send("DELETE", "/api/roles/auditor", None).0, 204);
    refused(
        send("DELETE", "/api/roles/operator", None),
        403,
        "forbidden",
    );
    let (_, audit) = send("GET", "/api/audit?action=role.delete", None);
    assert_eq!(audit["total"], json!(1), "{audit}");

    // Classes go once no device is of them; formats once no class uses them, and their
    // definition is checked when it changes; interpreters go.
    assert_eq!(
        send("POST", "/api/classes", Some(json!({"name": "spare"}))).0,
        201
    );
    let held = refused(send("DELETE", "/api/classes/sensor", None), 409, "conflict");
    assert!(
        held["message"]
            .as_str()
            .is_some_and(|m| m.contains("1 device")),
        "{held}"
    );
    assert_eq!(send("DELETE", "/api/classes/spare", None).0, 204);
    assert_eq!(
        send(
            "POST",
            "/api/formats",
            Some(json!({"name": "f1", "kind": "json"}))
        )
        .0,
        201
    );
    let wrong = refused(
        send(
            "PUT",
            "/api/formats/f1",
            Some(json!({"kind": "protobuf", "proto": "message {", "message": "X"})),
        ),
        422,
        "invalid",
    );
    assert_eq!(wrong["field"], json!("proto"));
    let (status, changed) = send("PUT", "/api/formats/f1", Some(json!({"kind": "xml"})));
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["kind"], json!("xml"));
    let (status, _) = send(
        "PUT",
        "/api/classes/sensor/formats",
        Some(json!({"inbound": "f1"})),
    );
    assert_eq!(status, 204);
    refused(send("DELETE", "/api/formats/f1", None), 409, "conflict");
    let (status, _) = send(
        "PUT",
        "/api/classes/sensor/formats",
        Some(json!({"inbound": null})),
    );
    assert_eq!(status, 204);
    assert_eq!(send("DELETE", "/api/formats/f1", None).0, 204);
    let (status, _) = send(
        "PUT",
        "/api/interpreters/temperature",
        Some(json!({"expression": "value * 2"})),
    );
    assert_eq!(status, 200);
    refused(
        send("DELETE", "/api/interpreters/temperature?class=sensor", None),
        404,
        "not_found",
    );
    assert_eq!(send("DELETE", "/api/interpreters/temperature", None).0, 204);
    let (_, left) = send("GET", "/api/interpreters", None);
    assert_eq!(left["total"], json!(0), "{left}");

    // A class renamed and described; a command to an offline device cancelled while queued.
    let (status, class) = send(
        "PATCH",
        "/api/classes/sensor",
        Some(json!({"description": "thermometers"})),
    );
    assert_eq!(status, 200, "{class}");
    assert_eq!(class["description"], json!("thermometers"));
    let (status, command) = send(
        "POST",
        "/api/devices/d-1/commands",
        Some(json!({"name": "reboot"})),
    );
    assert_eq!(status, 201, "{command}");
    let cancel = format!("/api/commands/{}/cancel", command["id"]);
    let (status, cancelled) = send("POST", &cancel, None);
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], json!("cancelled"));
    let again = refused(send("POST", &cancel, None), 409, "conflict");
    assert!(
        again["message"]
            .as_str()
            .is_some_and(|m| m.contains("cancelled already")),
        "{again}"
    );

    // A disabled tenant: its signed-in user and its connected device are shut out at once.
    let olga = access_token(port, "olga", &olga_password);
    let mut options = options3(node.ports.mqtt, "d-1");
    options.set_credentials("d-1", device_token.as_str());
    let (mut device, _) = Client3::connect(options.clone())
        .await
        .expect("d-1 connects");
    let (status, tenant) = call(
        port,
        "PATCH",
        "/api/tenants/acme",
        Some(&admin),
        Some(r#"{"disabled": true}"#),
    );
    assert_eq!(status, 200, "{tenant}");
    assert_eq!(tenant["disabled"], json!(true));
    refused(
        call(port, "GET", "/api/devices", Some(&olga), None),
        403,
        "forbidden",
    );
    let body = json!({"login": "olga", "password": olga_password}).to_string();
    refused(
        call(port, "POST", "/api/auth/sign-in", None, Some(&body)),
        403,
        "forbidden",
    );
    let closed = device.closed().await;
    assert!(
        !closed.contains("nothing received"),
        "d-1 stays connected: {closed}"
    );
    let refusal = Client3::connect(options.clone())
        .await
        .err()
        .expect("a disabled tenant's device is refused");
    assert!(refusal.contains("NotAuthorized"), "{refusal}");

    // Enabled again: both are back.
    let (status, _) = call(
        port,
        "PATCH",
        "/api/tenants/acme",
        Some(&admin),
        Some(r#"{"disabled": false}"#),
    );
    assert_eq!(status, 200);
    let (status, _) = call(port, "GET", "/api/devices", Some(&olga), None);
    assert_eq!(status, 200);
    Client3::connect(options).await.expect("d-1 connects again");
    refused(
        call(
            port,
            "PATCH",
            "/api/tenants/nobody",
            Some(&admin),
            Some(r#"{"disabled": true}"#),
        ),
        404,
        "not_found",
    );
    refused(
        call(
            port,
            "PATCH",
            "/api/tenants/acme",
            Some(&olga),
            Some(r#"{"disabled": true}"#),
        ),
        403,
        "forbidden",
    );
}
