//! `aos-core`: what every AOS role shares.
//!
//! - [`role`]: the [`Role`] trait every role crate implements and the [`RoleContext`] it starts with;
//! - [`node`]: the node that starts the enabled roles, watches them and stops them in reverse order;
//! - [`config`]: layered configuration (defaults ← file ← `AOS_*` environment ← flags);
//! - the seams to the outside world, each a trait with an embedded backend for standalone mode:
//!   [`bus`] (publish/subscribe between nodes), [`queue`] (durable work queues), [`kv`]
//!   (key-value store with TTL and compare-and-set) and [`state`] (durable records), opened
//!   from configuration by the resolver (`aos-seams`), the one place that names a backend;
//! - [`metrics`], [`admin`] (the per-node admin HTTP listener) and [`net`] (hosting ntex servers);
//! - [`broker_admin`]: what the platform asks the broker nodes about their clients.

pub mod access;
pub mod acquisition;
pub mod admin;
pub mod broker_admin;
pub mod bus;
pub mod changes;
pub mod commands;
pub mod config;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod extensions;
mod frames;
pub mod keys;
pub mod kind;
pub mod kv;
pub mod live;
pub mod metrics;
pub mod net;
pub mod node;
pub mod node_info;
pub mod queue;
pub mod role;
pub mod state;
pub mod tls;
pub mod topic;

pub use bus::{Bus, BusMessage, Subscription};
pub use config::Settings;
pub use kv::Kv;
pub use metrics::Metrics;
pub use node::{Node, NodeInfo};
pub use queue::WorkQueue;
pub use role::{Health, HealthStatus, Role, RoleContext, RoleError, RoleKind};

/// The version of AOS this crate belongs to.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
