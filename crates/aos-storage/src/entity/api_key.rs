//! An API key of a tenant (for applications and integrations), stored hashed, with explicit ACL grants.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "api_key")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(indexed)]
    pub tenant_id: i64,
    pub user_id: Option<i64>,
    pub name: String,
    /// The first characters of the key, to tell keys apart in lists.
    pub prefix: String,
    /// SHA-256 of the key (keys are long random strings, so no slow hash is needed).
    #[sea_orm(unique)]
    pub key_hash: String,
    /// MQTT topic grants: [{"filter": "...", "publish": bool, "subscribe": bool}].
    pub acl: Json,
    pub created_at: ChronoDateTimeUtc,
    pub expires_at: Option<ChronoDateTimeUtc>,
    pub revoked_at: Option<ChronoDateTimeUtc>,
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
        belongs_to = "super::app_user::Entity",
        from = "Column::UserId",
        to = "super::app_user::Column::Id",
        on_delete = "Cascade"
    )]
    User,
}

impl ActiveModelBehavior for ActiveModel {}
