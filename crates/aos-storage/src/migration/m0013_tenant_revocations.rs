//! A disabled tenant in the credential change log: every node closes the sessions of its
//! devices and applications.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(Clone, Copy, DeriveIden)]
enum CredentialChange {
    Table,
    TenantId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        super::add_columns(
            manager,
            CredentialChange::Table,
            vec![
                ColumnDef::new(CredentialChange::TenantId)
                    .big_integer()
                    .null()
                    .to_owned(),
            ],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        super::drop_columns(
            manager,
            CredentialChange::Table,
            vec![CredentialChange::TenantId],
        )
        .await
    }
}
