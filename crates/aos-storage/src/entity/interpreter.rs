//! How an attribute's raw value is interpreted: value mapping, expression, levels.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "interpreter")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(indexed)]
    pub tenant_id: i64,
    /// NULL: applies to every class of the tenant.
    pub class_id: Option<i64>,
    pub attribute: String,
    pub value_map: Option<Json>,
    pub expression: Option<String>,
    /// [{"level": "warning", "min": ..., "max": ...}]
    pub levels: Option<Json>,
    pub enabled: bool,
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
    #[sea_orm(
        belongs_to = "super::device_class::Entity",
        from = "Column::ClassId",
        to = "super::device_class::Column::Id",
        on_delete = "Cascade"
    )]
    Class,
}

impl ActiveModelBehavior for ActiveModel {}
