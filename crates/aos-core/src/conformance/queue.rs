//! Conformance cases for [`WorkQueue`] backends.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;

use super::{PATIENCE, unique};
use crate::queue::{
    QueueDepth, QueueError, QueueOptions, WorkQueue, dead_letter_queue, replay_dead_letters,
};

/// Visibility timeout used by the cases: short, so redelivery is observable quickly.
const VISIBILITY: Duration = Duration::from_millis(400);

/// Generates one test per case for the backend made by `$make`.
#[macro_export]
macro_rules! work_queue_conformance {
    ($make:expr) => {
        $crate::__conformance_cases!(
            queue,
            $crate::queue::WorkQueue,
            $make,
            [
                pushed_items_are_pulled_in_order,
                pull_waits_for_a_push,
                pull_on_an_empty_queue_returns_nothing_after_the_wait,
                acknowledged_items_are_never_delivered_again,
                unacknowledged_items_come_back_after_the_visibility_timeout,
                nack_makes_an_item_visible_again,
                nack_with_a_delay_holds_the_item_back,
                items_dead_letter_after_max_attempts,
                dead_letters_can_be_browsed_replayed_and_dropped,
                depth_counts_items_by_state,
                undeclared_and_invalid_queues_are_refused,
                competing_consumers_never_share_an_item,
                large_payloads_round_trip,
            ]
        );
    };
}

async fn declared(queue: &dyn WorkQueue, case: &str, max_attempts: u32) -> String {
    let name = unique(case);
    queue
        .declare(
            &name,
            QueueOptions {
                visibility_timeout: VISIBILITY,
                max_attempts,
            },
        )
        .await
        .expect("declare");
    name
}

fn payloads(n: usize) -> Vec<Bytes> {
    (0..n).map(|i| Bytes::from(format!("item-{i}"))).collect()
}

pub async fn pushed_items_are_pulled_in_order(queue: &dyn WorkQueue) {
    let q = declared(queue, "order", 5).await;
    let first = queue.push(&q, Bytes::from("item-0")).await.expect("push");
    let rest = queue
        .push_batch(&q, payloads(3)[1..].to_vec())
        .await
        .expect("push batch");
    let mut ids = vec![first];
    ids.extend(rest);
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        3,
        "ids are unique"
    );

    let got = queue.pull(&q, 10, PATIENCE).await.expect("pull");
    let got_payloads: Vec<Bytes> = got.iter().map(|d| d.payload.clone()).collect();
    assert_eq!(got_payloads, payloads(3));
    assert_eq!(got.iter().map(|d| d.id).collect::<Vec<_>>(), ids);
    assert!(got.iter().all(|d| d.attempt == 1));
}

pub async fn pull_waits_for_a_push(queue: &dyn WorkQueue) {
    let q = declared(queue, "wait", 5).await;
    let (pulled, pushed) = tokio::join!(queue.pull(&q, 1, PATIENCE), async {
        tokio::task::yield_now().await;
        queue.push(&q, Bytes::from("late")).await
    });
    let pushed = pushed.expect("push");
    let pulled = pulled.expect("pull");
    assert_eq!(pulled.len(), 1, "the waiting pull receives the push");
    assert_eq!(pulled[0].id, pushed);
    assert_eq!(pulled[0].payload, Bytes::from("late"));
}

pub async fn pull_on_an_empty_queue_returns_nothing_after_the_wait(queue: &dyn WorkQueue) {
    let q = declared(queue, "empty", 5).await;
    let got = queue
        .pull(&q, 5, Duration::from_millis(100))
        .await
        .expect("pull");
    assert!(got.is_empty());
}

pub async fn acknowledged_items_are_never_delivered_again(queue: &dyn WorkQueue) {
    let q = declared(queue, "ack", 5).await;
    queue.push(&q, Bytes::from("once")).await.expect("push");
    let got = queue.pull(&q, 1, PATIENCE).await.expect("pull");
    assert_eq!(got.len(), 1);
    queue.ack(&q, &[got[0].id]).await.expect("ack");
    // Acknowledging again is harmless.
    queue.ack(&q, &[got[0].id]).await.expect("second ack");
    let again = queue.pull(&q, 1, VISIBILITY * 3).await.expect("pull");
    assert!(
        again.is_empty(),
        "an acknowledged item came back: {again:?}"
    );
    assert_eq!(queue.depth(&q).await.expect("depth").total(), 0);
}

pub async fn unacknowledged_items_come_back_after_the_visibility_timeout(queue: &dyn WorkQueue) {
    let q = declared(queue, "redeliver", 5).await;
    let id = queue.push(&q, Bytes::from("retry me")).await.expect("push");
    let first = queue.pull(&q, 1, PATIENCE).await.expect("pull");
    assert_eq!((first[0].id, first[0].attempt), (id, 1));
    let hidden = queue.pull(&q, 1, Duration::ZERO).await.expect("pull");
    assert!(hidden.is_empty(), "an in-flight item is invisible");
    let second = queue.pull(&q, 1, PATIENCE).await.expect("pull");
    assert_eq!(second.len(), 1, "redelivered after the visibility timeout");
    assert_eq!((second[0].id, second[0].attempt), (id, 2));
    assert_eq!(second[0].payload, Bytes::from("retry me"));
    queue.ack(&q, &[id]).await.expect("ack");
}

pub async fn nack_makes_an_item_visible_again(queue: &dyn WorkQueue) {
    let q = declared(queue, "nack", 5).await;
    let id = queue.push(&q, Bytes::from("x")).await.expect("push");
    let first = queue.pull(&q, 1, PATIENCE).await.expect("pull");
    queue
        .nack(&q, first[0].id, Duration::ZERO)
        .await
        .expect("nack");
    let second = queue.pull(&q, 1, VISIBILITY / 2).await.expect("pull");
    assert_eq!(
        second.len(),
        1,
        "visible again before the visibility timeout"
    );
    assert_eq!((second[0].id, second[0].attempt), (id, 2));
}

pub async fn nack_with_a_delay_holds_the_item_back(queue: &dyn WorkQueue) {
    let q = declared(queue, "delay", 5).await;
    queue.push(&q, Bytes::from("later")).await.expect("push");
    let first = queue.pull(&q, 1, PATIENCE).await.expect("pull");
    let started = tokio::time::Instant::now();
    let delay = Duration::from_millis(600);
    queue.nack(&q, first[0].id, delay).await.expect("nack");
    let again = queue.pull(&q, 1, PATIENCE).await.expect("pull");
    assert_eq!(again.len(), 1);
    assert!(
        started.elapsed() >= delay,
        "delivered after {:?}, before the delay of {delay:?}",
        started.elapsed()
    );
}

pub async fn items_dead_letter_after_max_attempts(queue: &dyn WorkQueue) {
    let q = declared(queue, "dlq", 2).await;
    queue.push(&q, Bytes::from("poison")).await.expect("push");
    for attempt in 1..=2 {
        let got = queue.pull(&q, 1, PATIENCE).await.expect("pull");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].attempt, attempt);
        queue
            .nack(&q, got[0].id, Duration::ZERO)
            .await
            .expect("nack");
    }
    let dead = dead_letter_queue(&q);
    let got = queue
        .pull(&dead, 1, PATIENCE)
        .await
        .expect("pull dead letters");
    assert_eq!(got.len(), 1, "the item reached the dead-letter queue");
    assert_eq!(got[0].payload, Bytes::from("poison"));
    queue
        .ack(&dead, &[got[0].id])
        .await
        .expect("ack dead letter");
    let main = queue.pull(&q, 1, VISIBILITY * 2).await.expect("pull");
    assert!(main.is_empty(), "a dead-lettered item left its queue");
}

pub async fn dead_letters_can_be_browsed_replayed_and_dropped(queue: &dyn WorkQueue) {
    let q = declared(queue, "replay", 1).await;
    queue.push_batch(&q, payloads(3)).await.expect("push");
    let got = queue.pull(&q, 3, PATIENCE).await.expect("pull");
    assert_eq!(got.len(), 3);
    for item in &got {
        queue.nack(&q, item.id, Duration::ZERO).await.expect("nack");
    }
    let dead = dead_letter_queue(&q);
    // Moving to the dead letters is a durable write of its own: wait until all three are there.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let browsed = loop {
        let browsed = queue.browse(&dead, 10).await.expect("browse");
        if browsed.len() == 3 || tokio::time::Instant::now() > deadline {
            break browsed;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let seen: Vec<&Bytes> = browsed.iter().map(|d| &d.payload).collect();
    assert_eq!(seen, payloads(3).iter().collect::<Vec<_>>(), "oldest first");
    assert_eq!(
        queue.browse(&dead, 10).await.expect("browse again").len(),
        3,
        "browsing delivers nothing"
    );
    assert_eq!(queue.browse(&dead, 1).await.expect("browse one").len(), 1);
    let replayed = replay_dead_letters(queue, &q, &[browsed[1].id, 999_999_999])
        .await
        .expect("replay");
    assert_eq!(replayed, 1, "unknown ids are skipped");
    let again = queue.pull(&q, 3, PATIENCE).await.expect("pull replayed");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].payload, Bytes::from("item-1"));
    assert_eq!(again[0].attempt, 1, "a replayed item starts afresh");
    assert!(
        queue.browse(&q, 10).await.expect("browse").is_empty(),
        "items in flight are not browsed"
    );
    queue.ack(&dead, &[browsed[0].id]).await.expect("drop");
    let left: Vec<Bytes> = queue
        .browse(&dead, 10)
        .await
        .expect("browse")
        .into_iter()
        .map(|d| d.payload)
        .collect();
    assert_eq!(left, vec![Bytes::from("item-2")]);
}

pub async fn depth_counts_items_by_state(queue: &dyn WorkQueue) {
    let q = declared(queue, "depth", 5).await;
    queue.push_batch(&q, payloads(3)).await.expect("push");
    let got = queue.pull(&q, 1, PATIENCE).await.expect("pull");
    let depth = queue.depth(&q).await.expect("depth");
    assert_eq!(
        (depth.ready, depth.in_flight, depth.delayed.unwrap_or(0)),
        (2, 1, 0)
    );
    queue
        .nack(&q, got[0].id, Duration::from_secs(60))
        .await
        .expect("nack");
    // A backend that tells delayed items apart counts it there; one that does not still holds
    // it for its consumer, as in flight (JetStream).
    let depth = queue.depth(&q).await.expect("depth");
    let expected = match depth.delayed {
        Some(_) => QueueDepth {
            ready: 2,
            in_flight: 0,
            delayed: Some(1),
        },
        None => QueueDepth {
            ready: 2,
            in_flight: 1,
            delayed: None,
        },
    };
    assert_eq!(depth, expected);
}

pub async fn undeclared_and_invalid_queues_are_refused(queue: &dyn WorkQueue) {
    let missing = unique("never-declared");
    assert!(matches!(
        queue.push(&missing, Bytes::from("x")).await,
        Err(QueueError::NotDeclared(_))
    ));
    assert!(matches!(
        queue.pull(&missing, 1, Duration::ZERO).await,
        Err(QueueError::NotDeclared(_))
    ));
    for bad in ["", "has space", "slash/name", &"x".repeat(65)] {
        assert!(
            matches!(
                queue.declare(bad, QueueOptions::default()).await,
                Err(QueueError::InvalidName(_))
            ),
            "`{bad}` should be refused"
        );
    }
}

pub async fn competing_consumers_never_share_an_item(queue: &dyn WorkQueue) {
    let q = declared(queue, "compete", 5).await;
    let total = 200;
    queue.push_batch(&q, payloads(total)).await.expect("push");
    let consume = || async {
        let mut seen = Vec::new();
        loop {
            let got = queue
                .pull(&q, 7, Duration::from_millis(200))
                .await
                .expect("pull");
            if got.is_empty() {
                return seen;
            }
            let ids: Vec<u64> = got.iter().map(|d| d.id).collect();
            queue.ack(&q, &ids).await.expect("ack");
            seen.extend(got.into_iter().map(|d| d.payload));
        }
    };
    let (a, b) = tokio::join!(consume(), consume());
    let all: Vec<Bytes> = a.iter().chain(b.iter()).cloned().collect();
    let unique_items: HashSet<Bytes> = all.iter().cloned().collect();
    assert_eq!(all.len(), total, "every item delivered exactly once");
    assert_eq!(unique_items.len(), total);
}

pub async fn large_payloads_round_trip(queue: &dyn WorkQueue) {
    let q = declared(queue, "large", 5).await;
    let big: Bytes = (0..1024 * 1024)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    queue.push(&q, big.clone()).await.expect("push");
    let got = queue.pull(&q, 1, PATIENCE).await.expect("pull");
    assert_eq!(got[0].payload, big);
}
