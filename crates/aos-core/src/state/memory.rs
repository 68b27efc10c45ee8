//! A [`StateStore`] in memory: for embedding and tests, where nothing must outlive the process.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;

use super::{StateChange, StateError, StateStore, apply, under};

#[derive(Default)]
pub struct MemoryState {
    inner: Mutex<(BTreeMap<String, Bytes>, u64)>,
}

impl MemoryState {
    pub fn new() -> Self {
        MemoryState::default()
    }
}

#[async_trait]
impl StateStore for MemoryState {
    async fn load(&self, prefix: &str) -> Result<Vec<(String, Bytes)>, StateError> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        Ok(under(&inner.0, prefix))
    }

    fn stage(&self, changes: Vec<StateChange>) -> u64 {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for change in &changes {
            apply(&mut inner.0, change);
        }
        inner.1 += 1;
        inner.1
    }

    fn position(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).1
    }

    async fn durable(&self, _position: u64) -> Result<(), StateError> {
        Ok(())
    }

    async fn close(&self) -> Result<(), StateError> {
        Ok(())
    }
}
