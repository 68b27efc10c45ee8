//! The class in which a gateway class's unknown child nodes are registered (with
//! `auto_register_children`).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum DeviceClass {
    Table,
    ChildClassId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(DeviceClass::Table)
                    .add_column(
                        ColumnDef::new(DeviceClass::ChildClassId)
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
                    .table(DeviceClass::Table)
                    .drop_column(DeviceClass::ChildClassId)
                    .to_owned(),
            )
            .await
    }
}
