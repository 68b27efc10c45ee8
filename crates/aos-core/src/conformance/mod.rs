//! The conformance suite every backend of a seam must pass: the embedded backends now, the
//! PostgreSQL / NATS backends later, unchanged.
//!
//! Each case is a public async function taking the backend under test; the macros
//! [`work_queue_conformance!`](crate::work_queue_conformance),
//! [`kv_conformance!`](crate::kv_conformance), [`bus_conformance!`](crate::bus_conformance) and
//! [`state_conformance!`](crate::state_conformance)
//! turn them into one `#[tokio::test]` per case for a backend given by an async factory whose
//! result implements `AsRef<dyn Trait>` (an `Arc<dyn Trait>`, or a fixture that also owns, say, a
//! temporary directory). Cases use names unique to the run, so backends shared between tests do
//! not see each other's data.

pub mod bus;
pub mod kv;
pub mod queue;
pub mod state;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest a case waits for something that must happen.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A name unique to this process run: `{prefix}-{time}-{counter}`.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() % 1_000_000_000_000)
        .unwrap_or_default();
    format!(
        "{prefix}-{nanos}-{}",
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($module:ident, $trait:path, $make:expr, [$($case:ident),* $(,)?]) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                // A fixture that needs an external service is `None` when the test is skipped
                // (the fixture said so, loudly).
                let Some(fixture) = ($make)().await else {
                    return;
                };
                let backend: &dyn $trait = ::std::convert::AsRef::as_ref(&fixture);
                $crate::conformance::$module::$case(backend).await;
            }
        )*
    };
}

/// Reports that an external service a test needs (PostgreSQL, NATS) cannot be reached: under
/// `CI=true` that fails the test; elsewhere the test is skipped with a loud message.
pub fn service_unavailable(service: &str, env_var: &str, url: &str, error: &dyn std::fmt::Display) {
    let message =
        format!("{service} is unreachable at {url} ({error}); set {env_var} to a reachable server");
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message} — required under CI=true");
    }
    eprintln!("\n!!!!!!!! SKIPPED: {message} !!!!!!!!\n");
}
