//! An MQTT listener of an AOS node.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "aos_listener")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(unique_key = "listener_name")]
    pub node_id: String,
    #[sea_orm(unique_key = "listener_name")]
    pub name: String,
    pub bind: String,
    /// `tcp`, `tls`, `ws` or `wss`.
    pub transport: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::aos_node::Entity",
        from = "Column::NodeId",
        to = "super::aos_node::Column::Id",
        on_delete = "Cascade"
    )]
    Node,
}

impl ActiveModelBehavior for ActiveModel {}
