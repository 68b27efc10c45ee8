//! Security events: sign-ins, revocations, role, permission and credential changes, registrations.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_log")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(indexed)]
    pub tenant_id: Option<i64>,
    #[sea_orm(indexed)]
    pub at: ChronoDateTimeUtc,
    /// Who acted: `user:<login>`, `device:<id>`, `cli`, `system`.
    pub actor: String,
    pub action: String,
    pub object_kind: Option<String>,
    pub object_id: Option<String>,
    pub client_addr: Option<String>,
    pub success: bool,
    pub detail: Json,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
