//! A person who signs in: to one tenant (or to the platform, tenant_id NULL), optionally bound to an entity.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "app_user")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(indexed)]
    pub tenant_id: Option<i64>,
    pub entity_id: Option<i64>,
    /// The login code, unique on the platform.
    #[sea_orm(unique)]
    pub login: String,
    pub name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    /// argon2id PHC string.
    pub password_hash: String,
    pub disabled: bool,
    pub locked: bool,
    pub created_at: ChronoDateTimeUtc,
    pub password_changed_at: ChronoDateTimeUtc,
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
}

impl ActiveModelBehavior for ActiveModel {}

impl Related<super::tenant::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Tenant.def()
    }
}
