//! The ledger's two indexes become one, unique on (device, attribute, time, message): series
//! reads and retention use its prefix, a redelivered message still writes nothing twice, and a
//! gateway's children reporting the same attribute at the same time in one message no longer
//! collide (the old key, (message, attribute, time), kept only the first child's value).
//!
//! On PostgreSQL the ledger and the message log lose their foreign keys: each checked row locks
//! its device (or tenant) row, a third of what storing a reading costs there. Deleting a device
//! now deletes its ledger rows and detaches its logged messages itself, and every batch still
//! writes the latest values, whose foreign key makes a batch for a deleted device fail whole.
//! SQLite keeps its foreign keys (it cannot drop one without copying the table, and they cost it
//! little).

use sea_orm::DatabaseBackend;
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Ledger {
    Table,
    DeviceId,
    Attribute,
    Ts,
    MessageId,
}

const SERIES: &str = "ledger_device_attribute_ts";
const BY_MESSAGE: &str = "ledger_message_attribute_ts";
const SERIES_UNIQUE: &str = "ledger_device_attribute_ts_message";

/// The foreign keys PostgreSQL drops: (table, constraint, definition to restore it).
const FOREIGN_KEYS: [(&str, &str, &str); 3] = [
    (
        "ledger",
        "fk-ledger-device_id",
        r#"FOREIGN KEY ("device_id") REFERENCES "device" ("id") ON DELETE CASCADE"#,
    ),
    (
        "message_log",
        "fk-message_log-tenant_id",
        r#"FOREIGN KEY ("tenant_id") REFERENCES "tenant" ("id") ON DELETE CASCADE"#,
    ),
    (
        "message_log",
        "fk-message_log-device_id",
        r#"FOREIGN KEY ("device_id") REFERENCES "device" ("id") ON DELETE SET NULL"#,
    ),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(SERIES_UNIQUE)
                    .table(Ledger::Table)
                    .col(Ledger::DeviceId)
                    .col(Ledger::Attribute)
                    .col(Ledger::Ts)
                    .col(Ledger::MessageId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        for name in [SERIES, BY_MESSAGE] {
            manager
                .drop_index(Index::drop().name(name).table(Ledger::Table).to_owned())
                .await?;
        }
        if manager.get_database_backend() == DatabaseBackend::Postgres {
            for (table, constraint, _) in FOREIGN_KEYS {
                manager
                    .get_connection()
                    .execute_unprepared(&format!(
                        r#"ALTER TABLE "{table}" DROP CONSTRAINT "{constraint}""#
                    ))
                    .await?;
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DatabaseBackend::Postgres {
            for (table, constraint, definition) in FOREIGN_KEYS {
                manager
                    .get_connection()
                    .execute_unprepared(&format!(
                        r#"ALTER TABLE "{table}" ADD CONSTRAINT "{constraint}" {definition}"#
                    ))
                    .await?;
            }
        }
        manager
            .create_index(
                Index::create()
                    .name(SERIES)
                    .table(Ledger::Table)
                    .col(Ledger::DeviceId)
                    .col(Ledger::Attribute)
                    .col(Ledger::Ts)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(BY_MESSAGE)
                    .table(Ledger::Table)
                    .col(Ledger::MessageId)
                    .col(Ledger::Attribute)
                    .col(Ledger::Ts)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name(SERIES_UNIQUE)
                    .table(Ledger::Table)
                    .to_owned(),
            )
            .await
    }
}
