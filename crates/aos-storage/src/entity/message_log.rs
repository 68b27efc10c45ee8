//! Every raw inbound and outbound message and its lifecycle. Indexed by (tenant_id, received_at)
//! and (device_id, received_at) (migration m0007).
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "message_log")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: i64,
    pub device_id: Option<i64>,
    /// `inbound` or `outbound`.
    pub direction: String,
    pub topic: String,
    pub payload: Vec<u8>,
    /// `processed` or `failed` (inbound); `archived` once archived.
    pub status: String,
    pub error: Option<String>,
    /// Identifies a message across redeliveries (idempotent processing).
    #[sea_orm(unique)]
    pub message_key: String,
    /// When the broker accepted it.
    pub received_at: ChronoDateTimeUtc,
    /// When a worker took it up.
    pub started_at: Option<ChronoDateTimeUtc>,
    pub processed_at: Option<ChronoDateTimeUtc>,
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
        on_delete = "SetNull"
    )]
    Device,
}

impl ActiveModelBehavior for ActiveModel {}
