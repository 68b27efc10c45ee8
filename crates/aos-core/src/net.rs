//! Hosting ntex servers (MQTT, web, admin) from the tokio side of the node.
//!
//! ntex servers need an ntex `System` on the thread that builds them; the rest of the node runs on
//! a tokio multi-threaded runtime. A [`NetHost`] owns one thread that runs the ntex system, and
//! builds servers there on request. The servers' own worker threads are spawned by ntex.

use std::net::{SocketAddr, TcpListener};
use std::sync::Mutex;
use std::thread::JoinHandle;

use ntex::rt::{Handle, System};

/// Pending connections the kernel holds for a listener; large so that bursts of device
/// reconnections are not refused.
pub const LISTEN_BACKLOG: i32 = 4096;

/// A listener address that cannot be bound, worded so the operator knows which key changes it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct BindError {
    pub addr: SocketAddr,
    message: String,
}

/// Binds a TCP listener for `what` (e.g. "MQTT listener") configured by the dotted key `key`.
pub fn bind_tcp(addr: SocketAddr, what: &str, key: &str) -> Result<TcpListener, BindError> {
    ntex::server::create_tcp_listener(addr, LISTEN_BACKLOG).map_err(|err| {
        let reason = match err.kind() {
            std::io::ErrorKind::AddrInUse => format!("port {} is already in use", addr.port()),
            std::io::ErrorKind::AddrNotAvailable => {
                format!("address {} is not available on this machine", addr.ip())
            }
            std::io::ErrorKind::PermissionDenied => {
                format!("permission denied for port {}", addr.port())
            }
            _ => err.to_string(),
        };
        BindError {
            addr,
            message: format!(
                "cannot listen on {addr} for the {what}: {reason}. Free the port, or set `{key}` (environment variable {}) to another address",
                crate::keys::env_var_for(key)
            ),
        }
    })
}

/// The thread running the ntex system that hosts this node's network servers.
pub struct NetHost {
    system: System,
    handle: Handle,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl NetHost {
    pub fn start() -> std::io::Result<NetHost> {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("aos-net".into())
            .spawn(move || {
                let result = System::build()
                    .name("aos-net")
                    .disable_signals()
                    .build(ntex::rt::DefaultRuntime)
                    .run(move || {
                        let system = System::current();
                        let handle = system.handle();
                        let _ = tx.send((system, handle));
                        Ok(())
                    });
                if let Err(err) = result {
                    tracing::error!(%err, "network system stopped with an error");
                }
            })?;
        let (system, handle) = rx
            .recv()
            .map_err(|_| std::io::Error::other("the network thread did not start"))?;
        Ok(NetHost {
            system,
            handle,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Runs `build` on the network thread (where ntex servers can be built) and returns its result.
    pub async fn run<F, R>(&self, build: F) -> std::io::Result<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.handle
            .spawn(async move { build() })
            .await
            .map_err(|_| std::io::Error::other("the network thread has stopped"))
    }

    /// Stops the ntex system; call after every server on it has been stopped.
    pub fn stop(&self) {
        self.system.stop();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

/// Server threads for a configured count; 0 means one per CPU core.
pub fn worker_threads(configured: usize) -> usize {
    if configured > 0 {
        configured
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// Whole seconds for ntex timeouts (at least 1, at most `u16::MAX`).
pub fn ntex_seconds(duration: std::time::Duration) -> ntex::time::Seconds {
    ntex::time::Seconds(duration.as_secs().clamp(1, u64::from(u16::MAX)) as u16)
}

/// The ntex server a role runs, once started (of `T`: what its workers are handed).
pub struct ServerSlot<T = ntex::server::Connection>(Mutex<Option<ntex_server::Server<T>>>);

impl<T> Default for ServerSlot<T> {
    fn default() -> Self {
        ServerSlot(Mutex::new(None))
    }
}

impl<T> ServerSlot<T> {
    pub fn set(&self, server: ntex_server::Server<T>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(server);
    }

    /// Stops accepting new connections; open ones carry on.
    pub async fn pause(&self) {
        let server = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(server) = server {
            server.pause().await;
        }
    }

    /// Stops accepting, lets open connections finish within the server's shutdown timeout.
    pub async fn stop(&self) {
        let server = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(server) = server {
            server.stop(true).await;
        }
    }
}
