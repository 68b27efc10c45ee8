//! The steps of a workflow run: each action it took, how it went and how long it took.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(Clone, Copy, DeriveIden)]
enum WorkflowRun {
    Table,
    Steps,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        super::add_columns(
            manager,
            WorkflowRun::Table,
            vec![ColumnDef::new(WorkflowRun::Steps).json().null().to_owned()],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        super::drop_columns(manager, WorkflowRun::Table, vec![WorkflowRun::Steps]).await
    }
}
