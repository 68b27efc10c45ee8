//! A function of a device class: a reusable group of attribute definitions.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "class_function")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(unique_key = "function_name")]
    pub class_id: i64,
    #[sea_orm(unique_key = "function_name")]
    pub name: String,
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
}

impl ActiveModelBehavior for ActiveModel {}
