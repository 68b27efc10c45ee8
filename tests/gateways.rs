//! Gateways speak for their child nodes: on a child's own topic, or for several children in one
//! message (`{"nodes": {…}}`); unknown children are registered when the gateway's class allows it
//! (`aos class children`), and refused otherwise; a gateway cannot speak for another's child.

mod common;

use std::collections::BTreeMap;

use aos_storage::entity::{device, ledger, message_log};
use common::mqtt::{Client5, options5};
use common::platform::{access_token, storage, wait_logged};
use common::{Aos, cli_ok};
use rumqttc::v5::mqttbytes::QoS;
use sea_orm::EntityTrait;

#[tokio::test]
async fn gateways_report_for_their_children_and_register_new_ones_when_allowed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    cli_ok(d, &["tenant", "add", "acme"]);
    cli_ok(d, &["class", "add", "node", "--tenant", "acme"]);
    for class in ["gw-open", "gw-closed"] {
        cli_ok(d, &["class", "add", class, "--tenant", "acme", "--gateway"]);
    }
    cli_ok(
        d,
        &[
            "class", "children", "gw-open", "--tenant", "acme", "--class", "node",
        ],
    );
    let refused = Aos::new(
        d,
        &[
            "class", "children", "node", "--tenant", "acme", "--class", "node",
        ],
    )
    .output();
    assert!(
        refused.2.contains("is not a gateway class"),
        "{}",
        refused.2
    );
    for (uid, class) in [("open-1", "gw-open"), ("closed-1", "gw-closed")] {
        cli_ok(
            d,
            &["device", "add", uid, "--tenant", "acme", "--class", class],
        );
    }
    cli_ok(
        d,
        &[
            "device",
            "add",
            "n-1",
            "--tenant",
            "acme",
            "--class",
            "node",
            "--gateway",
            "closed-1",
        ],
    );
    let open_token = access_token(d, "open-1", "acme");
    let closed_token = access_token(d, "closed-1", "acme");

    let mut node = Aos::new(d, &["run"]).spawn();
    node.wait_ready();
    let messages: [(&str, &str, &str, &str); 5] = [
        (
            "closed-1",
            &closed_token,
            "aos/closed-1/nodes/n-1/telemetry",
            r#"{"t": 1}"#,
        ),
        (
            "closed-1",
            &closed_token,
            "aos/closed-1/telemetry",
            r#"{"nodes": {"x-1": {"t": 9}}}"#,
        ),
        (
            "open-1",
            &open_token,
            "aos/open-1/telemetry",
            r#"{"nodes": {"n-2": {"t": 2}, "n-3": {"ts": 1796032800000, "values": {"t": 3}}}}"#,
        ),
        (
            "open-1",
            &open_token,
            "aos/open-1/nodes/n-4/telemetry",
            r#"{"t": 4}"#,
        ),
        (
            "open-1",
            &open_token,
            "aos/open-1/telemetry",
            r#"{"nodes": {"n-1": {"t": 9}}}"#,
        ),
    ];
    for (uid, token, topic, payload) in messages {
        let mut options = options5(node.ports.mqtt, uid);
        options.set_credentials(uid, token);
        let (mut client, _) = Client5::connect(options).await.expect("signs in");
        client
            .client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .expect("publish");
        client.puback().await;
    }

    let storage = storage(d).await;
    wait_logged(&storage, 5).await;
    let devices = device::Entity::find()
        .all(storage.db())
        .await
        .expect("devices");
    let uid_of: BTreeMap<i64, String> = devices.iter().map(|d| (d.id, d.uid.clone())).collect();
    let gateway_of: BTreeMap<String, Option<String>> = devices
        .iter()
        .map(|d| (d.uid.clone(), d.gateway_id.map(|g| uid_of[&g].clone())))
        .collect();
    // n-2, n-3 and n-4 were registered as open-1's children; x-1 was not.
    for child in ["n-2", "n-3", "n-4"] {
        assert_eq!(
            gateway_of.get(child),
            Some(&Some("open-1".to_string())),
            "{gateway_of:?}"
        );
    }
    assert!(!gateway_of.contains_key("x-1"), "{gateway_of:?}");
    let values: BTreeMap<String, f64> = ledger::Entity::find()
        .all(storage.db())
        .await
        .expect("ledger")
        .into_iter()
        .filter_map(|r| r.value_num.map(|v| (uid_of[&r.device_id].clone(), v)))
        .collect();
    let expected: BTreeMap<String, f64> = [("n-1", 1.0), ("n-2", 2.0), ("n-3", 3.0), ("n-4", 4.0)]
        .iter()
        .map(|(u, v)| (u.to_string(), *v))
        .collect();
    assert_eq!(values, expected, "no value of a refused message was stored");
    let mut errors: Vec<String> = message_log::Entity::find()
        .all(storage.db())
        .await
        .expect("log")
        .into_iter()
        .filter_map(|m| m.error)
        .collect();
    errors.sort();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].contains("`n-1` is not a child node of gateway `open-1`"),
        "{errors:?}"
    );
    assert!(
        errors[1].contains(
            "`x-1` is not a child node of gateway `closed-1` (its class does not register"
        ),
        "{errors:?}"
    );

    // A gateway's children, as its page lists them.
    let scope = aos_storage::repo::Scope {
        tenant: devices[0].tenant_id,
        customer: None,
    };
    let children_of = |gateway: &str| {
        let query = aos_storage::repo::devices::DeviceQuery {
            gateway: Some(gateway.to_string()),
            ..Default::default()
        };
        let storage = &storage;
        async move {
            let (found, _) = aos_storage::repo::devices::search(storage, scope, &query)
                .await
                .expect("children");
            let mut uids: Vec<String> = found.into_iter().map(|d| d.uid).collect();
            uids.sort();
            uids
        }
    };
    assert_eq!(children_of("open-1").await, ["n-2", "n-3", "n-4"]);
    assert_eq!(children_of("closed-1").await, ["n-1"]);
    assert!(children_of("n-1").await.is_empty());
}
