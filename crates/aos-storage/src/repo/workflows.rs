//! Workflows of a tenant (checked by `aos-workflows` before they are saved) and their run log.
//! A run triggered by something that may be delivered twice carries a key, unique in the log:
//! the second delivery finds its run claimed and does nothing.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, IntoActiveModel, Order,
    QueryFilter, QueryOrder, SqlErr,
};

use super::paging::{self, Page};
use super::{Scope, check_name};
use crate::entity::{workflow, workflow_run};
use crate::{Storage, StorageError};

/// A workflow to save.
#[derive(Clone, Debug, PartialEq)]
pub struct NewWorkflow {
    pub name: String,
    pub enabled: bool,
    pub trigger: serde_json::Value,
    pub actions: serde_json::Value,
}

/// Creates the workflow, or replaces the one of that name; returns it and whether it is new.
pub async fn save(
    storage: &Storage,
    scope: Scope,
    new: NewWorkflow,
) -> Result<(workflow::Model, bool), StorageError> {
    if scope.customer.is_some() {
        return Err(StorageError::Forbidden("customers cannot change workflows"));
    }
    check_name("workflow name", &new.name)?;
    let now = Utc::now();
    let existing = find(storage, scope, &new.name).await?;
    let created = existing.is_none();
    let mut row = match existing {
        Some(found) => found.into_active_model(),
        None => workflow::ActiveModel {
            tenant_id: Set(scope.tenant),
            name: Set(new.name.clone()),
            created_at: Set(now),
            ..Default::default()
        },
    };
    row.enabled = Set(new.enabled);
    row.trigger = Set(new.trigger);
    row.actions = Set(new.actions);
    row.updated_at = Set(now);
    let saved = if created {
        row.insert(storage.db()).await?
    } else {
        row.update(storage.db()).await?
    };
    Ok((saved, created))
}

async fn find(
    storage: &Storage,
    scope: Scope,
    name: &str,
) -> Result<Option<workflow::Model>, StorageError> {
    Ok(workflow::Entity::find()
        .filter(workflow::Column::TenantId.eq(scope.tenant))
        .filter(workflow::Column::Name.eq(name))
        .one(storage.db())
        .await?)
}

/// The workflow called `name` in the scope's tenant.
pub async fn by_name(
    storage: &Storage,
    scope: Scope,
    name: &str,
) -> Result<workflow::Model, StorageError> {
    find(storage, scope, name)
        .await?
        .ok_or_else(|| StorageError::not_found("workflow", name))
}

pub async fn list(storage: &Storage, scope: Scope) -> Result<Vec<workflow::Model>, StorageError> {
    Ok(workflow::Entity::find()
        .filter(workflow::Column::TenantId.eq(scope.tenant))
        .order_by_asc(workflow::Column::Name)
        .all(storage.db())
        .await?)
}

/// The enabled workflows of a tenant, or of every tenant (the scheduler's view).
pub async fn enabled(
    storage: &Storage,
    tenant: Option<i64>,
) -> Result<Vec<workflow::Model>, StorageError> {
    let mut query = workflow::Entity::find().filter(workflow::Column::Enabled.eq(true));
    if let Some(tenant) = tenant {
        query = query.filter(workflow::Column::TenantId.eq(tenant));
    }
    Ok(query
        .order_by_asc(workflow::Column::Id)
        .all(storage.db())
        .await?)
}

/// The workflow with this id (a queued run's), if it still exists.
pub async fn by_id(storage: &Storage, id: i64) -> Result<Option<workflow::Model>, StorageError> {
    Ok(workflow::Entity::find_by_id(id).one(storage.db()).await?)
}

pub async fn set_enabled(
    storage: &Storage,
    scope: Scope,
    name: &str,
    enabled: bool,
) -> Result<(), StorageError> {
    let mut row = by_name(storage, scope, name).await?.into_active_model();
    row.enabled = Set(enabled);
    row.updated_at = Set(Utc::now());
    row.update(storage.db()).await?;
    Ok(())
}

/// Result of a run still going.
pub const RUNNING: &str = "running";

/// Logs the start of a run; `None` when a run with this key was logged already (a redelivery).
pub async fn claim_run(
    storage: &Storage,
    workflow: &workflow::Model,
    key: Option<&str>,
    started_at: DateTime<Utc>,
) -> Result<Option<i64>, StorageError> {
    let inserted = workflow_run::ActiveModel {
        workflow_id: Set(workflow.id),
        tenant_id: Set(workflow.tenant_id),
        started_at: Set(started_at),
        duration_ms: Set(0),
        result: Set(RUNNING.into()),
        error: Set(None),
        steps: Set(None),
        run_key: Set(key.map(String::from)),
        ..Default::default()
    }
    .insert(storage.db())
    .await;
    match inserted {
        Ok(run) => Ok(Some(run.id)),
        Err(err) if matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => Ok(None),
        Err(err) => Err(err.into()),
    }
}

/// How a run ended: `ok`, `failed` or `timeout`, and the steps it took.
pub struct RunEnd<'a> {
    pub result: &'a str,
    pub duration_ms: i64,
    pub error: Option<&'a str>,
    pub steps: serde_json::Value,
}

/// Logs how a run ended.
pub async fn finish_run(storage: &Storage, run: i64, end: RunEnd<'_>) -> Result<(), StorageError> {
    workflow_run::Entity::update_many()
        .col_expr(workflow_run::Column::Result, Expr::value(end.result))
        .col_expr(
            workflow_run::Column::DurationMs,
            Expr::value(end.duration_ms),
        )
        .col_expr(workflow_run::Column::Error, Expr::value(end.error))
        .col_expr(workflow_run::Column::Steps, Expr::value(end.steps))
        .filter(workflow_run::Column::Id.eq(run))
        .exec(storage.db())
        .await?;
    Ok(())
}

/// Logs as failed the runs still `running` that started before `before`: their worker stopped
/// during the run (a crash). Returns how many.
pub async fn fail_interrupted(
    storage: &Storage,
    before: DateTime<Utc>,
) -> Result<u64, StorageError> {
    let stale = workflow_run::Column::Result
        .eq(RUNNING)
        .and(workflow_run::Column::StartedAt.lt(before));
    // Looked for first: on SQLite a read does not contend with the ingest's writes.
    if workflow_run::Entity::find()
        .filter(stale.clone())
        .one(storage.db())
        .await?
        .is_none()
    {
        return Ok(0);
    }
    Ok(workflow_run::Entity::update_many()
        .col_expr(workflow_run::Column::Result, Expr::value("failed"))
        .col_expr(
            workflow_run::Column::Error,
            Expr::value("interrupted: the worker stopped during the run"),
        )
        .filter(stale)
        .exec(storage.db())
        .await?
        .rows_affected)
}

/// What run logs sort by.
pub const RUN_SORT_FIELDS: [&str; 3] = ["started_at", "result", "duration_ms"];

/// A page of a workflow's runs, newest first unless sorted, and how many there are.
pub async fn runs(
    storage: &Storage,
    scope: Scope,
    name: &str,
    page: &Page,
) -> Result<(Vec<workflow_run::Model>, u64), StorageError> {
    let workflow = by_name(storage, scope, name).await?;
    let select = paging::ordered(
        workflow_run::Entity::find().filter(workflow_run::Column::WorkflowId.eq(workflow.id)),
        page,
        &[
            (RUN_SORT_FIELDS[0], workflow_run::Column::StartedAt),
            (RUN_SORT_FIELDS[1], workflow_run::Column::Result),
            (RUN_SORT_FIELDS[2], workflow_run::Column::DurationMs),
        ],
        (workflow_run::Column::Id, Order::Desc),
        workflow_run::Column::Id,
    )?;
    paging::fetch(storage.db(), select, page).await
}

/// Deletes a workflow and its run log.
pub async fn delete(storage: &Storage, scope: Scope, name: &str) -> Result<(), StorageError> {
    if scope.customer.is_some() {
        return Err(StorageError::Forbidden("customers cannot change workflows"));
    }
    let found = by_name(storage, scope, name).await?;
    workflow::Entity::delete_by_id(found.id)
        .exec(storage.db())
        .await?;
    Ok(())
}
