//! Properties of the embedded queue beyond the shared suite: what survives a restart, how the log
//! stays small, and back-pressure.

use std::path::Path;
use std::time::Duration;

use aos_core::metrics::Metrics;
use aos_core::queue::disk::DiskQueueConfig;
use aos_core::queue::{DiskQueue, QueueError, QueueOptions, WorkQueue, dead_letter_queue};
use bytes::Bytes;

fn open(config: DiskQueueConfig) -> DiskQueue {
    DiskQueue::open(config, &Metrics::default()).expect("open queue")
}

async fn declare(queue: &DiskQueue, name: &str) {
    queue
        .declare(
            name,
            QueueOptions {
                visibility_timeout: Duration::from_secs(30),
                max_attempts: 3,
            },
        )
        .await
        .expect("declare");
}

fn segments(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .expect("read dir")
        .filter(|e| {
            e.as_ref()
                .map(|e| e.path().extension().is_some_and(|x| x == "seg"))
                .unwrap_or(false)
        })
        .count()
}

#[tokio::test]
async fn pending_items_survive_a_restart_and_acknowledged_ones_do_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = DiskQueueConfig::new(dir.path());
    let (kept, attempts_before) = {
        let queue = open(config.clone());
        declare(&queue, "jobs").await;
        let ids = queue
            .push_batch(
                "jobs",
                (0..5).map(|i| Bytes::from(format!("job-{i}"))).collect(),
            )
            .await
            .expect("push");
        let got = queue.pull("jobs", 2, Duration::ZERO).await.expect("pull");
        queue.ack("jobs", &[got[0].id]).await.expect("ack");
        // got[1] stays in flight: after a restart it must be delivered again.
        queue.close().await.expect("close");
        (ids[1..].to_vec(), got[1].attempt)
    };
    let queue = open(config);
    declare(&queue, "jobs").await;
    let got = queue.pull("jobs", 10, Duration::ZERO).await.expect("pull");
    let ids: Vec<u64> = got.iter().map(|d| d.id).collect();
    assert_eq!(ids, kept, "unacknowledged items come back in order");
    assert_eq!(got[0].payload, Bytes::from("job-1"));
    assert_eq!(
        got[0].attempt,
        attempts_before + 1,
        "attempts are remembered"
    );
    // New ids never reuse old ones.
    let fresh = queue.push("jobs", Bytes::from("new")).await.expect("push");
    assert!(fresh > *kept.last().expect("ids"));
}

#[tokio::test]
async fn drained_segments_are_deleted_and_sparse_ones_compacted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = DiskQueueConfig::new(dir.path());
    config.segment_bytes = 64 * 1024;
    let queue = open(config.clone());
    declare(&queue, "bulk").await;
    let payload = Bytes::from(vec![7u8; 1024]);
    // One item that is never acknowledged, then enough traffic to roll over many segments.
    let stuck = queue
        .push("bulk", Bytes::from("stuck"))
        .await
        .expect("push");
    let first = queue.pull("bulk", 1, Duration::ZERO).await.expect("pull");
    assert_eq!(first[0].id, stuck);
    for _ in 0..20 {
        queue
            .push_batch("bulk", vec![payload.clone(); 32])
            .await
            .expect("push");
        let got = queue.pull("bulk", 32, Duration::ZERO).await.expect("pull");
        let ids: Vec<u64> = got.iter().map(|d| d.id).collect();
        queue.ack("bulk", &ids).await.expect("ack");
    }
    queue.flush().await.expect("flush");
    let pushed = 20 * 32 * 1024;
    assert!(
        segments(dir.path()) <= 3,
        "{} segments remain for a log that wrote {} KiB through 64 KiB segments",
        segments(dir.path()),
        pushed / 1024
    );
    queue.close().await.expect("close");
    drop(queue);

    // The stuck item was copied forward, not lost.
    let queue = open(config);
    declare(&queue, "bulk").await;
    let got = queue.pull("bulk", 10, Duration::ZERO).await.expect("pull");
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].id, got[0].payload.clone()),
        (stuck, Bytes::from("stuck"))
    );
}

#[tokio::test]
async fn a_torn_tail_is_ignored_on_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = DiskQueueConfig::new(dir.path());
    {
        let queue = open(config.clone());
        declare(&queue, "t").await;
        queue.push("t", Bytes::from("whole")).await.expect("push");
        queue.close().await.expect("close");
    }
    // A crash in the middle of a write leaves half a record at the end of the newest segment.
    let newest = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .max()
        .expect("a segment");
    let mut data = std::fs::read(&newest).expect("read");
    data.extend_from_slice(&[40, 0, 0, 0, 1, 2, 3, 4, 1, 9]);
    std::fs::write(&newest, data).expect("write");

    let queue = open(config);
    declare(&queue, "t").await;
    let got = queue.pull("t", 10, Duration::ZERO).await.expect("pull");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload, Bytes::from("whole"));
    queue
        .push("t", Bytes::from("after"))
        .await
        .expect("the queue keeps working");
}

#[tokio::test]
async fn pushes_beyond_the_byte_limit_are_refused_until_consumers_catch_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = DiskQueueConfig::new(dir.path());
    config.max_bytes = 10_000;
    let queue = open(config);
    declare(&queue, "small").await;
    queue
        .push("small", Bytes::from(vec![0u8; 8_000]))
        .await
        .expect("fits");
    assert!(matches!(
        queue.push("small", Bytes::from(vec![0u8; 4_000])).await,
        Err(QueueError::Full(_))
    ));
    let got = queue.pull("small", 1, Duration::ZERO).await.expect("pull");
    queue.ack("small", &[got[0].id]).await.expect("ack");
    queue
        .push("small", Bytes::from(vec![0u8; 4_000]))
        .await
        .expect("room again after the ack");
}

#[tokio::test]
async fn dead_letters_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = DiskQueueConfig::new(dir.path());
    {
        let queue = open(config.clone());
        declare(&queue, "p").await;
        queue.push("p", Bytes::from("poison")).await.expect("push");
        for _ in 0..3 {
            let got = queue.pull("p", 1, Duration::ZERO).await.expect("pull");
            queue
                .nack("p", got[0].id, Duration::ZERO)
                .await
                .expect("nack");
        }
        queue.close().await.expect("close");
    }
    let queue = open(config);
    declare(&queue, "p").await;
    assert!(
        queue
            .pull("p", 1, Duration::ZERO)
            .await
            .expect("pull")
            .is_empty()
    );
    let dead = queue
        .pull(&dead_letter_queue("p"), 1, Duration::ZERO)
        .await
        .expect("pull");
    assert_eq!(dead[0].payload, Bytes::from("poison"));
}

#[tokio::test]
async fn a_second_process_cannot_open_the_same_queue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = DiskQueueConfig::new(dir.path());
    let first = open(config.clone());
    let err = DiskQueue::open(config.clone(), &Metrics::default())
        .err()
        .expect("second open must fail");
    assert!(
        err.to_string().contains("in use by another process"),
        "{err}"
    );
    first.close().await.expect("close");
    drop(first);
    open(config);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_share_fsyncs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let metrics = Metrics::default();
    let queue = std::sync::Arc::new(
        DiskQueue::open(DiskQueueConfig::new(dir.path()), &metrics).expect("open"),
    );
    declare(&queue, "group").await;
    let pushes = 1000;
    let tasks: Vec<_> = (0..50)
        .map(|t| {
            let queue = queue.clone();
            tokio::spawn(async move {
                for i in 0..pushes / 50 {
                    queue
                        .push("group", Bytes::from(format!("{t}-{i}")))
                        .await
                        .expect("push");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("pusher");
    }
    let text = metrics.render();
    let fsyncs: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("aos_queue_fsyncs_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("fsync counter");
    assert!(fsyncs > 0);
    assert!(
        fsyncs * 4 <= pushes,
        "{fsyncs} fsyncs for {pushes} concurrent pushes: group commit is not grouping"
    );
    assert_eq!(queue.depth("group").await.expect("depth").ready, pushes);
}
