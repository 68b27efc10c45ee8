//! A device class: the template a device inherits attributes, commands and formats from.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "device_class")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(unique_key = "class_name")]
    pub tenant_id: i64,
    #[sea_orm(unique_key = "class_name")]
    pub name: String,
    pub description: String,
    /// Inbound message format (devices may override it).
    pub format_id: Option<i64>,
    /// Outbound (command) message format.
    pub outbound_format_id: Option<i64>,
    pub is_gateway: bool,
    /// A gateway of this class may register unknown child nodes...
    pub auto_register_children: bool,
    /// ...in this class (migration m0008).
    pub child_class_id: Option<i64>,
    /// SHA-256 of the provisioning key that lets unknown devices register (NULL: off).
    pub provisioning_key_hash: Option<String>,
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
    #[sea_orm(
        belongs_to = "super::message_format::Entity",
        from = "Column::FormatId",
        to = "super::message_format::Column::Id",
        on_delete = "SetNull"
    )]
    Format,
}

impl ActiveModelBehavior for ActiveModel {}
