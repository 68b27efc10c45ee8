//! The latest value of each device attribute, kept current for fast reads.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "latest_value")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub device_id: i64,
    #[sea_orm(primary_key, auto_increment = false)]
    pub attribute: String,
    #[sea_orm(indexed)]
    pub tenant_id: i64,
    pub ts: ChronoDateTimeUtc,
    pub value_num: Option<f64>,
    pub value_json: Option<Json>,
    pub level: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::device::Entity",
        from = "Column::DeviceId",
        to = "super::device::Column::Id",
        on_delete = "Cascade"
    )]
    Device,
}

impl ActiveModelBehavior for ActiveModel {}
