//! API keys: names unique within their tenant, and their revocations in the credential change log
//! (so that every node closes the sessions a revoked key opened).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ApiKey {
    Table,
    TenantId,
    Name,
}

#[derive(DeriveIden)]
enum CredentialChange {
    Table,
    ApiKeyId,
}

const INDEX: &str = "api_key_tenant_name";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(INDEX)
                    .table(ApiKey::Table)
                    .col(ApiKey::TenantId)
                    .col(ApiKey::Name)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(CredentialChange::Table)
                    .add_column(
                        ColumnDef::new(CredentialChange::ApiKeyId)
                            .big_integer()
                            .null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(CredentialChange::Table)
                    .drop_column(CredentialChange::ApiKeyId)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(Index::drop().name(INDEX).table(ApiKey::Table).to_owned())
            .await
    }
}
