//! The AOS nodes of a deployment: identity, roles, and when each was last seen.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AosNode {
    Table,
    Id,
    Version,
    CompiledRoles,
    EnabledRoles,
    AdminListen,
    StartedAt,
    LastSeen,
    StoppedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AosNode::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(AosNode::Id)
                            .string_len(128)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(AosNode::Version).string_len(64).not_null())
                    .col(
                        ColumnDef::new(AosNode::CompiledRoles)
                            .string_len(128)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AosNode::EnabledRoles)
                            .string_len(128)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AosNode::AdminListen)
                            .string_len(128)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AosNode::StartedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AosNode::LastSeen)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AosNode::StoppedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(AosNode::Table).to_owned())
            .await
    }
}
