//! The NATS backends pass the shared conformance suite, against a real NATS server with
//! JetStream (the test server of `aos_nats::testing`, one per case, each with its own prefix).

use aos_core::bus::Bus;
use aos_core::config::ClusterConfig;
use aos_core::kv::Kv;
use aos_core::queue::WorkQueue;
use aos_core::state::StateStore;
use aos_nats::testing::NatsServers;
use aos_nats::{JetStreamKv, JetStreamQueue, JetStreamState, Nats, NatsBus};

/// A backend and the server it runs on (stopped with it).
struct Fixture<T: ?Sized> {
    backend: Box<T>,
    _servers: NatsServers,
}

impl<T: ?Sized> AsRef<T> for Fixture<T> {
    fn as_ref(&self) -> &T {
        &self.backend
    }
}

async fn connect() -> Option<(Nats, NatsServers)> {
    let servers = NatsServers::single()?;
    let config = ClusterConfig {
        nats_url: servers.urls.clone(),
        ..ClusterConfig::default()
    };
    let nats = Nats::connect(&config, "conformance")
        .await
        .expect("connect to the test server");
    Some((nats, servers))
}

macro_rules! fixture {
    ($name:ident, $trait:path, $make:expr) => {
        /// `None`: no test server (the test is skipped, loudly).
        async fn $name() -> Option<Fixture<dyn $trait>> {
            let (nats, servers) = connect().await?;
            let make = $make;
            Some(Fixture {
                backend: make(nats).await,
                _servers: servers,
            })
        }
    };
}

fixture!(queue, WorkQueue, |nats: Nats| async move {
    Box::new(JetStreamQueue::new(nats, 64 * 1024 * 1024)) as Box<dyn WorkQueue>
});
fixture!(kv, Kv, |nats: Nats| async move {
    Box::new(JetStreamKv::open(nats).await.expect("bucket")) as Box<dyn Kv>
});
fixture!(state, StateStore, |nats: Nats| async move {
    Box::new(JetStreamState::open(nats).await.expect("bucket")) as Box<dyn StateStore>
});
fixture!(bus, Bus, |nats: Nats| async move {
    Box::new(NatsBus::new(nats)) as Box<dyn Bus>
});

mod jetstream_queue {
    use super::*;
    aos_core::work_queue_conformance!(queue);
}

mod jetstream_kv {
    use super::*;
    aos_core::kv_conformance!(kv);
}

mod nats_bus {
    use super::*;
    aos_core::bus_conformance!(bus);
}

mod jetstream_state {
    use super::*;
    aos_core::state_conformance!(state);
}
