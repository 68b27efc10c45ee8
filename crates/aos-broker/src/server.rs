//! The MQTT server on the node's network host.

use std::net::TcpListener;

use aos_core::RoleContext;
use aos_core::role::RoleError;
use ntex_mqtt::{MqttServer, v3, v5};

use crate::BrokerConfig;

/// Per-connection state.
#[derive(Clone)]
struct Session;

#[derive(Debug)]
struct SessionError;

impl From<()> for SessionError {
    fn from(_: ()) -> Self {
        SessionError
    }
}

impl TryFrom<SessionError> for v5::PublishAck {
    type Error = SessionError;

    fn try_from(err: SessionError) -> Result<Self, Self::Error> {
        Err(err)
    }
}

async fn handshake_v3(handshake: v3::Handshake) -> Result<v3::HandshakeAck<Session>, SessionError> {
    tracing::debug!(client_id = %handshake.packet().client_id, "MQTT 3.1.1 connection");
    Ok(handshake.ack(Session, false))
}

async fn publish_v3(publish: v3::Publish) -> Result<(), SessionError> {
    tracing::trace!(topic = %publish.topic().path(), "publish");
    Ok(())
}

async fn handshake_v5(handshake: v5::Handshake) -> Result<v5::HandshakeAck<Session>, SessionError> {
    tracing::debug!(client_id = %handshake.packet().client_id, "MQTT 5.0 connection");
    Ok(handshake.ack(Session))
}

async fn publish_v5(publish: v5::Publish) -> Result<v5::PublishAck, SessionError> {
    tracing::trace!(topic = %publish.topic().path(), "publish");
    Ok(publish.ack())
}

pub(crate) async fn start(
    ctx: &RoleContext,
    config: &BrokerConfig,
    listener: TcpListener,
) -> Result<ntex::server::Server, RoleError> {
    let workers = aos_core::net::worker_threads(config.workers);
    let drain =
        ntex::time::Seconds(config.drain_timeout.as_secs().clamp(1, u16::MAX as u64) as u16);
    ctx.net
        .run(move || -> std::io::Result<ntex::server::Server> {
            Ok(ntex::server::build()
                .workers(workers)
                .disable_signals()
                .shutdown_timeout(drain)
                .listen("mqtt", listener, async |_| {
                    MqttServer::new()
                        .v3(v3::MqttServer::new(handshake_v3).publish(publish_v3))
                        .v5(v5::MqttServer::new(handshake_v5).publish(publish_v5))
                })?
                .run())
        })
        .await
        .and_then(|r| r)
        .map_err(|e| RoleError::other(format!("cannot start the MQTT server: {e}")))
}
