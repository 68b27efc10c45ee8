//! The platform's data model: tenancy, users and access, device classes and devices, formats,
//! the message log, the ledger, interpreters, workflows and commands, events, listeners.
//!
//! The DDL is frozen as SQL, one statement per line and one file per backend: generated once from
//! the entity definitions of the first release, so that later changes to the entities come with
//! migrations of their own and never change what this one creates. The ledger's indexes serve its
//! reads (one device, one attribute, a time range; retention by time), and a redelivered message
//! writes no second row for the same attribute (unique message + attribute).

use sea_orm::{ConnectionTrait, DbBackend};
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const SQLITE: &str = include_str!("m0002_platform.sqlite.sql");
const POSTGRES: &str = include_str!("m0002_platform.postgres.sql");

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let ddl = match manager.get_database_backend() {
            DbBackend::Sqlite => SQLITE,
            DbBackend::Postgres => POSTGRES,
            other => {
                return Err(DbErr::Migration(format!(
                    "{other:?} is not supported: use SQLite or PostgreSQL"
                )));
            }
        };
        let db = manager.get_connection();
        for statement in ddl.lines().filter(|l| !l.trim().is_empty()) {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            "aos_listener",
            "event",
            "command",
            "command_batch",
            "workflow_run",
            "workflow",
            "interpreter",
            "latest_value",
            "ledger",
            "message_log",
            "device_credential",
            "device",
            "command_group",
            "attribute_def",
            "class_function",
            "device_class",
            "message_format",
            "audit_log",
            "refresh_token",
            "api_key",
            "user_role",
            "role",
            "app_user",
            "org_entity",
            "tenant",
        ] {
            manager
                .drop_table(Table::drop().table(Alias::new(table)).to_owned())
                .await?;
        }
        Ok(())
    }
}
