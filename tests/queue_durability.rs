//! An item whose push returned `Ok` survives `kill -9` of the process that pushed it, and is
//! delivered after restart.
//!
//! The pushing process is this test binary run again as a helper (the ignored test below): it
//! pushes from many tasks at once and reports each acknowledged push on stdout; the test kills it
//! with SIGKILL in the middle of the stream, reopens the queue and looks for every reported item.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use aos_core::Metrics;
use aos_core::queue::disk::DiskQueueConfig;
use aos_core::queue::{DiskQueue, QueueOptions, WorkQueue};

const DIR_ENV: &str = "AOS_TEST_PUSHER_DIR";
const QUEUE: &str = "durable";

fn options() -> QueueOptions {
    QueueOptions {
        visibility_timeout: Duration::from_secs(30),
        max_attempts: 5,
    }
}

#[test]
#[ignore = "helper process for acknowledged_pushes_survive_kill_9"]
fn pusher_process() {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let queue = std::sync::Arc::new(
            DiskQueue::open(DiskQueueConfig::new(dir), &Metrics::default()).expect("open"),
        );
        queue.declare(QUEUE, options()).await.expect("declare");
        let tasks: Vec<_> = (0..16)
            .map(|task| {
                let queue = queue.clone();
                tokio::spawn(async move {
                    for i in 0.. {
                        let payload = format!("{task}-{i}");
                        queue
                            .push(QUEUE, payload.clone().into())
                            .await
                            .expect("push");
                        // Reported only after push returned Ok: the item is promised durable.
                        println!("acked {payload}");
                    }
                })
            })
            .collect();
        for task in tasks {
            let _ = task.await;
        }
    });
}

#[test]
fn acknowledged_pushes_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "pusher_process",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DIR_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn pusher");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut acked = HashSet::new();
    for line in lines.by_ref() {
        let line = line.expect("line");
        if let Some(payload) = line.strip_prefix("acked ") {
            acked.insert(payload.to_string());
            if acked.len() >= 3000 {
                break;
            }
        }
    }
    // SAFETY: killing our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    // Lines already written before the kill are still in the pipe: they were acknowledged too.
    for line in lines.map_while(Result::ok) {
        if let Some(payload) = line.strip_prefix("acked ") {
            acked.insert(payload.to_string());
        }
    }
    let status = child.wait().expect("wait");
    assert!(!status.success(), "the pusher was killed, not finished");

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let queue = DiskQueue::open(DiskQueueConfig::new(dir.path()), &Metrics::default())
            .expect("reopen after kill -9");
        queue.declare(QUEUE, options()).await.expect("declare");
        let mut found = HashSet::new();
        loop {
            let batch = queue.pull(QUEUE, 1000, Duration::ZERO).await.expect("pull");
            if batch.is_empty() {
                break;
            }
            for item in batch {
                let payload = String::from_utf8(item.payload.to_vec()).expect("intact payload");
                assert!(found.insert(payload), "an item was recovered twice");
            }
        }
        let lost: Vec<&String> = acked.difference(&found).collect();
        assert!(
            lost.is_empty(),
            "{} of {} acknowledged items lost, e.g. {:?}",
            lost.len(),
            acked.len(),
            lost.iter().take(5).collect::<Vec<_>>()
        );
        assert!(found.len() >= acked.len());
    });
}
