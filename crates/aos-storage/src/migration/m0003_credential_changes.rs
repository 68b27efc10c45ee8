//! The credential change log (see `entity::credential_change`).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum CredentialChange {
    Table,
    Id,
    DeviceUid,
    At,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(CredentialChange::Table)
                    .col(
                        ColumnDef::new(CredentialChange::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(CredentialChange::DeviceUid)
                            .string()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(CredentialChange::At)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(CredentialChange::Table).to_owned())
            .await
    }
}
