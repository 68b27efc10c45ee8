//! The MQTT server on the node's network host: one listener serving 3.1.1 and 5.0.

use std::net::TcpListener;
use std::sync::Arc;

use aos_core::RoleContext;
use aos_core::role::RoleError;
use ntex::service::{fn_factory_with_config, fn_service};
use ntex::time::Seconds;
use ntex_mqtt::{MqttServer, MqttServiceConfig, QoS, v3, v5};

use crate::connection::{ConnError, ListenerContext, SecondConnect, v3 as c3, v5 as c5};

/// Time a client has to send its whole CONNECT after connecting.
const CONNECT_TIMEOUT: Seconds = Seconds(10);

pub(crate) async fn start(
    ctx: &RoleContext,
    listener_ctx: Arc<ListenerContext>,
    listener: TcpListener,
) -> Result<ntex::server::Server, RoleError> {
    let config = listener_ctx.config.clone();
    let workers = aos_core::net::worker_threads(config.workers);
    let drain = aos_core::net::ntex_seconds(config.drain_timeout);
    let name = listener_ctx.name.to_string();
    let service_config = ntex::SharedCfg::new("MQTT").add(
        MqttServiceConfig::new()
            .set_max_qos(QoS::ExactlyOnce)
            .set_max_size(config.max_packet_size)
            .set_max_receive(config.receive_maximum)
            .set_max_send(config.max_inflight)
            .set_max_topic_alias(config.max_topic_alias)
            .set_connect_timeout(CONNECT_TIMEOUT)
            // A client may publish and close at once (mosquitto_pub does): still deliver.
            .set_handle_qos_after_disconnect(Some(QoS::ExactlyOnce)),
    );
    ctx.net
        .run(move || -> std::io::Result<ntex::server::Server> {
            Ok(ntex::server::build()
                .workers(workers)
                .disable_signals()
                .shutdown_timeout(drain)
                .listen(&name, listener, async move |_| {
                    let c3 = listener_ctx.clone();
                    let c5 = listener_ctx.clone();
                    MqttServer::new()
                        .v3(v3::MqttServer::new(fn_service(move |hs| {
                            c3::handshake(c3.clone(), hs)
                        }))
                        .protocol(fn_factory_with_config(async |s: c3::Session| {
                            Ok::<_, ConnError>(fn_service(move |m| c3::protocol(s.clone(), m)))
                        }))
                        .control(fn_factory_with_config(async |s: c3::Session| {
                            Ok::<_, ConnError>(fn_service(move |m| c3::control(s.clone(), m)))
                        }))
                        .middleware(SecondConnect)
                        .publish(fn_factory_with_config(
                            async |s: c3::Session| {
                                Ok::<_, ConnError>(fn_service(move |m| c3::publish(s.clone(), m)))
                            },
                        )))
                        .v5(v5::MqttServer::new(fn_service(move |hs| {
                            c5::handshake(c5.clone(), hs)
                        }))
                        .protocol(fn_factory_with_config(async |s: c5::Session| {
                            Ok::<_, ConnError>(fn_service(move |m| c5::protocol(s.clone(), m)))
                        }))
                        .control(fn_factory_with_config(async |s: c5::Session| {
                            Ok::<_, ConnError>(fn_service(move |m| c5::control(s.clone(), m)))
                        }))
                        .middleware(c5::ExactlyOnce)
                        .middleware(SecondConnect)
                        .publish(fn_factory_with_config(
                            async |s: c5::Session| {
                                Ok::<_, ConnError>(fn_service(move |m| c5::publish(s.clone(), m)))
                            },
                        )))
                })?
                .config(&name, service_config)
                .run())
        })
        .await
        .and_then(|r| r)
        .map_err(|e| RoleError::other(format!("cannot start the MQTT server: {e}")))
}
