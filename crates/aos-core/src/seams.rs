//! The resolver: turns configuration into the node's seams — [`Bus`], [`WorkQueue`], [`Kv`] and
//! [`StateStore`] — each chosen by the scheme of its URL (`bus.url`, `kv.url`, `queue.url`,
//! `state.url`). This is the one place that names a backend; roles and the binary hold trait
//! objects only.
//!
//! | seam | `memory:` | `disk:` |
//! |---|---|---|
//! | bus | in-process | — |
//! | kv | in-process | — |
//! | queue | — | log on local disk (`[queue.disk]`) |
//! | state | in-process, gone with the process | log on local disk (`[state.disk]`) |

use std::sync::Arc;

use crate::bus::{Bus, MemoryBus};
use crate::config::CoreConfig;
use crate::kv::{Kv, MemoryKv};
use crate::metrics::Metrics;
use crate::queue::disk::DiskQueueConfig;
use crate::queue::{DiskQueue, WorkQueue};
use crate::state::{DiskState, MemoryState, StateStore};

/// The seams a node's roles share.
#[derive(Clone)]
pub struct Seams {
    pub bus: Arc<dyn Bus>,
    pub queue: Arc<dyn WorkQueue>,
    pub kv: Arc<dyn Kv>,
    pub state: Arc<dyn StateStore>,
}

#[derive(Debug, thiserror::Error)]
pub enum SeamError {
    #[error("`{key}` is `{url}`, which names no backend this build has for it: use {expected}")]
    UnknownBackend {
        key: &'static str,
        url: String,
        expected: &'static str,
    },
    #[error("cannot open the {seam} ({key} = `{url}`): {reason}")]
    Open {
        seam: &'static str,
        key: &'static str,
        url: String,
        reason: String,
    },
}

/// The scheme of a backend URL: `disk:` → `disk`, `nats://host` → `nats`.
fn scheme(url: &str) -> &str {
    url.split_once(':').map_or(url, |(scheme, _)| scheme)
}

/// Opens every seam `config` names. What was opened before a failure is closed again.
pub async fn open(config: &CoreConfig, metrics: &Metrics) -> Result<Seams, SeamError> {
    let bus = open_bus(config, metrics)?;
    let kv = open_kv(config)?;
    let queue = open_queue(config, metrics)?;
    let state = match open_state(config, metrics) {
        Ok(state) => state,
        Err(err) => {
            let _ = queue.close().await;
            return Err(err);
        }
    };
    Ok(Seams {
        bus,
        queue,
        kv,
        state,
    })
}

fn open_bus(config: &CoreConfig, metrics: &Metrics) -> Result<Arc<dyn Bus>, SeamError> {
    let url = &config.bus.url;
    match scheme(url) {
        "memory" => Ok(Arc::new(MemoryBus::new(metrics))),
        _ => Err(SeamError::UnknownBackend {
            key: "bus.url",
            url: url.clone(),
            expected: "`memory:`",
        }),
    }
}

fn open_kv(config: &CoreConfig) -> Result<Arc<dyn Kv>, SeamError> {
    let url = &config.kv.url;
    match scheme(url) {
        "memory" => Ok(Arc::new(MemoryKv::new())),
        _ => Err(SeamError::UnknownBackend {
            key: "kv.url",
            url: url.clone(),
            expected: "`memory:`",
        }),
    }
}

fn open_queue(config: &CoreConfig, metrics: &Metrics) -> Result<Arc<dyn WorkQueue>, SeamError> {
    let url = &config.queue.url;
    match scheme(url) {
        "disk" => {
            let disk = &config.queue.disk;
            let dir = config.node.dir_or_default(&disk.dir, "queue");
            let queue = DiskQueue::open(
                DiskQueueConfig {
                    dir: dir.clone(),
                    segment_bytes: disk.segment_bytes,
                    commit_delay: disk.commit_delay,
                    max_bytes: config.queue.max_bytes,
                },
                metrics,
            )
            .map_err(|err| SeamError::Open {
                seam: "work queue",
                key: "queue.url",
                url: url.clone(),
                reason: format!("{} (key `queue.disk.dir`): {err}", dir.display()),
            })?;
            Ok(Arc::new(queue))
        }
        _ => Err(SeamError::UnknownBackend {
            key: "queue.url",
            url: url.clone(),
            expected: "`disk:`",
        }),
    }
}

fn open_state(config: &CoreConfig, metrics: &Metrics) -> Result<Arc<dyn StateStore>, SeamError> {
    let url = &config.state.url;
    match scheme(url) {
        "disk" => {
            let dir = config.node.dir_or_default(&config.state.disk.dir, "state");
            let state = DiskState::open(&dir, metrics).map_err(|err| SeamError::Open {
                seam: "state store",
                key: "state.url",
                url: url.clone(),
                reason: format!("{} (key `state.disk.dir`): {err}", dir.display()),
            })?;
            Ok(Arc::new(state))
        }
        "memory" => Ok(Arc::new(MemoryState::new())),
        _ => Err(SeamError::UnknownBackend {
            key: "state.url",
            url: url.clone(),
            expected: "`disk:` or `memory:`",
        }),
    }
}

impl Seams {
    /// Makes everything written durable and closes the seams; returns what went wrong.
    pub async fn close(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(err) = self.queue.close().await {
            problems.push(format!("queue flush failed: {err}"));
        }
        if let Err(err) = self.state.close().await {
            problems.push(format!("state store flush failed: {err}"));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unknown_scheme_names_the_key_and_the_choices() {
        let mut config = CoreConfig::default();
        config.bus.url = "nats://127.0.0.1:4222".into();
        let err = open(&config, &Metrics::default())
            .await
            .err()
            .expect("refused");
        assert_eq!(
            err.to_string(),
            "`bus.url` is `nats://127.0.0.1:4222`, which names no backend this build has for it: use `memory:`"
        );
    }

    #[tokio::test]
    async fn disk_seams_open_in_the_data_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = CoreConfig::default();
        config.node.data_dir = dir.path().to_path_buf();
        let seams = open(&config, &Metrics::default()).await.expect("open");
        assert!(dir.path().join("queue").is_dir());
        assert!(dir.path().join("state").is_dir());
        assert!(seams.close().await.is_empty());
    }
}
