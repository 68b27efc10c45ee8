//! The credential change log: one row per change of a device's credentials, an API key's
//! revocation or a tenant disabled, read by every node to drop cached logins and close the live
//! sessions they opened.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "credential_change")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The device whose credentials changed; empty when `api_key_id` or `tenant_id` is set.
    pub device_uid: String,
    /// The API key that was revoked.
    pub api_key_id: Option<i64>,
    /// The tenant that was disabled: all its devices and applications.
    pub tenant_id: Option<i64>,
    pub at: ChronoDateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
