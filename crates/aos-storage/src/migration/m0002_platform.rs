//! The platform's data model: tenancy, users and access, device classes and devices, formats,
//! the message log, the ledger, interpreters, workflows, commands and events, listeners.
//!
//! Tables are created from the entity definitions (the same DDL on SQLite and PostgreSQL). A
//! later change to one of these entities needs its own migration altering the table; this one
//! stays as it is (fresh databases then run both, so the later one must tolerate a column that
//! already exists, or this one must be frozen to explicit DDL first).

use sea_orm::{EntityTrait, Schema};
use sea_orm_migration::prelude::*;

use crate::entity::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

async fn create<E: EntityTrait>(manager: &SchemaManager<'_>, entity: E) -> Result<(), DbErr> {
    let schema = Schema::new(manager.get_database_backend());
    manager
        .create_table(schema.create_table_from_entity(entity))
        .await?;
    for index in schema.create_index_from_entity(entity) {
        manager.create_index(index).await?;
    }
    Ok(())
}

async fn ledger_index(
    manager: &SchemaManager<'_>,
    name: &str,
    columns: &[ledger::Column],
    unique: bool,
) -> Result<(), DbErr> {
    let mut index = Index::create();
    index.name(name).table(ledger::Entity);
    for column in columns {
        index.col(*column);
    }
    if unique {
        index.unique();
    }
    manager.create_index(index).await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // In dependency order: a table after the tables it references.
        create(manager, tenant::Entity).await?;
        create(manager, org_entity::Entity).await?;
        create(manager, app_user::Entity).await?;
        create(manager, role::Entity).await?;
        create(manager, user_role::Entity).await?;
        create(manager, api_key::Entity).await?;
        create(manager, refresh_token::Entity).await?;
        create(manager, audit_log::Entity).await?;
        create(manager, message_format::Entity).await?;
        create(manager, device_class::Entity).await?;
        create(manager, class_function::Entity).await?;
        create(manager, attribute_def::Entity).await?;
        create(manager, command_group::Entity).await?;
        create(manager, device::Entity).await?;
        create(manager, device_credential::Entity).await?;
        create(manager, message_log::Entity).await?;
        create(manager, ledger::Entity).await?;
        create(manager, latest_value::Entity).await?;
        create(manager, interpreter::Entity).await?;
        create(manager, workflow::Entity).await?;
        create(manager, workflow_run::Entity).await?;
        create(manager, command_batch::Entity).await?;
        create(manager, command::Entity).await?;
        create(manager, event::Entity).await?;
        create(manager, aos_listener::Entity).await?;
        // The ledger's reads: one device, one attribute, a time range (and retention by time);
        // a redelivered message writes no second row for the same attribute.
        use ledger::Column as L;
        ledger_index(
            manager,
            "ledger_device_attribute_ts",
            &[L::DeviceId, L::Attribute, L::Ts],
            false,
        )
        .await?;
        ledger_index(manager, "ledger_ts", &[L::Ts], false).await?;
        ledger_index(
            manager,
            "ledger_message_attribute",
            &[L::MessageId, L::Attribute],
            true,
        )
        .await
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
