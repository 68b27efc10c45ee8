//! An attribute definition of a device class.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "attribute_def")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(unique_key = "attribute_name")]
    pub class_id: i64,
    pub function_id: Option<i64>,
    #[sea_orm(unique_key = "attribute_name")]
    pub name: String,
    /// `number`, `integer`, `boolean`, `string` or `json`.
    pub data_type: String,
    pub unit: Option<String>,
    /// `configuration`, `measurement`, `operational` or `event`.
    pub kind: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::device_class::Entity",
        from = "Column::ClassId",
        to = "super::device_class::Column::Id",
        on_delete = "Cascade"
    )]
    Class,
    #[sea_orm(
        belongs_to = "super::class_function::Entity",
        from = "Column::FunctionId",
        to = "super::class_function::Column::Id",
        on_delete = "SetNull"
    )]
    Function,
}

impl ActiveModelBehavior for ActiveModel {}
