//! The ledger loses its index on time alone: retention now deletes old rows series by series
//! (device, attribute) through the main (device, attribute, time) index, and every ledger row
//! written is one index insert cheaper.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Ledger {
    Table,
    Ts,
}

const INDEX: &str = "ledger_ts";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(Index::drop().name(INDEX).table(Ledger::Table).to_owned())
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(INDEX)
                    .table(Ledger::Table)
                    .col(Ledger::Ts)
                    .to_owned(),
            )
            .await
    }
}
