use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "aos_node")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub version: String,
    /// Comma-separated role names.
    pub compiled_roles: String,
    pub enabled_roles: String,
    pub admin_listen: String,
    pub started_at: ChronoDateTimeUtc,
    pub last_seen: ChronoDateTimeUtc,
    pub stopped_at: Option<ChronoDateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
