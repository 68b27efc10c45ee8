//! Entity names are unique within their tenant (references to entities are given by name).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum OrgEntity {
    Table,
    TenantId,
    Name,
}

const INDEX: &str = "org_entity_tenant_name";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(INDEX)
                    .table(OrgEntity::Table)
                    .col(OrgEntity::TenantId)
                    .col(OrgEntity::Name)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(Index::drop().name(INDEX).table(OrgEntity::Table).to_owned())
            .await
    }
}
