//! API keys of a tenant: how applications and integrations sign in (over MQTT, with explicit
//! topic grants). Keys are stored as a SHA-256 lookup hash; the key itself is shown once.

use aos_core::access::{Revoked, TopicGrant};
use aos_core::topic::valid_topic_filter;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder,
};

use super::{Scope, check_identifier, duplicate};
use crate::entity::api_key;
use crate::{Storage, StorageError};

/// Most grants one key may hold.
pub const MAX_GRANTS: usize = 64;

/// A key to create (its secret already hashed by `aos-auth`).
#[derive(Clone, Debug)]
pub struct NewApiKey {
    pub name: String,
    /// The first characters of the key, to tell keys apart in lists.
    pub prefix: String,
    pub key_hash: String,
    pub grants: Vec<TopicGrant>,
    pub expires_at: Option<DateTime<Utc>>,
}

fn check_grants(grants: &[TopicGrant]) -> Result<(), StorageError> {
    if grants.len() > MAX_GRANTS {
        return Err(StorageError::invalid(
            "grants",
            format!("are more than {MAX_GRANTS}: a key holds {MAX_GRANTS} at most"),
        ));
    }
    for grant in grants {
        if !valid_topic_filter(&grant.filter) {
            return Err(StorageError::invalid(
                "grants",
                format!(
                    "`{}` is not an MQTT topic filter (`+` and `#` take a whole level, `#` only the last)",
                    grant.filter
                ),
            ));
        }
        if !grant.publish && !grant.subscribe {
            return Err(StorageError::invalid(
                "grants",
                format!("`{}` allows neither publish nor subscribe", grant.filter),
            ));
        }
    }
    Ok(())
}

pub async fn create(
    storage: &Storage,
    scope: Scope,
    new: NewApiKey,
) -> Result<api_key::Model, StorageError> {
    if scope.customer.is_some() {
        return Err(StorageError::Forbidden("customers cannot create API keys"));
    }
    check_identifier("API key name", &new.name)?;
    check_grants(&new.grants)?;
    let acl = serde_json::to_value(&new.grants)
        .map_err(|e| StorageError::invalid("grants", e.to_string()))?;
    api_key::ActiveModel {
        tenant_id: Set(scope.tenant),
        user_id: Set(None),
        name: Set(new.name.clone()),
        prefix: Set(new.prefix),
        key_hash: Set(new.key_hash),
        acl: Set(acl),
        created_at: Set(Utc::now()),
        expires_at: Set(new.expires_at),
        revoked_at: Set(None),
        ..Default::default()
    }
    .insert(storage.db())
    .await
    .map_err(duplicate("API key", &new.name))
}

pub async fn list(storage: &Storage, scope: Scope) -> Result<Vec<api_key::Model>, StorageError> {
    Ok(api_key::Entity::find()
        .filter(api_key::Column::TenantId.eq(scope.tenant))
        .order_by_asc(api_key::Column::Name)
        .all(storage.db())
        .await?)
}

/// The grants a stored key carries.
pub fn grants(key: &api_key::Model) -> Vec<TopicGrant> {
    serde_json::from_value(key.acl.clone()).unwrap_or_default()
}

/// Revokes the key `name`: it no longer signs in, and every node closes the sessions it opened.
pub async fn revoke(
    storage: &Storage,
    scope: Scope,
    name: &str,
) -> Result<api_key::Model, StorageError> {
    let txn = storage.begin_write().await?;
    let key = api_key::Entity::find()
        .filter(api_key::Column::TenantId.eq(scope.tenant))
        .filter(api_key::Column::Name.eq(name))
        .one(&txn)
        .await?
        .ok_or_else(|| StorageError::not_found("API key", name))?;
    // Revoking twice is a no-op that keeps the first time; only the request that revoked the
    // key tells the nodes to close its sessions.
    let now = Utc::now();
    let revoked = api_key::Entity::update_many()
        .col_expr(api_key::Column::RevokedAt, Expr::value(now))
        .filter(api_key::Column::Id.eq(key.id))
        .filter(api_key::Column::RevokedAt.is_null())
        .exec(&txn)
        .await?
        .rows_affected
        > 0;
    let key = api_key::Entity::find_by_id(key.id)
        .one(&txn)
        .await?
        .ok_or_else(|| StorageError::not_found("API key", name))?;
    if !revoked {
        txn.commit().await?;
        return Ok(key);
    }
    super::devices::credential_changed(&txn, &Revoked::ApiKey(key.id), now).await?;
    txn.commit().await?;
    Ok(key)
}

/// The live key whose lookup hash is `key_hash` (not revoked, not expired). Platform-wide: a
/// client authenticates before any tenant is known.
pub async fn by_hash(
    storage: &Storage,
    key_hash: &str,
) -> Result<Option<api_key::Model>, StorageError> {
    let key = api_key::Entity::find()
        .filter(api_key::Column::KeyHash.eq(key_hash))
        .filter(api_key::Column::RevokedAt.is_null())
        .one(storage.db())
        .await?;
    Ok(key.filter(|k| k.expires_at.is_none_or(|at| at > Utc::now())))
}
