//! Conformance cases for [`Bus`] backends.

use std::time::Duration;

use bytes::Bytes;

use super::{PATIENCE, unique};
use crate::bus::{Bus, BusError, BusMessage, Subscription};

/// Generates one test per case for the backend made by `$make`.
#[macro_export]
macro_rules! bus_conformance {
    ($make:expr) => {
        $crate::__conformance_cases!(
            bus,
            $crate::bus::Bus,
            $make,
            [
                subscribers_receive_matching_subjects_only,
                every_subscriber_receives_a_copy,
                a_queue_group_shares_the_messages,
                a_dropped_subscription_stops_receiving,
                invalid_subjects_are_refused,
            ]
        );
    };
}

async fn next(sub: &mut Subscription) -> BusMessage {
    tokio::time::timeout(PATIENCE, sub.next())
        .await
        .expect("a message within the patience window")
        .expect("the bus is open")
}

pub async fn subscribers_receive_matching_subjects_only(bus: &dyn Bus) {
    let root = unique("match").replace('-', "_");
    let mut one = bus
        .subscribe(&format!("{root}.*.status"))
        .await
        .expect("subscribe");
    let mut all = bus
        .subscribe(&format!("{root}.>"))
        .await
        .expect("subscribe");
    bus.publish(&format!("{root}.d1.telemetry"), Bytes::from("t"))
        .await
        .expect("publish");
    bus.publish(&format!("{root}.d1.status"), Bytes::from("s"))
        .await
        .expect("publish");
    // One publisher's messages arrive in order, so the first message `one` sees tells whether
    // it was (wrongly) given the non-matching subject.
    let got = next(&mut one).await;
    assert_eq!(got.subject, format!("{root}.d1.status"));
    assert_eq!(got.payload, Bytes::from("s"));
    assert_eq!(next(&mut all).await.subject, format!("{root}.d1.telemetry"));
    assert_eq!(next(&mut all).await.subject, format!("{root}.d1.status"));
}

pub async fn every_subscriber_receives_a_copy(bus: &dyn Bus) {
    let subject = unique("copy").replace('-', "_");
    let mut a = bus.subscribe(&subject).await.expect("subscribe");
    let mut b = bus.subscribe(&subject).await.expect("subscribe");
    bus.publish(&subject, Bytes::from("hello"))
        .await
        .expect("publish");
    assert_eq!(next(&mut a).await.payload, Bytes::from("hello"));
    assert_eq!(next(&mut b).await.payload, Bytes::from("hello"));
}

pub async fn a_queue_group_shares_the_messages(bus: &dyn Bus) {
    let subject = unique("group").replace('-', "_");
    let mut a = bus
        .queue_subscribe(&subject, "workers")
        .await
        .expect("subscribe");
    let mut b = bus
        .queue_subscribe(&subject, "workers")
        .await
        .expect("subscribe");
    let mut watcher = bus.subscribe(&subject).await.expect("subscribe");
    let total = 100;
    for i in 0..total {
        bus.publish(&subject, Bytes::from(i.to_string()))
            .await
            .expect("publish");
    }
    for _ in 0..total {
        next(&mut watcher).await;
    }
    // The plain subscriber saw all messages; the group members together see each once.
    let mut seen = Vec::new();
    let (mut got_a, mut got_b) = (0, 0);
    while seen.len() < total {
        tokio::select! {
            m = next(&mut a) => { got_a += 1; seen.push(m.payload); }
            m = next(&mut b) => { got_b += 1; seen.push(m.payload); }
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), total, "each message went to exactly one member");
    assert!(
        got_a > 0 && got_b > 0,
        "spread across members: {got_a} / {got_b}"
    );
    let extra = tokio::time::timeout(Duration::from_millis(200), async {
        tokio::select! { m = a.next() => m, m = b.next() => m }
    })
    .await;
    assert!(extra.is_err(), "no member received a message twice");
}

pub async fn a_dropped_subscription_stops_receiving(bus: &dyn Bus) {
    let subject = unique("drop").replace('-', "_");
    let sub = bus.subscribe(&subject).await.expect("subscribe");
    drop(sub);
    let mut other = bus.subscribe(&subject).await.expect("subscribe");
    bus.publish(&subject, Bytes::from("after"))
        .await
        .expect("publish after drop");
    assert_eq!(next(&mut other).await.payload, Bytes::from("after"));
}

pub async fn invalid_subjects_are_refused(bus: &dyn Bus) {
    for bad in ["", "a..b", "a b", "a.*", "a.>"] {
        assert!(
            matches!(
                bus.publish(bad, Bytes::new()).await,
                Err(BusError::InvalidSubject(_))
            ),
            "publishing to `{bad}` should be refused"
        );
    }
    for bad in ["a.>.b", "a.b*"] {
        assert!(
            matches!(bus.subscribe(bad).await, Err(BusError::InvalidSubject(_))),
            "subscribing to `{bad}` should be refused"
        );
    }
}
