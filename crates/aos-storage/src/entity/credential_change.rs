//! The credential change log: one row per change of a device's credentials, read by every node
//! to drop cached logins and close the device's live session.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "credential_change")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub device_uid: String,
    pub at: ChronoDateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
