//! The attribute ledger: every interpreted value (the hot table; see the migration's indexes).
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "ledger")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: i64,
    pub device_id: i64,
    pub attribute: String,
    pub ts: ChronoDateTimeUtc,
    /// Numeric values (for aggregation); other values in `value_json`.
    pub value_num: Option<f64>,
    pub value_json: Option<Json>,
    pub raw: Option<Json>,
    pub level: Option<String>,
    /// The message that produced it (with device, attribute and time, what makes a redelivery
    /// a no-op).
    pub message_id: Option<i64>,
}

/// For joins: on PostgreSQL the ledger has no foreign key (migration m0011); deleting a device
/// deletes its rows itself.
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
