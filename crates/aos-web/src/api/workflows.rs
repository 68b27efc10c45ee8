//! Workflows: import (create or replace) and export as JSON documents, list, enable, disable,
//! delete, run now, and the run log.

use aos_auth::permissions::{ObjectKind, Operation};
use aos_formats::interpret;
use aos_storage::entity::workflow;
use aos_storage::repo::paging;
use aos_storage::repo::workflows::{self, NewWorkflow};
use aos_workflows::{Triggered, WORKFLOW_QUEUE, Workflow, WorkflowDocument};
use ntex::http::StatusCode;
use ntex::web::{self, HttpResponse};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{ApiError, ApiState, Caller, InTenant, Json, ListQuery, Listed, Query, limit, page};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/workflows", web::get().to(list))
        .route("/workflows", web::post().to(import))
        .route("/workflows/{name}", web::get().to(export))
        .route("/workflows/{name}", web::delete().to(delete))
        .route("/workflows/{name}/enable", web::post().to(enable))
        .route("/workflows/{name}/disable", web::post().to(disable))
        .route("/workflows/{name}/run", web::post().to(run_now))
        .route("/workflows/{name}/runs", web::get().to(runs));
}

fn document(w: &workflow::Model) -> Value {
    json!({
        "name": w.name,
        "enabled": w.enabled,
        "trigger": w.trigger,
        "actions": w.actions,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunNow {
    #[serde(default)]
    variables: Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunsQuery {
    tenant: Option<String>,
    limit: Option<u64>,
}

const SORT_FIELDS: [&str; 3] = ["name", "created_at", "updated_at"];

/// `GET /api/workflows?limit=&offset=&sort=` → the tenant's workflows, as documents with their
/// times, by name unless sorted.
async fn list(
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
    let items: Vec<Value> = found
        .iter()
        .map(|w| {
            let mut shown = document(w);
            shown["created_at"] = json!(w.created_at);
            shown["updated_at"] = json!(w.updated_at);
            shown
        })
        .collect();
    Ok(Listed::new(items, total).response())
}

/// `POST /api/workflows` with a document → 201 created, or 200 replaced (same name); checked
/// first, the error naming where it is wrong.
async fn import(
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

/// `GET /api/workflows/{name}` → its document (what `POST /api/workflows` takes back).
async fn export(
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

/// `DELETE /api/workflows/{name}` → 204.
async fn delete(
    api: ApiState,
    caller: Caller,
    name: web::types::Path<String>,
    query: Query<InTenant>,
) -> Result<HttpResponse, ApiError> {
    let scope = caller
        .scope(
            &api,
            ObjectKind::Workflows,
            Operation::Delete,
            query.0.tenant.as_deref(),
        )
        .await?;
    workflows::delete(&api.storage, scope, &name).await?;
    Ok(HttpResponse::NoContent().finish())
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

/// `POST /api/workflows/{name}/enable` → the workflow runs on its trigger (within a minute).
async fn enable(
    api: ApiState,
    caller: Caller,
    name: web::types::Path<String>,
    query: Query<InTenant>,
) -> Result<HttpResponse, ApiError> {
    switch(api, caller, name, query.0.tenant, true).await
}

/// `POST /api/workflows/{name}/disable` → it no longer runs on its trigger.
async fn disable(
    api: ApiState,
    caller: Caller,
    name: web::types::Path<String>,
    query: Query<InTenant>,
) -> Result<HttpResponse, ApiError> {
    switch(api, caller, name, query.0.tenant, false).await
}

/// `POST /api/workflows/{name}/run {"variables": {…}}` → 202: a run is queued for the workers
/// (see its result in the run log).
async fn run_now(
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
    Ok(HttpResponse::Accepted().json(&json!({ "queued": true })))
}

/// `GET /api/workflows/{name}/runs?limit=` → the newest runs: start, result, duration, error.
async fn runs(
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
    let found = workflows::runs(&api.storage, scope, &name, limit(query.limit)?).await?;
    let items: Vec<Value> = found
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "started_at": r.started_at,
                "result": r.result,
                "duration_ms": r.duration_ms,
                "error": r.error,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(&json!({ "items": items })))
}
