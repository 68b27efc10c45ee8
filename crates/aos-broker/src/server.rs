//! The MQTT server on the node's network host: every listener of the broker, each serving 3.1.1
//! and 5.0 over TCP, TLS, WebSocket or WebSocket over TLS.
//!
//! The broker accepts connections itself, a task per listener on the network thread, and hands
//! each socket to one of ntex's worker threads (an `ntex_server::WorkerPool`). There a plain
//! TCP connection is served by one task of its own on the broker's [`Tcp`] transport; a TLS or
//! WebSocket connection goes through ntex-io's stack (the TLS handshake, the HTTP upgrade) on
//! its way to the same dispatcher.

use std::cell::Cell;
use std::convert::Infallible;
use std::error::Error;
use std::future::Future;
use std::future::poll_fn;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use aos_core::RoleContext;
use aos_core::role::RoleError;
use ntex::http::{self, HttpService, Request, Response, h1};
use ntex::io::{Filter, Io, IoBoxed, Layer};
use ntex::service::boxed::{self, BoxService};
use ntex::service::{
    Pipeline, Service, ServiceCtx, ServiceFactory, chain_factory, fn_factory_with_config,
    fn_service,
};
use ntex::time::{Millis, Seconds};
use ntex::util::Ready;
use ntex::{SharedCfg, ws};
use ntex_mqtt::MqttError;
use ntex_server::{ServerConfiguration, WorkerPool};
use ntex_tls::rustls::TlsAcceptor;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio_util::task::TaskTracker;

use crate::config;
use crate::connection::transport::{Tcp, Transport};
use crate::connection::{Admitted, ListenerContext, admit, serve};
use crate::proxy;

/// Time a client has to send its whole CONNECT after connecting.
const CONNECT_TIMEOUT: Seconds = Seconds(10);

/// How long a listener waits before accepting again after the system refused it a socket (out
/// of file descriptors or memory).
const ACCEPT_RETRY: Millis = Millis(100);

type BoxError = Box<dyn Error>;

/// The running server: what pauses and stops it.
pub(crate) type Server = ntex_server::Server<Accepted>;

/// A bound listener, ready to serve.
pub(crate) struct Bound {
    pub ctx: Arc<ListenerContext>,
    pub listener: TcpListener,
    pub transport: config::Transport,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub ws_path: Arc<str>,
    /// Whether connections start with a PROXY protocol v2 header ([`crate::proxy`]).
    pub proxy_protocol: bool,
}

/// How one listener's connections are served, on any worker.
#[derive(Clone)]
struct Spec {
    ctx: Arc<ListenerContext>,
    transport: config::Transport,
    tls: Option<Arc<rustls::ServerConfig>>,
    ws_path: Arc<str>,
    proxy_protocol: bool,
}

/// A socket accepted on a listener, on its way to a worker.
pub(crate) struct Accepted {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    /// Which listener: its place in the list the server was started with.
    listener: usize,
    /// The socket's place within the bound on open sockets, given back when it closes.
    permit: OwnedSemaphorePermit,
}

/// Whether the listeners accept connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Accepting {
    Open,
    /// Not now: new connections wait in the kernel's backlog (or go to another node).
    Paused,
    Stopped,
}

/// The worker pool's set-up: what each worker serves, and the switch of the listeners.
#[derive(Clone)]
struct Workers {
    specs: Arc<[Spec]>,
    accepting: Arc<watch::Sender<Accepting>>,
    /// The tasks accepting connections, one per listener.
    acceptors: TaskTracker,
}

impl Workers {
    fn switch(&self, to: Accepting) {
        // Once stopped, the listeners are gone for good.
        self.accepting.send_if_modified(|now| {
            let changed = *now != to && *now != Accepting::Stopped;
            if changed {
                *now = to;
            }
            changed
        });
    }
}

impl ServerConfiguration for Workers {
    type Item = Accepted;
    type Factory = WorkerFactory;

    async fn create(&self) -> Result<WorkerFactory, ()> {
        Ok(WorkerFactory {
            specs: self.specs.clone(),
        })
    }

    fn paused(&self) {
        self.switch(Accepting::Paused);
    }

    fn resumed(&self) {
        self.switch(Accepting::Open);
    }

    fn terminate(&self) {
        self.switch(Accepting::Stopped);
    }

    /// The listeners close before the workers stop.
    async fn stop(&self) {
        self.switch(Accepting::Stopped);
        self.acceptors.wait().await;
    }
}

/// Makes each worker's service.
struct WorkerFactory {
    specs: Arc<[Spec]>,
}

impl ServiceFactory<Accepted> for WorkerFactory {
    type Response = ();
    type Error = ();
    type Service = Worker;
    type InitError = ();

    async fn create(&self, _: ()) -> Result<Worker, ()> {
        let mut listeners = Vec::with_capacity(self.specs.len());
        for spec in self.specs.iter() {
            listeners.push(Served::new(spec).await?);
        }
        Ok(Worker {
            listeners,
            open: Rc::default(),
        })
    }
}

/// How a worker serves one listener's connections.
enum Served {
    /// On the broker's own TCP transport, a task per connection.
    Tcp {
        ctx: Arc<ListenerContext>,
        proxy_protocol: bool,
    },
    /// Through ntex-io's stack for the transport.
    Stacked {
        service: Pipeline<BoxService<Io, (), ()>>,
        cfg: SharedCfg,
    },
}

impl Served {
    async fn new(spec: &Spec) -> Result<Served, ()> {
        if spec.transport == config::Transport::Tcp {
            return Ok(Served::Tcp {
                ctx: spec.ctx.clone(),
                proxy_protocol: spec.proxy_protocol,
            });
        }
        let cfg: SharedCfg = SharedCfg::new("MQTT").into();
        let (ctx, path) = (spec.ctx.clone(), spec.ws_path.clone());
        // Each transport's stack, behind the PROXY protocol if the listener expects it.
        macro_rules! stacked {
            ($stack:expr) => {
                if spec.proxy_protocol {
                    boxed_stack(
                        chain_factory(proxy::accept(CONNECT_TIMEOUT)).and_then($stack),
                        cfg.clone(),
                    )
                    .await?
                } else {
                    boxed_stack($stack, cfg.clone()).await?
                }
            };
        }
        let service = match (spec.transport, &spec.tls) {
            (config::Transport::Ws, _) => stacked!(websocket(ctx, path)),
            (config::Transport::Tls, Some(tls)) => stacked!(
                chain_factory(TlsAcceptor::new(tls.clone()))
                    .map_err(MqttError::<Infallible>::from)
                    .and_then(mqtt(ctx))
            ),
            (config::Transport::Wss, Some(tls)) => stacked!(
                chain_factory(TlsAcceptor::new(tls.clone()))
                    .map_err(BoxError::from)
                    .and_then(websocket(ctx, path))
            ),
            // Refused before the server starts (see `start`).
            (config::Transport::Tcp | config::Transport::Tls | config::Transport::Wss, _) => {
                return Err(());
            }
        };
        Ok(Served::Stacked {
            service: Pipeline::new(service),
            cfg,
        })
    }
}

/// A transport's stack as one boxed service (its errors end the connection, nothing more).
async fn boxed_stack<F>(factory: F, cfg: SharedCfg) -> Result<BoxService<Io, (), ()>, ()>
where
    F: ServiceFactory<Io, SharedCfg, Response = (), InitError = ()> + 'static,
    F::Error: 'static,
{
    let service = chain_factory(factory).map_err(|_| ()).create(cfg).await?;
    Ok(boxed::service(service))
}

/// One worker's service: each connection it is handed gets a task of its own.
struct Worker {
    listeners: Vec<Served>,
    open: Rc<Open>,
}

impl Service<Accepted> for Worker {
    type Response = ();
    type Error = ();

    async fn call(&self, accepted: Accepted, _: ServiceCtx<'_, Self>) -> Result<(), ()> {
        let Accepted {
            stream,
            peer,
            listener,
            permit,
        } = accepted;
        let Some(served) = self.listeners.get(listener) else {
            return Err(());
        };
        let guard = Opened::new(&self.open, permit);
        match served {
            Served::Tcp {
                ctx,
                proxy_protocol,
            } => {
                let stream = tokio::net::TcpStream::from_std(stream).map_err(|err| {
                    tracing::warn!(%err, "an accepted connection cannot be served");
                })?;
                let admitting = admit_tcp(ctx.clone(), Tcp::new(stream, peer), *proxy_protocol);
                ntex::rt::spawn(connection_task(Box::pin(admitting), guard));
            }
            Served::Stacked { service, cfg } => {
                let io = ntex::rt::from_tcp_stream(stream, cfg.clone()).map_err(|err| {
                    tracing::warn!(%err, "an accepted connection cannot be served");
                })?;
                let call = service.call_static(io);
                ntex::rt::spawn(async move {
                    let _ = call.await;
                    drop(guard);
                });
            }
        }
        Ok(())
    }

    /// Waits until this worker's connections have ended (the server bounds the wait).
    async fn shutdown(&self) {
        loop {
            let ended = self.open.ended.notified();
            if self.open.count.get() == 0 {
                return;
            }
            ended.await;
        }
    }
}

/// A worker's open connections.
#[derive(Default)]
struct Open {
    count: Cell<usize>,
    ended: Notify,
}

/// One open connection of a worker, counted until it is dropped with the connection's task.
struct Opened {
    open: Rc<Open>,
    _permit: OwnedSemaphorePermit,
}

impl Opened {
    fn new(open: &Rc<Open>, permit: OwnedSemaphorePermit) -> Opened {
        open.count.set(open.count.get() + 1);
        Opened {
            open: open.clone(),
            _permit: permit,
        }
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        let left = self.open.count.get().saturating_sub(1);
        self.open.count.set(left);
        if left == 0 {
            self.open.ended.notify_waiters();
        }
    }
}

/// A plain TCP connection up to its client being in: its PROXY protocol header (if the listener
/// expects one), then its CONNECT.
async fn admit_tcp(
    ctx: Arc<ListenerContext>,
    mut tcp: Tcp,
    proxy_protocol: bool,
) -> Option<Admitted> {
    if proxy_protocol {
        let header = ntex::time::timeout(
            CONNECT_TIMEOUT,
            poll_fn(|cx| tcp.poll_recv(&proxy::Header, cx)),
        )
        .await;
        match header {
            // A `LOCAL` header (the balancer's own check) keeps the socket's address.
            Ok(Ok(named)) => {
                if let Some(peer) = named {
                    tcp.set_peer(peer);
                }
            }
            Ok(Err(err)) => {
                tracing::debug!(error = ?err, "no PROXY protocol header");
                return None;
            }
            Err(()) => {
                tracing::debug!("no PROXY protocol header in time");
                return None;
            }
        }
    }
    admit(ctx, Transport::Tcp(tcp), CONNECT_TIMEOUT.into()).await
}

/// A connection's task: it lets the client in (`admitting`, boxed: gone once the client is in)
/// and serves it, holding its place among the worker's open connections until it ends.
async fn connection_task(
    admitting: Pin<Box<dyn Future<Output = Option<Admitted>>>>,
    opened: Opened,
) {
    serve(admitting).await;
    drop(opened);
}

/// The MQTT protocol on an ntex-io stack.
fn mqtt<F: Filter>(
    ctx: Arc<ListenerContext>,
) -> impl ServiceFactory<Io<F>, SharedCfg, Response = (), Error = MqttError<Infallible>, InitError = ()>
{
    fn_service(move |io: Io<F>| {
        let io = Transport::Stacked(IoBoxed::from(io));
        let admitting = Box::pin(admit(ctx.clone(), io, CONNECT_TIMEOUT.into()));
        async move {
            serve(admitting).await;
            Ok(())
        }
    })
}

/// Upgrades an HTTP request on `path` to a WebSocket carrying MQTT (subprotocol `mqtt`).
fn ws_upgrade<F: Filter>(
    path: Arc<str>,
    max_frame: usize,
) -> impl ServiceFactory<
    (Request, Io<F>, h1::Codec),
    SharedCfg,
    Response = Io<Layer<ws::WsTransport, F>>,
    Error = BoxError,
    InitError = (),
> {
    fn_service(move |(req, io, codec): (Request, Io<F>, h1::Codec)| {
        let path = path.clone();
        async move {
            if req.path() != &*path {
                let response = Response::NotFound().finish().drop_body();
                io.send(
                    h1::Message::Item((response, http::body::BodySize::Empty)),
                    &codec,
                )
                .await?;
                return Err(BoxError::from(format!(
                    "no WebSocket endpoint at {}",
                    req.path()
                )));
            }
            let mut response = ws::handshake(req.head()).map_err(BoxError::from)?;
            let wants_mqtt = req
                .headers()
                .get(http::header::SEC_WEBSOCKET_PROTOCOL)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.split(',').any(|p| p.trim() == "mqtt"));
            if wants_mqtt {
                // Browsers require the chosen subprotocol to be echoed.
                response.header(http::header::SEC_WEBSOCKET_PROTOCOL, "mqtt");
            }
            io.send(
                h1::Message::Item((response.finish().drop_body(), http::body::BodySize::Empty)),
                &codec,
            )
            .await?;
            Ok(ws::WsTransport::create(
                io,
                ws::Codec::new().max_size(max_frame),
            ))
        }
    })
}

/// MQTT over WebSocket: plain HTTP is answered 404, the upgrade on the path switches to MQTT.
fn websocket<F: Filter>(
    ctx: Arc<ListenerContext>,
    path: Arc<str>,
) -> impl ServiceFactory<Io<F>, SharedCfg, Response = (), Error = BoxError, InitError = ()> {
    let max_frame = ctx.config.max_packet_size as usize + 16;
    HttpService::new(|_req: Request| {
        Ready::Ok::<_, std::io::Error>(Response::NotFound().body("MQTT over WebSocket only"))
    })
    .h1_control(fn_factory_with_config(async move |cfg: SharedCfg| {
        let upgrade = Pipeline::new(
            chain_factory(ws_upgrade(path.clone(), max_frame))
                .and_then(chain_factory(mqtt(ctx.clone())).map_err(BoxError::from))
                .create(cfg)
                .await?,
        );
        Ok::<_, ()>(fn_service(move |msg: h1::Control<_, _>| {
            let ack = match msg {
                h1::Control::Upgrade(ctl) => {
                    let upgrade = upgrade.clone();
                    ctl.handle(move |req, io, codec| upgrade.call_static((req, io, codec)))
                }
                _ => msg.ack(),
            };
            async move { Ok::<_, std::io::Error>(ack) }
        }))
    }))
    .map_err(BoxError::from)
}

/// Starts the server: the worker pool, and a task accepting connections for each listener.
pub(crate) async fn start(ctx: &RoleContext, listeners: Vec<Bound>) -> Result<Server, RoleError> {
    let Some(first) = listeners.first() else {
        return Err(RoleError::other("the broker has no listener"));
    };
    let config = first.ctx.config.clone();
    let mut specs = Vec::with_capacity(listeners.len());
    let mut sockets = Vec::with_capacity(listeners.len());
    for bound in listeners {
        if matches!(
            bound.transport,
            config::Transport::Tls | config::Transport::Wss
        ) && bound.tls.is_none()
        {
            return Err(RoleError::other(format!(
                "listener `{}` needs a [tls] section",
                bound.ctx.name
            )));
        }
        sockets.push((bound.listener, bound.ctx.name.clone()));
        specs.push(Spec {
            ctx: bound.ctx,
            transport: bound.transport,
            tls: bound.tls,
            ws_path: bound.ws_path,
            proxy_protocol: bound.proxy_protocol,
        });
    }
    let workers = aos_core::net::worker_threads(config.workers);
    let drain = aos_core::net::ntex_seconds(config.drain_timeout);
    // Sockets are held before CONNECT too (for at most CONNECT_TIMEOUT), and while a full
    // broker refuses a CONNECT: bound them, so a flood of connections waits in the kernel's
    // backlog instead of in memory.
    let permits = Arc::new(Semaphore::new(
        config
            .max_connections
            .saturating_mul(2)
            .clamp(1, Semaphore::MAX_PERMITS),
    ));
    ctx.net
        .run(move || -> io::Result<Server> {
            let (accepting, _) = watch::channel(Accepting::Open);
            let set_up = Workers {
                specs: specs.into(),
                accepting: Arc::new(accepting),
                acceptors: TaskTracker::new(),
            };
            let server = WorkerPool::new()
                .name("aos-mqtt")
                .workers(workers)
                .disable_signals()
                .shutdown_timeout(drain)
                .run(set_up.clone());
            for (index, (listener, name)) in sockets.into_iter().enumerate() {
                listener.set_nonblocking(true)?;
                let listener = tokio::net::TcpListener::from_std(listener)?;
                ntex::rt::spawn(set_up.acceptors.track_future(accept(
                    listener,
                    index,
                    name,
                    server.clone(),
                    permits.clone(),
                    set_up.accepting.subscribe(),
                )));
            }
            set_up.acceptors.close();
            Ok(server)
        })
        .await
        .and_then(|r| r)
        .map_err(|e| RoleError::other(format!("cannot start the MQTT server: {e}")))
}

/// Accepts connections on one listener while the server is open, handing each to a worker.
async fn accept(
    listener: tokio::net::TcpListener,
    index: usize,
    name: Arc<str>,
    server: Server,
    permits: Arc<Semaphore>,
    mut accepting: watch::Receiver<Accepting>,
) {
    loop {
        let now = *accepting.borrow_and_update();
        match now {
            Accepting::Stopped => return,
            Accepting::Paused => {
                if accepting.changed().await.is_err() {
                    return;
                }
                continue;
            }
            Accepting::Open => {}
        }
        let next = tokio::select! {
            changed = accepting.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
            next = next_connection(&listener, &permits) => next,
        };
        let (stream, peer, permit) = match next {
            Ok(next) => next,
            // The client gave up before it was accepted.
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(err) => {
                tracing::warn!(listener = %name, %err, "cannot accept a connection; trying again shortly");
                ntex::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        let stream = match stream.set_nodelay(true).and_then(|()| stream.into_std()) {
            Ok(stream) => stream,
            Err(err) => {
                tracing::debug!(listener = %name, %err, "an accepted connection failed");
                continue;
            }
        };
        let accepted = Accepted {
            stream,
            peer,
            listener: index,
            permit,
        };
        // Refused while the server pauses or stops: the connection is closed.
        let _ = server.process(accepted);
    }
}

/// The next connection, once there is room for it: a broker holding all the sockets it may
/// leaves new ones in the kernel's backlog.
async fn next_connection(
    listener: &tokio::net::TcpListener,
    permits: &Arc<Semaphore>,
) -> io::Result<(tokio::net::TcpStream, SocketAddr, OwnedSemaphorePermit)> {
    let permit = permits
        .clone()
        .acquire_owned()
        .await
        .map_err(io::Error::other)?;
    let (stream, peer) = listener.accept().await?;
    Ok((stream, peer, permit))
}

#[cfg(test)]
mod footprint {
    use super::*;

    /// An idle TCP connection's task holds the future serving its client and its place among
    /// the open connections, and nothing of its handshake.
    #[test]
    fn a_connection_task_is_small() {
        let permit = Arc::new(Semaphore::new(1))
            .try_acquire_owned()
            .expect("a permit");
        let admitting: Pin<Box<dyn Future<Output = Option<Admitted>>>> =
            Box::pin(std::future::ready(None));
        let task = connection_task(admitting, Opened::new(&Rc::default(), permit));
        let size = std::mem::size_of_val(&task);
        assert!(size <= 640, "a connection's task is {size} bytes");
    }
}
