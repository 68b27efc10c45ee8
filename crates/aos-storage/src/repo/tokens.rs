//! Refresh tokens, stored hashed. Rotation keeps a family: presenting a token that was already
//! rotated away (a stolen copy, or a replay) revokes the whole family.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr,
};

use crate::entity::refresh_token;
use crate::{Storage, StorageError};

pub async fn insert(
    storage: &Storage,
    user_id: i64,
    token_hash: String,
    family: String,
    expires_at: DateTime<Utc>,
) -> Result<refresh_token::Model, StorageError> {
    Ok(refresh_token::ActiveModel {
        user_id: Set(user_id),
        token_hash: Set(token_hash),
        family: Set(family),
        created_at: Set(Utc::now()),
        expires_at: Set(expires_at),
        revoked_at: Set(None),
        ..Default::default()
    }
    .insert(storage.db())
    .await?)
}

pub async fn by_hash(
    storage: &Storage,
    token_hash: &str,
) -> Result<Option<refresh_token::Model>, StorageError> {
    Ok(refresh_token::Entity::find()
        .filter(refresh_token::Column::TokenHash.eq(token_hash))
        .one(storage.db())
        .await?)
}

/// Replaces `old` by a new token of its family. False when `old` was revoked meanwhile (two
/// refreshes raced, or a replay): nothing is issued then.
pub async fn rotate(
    storage: &Storage,
    old: &refresh_token::Model,
    new_hash: String,
    expires_at: DateTime<Utc>,
) -> Result<Option<refresh_token::Model>, StorageError> {
    let txn = storage.begin_write().await?;
    let revoked = refresh_token::Entity::update_many()
        .col_expr(refresh_token::Column::RevokedAt, Expr::value(Utc::now()))
        .filter(refresh_token::Column::Id.eq(old.id))
        .filter(refresh_token::Column::RevokedAt.is_null())
        .exec(&txn)
        .await?;
    if revoked.rows_affected != 1 {
        return Ok(None);
    }
    let new = refresh_token::ActiveModel {
        user_id: Set(old.user_id),
        token_hash: Set(new_hash),
        family: Set(old.family.clone()),
        created_at: Set(Utc::now()),
        expires_at: Set(expires_at),
        revoked_at: Set(None),
        ..Default::default()
    }
    .insert(&txn)
    .await?;
    txn.commit().await?;
    Ok(Some(new))
}

/// Revokes every live token of a family; returns how many.
pub async fn revoke_family(storage: &Storage, family: &str) -> Result<u64, StorageError> {
    revoke_where(storage, refresh_token::Column::Family.eq(family)).await
}

/// Revokes every live token of a user (password change or reset); returns how many.
pub async fn revoke_user(storage: &Storage, user_id: i64) -> Result<u64, StorageError> {
    revoke_where(storage, refresh_token::Column::UserId.eq(user_id)).await
}

async fn revoke_where(
    storage: &Storage,
    which: sea_orm::sea_query::SimpleExpr,
) -> Result<u64, StorageError> {
    Ok(refresh_token::Entity::update_many()
        .col_expr(refresh_token::Column::RevokedAt, Expr::value(Utc::now()))
        .filter(which)
        .filter(refresh_token::Column::RevokedAt.is_null())
        .exec(storage.db())
        .await?
        .rows_affected)
}
