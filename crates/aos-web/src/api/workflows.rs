//! Workflows: import (create or replace) and export as JSON documents, list, enable, disable,
//! delete, run now, and the run log.

use aos_auth::permissions::{ObjectKind, Operation};
use aos_formats::interpret;
use aos_storage::entity::workflow;
use aos_storage::repo::paging;
use aos_storage::repo::workflows::{self, NewWorkflow};
use aos_workflows::{Triggered, WORKFLOW_QUEUE, Workflow, WorkflowDocument};
use chrono::{DateTime, Utc};
use ntex::http::StatusCode;
use ntex::web::{self, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use super::{
    ApiError, ApiState, Caller, ErrorBody, InTenant, Json, ListQuery, Listed, Query, Routes, page,
};

pub fn routes(r: &mut impl Routes) {
    r.get("/workflows", list)
        .post("/workflows", import)
        .get("/workflows/{name}", export)
        .delete("/workflows/{name}", delete)
        .post("/workflows/{name}/enable", enable)
        .post("/workflows/{name}/disable", disable)
        .post("/workflows/{name}/run", run_now)
        .get("/workflows/{name}/runs", runs);
}

/// A workflow document (see workflows.md): what export gives and import takes.
#[derive(Serialize, ToSchema)]
pub(super) struct WorkflowView {
    name: String,
    /// Whether it runs on its trigger (on import, default true).
    enabled: bool,
    /// What starts it: `{"kind": "message" | "level" | "threshold" | "device" | "schedule" |
    /// "manual", …}`.
    #[schema(value_type = Object)]
    trigger: Value,
    /// What it does, in order: each one of `assign`, `if`, `http`, `command`, `raise_event`,
    /// `clear_event`, `notify`, `save`.
    #[schema(value_type = Vec<Object>)]
    actions: Value,
}

fn document(w: &workflow::Model) -> WorkflowView {
    WorkflowView {
        name: w.name.clone(),
        enabled: w.enabled,
        trigger: w.trigger.clone(),
        actions: w.actions.clone(),
    }
}

/// A workflow in the list: its document and its times.
#[derive(Serialize, ToSchema)]
pub(super) struct WorkflowListed {
    #[serde(flatten)]
    document: WorkflowView,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// What a run started by hand gets.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RunNow {
    /// Variables of the run, e.g. `"device"`.
    #[serde(default)]
    #[schema(value_type = Object)]
    variables: Map<String, Value>,
}

/// A run is queued for the workers.
#[derive(Serialize, ToSchema)]
pub(super) struct Queued {
    queued: bool,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct RunsQuery {
    /// The tenant a system administrator acts in (a tenant's user always acts in its own).
    tenant: Option<String>,
    /// At most this many, 1 to 1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
    /// Skip this many (at most 1,000,000).
    #[param(maximum = 1_000_000)]
    offset: Option<u64>,
    /// `started_at`, `result` or `duration_ms`; `-field` for descending (default: newest first).
    sort: Option<String>,
}

/// One run of a workflow.
#[derive(Serialize, ToSchema)]
pub(super) struct RunView {
    id: i64,
    started_at: DateTime<Utc>,
    /// `ok`, `failed` or `timeout`.
    result: String,
    duration_ms: i64,
    error: Option<String>,
    /// Each action it took, in order: `[{"step", "action", "result", "detail", "ms"}]` — `step`
    /// numbers it (`3.then.1` inside the `if` of action 3), `result` is `ok`, `failed` or
    /// `running` (the run's time ran out during it). Null for runs logged before steps were.
    #[schema(value_type = Option<Vec<Object>>)]
    steps: Option<serde_json::Value>,
}

pub(super) const SORT_FIELDS: [&str; 3] = ["name", "created_at", "updated_at"];

/// List workflows
///
/// The tenant's workflows, as documents with their times, by name unless sorted; `sort`:
/// `name`, `created_at`, `updated_at`.
#[utoipa::path(
    get,
    path = "/api/workflows",
    tag = "workflows",
    operation_id = "list_workflows",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of workflows", body = Listed<WorkflowListed>),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such tenant", body = ErrorBody),
        (status = 422, description = "A parameter is wrong (`field` names it)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn list(
    api: ApiState,
    caller: Caller,
    query: Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.0;
    let scope = caller
        .scope(
            &api,
            ObjectKind::Workflows,
            Operation::View,
            query.tenant.as_deref(),
        )
        .await?;
    let wanted = page(query.limit, query.offset, query.sort)?;
    let (found, total) = paging::in_memory(
        workflows::list(&api.storage, scope).await?,
        &wanted,
        &SORT_FIELDS,
        |w, field| match field {
            "created_at" => w.created_at.to_rfc3339(),
            "updated_at" => w.updated_at.to_rfc3339(),
            _ => w.name.clone(),
        },
    )?;
    let items: Vec<WorkflowListed> = found
        .iter()
        .map(|w| WorkflowListed {
            document: document(w),
            created_at: w.created_at,
            updated_at: w.updated_at,
        })
        .collect();
    Ok(Listed::new(items, total).response())
}

/// Import a workflow
///
/// A document creates the workflow, or replaces the one of the same name. It is checked first:
/// a wrong definition is `422` with `field` `trigger` or `actions` and the place in the message.
#[utoipa::path(
    post,
    path = "/api/workflows",
    tag = "workflows",
    operation_id = "import_workflow",
    params(InTenant),
    request_body = WorkflowView,
    responses(
        (status = 200, description = "Replaced", body = WorkflowView),
        (status = 201, description = "Created", body = WorkflowView),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such tenant", body = ErrorBody),
        (status = 413, description = "The body is over 256 KiB", body = ErrorBody),
        (status = 422, description = "The definition or a parameter is wrong (`field` names it)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn import(
    api: ApiState,
    caller: Caller,
    query: Query<InTenant>,
    body: Json<WorkflowDocument>,
) -> Result<HttpResponse, ApiError> {
    let scope = caller
        .scope(
            &api,
            ObjectKind::Workflows,
            Operation::Create,
            query.0.tenant.as_deref(),
        )
        .await?;
    let given = body.0;
    let invalid = |e: serde_json::Error| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e.to_string())
    };
    let trigger = serde_json::to_value(&given.trigger).map_err(invalid)?;
    let actions = serde_json::to_value(&given.actions).map_err(invalid)?;
    Workflow::compile(&interpret::engine(), &trigger, &actions).map_err(|e| {
        let field = if e.starts_with("trigger") {
            "trigger"
        } else {
            "actions"
        };
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e).field(field)
    })?;
    let new = NewWorkflow {
        name: given.name,
        enabled: given.enabled,
        trigger,
        actions,
    };
    let (saved, created) = workflows::save(&api.storage, scope, new).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(HttpResponse::build(status).json(&document(&saved)))
}

/// Export a workflow
///
/// Its document: what `POST /api/workflows` takes back.
#[utoipa::path(
    get,
    path = "/api/workflows/{name}",
    tag = "workflows",
    operation_id = "export_workflow",
    params(("name" = String, Path, description = "The workflow's name"), InTenant),
    responses(
        (status = 200, description = "The document", body = WorkflowView),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such workflow or tenant", body = ErrorBody),
        (status = 422, description = "A parameter is wrong (`field` names it)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn export(
    api: ApiState,
    caller: Caller,
    name: web::types::Path<String>,
    query: Query<InTenant>,
) -> Result<HttpResponse, ApiError> {
    let scope = caller
        .scope(
            &api,
            ObjectKind::Workflows,
            Operation::View,
            query.0.tenant.as_deref(),
        )
        .await?;
    let found = workflows::by_name(&api.storage, scope, &name).await?;
    Ok(HttpResponse::Ok().json(&document(&found)))
}

/// Delete a workflow
///
/// Its run log goes with it. Audited.
#[utoipa::path(
    delete,
    path = "/api/workflows/{name}",
    tag = "workflows",
    operation_id = "delete_workflow",
    params(("name" = String, Path, description = "The workflow's name"), InTenant),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such workflow or tenant", body = ErrorBody),
        (status = 422, description = "A parameter is wrong (`field` names it)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn delete(
    api: ApiState,
    caller: Caller,
    name: web::types::Path<String>,
    query: Query<InTenant>,
) -> Result<HttpResponse, ApiError> {
    let tenant = query.0.tenant.as_deref();
    super::delete_named(
        &api,
        &caller,
        (ObjectKind::Workflows, "workflow"),
        tenant,
        &name,
        |scope| workflows::delete(&api.storage, scope, &name),
    )
    .await
}

async fn switch(
    api: ApiState,
    caller: Caller,
    name: web::types::Path<String>,
    tenant: Option<String>,
    enabled: bool,
) -> Result<HttpResponse, ApiError> {
    let scope = caller
        .scope(
            &api,
            ObjectKind::Workflows,
            Operation::Update,
            tenant.as_deref(),
        )
        .await?;
    workflows::set_enabled(&api.storage, scope, &name, enabled).await?;
    let found = workflows::by_name(&api.storage, scope, &name).await?;
    Ok(HttpResponse::Ok().json(&document(&found)))
}

/// Enable a workflow
///
/// The workflow runs on its trigger (within a minute).
#[utoipa::path(
    post,
    path = "/api/workflows/{name}/enable",
    tag = "workflows",
    operation_id = "enable_workflow",
    params(("name" = String, Path, description = "The workflow's name"), InTenant),
    responses(
        (status = 200, description = "Its document", body = WorkflowView),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such workflow or tenant", body = ErrorBody),
        (status = 422, description = "A parameter is wrong (`field` names it)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn enable(
    api: ApiState,
    caller: Caller,
    name: web::types::Path<String>,
    query: Query<InTenant>,
) -> Result<HttpResponse, ApiError> {
    switch(api, caller, name, query.0.tenant, true).await
}

/// Disable a workflow
///
/// It no longer runs on its trigger.
#[utoipa::path(
    post,
    path = "/api/workflows/{name}/disable",
    tag = "workflows",
    operation_id = "disable_workflow",
    params(("name" = String, Path, description = "The workflow's name"), InTenant),
    responses(
        (status = 200, description = "Its document", body = WorkflowView),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such workflow or tenant", body = ErrorBody),
        (status = 422, description = "A parameter is wrong (`field` names it)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn disable(
    api: ApiState,
    caller: Caller,
    name: web::types::Path<String>,
    query: Query<InTenant>,
) -> Result<HttpResponse, ApiError> {
    switch(api, caller, name, query.0.tenant, false).await
}

/// Run a workflow now
///
/// A run is queued for the workers; its result is in the run log like any other's.
#[utoipa::path(
    post,
    path = "/api/workflows/{name}/run",
    tag = "workflows",
    operation_id = "run_workflow",
    params(("name" = String, Path, description = "The workflow's name"), InTenant),
    request_body = RunNow,
    responses(
        (status = 202, description = "Queued", body = Queued),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such workflow or tenant", body = ErrorBody),
        (status = 413, description = "The body is over 256 KiB", body = ErrorBody),
        (status = 422, description = "The body or a parameter is wrong (`field` names it)", body = ErrorBody),
        (status = 503, description = "The workflow queue is full (`busy`; retry later)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn run_now(
    api: ApiState,
    caller: Caller,
    name: web::types::Path<String>,
    query: Query<InTenant>,
    body: Json<RunNow>,
) -> Result<HttpResponse, ApiError> {
    let scope = caller
        .scope(
            &api,
            ObjectKind::Workflows,
            Operation::Update,
            query.0.tenant.as_deref(),
        )
        .await?;
    let found = workflows::by_name(&api.storage, scope, &name).await?;
    let run = Triggered {
        workflow: found.id,
        tenant: found.tenant_id,
        key: None,
        variables: body.0.variables,
    };
    api.queue.push(WORKFLOW_QUEUE, run.encode()).await?;
    Ok(HttpResponse::Accepted().json(&Queued { queued: true }))
}

/// A workflow's run log
///
/// The newest runs: start, result, duration, error.
#[utoipa::path(
    get,
    path = "/api/workflows/{name}/runs",
    tag = "workflows",
    operation_id = "workflow_runs",
    params(("name" = String, Path, description = "The workflow's name"), RunsQuery),
    responses(
        (status = 200, description = "A page of runs", body = Listed<RunView>),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such workflow or tenant", body = ErrorBody),
        (status = 422, description = "A parameter is wrong (`field` names it)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn runs(
    api: ApiState,
    caller: Caller,
    name: web::types::Path<String>,
    query: Query<RunsQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.0;
    let scope = caller
        .scope(
            &api,
            ObjectKind::Workflows,
            Operation::View,
            query.tenant.as_deref(),
        )
        .await?;
    let wanted = page(query.limit, query.offset, query.sort)?;
    let (found, total) = workflows::runs(&api.storage, scope, &name, &wanted).await?;
    let items: Vec<RunView> = found
        .into_iter()
        .map(|r| RunView {
            id: r.id,
            started_at: r.started_at,
            result: r.result,
            duration_ms: r.duration_ms,
            error: r.error,
            steps: r.steps,
        })
        .collect();
    Ok(Listed::new(items, total).response())
}
