//! The acquisition pipeline's bookkeeping: when a worker took a message up (the message log's
//! timings: received, started, processed), and ledger rows unique per message, attribute and
//! timestamp (a message may carry several samples of one attribute; a redelivered one adds none).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum MessageLog {
    Table,
    StartedAt,
}

#[derive(DeriveIden)]
enum Ledger {
    Table,
    MessageId,
    Attribute,
    Ts,
}

const OLD_INDEX: &str = "ledger_message_attribute";
const NEW_INDEX: &str = "ledger_message_attribute_ts";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(MessageLog::Table)
                    .add_column(
                        ColumnDef::new(MessageLog::StartedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name(OLD_INDEX)
                    .table(Ledger::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(NEW_INDEX)
                    .table(Ledger::Table)
                    .col(Ledger::MessageId)
                    .col(Ledger::Attribute)
                    .col(Ledger::Ts)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name(NEW_INDEX)
                    .table(Ledger::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(OLD_INDEX)
                    .table(Ledger::Table)
                    .col(Ledger::MessageId)
                    .col(Ledger::Attribute)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(MessageLog::Table)
                    .drop_column(MessageLog::StartedAt)
                    .to_owned(),
            )
            .await
    }
}
