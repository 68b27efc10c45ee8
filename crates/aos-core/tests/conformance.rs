//! The embedded backends pass the shared conformance suite.

use std::sync::Arc;

use aos_core::bus::{Bus, MemoryBus};
use aos_core::kv::{Kv, MemoryKv};
use aos_core::metrics::Metrics;
use aos_core::queue::disk::DiskQueueConfig;
use aos_core::queue::{DiskQueue, WorkQueue};
use aos_core::state::{DiskState, MemoryState, StateStore};

struct DiskFixture {
    queue: DiskQueue,
    _dir: tempfile::TempDir,
}

impl AsRef<dyn WorkQueue> for DiskFixture {
    fn as_ref(&self) -> &(dyn WorkQueue + 'static) {
        &self.queue
    }
}

async fn disk_queue() -> Option<DiskFixture> {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue =
        DiskQueue::open(DiskQueueConfig::new(dir.path()), &Metrics::default()).expect("open");
    Some(DiskFixture { queue, _dir: dir })
}

struct StateFixture {
    state: DiskState,
    _dir: tempfile::TempDir,
}

impl AsRef<dyn StateStore> for StateFixture {
    fn as_ref(&self) -> &(dyn StateStore + 'static) {
        &self.state
    }
}

async fn disk_state() -> Option<StateFixture> {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = DiskState::open(dir.path(), &Metrics::default()).expect("open");
    Some(StateFixture { state, _dir: dir })
}

async fn memory_state() -> Option<Arc<dyn StateStore>> {
    Some(Arc::new(MemoryState::new()))
}

async fn memory_kv() -> Option<Arc<dyn Kv>> {
    Some(Arc::new(MemoryKv::new()))
}

async fn memory_bus() -> Option<Arc<dyn Bus>> {
    Some(Arc::new(MemoryBus::new(&Metrics::default())))
}

mod disk_queue {
    use super::*;
    aos_core::work_queue_conformance!(disk_queue);
}

mod memory_kv {
    use super::*;
    aos_core::kv_conformance!(memory_kv);
}

mod memory_bus {
    use super::*;
    aos_core::bus_conformance!(memory_bus);
}

mod disk_state {
    use super::*;
    aos_core::state_conformance!(disk_state);
}

mod memory_state {
    use super::*;
    aos_core::state_conformance!(memory_state);
}
