//! Conformance cases for [`StateStore`] backends.

use bytes::Bytes;

use super::unique;
use crate::state::{StateChange, StateStore, StateUpdate};

/// Generates one test per case for the backend made by `$make`.
#[macro_export]
macro_rules! state_conformance {
    ($make:expr) => {
        $crate::__conformance_cases!(
            state,
            $crate::state::StateStore,
            $make,
            [
                staged_changes_are_read_at_once_in_order,
                delete_prefix_removes_only_what_it_names,
                positions_grow_and_become_durable,
                a_shared_store_tells_its_changes,
            ]
        );
    };
}

fn prefix(case: &str) -> String {
    format!("conformance.{}.", unique(case))
}

pub async fn staged_changes_are_read_at_once_in_order(state: &dyn StateStore) {
    let p = prefix("order");
    state.stage(vec![
        StateChange::put(format!("{p}b"), "1"),
        StateChange::put(format!("{p}a"), "2"),
    ]);
    state.stage(vec![
        StateChange::put(format!("{p}b"), "3"),
        StateChange::delete(format!("{p}a")),
        StateChange::put(format!("{p}c"), "4"),
    ]);
    assert_eq!(
        state.load(&p).await.expect("load"),
        vec![
            (format!("{p}b"), Bytes::from("3")),
            (format!("{p}c"), Bytes::from("4"))
        ]
    );
}

pub async fn delete_prefix_removes_only_what_it_names(state: &dyn StateStore) {
    let p = prefix("prefix");
    state.stage(vec![
        StateChange::put(format!("{p}s.1"), "a"),
        StateChange::put(format!("{p}s.2"), "b"),
        StateChange::put(format!("{p}t.1"), "c"),
    ]);
    state.stage(vec![StateChange::delete_prefix(format!("{p}s."))]);
    let left = state.load(&p).await.expect("load");
    assert_eq!(left, vec![(format!("{p}t.1"), Bytes::from("c"))]);
}

pub async fn positions_grow_and_become_durable(state: &dyn StateStore) {
    let p = prefix("durable");
    let first = state.stage(vec![StateChange::put(format!("{p}k"), "1")]);
    let second = state.stage(vec![StateChange::put(format!("{p}k"), "2")]);
    assert!(second > first, "positions grow");
    assert!(state.position() >= second);
    state.durable(second).await.expect("durable");
    state
        .durable(first)
        .await
        .expect("an earlier position is durable too");
}

/// A shared store tells the changes under a watched prefix (to its own node too), deletions as
/// `None`; a store of one node's own has nothing to tell.
pub async fn a_shared_store_tells_its_changes(state: &dyn StateStore) {
    let p = prefix("watch");
    let watch = state.watch(&p).await.expect("watch");
    let Some(mut updates) = watch else {
        assert!(!state.shared(), "a shared store can be watched");
        return;
    };
    assert!(state.shared());
    let key = format!("{p}a b");
    state.stage(vec![
        StateChange::put(format!("other.{p}x"), "not watched"),
        StateChange::put(&key, "1"),
    ]);
    let put = StateUpdate {
        key: key.clone(),
        value: Some(Bytes::from("1")),
    };
    assert_eq!(told(&mut updates).await, put);
    state.stage(vec![StateChange::delete(&key)]);
    assert_eq!(told(&mut updates).await, StateUpdate { key, value: None });
}

async fn told(updates: &mut tokio::sync::mpsc::Receiver<StateUpdate>) -> StateUpdate {
    tokio::time::timeout(std::time::Duration::from_secs(10), updates.recv())
        .await
        .expect("told within 10 s")
        .expect("still watching")
}
