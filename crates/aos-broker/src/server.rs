//! The MQTT server on the node's network host: every listener of the broker, each serving 3.1.1
//! and 5.0 over TCP, TLS, WebSocket or WebSocket over TLS.

use std::convert::Infallible;
use std::error::Error;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use aos_core::RoleContext;
use aos_core::role::RoleError;
use ntex::http::{self, HttpService, Request, Response, h1};
use ntex::io::{Filter, Io, IoBoxed, Layer};
use ntex::service::{Pipeline, ServiceFactory, chain_factory, fn_factory_with_config, fn_service};
use ntex::time::{Millis, Seconds};
use ntex::util::Ready;
use ntex::{SharedCfg, ws};
use ntex_mqtt::MqttError;
use ntex_tls::rustls::TlsAcceptor;

use crate::config::Transport;
use crate::connection::dispatcher::serve;
use crate::connection::version::{Version, VersionCodec};
use crate::connection::{ListenerContext, v3::V3, v5::V5};
use crate::proxy;

/// Time a client has to send its whole CONNECT after connecting.
const CONNECT_TIMEOUT: Seconds = Seconds(10);

type BoxError = Box<dyn Error>;

/// A bound listener, ready to serve.
pub(crate) struct Bound {
    pub ctx: Arc<ListenerContext>,
    pub listener: TcpListener,
    pub transport: Transport,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub ws_path: Arc<str>,
    /// Whether connections start with a PROXY protocol v2 header ([`crate::proxy`]).
    pub proxy_protocol: bool,
}

/// The MQTT protocol on any transport (3.1.1 and 5.0 on the same listener): the version is read
/// from the CONNECT, and the connection served by the broker's dispatcher for it.
fn mqtt<F: Filter>(
    ctx: Arc<ListenerContext>,
) -> impl ServiceFactory<Io<F>, SharedCfg, Response = (), Error = MqttError<Infallible>, InitError = ()>
{
    fn_service(move |io: Io<F>| {
        let ctx = ctx.clone();
        async move {
            let io = IoBoxed::from(io);
            let started = std::time::Instant::now();
            let version = connect_version(&io).await;
            // One CONNECT_TIMEOUT for the whole CONNECT: what reading its version took is spent.
            let left =
                Millis::from(Duration::from(CONNECT_TIMEOUT).saturating_sub(started.elapsed()));
            match version {
                Some(Version::V3) => serve::<V3>(ctx, io, left).await,
                Some(Version::V5) => serve::<V5>(ctx, io, left).await,
                None => {}
            }
            Ok(())
        }
    })
}

/// The MQTT version of a new connection's CONNECT; `None` (logged) if it sent none in time.
async fn connect_version(io: &IoBoxed) -> Option<Version> {
    match ntex::time::timeout(CONNECT_TIMEOUT, io.recv(&VersionCodec)).await {
        Ok(Ok(version)) => version,
        Ok(Err(err)) => {
            tracing::debug!(error = ?err, "not an MQTT CONNECT");
            None
        }
        Err(()) => {
            tracing::debug!("no CONNECT in time");
            None
        }
    }
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

/// Starts one ntex server with every listener.
pub(crate) async fn start(
    ctx: &RoleContext,
    listeners: Vec<Bound>,
) -> Result<ntex::server::Server, RoleError> {
    let Some(first) = listeners.first() else {
        return Err(RoleError::other("the broker has no listener"));
    };
    let config = first.ctx.config.clone();
    let workers = aos_core::net::worker_threads(config.workers);
    let drain = aos_core::net::ntex_seconds(config.drain_timeout);
    ctx.net
        .run(move || -> std::io::Result<ntex::server::Server> {
            let mut builder = ntex::server::build()
                .workers(workers)
                // Sockets are held before CONNECT too (for at most CONNECT_TIMEOUT): bound them,
                // so a flood of idle connections waits in the backlog instead of in memory.
                .maxconn(config.max_connections)
                .disable_signals()
                .shutdown_timeout(drain);
            for bound in listeners {
                let name = bound.ctx.name.to_string();
                let ctx = bound.ctx.clone();
                let path = bound.ws_path.clone();
                let listener = bound.listener;
                // Each transport's stack, behind the PROXY protocol if the listener expects it.
                macro_rules! serve {
                    ($stack:expr) => {
                        if bound.proxy_protocol {
                            builder.listen(&name, listener, async move |_| {
                                chain_factory(proxy::accept(CONNECT_TIMEOUT)).and_then($stack)
                            })?
                        } else {
                            builder.listen(&name, listener, async move |_| $stack)?
                        }
                    };
                }
                builder = match (bound.transport, bound.tls) {
                    (Transport::Tcp, _) => serve!(mqtt(ctx.clone())),
                    (Transport::Ws, _) => serve!(websocket(ctx.clone(), path.clone())),
                    (Transport::Tls, Some(tls)) => serve!(
                        chain_factory(TlsAcceptor::new(tls.clone()))
                            .map_err(MqttError::<Infallible>::from)
                            .and_then(mqtt(ctx.clone()))
                    ),
                    (Transport::Wss, Some(tls)) => serve!(
                        chain_factory(TlsAcceptor::new(tls.clone()))
                            .map_err(BoxError::from)
                            .and_then(websocket(ctx.clone(), path.clone()))
                    ),
                    (Transport::Tls | Transport::Wss, None) => {
                        return Err(std::io::Error::other(format!(
                            "listener `{name}` needs a [tls] section"
                        )));
                    }
                };
                builder = builder.config(&name, SharedCfg::new("MQTT"));
            }
            Ok(builder.run())
        })
        .await
        .and_then(|r| r)
        .map_err(|e| RoleError::other(format!("cannot start the MQTT server: {e}")))
}
