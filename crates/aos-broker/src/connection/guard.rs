//! A dispatcher middleware for what ntex-mqtt 8.2.1 lets through: a second CONNECT on an open
//! connection is a protocol violation ([MQTT-3.1.0-2]) and closes it (5.0: DISCONNECT 0x82).

use ntex::service::{Middleware, Service, ServiceCtx};
use ntex_mqtt::ProtocolError;
use ntex_mqtt::error::DispatcherError;
use ntex_mqtt::{v3, v5};

/// Recognises CONNECT among the packets of either protocol version.
pub(crate) trait ConnectPacket {
    fn is_connect(&self) -> bool;
}

impl ConnectPacket for v3::codec::Decoded {
    fn is_connect(&self) -> bool {
        matches!(
            self,
            v3::codec::Decoded::Packet(v3::codec::Packet::Connect(_), _)
        )
    }
}

impl ConnectPacket for v5::codec::Decoded {
    fn is_connect(&self) -> bool {
        matches!(
            self,
            v5::codec::Decoded::Packet(v5::codec::Packet::Connect(_), _)
        )
    }
}

pub(crate) struct SecondConnect;

impl<S, C> Middleware<S, C> for SecondConnect {
    type Service = SecondConnectService<S>;

    fn create(&self, inner: S, _: C) -> Self::Service {
        SecondConnectService { inner }
    }
}

pub(crate) struct SecondConnectService<S> {
    inner: S,
}

impl<S, R, E> Service<R> for SecondConnectService<S>
where
    S: Service<R, Error = DispatcherError<E>>,
    R: ConnectPacket,
{
    type Response = S::Response;
    type Error = DispatcherError<E>;

    ntex::forward_ready!(inner);
    ntex::forward_poll!(inner);
    ntex::forward_shutdown!(inner);

    async fn call(
        &self,
        request: R,
        ctx: ServiceCtx<'_, Self>,
    ) -> Result<Self::Response, Self::Error> {
        if request.is_connect() {
            return Err(DispatcherError::Protocol(ProtocolError::generic_violation(
                "a second CONNECT on an open connection [MQTT-3.1.0-2]",
            )));
        }
        ctx.call(&self.inner, request).await
    }
}
