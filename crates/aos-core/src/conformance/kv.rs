//! Conformance cases for [`Kv`] backends.

use std::time::Duration;

use bytes::Bytes;

use super::{PATIENCE, unique};
use crate::kv::{Kv, KvError};

/// Generates one test per case for the backend made by `$make`.
#[macro_export]
macro_rules! kv_conformance {
    ($make:expr) => {
        $crate::__conformance_cases!(
            kv,
            $crate::kv::Kv,
            $make,
            [
                put_then_get_returns_the_value,
                create_refuses_an_existing_key,
                update_is_compare_and_set,
                delete_removes_and_delete_if_checks_the_revision,
                entries_expire_after_their_ttl,
                list_returns_live_entries_under_a_prefix,
                invalid_keys_are_refused,
                ttls_are_whole_seconds,
            ]
        );
    };
}

fn key(case: &str) -> String {
    format!("conformance.{}", unique(case))
}

pub async fn put_then_get_returns_the_value(kv: &dyn Kv) {
    let k = key("put");
    assert_eq!(kv.get(&k).await.expect("get"), None);
    let r1 = kv.put(&k, Bytes::from("one"), None).await.expect("put");
    let r2 = kv.put(&k, Bytes::from("two"), None).await.expect("put");
    assert!(r2 > r1, "revisions grow");
    let entry = kv.get(&k).await.expect("get").expect("present");
    assert_eq!((entry.value, entry.revision), (Bytes::from("two"), r2));
    assert_eq!(entry.key, k);
}

pub async fn create_refuses_an_existing_key(kv: &dyn Kv) {
    let k = key("create");
    kv.create(&k, Bytes::from("mine"), None)
        .await
        .expect("create");
    assert_eq!(
        kv.create(&k, Bytes::from("yours"), None).await,
        Err(KvError::Exists(k.clone()))
    );
    assert_eq!(
        kv.get(&k).await.expect("get").expect("present").value,
        Bytes::from("mine")
    );
}

pub async fn update_is_compare_and_set(kv: &dyn Kv) {
    let k = key("cas");
    let r1 = kv.create(&k, Bytes::from("a"), None).await.expect("create");
    let r2 = kv
        .update(&k, Bytes::from("b"), r1, None)
        .await
        .expect("update");
    assert!(r2 > r1);
    // A writer holding the old revision loses.
    match kv.update(&k, Bytes::from("stale"), r1, None).await {
        Err(KvError::RevisionMismatch { current, .. }) => assert_eq!(current, Some(r2)),
        other => panic!("expected a revision mismatch, got {other:?}"),
    }
    assert_eq!(
        kv.get(&k).await.expect("get").expect("present").value,
        Bytes::from("b")
    );
    // Updating a key that does not exist fails too.
    assert!(matches!(
        kv.update(&key("cas-missing"), Bytes::from("x"), 1, None)
            .await,
        Err(KvError::RevisionMismatch { current: None, .. })
    ));
}

pub async fn delete_removes_and_delete_if_checks_the_revision(kv: &dyn Kv) {
    let k = key("delete");
    kv.put(&k, Bytes::from("x"), None).await.expect("put");
    kv.delete(&k).await.expect("delete");
    assert_eq!(kv.get(&k).await.expect("get"), None);
    kv.delete(&k).await.expect("deleting an absent key is fine");

    let r = kv.put(&k, Bytes::from("lease"), None).await.expect("put");
    assert!(matches!(
        kv.delete_if(&k, r + 1000).await,
        Err(KvError::RevisionMismatch { .. })
    ));
    assert!(
        kv.get(&k).await.expect("get").is_some(),
        "wrong revision keeps the entry"
    );
    kv.delete_if(&k, r).await.expect("delete_if");
    assert_eq!(kv.get(&k).await.expect("get"), None);
}

pub async fn entries_expire_after_their_ttl(kv: &dyn Kv) {
    let k = key("ttl");
    let ttl = Duration::from_secs(1);
    let started = tokio::time::Instant::now();
    kv.create(&k, Bytes::from("lease"), Some(ttl))
        .await
        .expect("create");
    let kept = key("ttl-none");
    kv.put(&kept, Bytes::from("stays"), None)
        .await
        .expect("put");
    assert!(kv.get(&k).await.expect("get").is_some());
    // Wait for the expiry itself: what is tested is that time passing removes the entry.
    let expired_at = loop {
        if kv.get(&k).await.expect("get").is_none() {
            break started.elapsed();
        }
        assert!(started.elapsed() < PATIENCE, "entry never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        expired_at >= ttl,
        "expired after {expired_at:?}, before its ttl"
    );
    // An expired lease can be taken again.
    kv.create(&k, Bytes::from("next holder"), Some(ttl))
        .await
        .expect("create after expiry");
    assert!(
        kv.get(&kept).await.expect("get").is_some(),
        "no ttl, no expiry"
    );
}

pub async fn list_returns_live_entries_under_a_prefix(kv: &dyn Kv) {
    let prefix = key("list");
    for name in ["b", "a", "c.deeper"] {
        kv.put(&format!("{prefix}.{name}"), Bytes::from(name), None)
            .await
            .expect("put");
    }
    kv.put(&format!("{prefix}.x"), Bytes::from("x"), None)
        .await
        .expect("put");
    kv.delete(&format!("{prefix}.x")).await.expect("delete");
    // Neither the prefix itself nor a key that only begins with the same characters.
    for other in [prefix.clone(), format!("{prefix}-other")] {
        kv.put(&other, Bytes::from("o"), None).await.expect("put");
    }
    let keys: Vec<String> = kv
        .list(&prefix)
        .await
        .expect("list")
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(
        keys,
        vec![
            format!("{prefix}.a"),
            format!("{prefix}.b"),
            format!("{prefix}.c.deeper")
        ]
    );
}

pub async fn invalid_keys_are_refused(kv: &dyn Kv) {
    for bad in [
        "",
        "has space",
        "star*",
        "ünicode",
        "slash/es",
        "a..b",
        ".lead",
        "trail.",
    ] {
        assert_eq!(
            kv.put(bad, Bytes::from("x"), None).await,
            Err(KvError::InvalidKey(bad.to_string())),
            "`{bad}` should be refused"
        );
    }
}

pub async fn ttls_are_whole_seconds(kv: &dyn Kv) {
    let k = key("ttl-whole");
    for bad in [Duration::from_millis(900), Duration::from_millis(1500)] {
        assert_eq!(
            kv.put(&k, Bytes::from("x"), Some(bad)).await,
            Err(KvError::InvalidTtl(bad))
        );
        assert_eq!(
            kv.create(&k, Bytes::from("x"), Some(bad)).await,
            Err(KvError::InvalidTtl(bad))
        );
    }
    let r = kv
        .create(&k, Bytes::from("x"), Some(Duration::from_secs(2)))
        .await
        .expect("whole seconds");
    assert_eq!(
        kv.update(&k, Bytes::from("y"), r, Some(Duration::from_millis(10)))
            .await,
        Err(KvError::InvalidTtl(Duration::from_millis(10)))
    );
}
