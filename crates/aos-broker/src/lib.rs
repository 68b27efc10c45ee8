//! `aos-broker`: the broker role — MQTT listeners for devices.
//!
//! This first cut binds the configured listener and accepts MQTT 3.1.1 and 5.0 sessions; the
//! broker proper (sessions, routing, retained messages, wills, flow control, access control)
//! arrives with the broker issue.

mod config;
mod server;

pub use config::BrokerConfig;

use aos_core::net::{ServerSlot, bind_tcp};
use aos_core::role::{Health, HealthStatus, Role, RoleContext, RoleError, RoleKind};
use async_trait::async_trait;

/// The broker role.
#[derive(Default)]
pub struct BrokerRole {
    server: ServerSlot,
    health: aos_core::role::HealthCell,
}

impl BrokerRole {
    pub fn new() -> Self {
        BrokerRole::default()
    }
}

#[async_trait]
impl Role for BrokerRole {
    fn kind(&self) -> RoleKind {
        RoleKind::Broker
    }

    async fn start(&self, ctx: &RoleContext) -> Result<(), RoleError> {
        let config: BrokerConfig = ctx.settings.section("broker")?;
        let listener = bind_tcp(config.listen, "MQTT listener", "broker.listen")?;
        let server = server::start(ctx, &config, listener).await?;
        self.server.set(server);
        self.health.set(HealthStatus::Healthy);
        tracing::info!(listen = %config.listen, "MQTT listener ready");
        Ok(())
    }

    async fn stop(&self) -> Result<(), RoleError> {
        self.health.set(HealthStatus::Stopping);
        self.server.stop().await;
        self.health.set(HealthStatus::Stopped);
        Ok(())
    }

    fn health(&self) -> Health {
        self.health.get()
    }
}
