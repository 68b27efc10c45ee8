//! A message format: how a payload is read (JSON, XML, Protobuf, PMS-native) or written.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "message_format")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(unique_key = "format_name")]
    pub tenant_id: i64,
    #[sea_orm(unique_key = "format_name")]
    pub name: String,
    /// `json`, `xml`, `protobuf` or `pms`.
    pub kind: String,
    /// `inbound` or `outbound`.
    pub direction: String,
    /// The `.proto` text (Protobuf) and the message type to decode.
    pub proto_text: Option<String>,
    pub proto_message: Option<String>,
    pub json_schema: Option<Json>,
    /// Payload field → attribute mapping.
    pub mapping: Json,
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
}

impl ActiveModelBehavior for ActiveModel {}
