//! Interoperability with the stock Mosquitto command-line clients (`mosquitto_pub` /
//! `mosquitto_sub`, Debian package mosquitto-clients, installed by scripts/install-test-deps).

mod common;

use std::process::{Command, Output};

use common::Broker;

/// Runs a Mosquitto client, or `None` (after a loud message) when it is not installed outside CI.
fn run(program: &str, args: &[&str]) -> Option<Output> {
    match Command::new(program).args(args).output() {
        Ok(output) => Some(output),
        Err(err) => {
            let message =
                format!("{program} is not available ({err}); run scripts/install-test-deps");
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{message} — required under CI=true");
            }
            eprintln!("\n!!!!!!!! SKIPPED: {message} !!!!!!!!\n");
            None
        }
    }
}

fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "exit {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn mosquitto_clients_exchange_messages_through_aos() {
    let broker = Broker::start(&[]);
    let port = broker.port().to_string();
    for version in ["mqttv311", "mqttv5"] {
        let sub_id = format!("interop-sub-{version}");
        let topic = format!("interop/{version}");
        let common = ["-h", "127.0.0.1", "-p", &port, "-V", version];
        // A persistent subscription, then exit: messages published now wait in the session.
        let Some(out) = run(
            "mosquitto_sub",
            &[
                &common[..],
                &["-i", &sub_id, "-c", "-q", "2", "-t", &topic, "-E"],
            ]
            .concat(),
        ) else {
            return;
        };
        ok(out);
        for qos in ["0", "1", "2"] {
            let payload = format!("qos{qos}");
            let Some(out) = run(
                "mosquitto_pub",
                &[&common[..], &["-q", qos, "-t", &topic, "-m", &payload]].concat(),
            ) else {
                return;
            };
            ok(out);
        }
        // QoS 0 is not kept for an offline session; QoS 1 and 2 are, in order.
        let Some(out) = run(
            "mosquitto_sub",
            &[
                &common[..],
                &[
                    "-i", &sub_id, "-c", "-q", "2", "-t", &topic, "-C", "2", "-W", "10",
                ],
            ]
            .concat(),
        ) else {
            return;
        };
        assert_eq!(ok(out), "qos1\nqos2\n", "{version}");
    }
}

#[test]
fn mosquitto_clients_see_retained_messages_and_5_0_properties() {
    let broker = Broker::start(&[]);
    let port = broker.port().to_string();
    let base = ["-h", "127.0.0.1", "-p", &port, "-V", "mqttv5"];
    let Some(out) = run(
        "mosquitto_pub",
        &[
            &base[..],
            &[
                "-q",
                "1",
                "-r",
                "-t",
                "interop/state",
                "-m",
                "ready",
                "-D",
                "publish",
                "user-property",
                "site",
                "north",
            ],
        ]
        .concat(),
    ) else {
        return;
    };
    ok(out);
    let Some(out) = run(
        "mosquitto_sub",
        &[
            &base[..],
            &[
                "-t",
                "interop/#",
                "-C",
                "1",
                "-W",
                "10",
                "-F",
                "%t %r %p %P",
            ],
        ]
        .concat(),
    ) else {
        return;
    };
    let line = ok(out);
    assert_eq!(
        line.trim(),
        "interop/state 1 ready site:north",
        "topic, retain flag, payload, user property"
    );
}
