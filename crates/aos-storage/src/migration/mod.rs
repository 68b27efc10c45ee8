//! Schema migrations, applied in order on SQLite and PostgreSQL alike.

mod m0001_nodes;
mod m0002_platform;
mod m0003_credential_changes;
mod m0004_entity_names;
mod m0005_api_keys;
mod m0006_acquisition;
mod m0007_message_log_indexes;
mod m0008_child_class;
mod m0009_ledger_retention_by_series;
mod m0010_device_sessions;
mod m0011_ledger_by_series;
mod m0012_alarm_crossings;
mod m0013_tenant_revocations;
mod m0014_workflow_run_steps;

use sea_orm_migration::prelude::*;
use sea_orm_migration::{MigrationTrait, MigratorTrait};

pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m0001_nodes::Migration),
            Box::new(m0002_platform::Migration),
            Box::new(m0003_credential_changes::Migration),
            Box::new(m0004_entity_names::Migration),
            Box::new(m0005_api_keys::Migration),
            Box::new(m0006_acquisition::Migration),
            Box::new(m0007_message_log_indexes::Migration),
            Box::new(m0008_child_class::Migration),
            Box::new(m0009_ledger_retention_by_series::Migration),
            Box::new(m0010_device_sessions::Migration),
            Box::new(m0011_ledger_by_series::Migration),
            Box::new(m0012_alarm_crossings::Migration),
            Box::new(m0013_tenant_revocations::Migration),
            Box::new(m0014_workflow_run_steps::Migration),
        ]
    }
}

/// Adds `columns` to `table`, one statement each (SQLite alters one column at a time).
async fn add_columns<T: IntoIden + Clone + 'static>(
    manager: &SchemaManager<'_>,
    table: T,
    columns: Vec<ColumnDef>,
) -> Result<(), DbErr> {
    for mut column in columns {
        manager
            .alter_table(
                Table::alter()
                    .table(table.clone())
                    .add_column(&mut column)
                    .to_owned(),
            )
            .await?;
    }
    Ok(())
}

/// Drops `columns` from `table`, one statement each.
async fn drop_columns<T: IntoIden + Clone + 'static, C: IntoIden + 'static>(
    manager: &SchemaManager<'_>,
    table: T,
    columns: Vec<C>,
) -> Result<(), DbErr> {
    for column in columns {
        manager
            .alter_table(
                Table::alter()
                    .table(table.clone())
                    .drop_column(column)
                    .to_owned(),
            )
            .await?;
    }
    Ok(())
}
