//! How a device proves who it is: MQTT username + password, an access token, or a client certificate.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "device_credential")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(indexed)]
    pub device_id: i64,
    /// `password`, `token` or `certificate`.
    pub kind: String,
    /// MQTT username (kind `password`).
    #[sea_orm(unique)]
    pub username: Option<String>,
    /// argon2id hash of the password, or SHA-256 of the token.
    pub secret_hash: Option<String>,
    /// SHA-256 fingerprint of the client certificate (kind `certificate`).
    #[sea_orm(unique)]
    pub cert_fingerprint: Option<String>,
    /// Looks the token up without revealing it: SHA-256 of the token (kind `token`).
    #[sea_orm(unique)]
    pub token_lookup: Option<String>,
    pub created_at: ChronoDateTimeUtc,
    pub revoked_at: Option<ChronoDateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::device::Entity",
        from = "Column::DeviceId",
        to = "super::device::Column::Id",
        on_delete = "Cascade"
    )]
    Device,
}

impl ActiveModelBehavior for ActiveModel {}
