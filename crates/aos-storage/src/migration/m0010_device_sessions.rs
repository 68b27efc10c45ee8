//! Which broker session a device's presence belongs to: the session (node, boot and
//! connection), its node and when it connected. A late "disconnected" of a session that lost a
//! takeover no longer flips the status, and the sessions of a node that died can be found.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(Clone, Copy, DeriveIden)]
enum Device {
    Table,
    Session,
    SessionNode,
    SessionAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        super::add_columns(
            manager,
            Device::Table,
            vec![
                ColumnDef::new(Device::Session).string().null().to_owned(),
                ColumnDef::new(Device::SessionNode)
                    .string()
                    .null()
                    .to_owned(),
                ColumnDef::new(Device::SessionAt)
                    .timestamp_with_time_zone()
                    .null()
                    .to_owned(),
            ],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        super::drop_columns(
            manager,
            Device::Table,
            vec![Device::Session, Device::SessionNode, Device::SessionAt],
        )
        .await
    }
}
