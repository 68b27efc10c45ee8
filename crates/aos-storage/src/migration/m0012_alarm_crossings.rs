//! One open alarm per device, attribute and level: how many times the value crossed into the
//! level while the alarm stayed open, and the last value and time it did.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(Clone, Copy, DeriveIden)]
enum Event {
    Table,
    Crossings,
    LastValue,
    LastAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        super::add_columns(
            manager,
            Event::Table,
            vec![
                ColumnDef::new(Event::Crossings)
                    .big_integer()
                    .not_null()
                    .default(1)
                    .to_owned(),
                ColumnDef::new(Event::LastValue).string().null().to_owned(),
                ColumnDef::new(Event::LastAt)
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
            Event::Table,
            vec![Event::Crossings, Event::LastValue, Event::LastAt],
        )
        .await
    }
}
