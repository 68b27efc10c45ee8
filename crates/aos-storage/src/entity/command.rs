//! A command to one device and its status.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "command")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(indexed)]
    pub tenant_id: i64,
    #[sea_orm(indexed)]
    pub device_id: i64,
    pub batch_id: Option<i64>,
    pub name: String,
    pub payload: Json,
    /// `queued`, `sent`, `acknowledged`, `failed` or `expired`.
    #[sea_orm(indexed)]
    pub status: String,
    pub error: Option<String>,
    pub created_at: ChronoDateTimeUtc,
    pub sent_at: Option<ChronoDateTimeUtc>,
    pub acknowledged_at: Option<ChronoDateTimeUtc>,
    pub expires_at: Option<ChronoDateTimeUtc>,
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
    #[sea_orm(
        belongs_to = "super::command_batch::Entity",
        from = "Column::BatchId",
        to = "super::command_batch::Column::Id",
        on_delete = "SetNull"
    )]
    Batch,
}

impl ActiveModelBehavior for ActiveModel {}

impl Related<super::device::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Device.def()
    }
}
