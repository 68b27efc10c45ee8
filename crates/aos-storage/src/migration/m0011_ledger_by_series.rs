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

#[derive(DeriveIden, Clone, Copy)]
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
        use Ledger::{Attribute, DeviceId, MessageId, Ts};
        manager
            .create_index(index(
                SERIES_UNIQUE,
                [DeviceId, Attribute, Ts, MessageId],
                true,
            ))
            .await?;
        for name in [SERIES, BY_MESSAGE] {
            drop_index(manager, name).await?;
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
        use Ledger::{Attribute, DeviceId, MessageId, Ts};
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
            .create_index(index(SERIES, [DeviceId, Attribute, Ts], false))
            .await?;
        manager
            .create_index(index(BY_MESSAGE, [MessageId, Attribute, Ts], true))
            .await?;
        drop_index(manager, SERIES_UNIQUE).await
    }
}

/// The ledger's index `name` on `columns`.
fn index<const N: usize>(name: &str, columns: [Ledger; N], unique: bool) -> IndexCreateStatement {
    let mut index = Index::create();
    index.name(name).table(Ledger::Table);
    for column in columns {
        index.col(column);
    }
    if unique {
        index.unique();
    }
    index
}

async fn drop_index(manager: &SchemaManager<'_>, name: &str) -> Result<(), DbErr> {
    manager
        .drop_index(Index::drop().name(name).table(Ledger::Table).to_owned())
        .await
}
