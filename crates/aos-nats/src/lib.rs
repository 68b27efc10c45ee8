//! `aos-nats`: the `aos-core` seams on NATS, for nodes that share a deployment.
//!
//! - [`NatsBus`]: the [`aos_core::Bus`] on NATS core subjects (`<prefix>.<subject>`), queue
//!   groups where one of many must take a message;
//! - [`JetStreamQueue`]: the [`aos_core::WorkQueue`] on JetStream — one work-queue stream per
//!   queue, one durable pull consumer shared by every node, dead letters moved by AOS;
//! - [`JetStreamKv`]: the [`aos_core::Kv`] on a JetStream key-value bucket with per-key TTL;
//! - [`JetStreamState`]: the [`aos_core::state::StateStore`] on a second bucket, shared by the
//!   nodes (a broker's sessions and retained messages, which any node may take over).
//!
//! All four share one connection ([`Nats`]). They need NATS server 2.11 or later (per-message
//! TTL), with JetStream enabled.

mod bus;
mod kv;
mod names;
mod queue;
mod state;
#[cfg(feature = "testing")]
pub mod testing;

pub use bus::NatsBus;
pub use kv::JetStreamKv;
pub use queue::JetStreamQueue;
pub use state::JetStreamState;

use std::time::Duration;

use aos_core::config::ClusterConfig;
use async_nats::{Event, jetstream};

/// How long a starting node waits for JetStream to answer.
const JETSTREAM_PATIENCE: Duration = Duration::from_secs(30);

/// Runs `attempt` until it succeeds, for up to [`JETSTREAM_PATIENCE`]: what a NATS cluster that
/// lost a server answers while it elects new leaders (time-outs) is waited out.
pub(crate) async fn patiently<T, E: std::fmt::Display, F: Future<Output = Result<T, E>>>(
    what: &str,
    mut attempt: impl FnMut() -> F,
) -> Result<T, E> {
    let deadline = tokio::time::Instant::now() + JETSTREAM_PATIENCE;
    loop {
        match attempt().await {
            Ok(done) => return Ok(done),
            Err(err) if tokio::time::Instant::now() >= deadline => return Err(err),
            Err(err) => {
                tracing::warn!(%err, "{what}: not yet; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// How long the marker an expired or deleted key leaves in a bucket is kept (the least
/// JetStream takes).
pub(crate) const MARKER_TTL: Duration = Duration::from_secs(1);

/// One connection to the deployment's NATS, shared by the seams of a node.
#[derive(Clone)]
pub struct Nats {
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    /// Names this deployment's subjects, streams and bucket.
    pub(crate) prefix: String,
    pub(crate) replicas: usize,
    /// See [`aos_core::Bus::gaps`].
    pub(crate) gaps: tokio::sync::watch::Receiver<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "no NATS server is configured: set `cluster.nats_url` (environment variable AOS_CLUSTER__NATS_URL)"
    )]
    NoServer,
    #[error("cannot read the NATS credentials file {path}: {error}")]
    Credentials { path: String, error: String },
    #[error("cannot connect to NATS at {urls}: {error}")]
    Connect { urls: String, error: String },
    #[error(
        "NATS at {urls} has no JetStream ({error}); AOS needs NATS server 2.11 or later with JetStream enabled"
    )]
    NoJetStream { urls: String, error: String },
}

impl Nats {
    /// The key-value bucket `name`, created on first use: one value per key, with markers for
    /// deleted and expired keys that go after [`MARKER_TTL`] (per-message TTL).
    pub(crate) async fn key_value(
        &self,
        name: String,
    ) -> Result<jetstream::kv::Store, async_nats::Error> {
        if let Ok(store) = self.js.get_key_value(&name).await {
            return Ok(store);
        }
        Ok(self
            .js
            .create_key_value(jetstream::kv::Config {
                bucket: name,
                history: 1,
                num_replicas: self.replicas,
                limit_markers: Some(MARKER_TTL),
                ..Default::default()
            })
            .await?)
    }

    /// Connects to the servers of `config` as node `name` and checks that JetStream answers.
    pub async fn connect(config: &ClusterConfig, name: &str) -> Result<Nats, ConnectError> {
        if config.nats_url.is_empty() {
            return Err(ConnectError::NoServer);
        }
        let urls = config.nats_url.join(",");
        let (gap, gaps) = tokio::sync::watch::channel(0u64);
        let mut options = async_nats::ConnectOptions::new()
            .name(format!("aos {name}"))
            .connection_timeout(Duration::from_secs(5))
            .event_callback(move |event| {
                match &event {
                    // (The first connection too: a receiver taken after it never sees that one.)
                    Event::Connected => {
                        tracing::info!("connected to NATS");
                        gap.send_modify(|n| *n += 1);
                    }
                    Event::SlowConsumer(_) => {
                        tracing::warn!("NATS dropped messages this node did not take in time");
                        gap.send_modify(|n| *n += 1);
                    }
                    Event::Disconnected => {
                        tracing::warn!("disconnected from NATS; connecting again");
                    }
                    other => tracing::info!(event = %other, "NATS connection"),
                }
                std::future::ready(())
            });
        if !config.nats_user.is_empty() {
            options =
                options.user_and_password(config.nats_user.clone(), config.nats_password.clone());
        }
        if !config.nats_token.is_empty() {
            options = options.token(config.nats_token.clone());
        }
        if !config.nats_credentials.as_os_str().is_empty() {
            options = options
                .credentials_file(&config.nats_credentials)
                .await
                .map_err(|err| ConnectError::Credentials {
                    path: config.nats_credentials.display().to_string(),
                    error: err.to_string(),
                })?;
        }
        if !config.nats_tls_ca.as_os_str().is_empty() {
            options = options
                .add_root_certificates(config.nats_tls_ca.clone())
                .require_tls(true);
        }
        let client = options
            .connect(config.nats_url.clone())
            .await
            .map_err(|err| ConnectError::Connect {
                urls: urls.clone(),
                error: err.to_string(),
            })?;
        let js = jetstream::new(client.clone());
        patiently("JetStream answers", || js.query_account())
            .await
            .map_err(|err| ConnectError::NoJetStream {
                urls,
                error: err.to_string(),
            })?;
        Ok(Nats {
            client,
            js,
            prefix: config.prefix.clone(),
            replicas: config.replicas,
            gaps,
        })
    }

    /// Sends what is buffered (acknowledgements included) to the server.
    pub async fn flush(&self) {
        if let Err(err) = self.client.flush().await {
            tracing::warn!(%err, "flushing the NATS connection failed");
        }
    }
}
