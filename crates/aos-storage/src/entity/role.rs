//! A role: a permission level per object kind and advanced actions. Built-in roles have tenant_id NULL.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "role")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(unique_key = "role_name")]
    pub tenant_id: Option<i64>,
    #[sea_orm(unique_key = "role_name")]
    pub name: String,
    pub builtin: bool,
    /// Object kind → `none` | `view` | `manage` | `full`.
    pub permissions: Json,
    /// Advanced actions granted: `validate`, `lock`, `disable`.
    pub actions: Json,
    pub created_at: ChronoDateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::tenant::Entity",
        from = "Column::TenantId",
        to = "super::tenant::Column::Id",
        on_delete = "Cascade"
    )]
    Tenant,
}

impl ActiveModelBehavior for ActiveModel {}
