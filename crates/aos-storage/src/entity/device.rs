//! A device (or a gateway's child node): identity, class, owner, status.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "device")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(indexed)]
    pub tenant_id: i64,
    pub entity_id: Option<i64>,
    #[sea_orm(indexed)]
    pub class_id: i64,
    /// The device's id on the wire (its MQTT client id and topic segment), unique on the platform.
    #[sea_orm(unique)]
    pub uid: String,
    pub name: String,
    /// The gateway this node is reached through.
    pub gateway_id: Option<i64>,
    /// Overrides the class's inbound format.
    pub format_id: Option<i64>,
    /// `online` or `offline`.
    pub status: String,
    pub last_seen: Option<ChronoDateTimeUtc>,
    /// The broker session its presence belongs to (`<node>/<boot>/<connection>`), the node
    /// holding it, and when it connected; none while offline.
    pub session: Option<String>,
    pub session_node: Option<String>,
    pub session_at: Option<ChronoDateTimeUtc>,
    pub disabled: bool,
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
        belongs_to = "super::org_entity::Entity",
        from = "Column::EntityId",
        to = "super::org_entity::Column::Id",
        on_delete = "SetNull"
    )]
    OrgEntity,
    #[sea_orm(
        belongs_to = "super::device_class::Entity",
        from = "Column::ClassId",
        to = "super::device_class::Column::Id",
        on_delete = "Restrict"
    )]
    Class,
    #[sea_orm(
        belongs_to = "super::device::Entity",
        from = "Column::GatewayId",
        to = "super::device::Column::Id",
        on_delete = "SetNull"
    )]
    Gateway,
}

impl Related<super::device_class::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Class.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
