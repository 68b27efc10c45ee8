//! Many writers at once on the standalone platform (SQLite): fifty simultaneous requests of each
//! kind of write — device registrations, credential rotations, user creations, commands, event
//! acknowledgements — while a device's telemetry is being ingested all succeed, and what is
//! stored afterwards is consistent.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};

use common::api::{PASSWORD, access_token, acme, call, start};
use common::{PATIENCE, cli_ok};
use serde_json::{Value, json};

const WRITERS: usize = 50;

/// Polls `probe` until it gives something, within the tests' patience.
fn eventually<T>(what: &str, probe: impl Fn() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(std::time::Instant::now() < deadline, "{what} in time");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn fifty_writers_of_each_kind_succeed_while_ingest_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    acme(d);
    for uid in ["d-2", "d-3"] {
        cli_ok(
            d,
            &[
                "device", "add", uid, "--tenant", "acme", "--class", "sensor",
            ],
        );
    }
    cli_ok(
        d,
        &[
            "interpreter",
            "set",
            "temperature",
            "--tenant",
            "acme",
            "--level",
            "faulty:50:",
        ],
    );
    let device_token = common::platform::access_token(d, "d-1", "acme");
    let node = start(d);
    let port = node.ports.http;
    let admin = access_token(port, "admin", PASSWORD);
    let api = |method: &str, path: &str, body: Option<Value>| {
        call(
            port,
            method,
            path,
            Some(&admin),
            body.map(|b| b.to_string()).as_deref(),
        )
    };
    let telemetry = |value: i64| {
        let (status, body) = call(
            port,
            "POST",
            "/api/device/d-1/telemetry",
            Some(&device_token),
            Some(&json!({ "temperature": value }).to_string()),
        );
        assert_eq!(status, 202, "{body}");
    };

    // An open event to acknowledge.
    telemetry(90);
    let event = eventually("the faulty event", || {
        let (_, events) = api("GET", "/api/events?tenant=acme", None);
        events["items"][0]["id"].as_i64()
    });

    let ingesting = AtomicBool::new(true);
    let answers: Vec<(&str, u16, Value)> = std::thread::scope(|s| {
        // Ingest runs all along: values that keep raising and clearing events.
        let ingest = s.spawn(|| {
            let mut sent = 0;
            while ingesting.load(Ordering::Relaxed) {
                telemetry(if sent % 2 == 0 { 20 } else { 70 });
                sent += 1;
            }
            sent
        });
        let mut writers = Vec::new();
        for i in 0..WRITERS {
            let api = &api;
            writers.push(s.spawn(move || {
                let (status, body) = api(
                    "POST",
                    "/api/devices?tenant=acme",
                    Some(json!({"uid": format!("n-{i}"), "class": "sensor"})),
                );
                ("device create", status, body)
            }));
            writers.push(s.spawn(move || {
                let (status, body) = api(
                    "POST",
                    "/api/devices/d-2/credentials?tenant=acme",
                    Some(json!({"kind": "token"})),
                );
                ("credentials", status, body)
            }));
            writers.push(s.spawn(move || {
                let (status, body) = api(
                    "POST",
                    "/api/users?tenant=acme",
                    Some(json!({
                        "login": format!("u-{i}"),
                        "password": format!("a long password {i}"),
                        "name": format!("User {i}"),
                        "roles": ["operator"],
                    })),
                );
                ("user create", status, body)
            }));
            writers.push(s.spawn(move || {
                let (status, body) = api(
                    "POST",
                    "/api/devices/d-3/commands?tenant=acme",
                    Some(json!({"name": "reboot", "parameters": {"n": i}})),
                );
                ("command send", status, body)
            }));
            writers.push(s.spawn(move || {
                let (status, body) = api(
                    "POST",
                    &format!("/api/events/{event}/acknowledge?tenant=acme"),
                    None,
                );
                ("event acknowledge", status, body)
            }));
        }
        let answers = writers
            .into_iter()
            .map(|w| w.join().expect("writer"))
            .collect();
        ingesting.store(false, Ordering::Relaxed);
        assert!(ingest.join().expect("ingest") > 0);
        answers
    });

    for (kind, status, body) in &answers {
        assert!(
            (200..300).contains(status),
            "a {kind} was answered {status}: {body}"
        );
    }

    // Every device registered, every user created, every command queued.
    let (_, devices) = api("GET", "/api/devices?tenant=acme&search=n-&limit=1", None);
    assert_eq!(devices["total"], json!(WRITERS), "{devices}");
    let (_, users) = api("GET", "/api/users?tenant=acme&limit=1", None);
    assert_eq!(users["total"], json!(WRITERS + 1), "{users}");
    let (_, commands) = api("GET", "/api/commands?tenant=acme&device=d-3&limit=1", None);
    assert_eq!(commands["total"], json!(WRITERS), "{commands}");
    // Of the fifty tokens issued to d-2 one after the other, only the last is still good.
    let tokens: Vec<&str> = answers
        .iter()
        .filter(|(kind, _, _)| *kind == "credentials")
        .map(|(_, _, body)| body["token"].as_str().expect("a token"))
        .collect();
    let working = tokens
        .iter()
        .filter(|token| call(port, "GET", "/api/device/d-2/commands", Some(token), None).0 == 200)
        .count();
    assert_eq!(working, 1, "exactly one of d-2's tokens is valid");
    // The event was acknowledged once: every answer carries the first acknowledgement's time.
    let times: Vec<&Value> = answers
        .iter()
        .filter(|(kind, _, _)| *kind == "event acknowledge")
        .map(|(_, _, body)| &body["acknowledged_at"])
        .collect();
    assert!(times[0].is_string(), "{:?}", times[0]);
    assert!(times.iter().all(|t| *t == times[0]), "{times:?}");
}
