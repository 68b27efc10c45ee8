//! The `aos_node` table: every node that has run against this database, with its roles and when
//! it was last seen.

use aos_core::NodeInfo;
use chrono::Utc;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};

use crate::entity::aos_node;
use crate::{Storage, StorageError};

fn role_list(roles: &[aos_core::RoleKind]) -> String {
    roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Records that the node described by `info` has started (insert or update).
pub async fn record_start(storage: &Storage, info: &NodeInfo) -> Result<(), StorageError> {
    let now = Utc::now();
    let row = aos_node::ActiveModel {
        id: Set(info.id.clone()),
        version: Set(info.version.clone()),
        compiled_roles: Set(role_list(&info.compiled_roles)),
        enabled_roles: Set(role_list(&info.enabled_roles)),
        admin_listen: Set(info.admin_listen.clone()),
        started_at: Set(now),
        last_seen: Set(now),
        stopped_at: Set(None),
    };
    aos_node::Entity::insert(row)
        .on_conflict(
            OnConflict::column(aos_node::Column::Id)
                .update_columns([
                    aos_node::Column::Version,
                    aos_node::Column::CompiledRoles,
                    aos_node::Column::EnabledRoles,
                    aos_node::Column::AdminListen,
                    aos_node::Column::StartedAt,
                    aos_node::Column::LastSeen,
                    aos_node::Column::StoppedAt,
                ])
                .to_owned(),
        )
        .exec(storage.db())
        .await?;
    Ok(())
}

/// Records a heartbeat of the running node `id`: its last-seen time becomes now.
pub async fn record_seen(storage: &Storage, id: &str) -> Result<(), StorageError> {
    aos_node::Entity::update_many()
        .col_expr(aos_node::Column::LastSeen, Expr::value(Utc::now()))
        .filter(aos_node::Column::Id.eq(id))
        .filter(aos_node::Column::StoppedAt.is_null())
        .exec(storage.db())
        .await?;
    Ok(())
}

/// Records a clean stop of node `id`.
pub async fn record_stop(storage: &Storage, id: &str) -> Result<(), StorageError> {
    let now = Utc::now();
    aos_node::Entity::update(aos_node::ActiveModel {
        id: Set(id.to_string()),
        last_seen: Set(now),
        stopped_at: Set(Some(now)),
        ..Default::default()
    })
    .exec(storage.db())
    .await?;
    Ok(())
}

/// Every node known to this database.
pub async fn list(storage: &Storage) -> Result<Vec<aos_node::Model>, StorageError> {
    Ok(aos_node::Entity::find().all(storage.db()).await?)
}
