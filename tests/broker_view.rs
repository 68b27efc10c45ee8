//! The broker view through the REST API and `aos broker`: the clients the broker holds (address,
//! protocol, subscriptions, queued messages), disconnecting one, retained messages browsed and
//! deleted, traffic — each tenant's administrators seeing only their tenant's clients.

mod common;

use common::api::{PASSWORD, access_token, call, refused, start};
use common::mqtt::{Client3, Client5, options3, options5};
use common::platform::{access_token as device_token, printed};
use common::{Aos, PATIENCE, cli_ok};
use rumqttc::v5::mqttbytes::QoS;
use serde_json::{Value, json};

/// Tenants `acme` (device `d-1`, administrator `ada`, operator `olga`) and `globex` (device
/// `g-1`); returns (ada's password, olga's password, d-1's token, g-1's token).
fn tenants(dir: &std::path::Path) -> (String, String, String, String) {
    for (tenant, device) in [("acme", "d-1"), ("globex", "g-1")] {
        cli_ok(dir, &["tenant", "add", tenant]);
        cli_ok(dir, &["class", "add", "sensor", "--tenant", tenant]);
        cli_ok(
            dir,
            &[
                "device", "add", device, "--tenant", tenant, "--class", "sensor",
            ],
        );
    }
    let user = |login: &str, role: &str| {
        let out = cli_ok(
            dir,
            &["user", "add", login, "--tenant", "acme", "--role", role],
        );
        printed(&out, "password: ")
    };
    (
        user("ada", "tenant administrator"),
        user("olga", "operator"),
        device_token(dir, "d-1", "acme"),
        device_token(dir, "g-1", "globex"),
    )
}

fn client_ids(page: &Value) -> Vec<&str> {
    page["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|c| c["client_id"].as_str())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn operators_see_disconnect_and_forget_through_the_broker_view() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (ada_password, olga_password, d1_token, g1_token) = tenants(d);
    let node = start(d);
    let (http, mqtt) = (node.ports.http, node.ports.mqtt);
    let admin = access_token(http, "admin", PASSWORD);
    let ada = access_token(http, "ada", &ada_password);
    let olga = access_token(http, "olga", &olga_password);
    let get = |token: &str, path: &str| call(http, "GET", path, Some(token), None);

    // d-1 over 5.0 with a subscription and a retained status; g-1 over 3.1.1.
    let mut options = options5(mqtt, "d-1");
    options.set_credentials("d-1", d1_token.as_str());
    let (mut d1, _) = Client5::connect(options).await.expect("d-1 connects");
    d1.subscribe("aos/d-1/commands", QoS::AtLeastOnce).await;
    d1.client
        .publish("aos/d-1/status", QoS::AtLeastOnce, true, "online")
        .await
        .expect("publish");
    d1.puback().await;
    let mut options = options3(mqtt, "g-1");
    options.set_credentials("g-1", g1_token.as_str());
    let (mut g1, _) = Client3::connect(options).await.expect("g-1 connects");
    g1.publish_acked("aos/g-1/status", true, b"up").await;

    // The system administrator sees both, with what a connection is.
    let (status, page) = get(&admin, "/api/broker/clients");
    assert_eq!(status, 200, "{page}");
    assert_eq!(client_ids(&page), ["d-1", "g-1"], "{page}");
    assert_eq!(page["total"], json!(2));
    assert_eq!(page["silent"], json!([]));
    let d1_view = &page["items"][0];
    assert_eq!(d1_view["connected"], json!(true), "{d1_view}");
    assert_eq!(d1_view["protocol"], json!("5.0"));
    assert_eq!(page["items"][1]["protocol"], json!("3.1.1"));
    assert_eq!(d1_view["kind"], json!("device"));
    assert_eq!(d1_view["tenant_name"], json!("acme"));
    assert_eq!(d1_view["keep_alive"], json!(30));
    assert!(
        d1_view["address"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{d1_view}"
    );
    assert_eq!(
        d1_view["subscriptions"],
        json!([{"filter": "aos/d-1/commands", "qos": 1}])
    );
    let (_, found) = get(&admin, "/api/broker/clients?search=G-&tenant=globex");
    assert_eq!(client_ids(&found), ["g-1"], "{found}");

    // A tenant's administrator and operator see their tenant's clients only; the operator
    // cannot disconnect, and nobody of a tenant sees the nodes' traffic.
    for token in [&ada, &olga] {
        let (status, page) = get(token, "/api/broker/clients?tenant=globex");
        assert_eq!(status, 200, "{page}");
        assert_eq!(client_ids(&page), ["d-1"], "{page}");
    }
    let disconnect = |token: &str, client: &str| {
        call(
            http,
            "POST",
            "/api/broker/clients/disconnect",
            Some(token),
            Some(&json!({ "client_id": client }).to_string()),
        )
    };
    refused(disconnect(&olga, "d-1"), 403, "forbidden");
    refused(disconnect(&ada, "g-1"), 404, "not_found");
    refused(get(&ada, "/api/broker/traffic"), 403, "forbidden");

    // Retained messages: browsed by filter, each tenant its own, deleted without a message
    // (d-1 watches its status: it gets the retained one, then only what is published after).
    d1.subscribe("aos/d-1/status", QoS::AtLeastOnce).await;
    assert_eq!(&d1.publish_received().await.payload[..], b"online");
    let (status, retained) = get(&ada, "/api/broker/retained");
    assert_eq!(status, 200, "{retained}");
    assert_eq!(retained["total"], json!(1), "{retained}");
    assert_eq!(retained["items"][0]["topic"], json!("aos/d-1/status"));
    assert_eq!(retained["items"][0]["text"], json!("online"));
    let (_, retained) = get(&admin, "/api/broker/retained?filter=%2B%2Fg-1%2F%23");
    assert_eq!(retained["items"][0]["text"], json!("up"), "{retained}");
    let forget = |token: &str, topic: &str| {
        call(
            http,
            "DELETE",
            &format!("/api/broker/retained?topic={topic}"),
            Some(token),
            None,
        )
    };
    refused(forget(&ada, "aos%2Fg-1%2Fstatus"), 404, "not_found");
    refused(forget(&olga, "aos%2Fd-1%2Fstatus"), 403, "forbidden");
    assert_eq!(forget(&ada, "aos%2Fd-1%2Fstatus").0, 204);
    let (_, retained) = get(&admin, "/api/broker/retained");
    assert_eq!(retained["total"], json!(1), "{retained}");
    d1.client
        .publish("aos/d-1/status", QoS::AtLeastOnce, false, "after")
        .await
        .expect("publish");
    assert_eq!(&d1.publish_received().await.payload[..], b"after");

    // Disconnecting: the client is told why (5.0: administrative action), and is gone from the
    // connected ones.
    let (status, done) = disconnect(&ada, "d-1");
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["node"], json!(node_id(&admin, http)));
    let how = d1.disconnected().await;
    assert!(how.contains("AdministrativeAction"), "{how}");
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let (_, page) = get(&admin, "/api/broker/clients?connected=true");
        if !client_ids(&page).contains(&"d-1") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "d-1 still connected: {page}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (_, audit) = get(&ada, "/api/audit?action=broker.disconnect");
    assert_eq!(audit["items"][0]["object_id"], json!("d-1"), "{audit}");

    // Traffic: what the broker took in so far.
    let (status, traffic) = get(&admin, "/api/broker/traffic");
    assert_eq!(status, 200, "{traffic}");
    assert!(
        traffic["nodes"][0]["messages_in"]
            .as_u64()
            .is_some_and(|n| n >= 2),
        "{traffic}"
    );

    // Wrong requests name what is wrong.
    let wrong = refused(
        get(&admin, "/api/broker/retained?filter=a%2F%23%2Fb"),
        422,
        "invalid",
    );
    assert_eq!(wrong["field"], json!("filter"));
    let wrong = refused(
        get(&admin, "/api/broker/clients?offset=480&limit=50"),
        422,
        "invalid",
    );
    assert_eq!(wrong["field"], json!("offset"));
    refused(
        get(&admin, "/api/broker/clients?tenant=nobody"),
        404,
        "not_found",
    );
    refused(disconnect(&admin, "nobody"), 404, "not_found");

    // The same from the command line, signed in as the administrator.
    let url = format!("http://127.0.0.1:{http}");
    let (status, out, err) = Aos::new(d, &["broker", "--url", &url, "--user", "admin", "clients"])
        .output_with_input(&format!("{PASSWORD}\n"));
    assert!(status.success(), "{err}");
    assert!(out.contains("g-1") && out.contains("3.1.1"), "{out}");
    let (status, out, err) = Aos::new(d, &["broker", "--url", &url, "disconnect", "g-1"])
        .env("AOS_TOKEN", &admin)
        .output();
    assert!(status.success(), "{err}");
    assert!(out.contains("disconnected g-1"), "{out}");
    let closed = g1.closed().await;
    assert!(
        !closed.contains("nothing received"),
        "g-1 stays connected: {closed}"
    );
    let (status, _, err) = Aos::new(d, &["broker", "--url", &url, "--user", "admin", "traffic"])
        .output_with_input("wrong password\n");
    assert!(!status.success());
    assert!(err.contains("password"), "{err}");
}

fn node_id(token: &str, http: u16) -> String {
    let (_, nodes) = call(http, "GET", "/api/nodes", Some(token), None);
    nodes["items"][0]["id"]
        .as_str()
        .expect("node id")
        .to_string()
}
