//! `aos-seams`: the resolver. It turns configuration into a node's seams — [`Bus`],
//! [`WorkQueue`], [`Kv`] and [`StateStore`] — each chosen by the scheme of its URL (`bus.url`,
//! `kv.url`, `queue.url`, `state.url`). This is the one place that names a backend; roles and
//! the binary hold trait objects only.
//!
//! | seam | `memory:` | `disk:` | `nats:` (`[cluster]`) |
//! |---|---|---|---|
//! | bus | in-process | — | NATS core subjects |
//! | kv | in-process | — | a JetStream key-value bucket |
//! | queue | — | log on local disk (`[queue.disk]`) | JetStream work-queue streams |
//! | state | in-process, gone with the process | log on local disk (`[state.disk]`) | a JetStream key-value bucket all nodes share |
//!
//! The seams on NATS share one connection to `cluster.nats_url`.

use std::sync::Arc;

use aos_core::bus::{Bus, MemoryBus};
use aos_core::config::CoreConfig;
use aos_core::kv::{Kv, MemoryKv};
use aos_core::metrics::Metrics;
use aos_core::queue::disk::DiskQueueConfig;
use aos_core::queue::{DiskQueue, WorkQueue};
use aos_core::state::{DiskState, MemoryState, StateStore};
use aos_nats::{JetStreamKv, JetStreamQueue, JetStreamState, Nats, NatsBus};

/// The seams a node's roles share.
#[derive(Clone)]
pub struct Seams {
    pub bus: Arc<dyn Bus>,
    pub queue: Arc<dyn WorkQueue>,
    pub kv: Arc<dyn Kv>,
    pub state: Arc<dyn StateStore>,
    /// The NATS connection, when a seam is on NATS.
    nats: Option<Nats>,
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
    #[error("{0}")]
    Nats(#[from] aos_nats::ConnectError),
}

impl SeamError {
    /// Whether the operator must change the configuration (rather than a service being down).
    pub fn is_configuration(&self) -> bool {
        matches!(
            self,
            SeamError::UnknownBackend { .. } | SeamError::Nats(aos_nats::ConnectError::NoServer)
        )
    }
}

/// The scheme of a backend URL: `disk:` → `disk`, `nats://host` → `nats`.
fn scheme(url: &str) -> &str {
    url.split_once(':').map_or(url, |(scheme, _)| scheme)
}

/// Opens every seam `config` names, for node `node_id`. What was opened before a failure is
/// closed again.
pub async fn open(
    config: &CoreConfig,
    node_id: &str,
    metrics: &Metrics,
) -> Result<Seams, SeamError> {
    check_schemes(config)?;
    let on_nats = [
        &config.bus.url,
        &config.kv.url,
        &config.queue.url,
        &config.state.url,
    ]
    .iter()
    .any(|url| scheme(url) == "nats");
    let nats = if on_nats {
        Some(Nats::connect(&config.cluster, node_id).await?)
    } else {
        None
    };
    let bus: Arc<dyn Bus> = match &nats {
        Some(nats) if scheme(&config.bus.url) == "nats" => Arc::new(NatsBus::new(nats.clone())),
        _ => Arc::new(MemoryBus::new(metrics)),
    };
    let kv: Arc<dyn Kv> = match &nats {
        Some(nats) if scheme(&config.kv.url) == "nats" => Arc::new(
            JetStreamKv::open(nats.clone())
                .await
                .map_err(|err| SeamError::Open {
                    seam: "key-value store",
                    key: "kv.url",
                    url: config.kv.url.clone(),
                    reason: err.to_string(),
                })?,
        ),
        _ => Arc::new(MemoryKv::new()),
    };
    let queue = open_queue(config, nats.as_ref(), metrics)?;
    let state = match open_state(config, nats.as_ref(), metrics).await {
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
        nats,
    })
}

/// Every URL names a backend this build has for its seam.
fn check_schemes(config: &CoreConfig) -> Result<(), SeamError> {
    let seams: [(&'static str, &String, &[&str], &'static str); 4] = [
        (
            "bus.url",
            &config.bus.url,
            &["memory", "nats"],
            "`memory:` or `nats:`",
        ),
        (
            "kv.url",
            &config.kv.url,
            &["memory", "nats"],
            "`memory:` or `nats:`",
        ),
        (
            "queue.url",
            &config.queue.url,
            &["disk", "nats"],
            "`disk:` or `nats:`",
        ),
        (
            "state.url",
            &config.state.url,
            &["disk", "memory", "nats"],
            "`disk:`, `memory:` or `nats:`",
        ),
    ];
    for (key, url, known, expected) in seams {
        if !known.contains(&scheme(url)) {
            return Err(SeamError::UnknownBackend {
                key,
                url: url.clone(),
                expected,
            });
        }
    }
    Ok(())
}

fn open_queue(
    config: &CoreConfig,
    nats: Option<&Nats>,
    metrics: &Metrics,
) -> Result<Arc<dyn WorkQueue>, SeamError> {
    let url = &config.queue.url;
    if let (Some(nats), "nats") = (nats, scheme(url)) {
        return Ok(Arc::new(JetStreamQueue::new(
            nats.clone(),
            config.queue.max_bytes,
        )));
    }
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

async fn open_state(
    config: &CoreConfig,
    nats: Option<&Nats>,
    metrics: &Metrics,
) -> Result<Arc<dyn StateStore>, SeamError> {
    let url = &config.state.url;
    match (scheme(url), nats) {
        ("memory", _) => return Ok(Arc::new(MemoryState::new())),
        ("nats", Some(nats)) => {
            let state =
                JetStreamState::open(nats.clone())
                    .await
                    .map_err(|err| SeamError::Open {
                        seam: "state store",
                        key: "state.url",
                        url: url.clone(),
                        reason: err.to_string(),
                    })?;
            return Ok(Arc::new(state));
        }
        _ => {}
    }
    let dir = config.node.dir_or_default(&config.state.disk.dir, "state");
    let state = DiskState::open(&dir, metrics).map_err(|err| SeamError::Open {
        seam: "state store",
        key: "state.url",
        url: url.clone(),
        reason: format!("{} (key `state.disk.dir`): {err}", dir.display()),
    })?;
    Ok(Arc::new(state))
}

/// The key-value store the nodes share, for a program outside them (the CLI): on NATS; an
/// in-process store is no node's but its own (`None`).
pub async fn shared_kv(config: &CoreConfig, name: &str) -> Result<Option<Arc<dyn Kv>>, SeamError> {
    if scheme(&config.kv.url) != "nats" {
        return Ok(None);
    }
    let nats = Nats::connect(&config.cluster, name).await?;
    let kv = JetStreamKv::open(nats)
        .await
        .map_err(|err| SeamError::Open {
            seam: "key-value store",
            key: "kv.url",
            url: config.kv.url.clone(),
            reason: err.to_string(),
        })?;
    Ok(Some(Arc::new(kv)))
}

/// Announces a change made outside a node (the CLI) to the nodes sharing the bus — on NATS;
/// an in-process bus reaches no running node, whose caches age instead.
pub async fn announce_change(config: &CoreConfig, name: &str) -> Result<(), SeamError> {
    if scheme(&config.bus.url) != "nats" {
        return Ok(());
    }
    let nats = Nats::connect(&config.cluster, name).await?;
    aos_core::changes::announce(&NatsBus::new(nats.clone())).await;
    nats.flush().await;
    Ok(())
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
        if let Some(nats) = &self.nats {
            nats.flush().await;
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use aos_core::config::Settings;
    use figment::Figment;
    use figment::providers::Serialized;

    use super::*;

    fn config(pairs: &[(&str, &str)]) -> CoreConfig {
        let figment = pairs.iter().fold(Figment::new(), |f, (k, v)| {
            f.merge(Serialized::default(k, v))
        });
        Settings::from_figment(figment, None)
            .expect("settings")
            .core()
            .clone()
    }

    #[tokio::test]
    async fn an_unknown_scheme_names_the_key_and_the_choices() {
        let err = open(
            &config(&[("bus.url", "amqp://127.0.0.1")]),
            "n",
            &Metrics::default(),
        )
        .await
        .err()
        .expect("refused");
        assert!(err.is_configuration());
        assert_eq!(
            err.to_string(),
            "`bus.url` is `amqp://127.0.0.1`, which names no backend this build has for it: use `memory:` or `nats:`"
        );
    }

    #[tokio::test]
    async fn distributed_mode_needs_a_nats_server() {
        let err = open(
            &config(&[("cluster.mode", "distributed")]),
            "n",
            &Metrics::default(),
        )
        .await
        .err()
        .expect("refused");
        assert!(err.is_configuration());
        assert!(err.to_string().contains("cluster.nats_url"), "{err}");
    }

    #[tokio::test]
    async fn disk_seams_open_in_the_data_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().display().to_string();
        let seams = open(
            &config(&[("node.data_dir", &data)]),
            "n",
            &Metrics::default(),
        )
        .await
        .expect("open");
        assert!(dir.path().join("queue").is_dir());
        assert!(dir.path().join("state").is_dir());
        assert!(seams.close().await.is_empty());
    }

    #[tokio::test]
    async fn distributed_seams_open_on_nats() {
        let Some(servers) = aos_nats::testing::NatsServers::single() else {
            return;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().display().to_string();
        let url = servers.url();
        let seams = open(
            &config(&[
                ("node.data_dir", &data),
                ("cluster.mode", "distributed"),
                ("cluster.nats_url", &url),
            ]),
            "n",
            &Metrics::default(),
        )
        .await
        .expect("open");
        seams
            .queue
            .declare("q", Default::default())
            .await
            .expect("a JetStream queue");
        assert!(
            !dir.path().join("queue").exists(),
            "no disk queue in distributed mode"
        );
        assert!(seams.close().await.is_empty());
    }
}
