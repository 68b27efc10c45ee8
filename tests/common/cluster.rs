//! Several `aos` processes that form one distributed deployment: a test NATS (one server, or
//! three in a cluster) and a PostgreSQL database of their own (created for the test, dropped
//! after it), with a prefix of their own, so tests run in parallel.

use std::path::Path;
use std::sync::Mutex;

use aos_nats::testing::NatsServers;
use sea_orm::{ConnectionTrait, Database};

use super::{Aos, AosProcess};

/// The deployment's shared services; each node gets its own data directory.
pub struct Shared {
    pub nats: NatsServers,
    /// The test's own database.
    pub database_url: String,
    admin_url: String,
    database: String,
    pub prefix: String,
    dirs: Mutex<Vec<tempfile::TempDir>>,
}

/// Runs `f` on a runtime of its own (the tests call this from their own async context).
fn blocking<T: Send + 'static>(f: impl Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f)
    })
    .join()
    .expect("database set-up")
}

/// `postgres://u@h:p/db?x` with another database name.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let base = base.rsplit_once('/').map_or(base, |(server, _)| server);
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

impl Shared {
    /// One NATS server; `None` (after a loud message) when NATS or PostgreSQL is missing
    /// outside CI.
    pub fn start() -> Option<Shared> {
        Shared::with(NatsServers::single()?)
    }

    /// A 3-server NATS cluster.
    pub fn start_replicated() -> Option<Shared> {
        Shared::with(NatsServers::cluster()?)
    }

    fn with(nats: NatsServers) -> Option<Shared> {
        let admin_url = aos_storage::testing::test_database_url();
        let database = aos_core::conformance::unique("aos_cluster").replace('-', "_");
        let created = {
            let (url, name) = (admin_url.clone(), database.clone());
            blocking(async move {
                let db = Database::connect(&url).await?;
                db.execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                    .await?;
                db.close().await
            })
        };
        if let Err(err) = created {
            aos_core::conformance::service_unavailable(
                "PostgreSQL",
                aos_storage::testing::TEST_DATABASE_URL_ENV,
                &admin_url,
                &err,
            );
            return None;
        }
        Some(Shared {
            database_url: with_database(&admin_url, &database),
            prefix: aos_core::conformance::unique("t").replace('-', "_"),
            nats,
            admin_url,
            database,
            dirs: Mutex::new(Vec::new()),
        })
    }

    /// `aos ARGS` as a node (or the CLI) of this deployment, in a new data directory.
    pub fn aos(&self, args: &[&str]) -> Aos {
        let dir = tempfile::tempdir().expect("tempdir");
        let aos = self.configure(Aos::new(dir.path(), args));
        self.dirs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(dir);
        aos
    }

    fn configure(&self, aos: Aos) -> Aos {
        aos.env("AOS_CLUSTER__MODE", "distributed")
            .env("AOS_CLUSTER__NATS_URL", self.nats.url())
            .env("AOS_CLUSTER__PREFIX", &self.prefix)
            .env("AOS_STORAGE__URL", &self.database_url)
            .env("AOS_ADMIN_PASSWORD", super::api::PASSWORD)
            .env("AOS_NODE__HEARTBEAT_INTERVAL", "1s")
    }

    /// Starts a node running `roles` (comma-separated) and waits until it is ready.
    pub fn node(&self, roles: &str) -> AosProcess {
        let mut node = self.aos(&["run", "--roles", roles]).spawn();
        node.wait_ready();
        node
    }

    /// Runs a management command against the shared database; returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let (status, out, err) = self.aos(args).output();
        assert!(status.success(), "aos {args:?} failed: {err}");
        out
    }

    /// Which server (its index) leads the stream of work queue `queue`: the one whose loss a
    /// replicated queue must survive.
    pub async fn queue_leader(&self, queue: &str) -> usize {
        let client = async_nats::connect(self.nats.urls.clone())
            .await
            .expect("connect to the test NATS");
        let js = async_nats::jetstream::new(client);
        let name = format!("{}_Q_{queue}", self.prefix.to_ascii_uppercase());
        let mut stream = js.get_stream(&name).await.expect("the queue's stream");
        let info = stream.info().await.expect("stream info");
        let leader = info
            .cluster
            .as_ref()
            .and_then(|c| c.leader.clone())
            .expect("a leader");
        leader
            .trim_start_matches('n')
            .parse()
            .expect("servers are named n0, n1, n2")
    }

    /// The shared database, for checking what the nodes stored.
    pub async fn storage(&self) -> aos_storage::Storage {
        aos_storage::Storage::connect(
            &aos_storage::StorageConfig {
                url: self.database_url.clone(),
                ..Default::default()
            },
            Path::new("."),
        )
        .await
        .expect("the test database")
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let (url, name) = (self.admin_url.clone(), self.database.clone());
        let _ = blocking(async move {
            let db = Database::connect(&url).await?;
            db.execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await?;
            db.close().await
        });
    }
}
