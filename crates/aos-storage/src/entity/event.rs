//! An event or alarm raised for a device; acknowledged and cleared by people or workflows. While
//! an alarm of a device attribute stays open (not cleared), the value crossing into its level
//! again updates it rather than raising another.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "event")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(indexed)]
    pub tenant_id: i64,
    #[sea_orm(indexed)]
    pub device_id: i64,
    pub attribute: Option<String>,
    pub level: String,
    pub message: String,
    #[sea_orm(indexed)]
    pub raised_at: ChronoDateTimeUtc,
    pub acknowledged_at: Option<ChronoDateTimeUtc>,
    pub acknowledged_by: Option<String>,
    pub cleared_at: Option<ChronoDateTimeUtc>,
    /// How many times the value crossed into the level while it stayed open (1: once).
    pub crossings: i64,
    /// The value of the last crossing, as JSON text.
    pub last_value: Option<String>,
    /// When the last crossing was (the value's time).
    pub last_at: Option<ChronoDateTimeUtc>,
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
        belongs_to = "super::device::Entity",
        from = "Column::DeviceId",
        to = "super::device::Column::Id",
        on_delete = "Cascade"
    )]
    Device,
}

impl ActiveModelBehavior for ActiveModel {}

impl Related<super::device::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Device.def()
    }
}
