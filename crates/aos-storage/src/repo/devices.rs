//! Devices of a tenant and their credentials.

use aos_core::access::{Revocation, Revoked};
use chrono::Utc;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, Order,
    QueryFilter, QueryOrder, QuerySelect,
};

pub use super::device_lookup::{OFFLINE, ONLINE, get};
pub(crate) use super::device_lookup::{get_in, visible};
use super::paging::{self, Page};
use super::{Scope, bound_entity, check_identifier, check_name, classes, duplicate};
use crate::entity::{
    credential_change, device, device_class, device_credential, ledger, message_log,
};
use crate::{Storage, StorageError};

/// A device to create, its references given by name.
#[derive(Clone, Debug, Default)]
pub struct NewDevice {
    /// The device's id on the wire (MQTT client id and topic segment).
    pub uid: String,
    pub name: String,
    pub class: String,
    pub entity: Option<String>,
    /// The gateway (its uid) this device is a child node of.
    pub gateway: Option<String>,
    /// An inbound format of its own, instead of its class's.
    pub format: Option<String>,
}

/// Creates a device in the scope's tenant (a customer's devices are bound to its entity).
pub async fn create(
    storage: &Storage,
    scope: Scope,
    new: NewDevice,
) -> Result<device::Model, StorageError> {
    check_identifier("device id", &new.uid)?;
    check_name("device name", &new.name)?;
    let txn = storage.begin_write().await?;
    let class = classes::by_name(&txn, scope, &new.class).await?;
    let entity = bound_entity(&txn, scope, new.entity.as_deref()).await?;
    let gateway = match &new.gateway {
        None => None,
        Some(uid) => {
            let gateway = get_in(&txn, scope, uid).await?;
            let is_gateway = device_class::Entity::find_by_id(gateway.class_id)
                .one(&txn)
                .await?
                .is_some_and(|c| c.is_gateway);
            if !is_gateway {
                return Err(StorageError::invalid(
                    "gateway",
                    format!(
                        "`{uid}` is not a gateway: its class is not a gateway class (create one with --gateway)"
                    ),
                ));
            }
            Some(gateway.id)
        }
    };
    let format = match &new.format {
        None => None,
        Some(name) => {
            let found = super::formats::by_name(&txn, scope, name).await?;
            if found.direction != super::formats::INBOUND {
                return Err(StorageError::invalid(
                    "format",
                    format!("`{name}` writes commands; a device's own format reads its payloads"),
                ));
            }
            Some(found.id)
        }
    };
    let device = device::ActiveModel {
        tenant_id: Set(scope.tenant),
        entity_id: Set(entity),
        class_id: Set(class.id),
        uid: Set(new.uid.clone()),
        name: Set(new.name),
        gateway_id: Set(gateway),
        format_id: Set(format),
        status: Set(OFFLINE.into()),
        last_seen: Set(None),
        disabled: Set(false),
        created_at: Set(Utc::now()),
        ..Default::default()
    }
    .insert(&txn)
    .await
    .map_err(duplicate("device", &new.uid))?;
    super::commands::queue_for_new_device(&txn, &device).await?;
    txn.commit().await?;
    Ok(device)
}

/// The devices the scope may see.
pub async fn list(storage: &Storage, scope: Scope) -> Result<Vec<device::Model>, StorageError> {
    Ok(visible(scope)
        .order_by_asc(device::Column::Uid)
        .all(storage.db())
        .await?)
}

/// A credential to give a device (secrets already hashed by `aos-auth`).
#[derive(Clone, Debug)]
pub enum NewCredential {
    /// MQTT username and argon2id password hash.
    Password { username: String, hash: String },
    /// SHA-256 (hex) of an access token.
    Token { lookup: String },
    /// SHA-256 fingerprint (hex) of a client certificate.
    Certificate { fingerprint: String },
}

/// Gives the device a credential, revoking the ones of the same kind it had.
pub async fn set_credential(
    storage: &Storage,
    scope: Scope,
    uid: &str,
    credential: NewCredential,
) -> Result<device_credential::Model, StorageError> {
    let txn = storage.begin_write().await?;
    let device = get_in(&txn, scope, uid).await?;
    let kind = match &credential {
        NewCredential::Password { username, .. } => {
            check_identifier("MQTT username", username)?;
            "password"
        }
        NewCredential::Token { .. } => "token",
        NewCredential::Certificate { fingerprint } => {
            if fingerprint.len() != 64
                || !fingerprint
                    .chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
            {
                return Err(StorageError::invalid(
                    "certificate fingerprint",
                    "must be the SHA-256 of the certificate in 64 lowercase hex digits",
                ));
            }
            "certificate"
        }
    };
    let now = Utc::now();
    device_credential::Entity::delete_many()
        .filter(device_credential::Column::DeviceId.eq(device.id))
        .filter(device_credential::Column::Kind.eq(kind))
        .exec(&txn)
        .await?;
    let mut row = device_credential::ActiveModel {
        device_id: Set(device.id),
        kind: Set(kind.into()),
        username: Set(None),
        secret_hash: Set(None),
        cert_fingerprint: Set(None),
        token_lookup: Set(None),
        created_at: Set(now),
        revoked_at: Set(None),
        ..Default::default()
    };
    let taken = match credential {
        NewCredential::Password { username, hash } => {
            row.username = Set(Some(username.clone()));
            row.secret_hash = Set(Some(hash));
            username
        }
        NewCredential::Token { lookup } => {
            row.token_lookup = Set(Some(lookup));
            "this token".into()
        }
        NewCredential::Certificate { fingerprint } => {
            row.cert_fingerprint = Set(Some(fingerprint.clone()));
            fingerprint
        }
    };
    let row = row
        .insert(&txn)
        .await
        .map_err(duplicate("device credential", &taken))?;
    credential_changed(&txn, &Revoked::Device(device.uid.clone()), now).await?;
    txn.commit().await?;
    Ok(row)
}

/// The credentials of a device the scope may see.
pub async fn credentials(
    storage: &Storage,
    scope: Scope,
    uid: &str,
) -> Result<Vec<device_credential::Model>, StorageError> {
    let device = get(storage, scope, uid).await?;
    credentials_of(storage, &device).await
}

/// The credentials of a device already in hand.
pub async fn credentials_of(
    storage: &Storage,
    device: &device::Model,
) -> Result<Vec<device_credential::Model>, StorageError> {
    Ok(device_credential::Entity::find()
        .filter(device_credential::Column::DeviceId.eq(device.id))
        .all(storage.db())
        .await?)
}

/// What a device logs in with: found by MQTT username (a password credential) or by device id
/// (an access token). Platform-wide: a device authenticates before any tenant is known.
#[derive(Clone, Debug)]
pub struct DeviceLogin {
    pub uid: String,
    pub tenant: i64,
    pub disabled: bool,
    pub secret: LoginSecret,
}

#[derive(Clone, Debug)]
pub enum LoginSecret {
    /// argon2id hash of the password.
    PasswordHash(String),
    /// SHA-256 (hex) of the access token.
    TokenLookup(String),
    /// A client certificate the TLS listener verified: nothing more to check.
    Certificate,
}

/// The device whose client certificate has the SHA-256 fingerprint `fingerprint` (hex).
pub async fn login_by_certificate(
    storage: &Storage,
    fingerprint: &str,
) -> Result<Option<DeviceLogin>, StorageError> {
    let db = storage.db();
    let credential = device_credential::Entity::find()
        .filter(device_credential::Column::Kind.eq("certificate"))
        .filter(device_credential::Column::CertFingerprint.eq(fingerprint))
        .filter(device_credential::Column::RevokedAt.is_null())
        .one(db)
        .await?;
    let Some(credential) = credential else {
        return Ok(None);
    };
    Ok(device::Entity::find_by_id(credential.device_id)
        .one(db)
        .await?
        .map(|device| DeviceLogin {
            uid: device.uid,
            tenant: device.tenant_id,
            disabled: device.disabled,
            secret: LoginSecret::Certificate,
        }))
}

/// The login of `username`: a password credential's username, else a device id with a token.
pub async fn login(storage: &Storage, username: &str) -> Result<Option<DeviceLogin>, StorageError> {
    let db = storage.db();
    let by_username = device_credential::Entity::find()
        .filter(device_credential::Column::Kind.eq("password"))
        .filter(device_credential::Column::Username.eq(username))
        .filter(device_credential::Column::RevokedAt.is_null())
        .one(db)
        .await?;
    if let Some(credential) = by_username
        && let Some(hash) = credential.secret_hash
        && let Some(device) = device::Entity::find_by_id(credential.device_id)
            .one(db)
            .await?
    {
        return Ok(Some(DeviceLogin {
            uid: device.uid,
            tenant: device.tenant_id,
            disabled: device.disabled,
            secret: LoginSecret::PasswordHash(hash),
        }));
    }
    let Some(device) = device::Entity::find()
        .filter(device::Column::Uid.eq(username))
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    let token = device_credential::Entity::find()
        .filter(device_credential::Column::DeviceId.eq(device.id))
        .filter(device_credential::Column::Kind.eq("token"))
        .filter(device_credential::Column::RevokedAt.is_null())
        .one(db)
        .await?;
    Ok(token
        .and_then(|t| t.token_lookup)
        .map(|lookup| DeviceLogin {
            uid: device.uid,
            tenant: device.tenant_id,
            disabled: device.disabled,
            secret: LoginSecret::TokenLookup(lookup),
        }))
}

/// The newest entry of the credential change log (0 when empty).
pub async fn last_credential_change(storage: &Storage) -> Result<i64, StorageError> {
    Ok(credential_change::Entity::find()
        .order_by_desc(credential_change::Column::Id)
        .one(storage.db())
        .await?
        .map_or(0, |c| c.id))
}

/// Entries of the credential change log after `after`: (id, what changed and when), oldest
/// first.
pub async fn credential_changes_since(
    storage: &Storage,
    after: i64,
) -> Result<Vec<(i64, Revocation)>, StorageError> {
    Ok(credential_change::Entity::find()
        .filter(credential_change::Column::Id.gt(after))
        .order_by_asc(credential_change::Column::Id)
        .limit(1000)
        .all(storage.db())
        .await?
        .into_iter()
        .map(|c| {
            let revoked = match (c.tenant_id, c.api_key_id) {
                (Some(tenant), _) => Revoked::Tenant(tenant),
                (None, Some(key)) => Revoked::ApiKey(key),
                (None, None) => Revoked::Device(c.device_uid),
            };
            let at_ms = c.at.timestamp_millis();
            (c.id, Revocation { revoked, at_ms })
        })
        .collect())
}

/// What the acquisition pipeline needs of a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRef {
    pub id: i64,
    pub uid: String,
    pub tenant: i64,
    pub class: i64,
    /// The gateway (its row id) this device is a child node of.
    pub gateway: Option<i64>,
    /// Its inbound format: its own, else its class's; `None`: JSON read as is.
    pub format: Option<i64>,
    pub is_gateway: bool,
    /// For a gateway whose class registers unknown child nodes: their class.
    pub child_class: Option<i64>,
    pub entity: Option<i64>,
}

fn device_ref(d: device::Model, class: Option<&device_class::Model>) -> DeviceRef {
    DeviceRef {
        id: d.id,
        uid: d.uid,
        tenant: d.tenant_id,
        class: d.class_id,
        gateway: d.gateway_id,
        format: d.format_id.or(class.and_then(|c| c.format_id)),
        is_gateway: class.is_some_and(|c| c.is_gateway),
        child_class: class
            .filter(|c| c.auto_register_children)
            .and_then(|c| c.child_class_id),
        entity: d.entity_id,
    }
}

/// Registers `uid` as a child node of `gateway` (whose class registers children in
/// `gateway.child_class`), in the gateway's tenant and entity. Audited by the caller.
pub async fn register_child(
    storage: &Storage,
    gateway: &DeviceRef,
    uid: &str,
) -> Result<DeviceRef, StorageError> {
    let Some(class) = gateway.child_class else {
        return Err(StorageError::Forbidden(
            "this gateway's class does not register child nodes",
        ));
    };
    check_identifier("device id", uid)?;
    let txn = storage.begin_write().await?;
    let created = device::ActiveModel {
        tenant_id: Set(gateway.tenant),
        entity_id: Set(gateway.entity),
        class_id: Set(class),
        uid: Set(uid.to_string()),
        name: Set(uid.to_string()),
        gateway_id: Set(Some(gateway.id)),
        format_id: Set(None),
        status: Set(OFFLINE.into()),
        last_seen: Set(None),
        disabled: Set(false),
        created_at: Set(Utc::now()),
        ..Default::default()
    }
    .insert(&txn)
    .await
    .map_err(duplicate("device", uid))?;
    super::commands::queue_for_new_device(&txn, &created).await?;
    let class = device_class::Entity::find_by_id(class).one(&txn).await?;
    txn.commit().await?;
    Ok(device_ref(created, class.as_ref()))
}

/// The devices with these ids (platform-wide: device ids are unique; callers check the tenant).
pub async fn refs_by_uid(storage: &Storage, uids: &[&str]) -> Result<Vec<DeviceRef>, StorageError> {
    let mut refs = Vec::with_capacity(uids.len());
    for chunk in uids.chunks(1000) {
        let found = device::Entity::find()
            .filter(device::Column::Uid.is_in(chunk.iter().copied()))
            .find_also_related(device_class::Entity)
            .all(storage.db())
            .await?;
        refs.extend(
            found
                .into_iter()
                .map(|(d, class)| device_ref(d, class.as_ref())),
        );
    }
    Ok(refs)
}

/// A device's broker session `session` (on `node`) began at `at`: the device and its child
/// nodes are online — unless a session that began later holds it already (reports of two
/// nodes may arrive out of order). Returns the device as it was, and whether it changed.
pub async fn session_began(
    storage: &Storage,
    uid: &str,
    session: &str,
    node: &str,
    at: chrono::DateTime<Utc>,
) -> Result<Option<(device::Model, bool)>, StorageError> {
    let Some(found) = by_uid(storage, uid).await? else {
        return Ok(None);
    };
    let applied = device::Entity::update_many()
        .col_expr(device::Column::Status, Expr::value(ONLINE))
        .col_expr(device::Column::LastSeen, Expr::value(at))
        .col_expr(device::Column::Session, Expr::value(session))
        .col_expr(device::Column::SessionNode, Expr::value(node))
        .col_expr(device::Column::SessionAt, Expr::value(at))
        .filter(device::Column::Id.eq(found.id))
        .filter(
            device::Column::SessionAt
                .is_null()
                .or(device::Column::SessionAt.lte(at)),
        )
        .exec(storage.db())
        .await?
        .rows_affected
        == 1;
    if applied {
        children_present(storage, found.id, ONLINE, at).await?;
    }
    Ok(Some((found, applied)))
}

/// A device's broker session `session` ended at `at`: the device and its child nodes are
/// offline — if that session still holds it (one taken over by a newer session changes
/// nothing). Returns the device as it was, and whether it changed.
pub async fn session_ended(
    storage: &Storage,
    uid: &str,
    session: &str,
    at: chrono::DateTime<Utc>,
) -> Result<Option<(device::Model, bool)>, StorageError> {
    let Some(found) = by_uid(storage, uid).await? else {
        return Ok(None);
    };
    let applied = device::Entity::update_many()
        .col_expr(device::Column::Status, Expr::value(OFFLINE))
        .col_expr(device::Column::LastSeen, Expr::value(at))
        .col_expr(device::Column::Session, Expr::value(Option::<String>::None))
        .col_expr(
            device::Column::SessionNode,
            Expr::value(Option::<String>::None),
        )
        .col_expr(
            device::Column::SessionAt,
            Expr::value(Option::<chrono::DateTime<Utc>>::None),
        )
        .filter(device::Column::Id.eq(found.id))
        .filter(device::Column::Session.eq(session))
        .exec(storage.db())
        .await?
        .rows_affected
        == 1;
    if applied {
        children_present(storage, found.id, OFFLINE, at).await?;
    }
    Ok(Some((found, applied)))
}

/// The device `uid`, of whichever tenant (device ids are unique platform-wide).
async fn by_uid(storage: &Storage, uid: &str) -> Result<Option<device::Model>, StorageError> {
    Ok(device::Entity::find()
        .filter(device::Column::Uid.eq(uid))
        .one(storage.db())
        .await?)
}

/// A gateway's child nodes share its presence.
async fn children_present(
    storage: &Storage,
    gateway: i64,
    status: &str,
    at: chrono::DateTime<Utc>,
) -> Result<(), StorageError> {
    device::Entity::update_many()
        .col_expr(device::Column::Status, Expr::value(status))
        .col_expr(device::Column::LastSeen, Expr::value(at))
        .filter(device::Column::GatewayId.eq(gateway))
        .exec(storage.db())
        .await?;
    Ok(())
}

/// Online devices whose session began before `before`, with the session: (uid, session, node,
/// began).
pub async fn sessions_before(
    storage: &Storage,
    before: chrono::DateTime<Utc>,
) -> Result<Vec<(String, String, String, chrono::DateTime<Utc>)>, StorageError> {
    let rows = device::Entity::find()
        .filter(device::Column::Status.eq(ONLINE))
        .filter(device::Column::SessionAt.lt(before))
        .all(storage.db())
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|d| Some((d.uid, d.session?, d.session_node?, d.session_at?)))
        .collect())
}

/// Which devices to list.
#[derive(Clone, Debug, Default)]
pub struct DeviceQuery {
    /// Of this class (by name).
    pub class: Option<String>,
    /// `online` or `offline`.
    pub status: Option<String>,
    /// Part of the device's id or name.
    pub search: Option<String>,
    /// The children of this gateway (by id).
    pub gateway: Option<String>,
    pub page: Page,
}

/// What device lists sort by.
pub const SORT_FIELDS: [&str; 5] = ["uid", "name", "status", "last_seen", "created_at"];

/// A page of the devices the scope may see (by id unless sorted), and how many match in all.
pub async fn search(
    storage: &Storage,
    scope: Scope,
    query: &DeviceQuery,
) -> Result<(Vec<device::Model>, u64), StorageError> {
    let mut select = visible(scope);
    if let Some(class) = &query.class {
        select = select.filter(
            device::Column::ClassId.eq(classes::by_name(storage.db(), scope, class).await?.id),
        );
    }
    if let Some(status) = &query.status {
        if status != ONLINE && status != OFFLINE {
            return Err(StorageError::invalid("status", "must be online or offline"));
        }
        select = select.filter(device::Column::Status.eq(status.as_str()));
    }
    if let Some(gateway) = &query.gateway {
        let gateway = get_in(storage.db(), scope, gateway).await?;
        select = select.filter(device::Column::GatewayId.eq(gateway.id));
    }
    if let Some(text) = query.search.as_deref().filter(|t| !t.is_empty()) {
        let pattern = format!("%{}%", text.replace(['%', '_'], ""));
        select = select.filter(
            device::Column::Uid
                .like(pattern.as_str())
                .or(device::Column::Name.like(pattern.as_str())),
        );
    }
    let select = paging::ordered(
        select,
        &query.page,
        &[
            (SORT_FIELDS[0], device::Column::Uid),
            (SORT_FIELDS[1], device::Column::Name),
            (SORT_FIELDS[2], device::Column::Status),
            (SORT_FIELDS[3], device::Column::LastSeen),
            (SORT_FIELDS[4], device::Column::CreatedAt),
        ],
        (device::Column::Uid, Order::Asc),
        device::Column::Id,
    )?;
    paging::fetch(storage.db(), select, &query.page).await
}

/// A device's latest value of each attribute.
pub async fn latest_values(
    storage: &Storage,
    device: &device::Model,
) -> Result<Vec<crate::entity::latest_value::Model>, StorageError> {
    use crate::entity::latest_value;
    Ok(latest_value::Entity::find()
        .filter(latest_value::Column::DeviceId.eq(device.id))
        .order_by_asc(latest_value::Column::Attribute)
        .all(storage.db())
        .await?)
}

/// Notes in the credential change log that `revoked` changed (a device's logins, an API key,
/// a whole tenant): every node drops its cached logins of it and closes the live sessions they
/// opened. (`credential_changes_since` reads it back.)
pub(crate) async fn credential_changed(
    db: &impl ConnectionTrait,
    revoked: &Revoked,
    at: chrono::DateTime<Utc>,
) -> Result<(), StorageError> {
    let (device_uid, api_key_id, tenant_id) = match revoked {
        Revoked::Device(uid) => (uid.clone(), None, None),
        Revoked::ApiKey(key) => (String::new(), Some(*key), None),
        Revoked::Tenant(tenant) => (String::new(), None, Some(*tenant)),
    };
    credential_change::ActiveModel {
        device_uid: Set(device_uid),
        api_key_id: Set(api_key_id),
        tenant_id: Set(tenant_id),
        at: Set(at),
        ..Default::default()
    }
    .insert(db)
    .await?;
    Ok(())
}

/// What to change of a device (None: keep).
#[derive(Clone, Debug, Default)]
pub struct DeviceChange {
    pub name: Option<String>,
    /// A disabled device cannot sign in; its live session is closed.
    pub disabled: Option<bool>,
}

/// Changes a device the scope may see.
pub async fn update(
    storage: &Storage,
    scope: Scope,
    uid: &str,
    change: DeviceChange,
) -> Result<device::Model, StorageError> {
    if let Some(name) = &change.name {
        check_name("name", name)?;
    }
    let txn = storage.begin_write().await?;
    let found = get_in(&txn, scope, uid).await?;
    let was_disabled = found.disabled;
    let mut row: device::ActiveModel = found.into();
    if let Some(name) = change.name {
        row.name = Set(name);
    }
    if let Some(disabled) = change.disabled {
        row.disabled = Set(disabled);
    }
    let updated = row.update(&txn).await?;
    if updated.disabled && !was_disabled {
        credential_changed(&txn, &Revoked::Device(updated.uid.clone()), Utc::now()).await?;
    }
    txn.commit().await?;
    Ok(updated)
}

/// Deletes a device the scope may see, with its values, events, commands and credentials (its
/// logged messages stay, without the device); its live session is closed on every node.
pub async fn delete(storage: &Storage, scope: Scope, uid: &str) -> Result<(), StorageError> {
    let txn = storage.begin_write().await?;
    let found = get_in(&txn, scope, uid).await?;
    // The ledger and the log have no foreign keys on PostgreSQL (they cost ingest a third): their
    // rows go, or leave the device, here. The device's row is locked first: a batch storing its
    // values meanwhile either committed before (its rows are deleted here) or fails on the latest
    // values' foreign key, which waits for this lock (SQLite has one writer anyway).
    device::Entity::find_by_id(found.id)
        .lock_exclusive()
        .one(&txn)
        .await?;
    ledger::Entity::delete_many()
        .filter(ledger::Column::DeviceId.eq(found.id))
        .exec(&txn)
        .await?;
    message_log::Entity::update_many()
        .col_expr(
            message_log::Column::DeviceId,
            Expr::value(Option::<i64>::None),
        )
        .filter(message_log::Column::DeviceId.eq(found.id))
        .exec(&txn)
        .await?;
    device::Entity::delete_by_id(found.id).exec(&txn).await?;
    credential_changed(&txn, &Revoked::Device(found.uid.clone()), Utc::now()).await?;
    txn.commit().await?;
    Ok(())
}
