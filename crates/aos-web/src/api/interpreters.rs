//! What shapes a tenant's data: interpreters of attributes, message formats (created here and
//! given to classes) and each class's model (functions, attributes, command groups). Everything
//! is checked — compiled, as the workers will use it — before it is saved.

use aos_auth::permissions::{ObjectKind, Operation};
use aos_formats::interpret::{self, Interpreter};
use aos_formats::{Format, FormatSpec};
use aos_storage::repo::audit;
use aos_storage::repo::class_model::{self, ClassModel};
use aos_storage::repo::formats::{self, NewFormat};
use aos_storage::repo::interpreters::{self, NewInterpreter};
use aos_storage::repo::{classes, paging};
use ntex::http::StatusCode;
use ntex::web::{self, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::people::api_event;
use utoipa::{IntoParams, ToSchema};

use super::{
    ApiError, ApiState, Caller, ErrorBody, InTenant, Json, ListQuery, Listed, Query, Routes, page,
};

pub fn routes(r: &mut impl Routes) {
    r.get("/interpreters", list)
        .put("/interpreters/{attribute}", set)
        .delete("/interpreters/{attribute}", delete_interpreter)
        .post("/formats", create_format)
        .put("/formats/{name}", update_format)
        .delete("/formats/{name}", delete_format)
        .put("/classes/{name}/formats", set_class_formats)
        .get("/classes/{name}/model", get_model)
        .put("/classes/{name}/model", set_model);
}

fn invalid(field: &str, message: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message).field(field)
}

/// How an attribute's values are interpreted.
#[derive(Serialize, ToSchema)]
pub(super) struct InterpreterView {
    attribute: String,
    /// None: every class of the tenant (a class's own wins).
    class: Option<String>,
    value_map: Option<Value>,
    expression: Option<String>,
    levels: Option<Value>,
}

pub(super) const SORT_FIELDS: [&str; 2] = ["attribute", "class"];

/// List the interpreters
///
/// The tenant's interpreters, by attribute; `sort`: `attribute`, `class`.
#[utoipa::path(
    get,
    path = "/api/interpreters",
    tag = "classes",
    operation_id = "list_interpreters",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of interpreters", body = Listed<InterpreterView>),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such tenant or object", body = ErrorBody),
        (status = 422, description = "A field is wrong (`field` names it, the message says why)", body = ErrorBody),
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
            ObjectKind::Interpreters,
            Operation::View,
            query.tenant.as_deref(),
        )
        .await?;
    let wanted = page(query.limit, query.offset, query.sort)?;
    let names: std::collections::HashMap<i64, String> = classes::list(&api.storage, scope)
        .await?
        .into_iter()
        .map(|c| (c.id, c.name))
        .collect();
    let views: Vec<InterpreterView> = interpreters::list(&api.storage, scope)
        .await?
        .into_iter()
        .map(|i| InterpreterView {
            class: i.class_id.and_then(|c| names.get(&c).cloned()),
            attribute: i.attribute,
            value_map: i.value_map,
            expression: i.expression,
            levels: i.levels,
        })
        .collect();
    let (items, total) = paging::in_memory(views, &wanted, &SORT_FIELDS, |i, field| match field {
        "class" => i.class.clone().unwrap_or_default(),
        _ => i.attribute.clone(),
    })?;
    Ok(Listed::new(items, total).response())
}

/// An interpreter of an attribute.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SetInterpreter {
    #[schema(value_type = Option<super::schema::Name>)]
    class: Option<String>,
    /// Raw value → value (`{"1": "open"}`).
    #[schema(value_type = Option<Object>)]
    value_map: Option<Value>,
    /// A rhai expression of `value`.
    expression: Option<String>,
    /// `[{"level", "min", "max"}]`: `min` below `max`.
    #[schema(value_type = Option<super::schema::LevelRanges>)]
    levels: Option<Value>,
}

/// Set an attribute's interpreter
///
/// Created or replaced, for a class or the whole tenant (a class's own wins); compiled first: a
/// wrong definition is 422 saying what is wrong.
#[utoipa::path(
    put,
    path = "/api/interpreters/{attribute}",
    tag = "classes",
    operation_id = "set_interpreter",
    params(("attribute" = String, Path, description = "The attribute"), InTenant),
    request_body = SetInterpreter,
    responses(
        (status = 200, description = "Saved", body = InterpreterView),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such tenant or object", body = ErrorBody),
        (status = 413, description = "The body is over 256 KiB", body = ErrorBody),
        (status = 422, description = "A field is wrong (`field` names it, the message says why)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn set(
    api: ApiState,
    caller: Caller,
    attribute: web::types::Path<String>,
    query: Query<InTenant>,
    body: Json<SetInterpreter>,
) -> Result<HttpResponse, ApiError> {
    let scope = caller
        .scope(
            &api,
            ObjectKind::Interpreters,
            Operation::Update,
            query.0.tenant.as_deref(),
        )
        .await?;
    let body = body.0;
    Interpreter::compile(
        &interpret::engine(),
        body.value_map.as_ref(),
        body.expression.as_deref(),
        body.levels.as_ref(),
    )
    .map_err(|e| {
        invalid(
            "interpreter",
            format!("the interpreter of `{attribute}`: {e}"),
        )
    })?;
    let saved = interpreters::save(
        &api.storage,
        scope,
        NewInterpreter {
            attribute: attribute.to_string(),
            class: body.class.clone(),
            value_map: body.value_map,
            expression: body.expression,
            levels: body.levels,
        },
    )
    .await?;
    audit::record(
        &api.storage,
        api_event(
            &caller,
            Some(scope.tenant),
            "interpreter.set",
            "interpreter",
            &saved.attribute,
        ),
    )
    .await?;
    Ok(HttpResponse::Ok().json(&InterpreterView {
        attribute: saved.attribute,
        class: body.class,
        value_map: saved.value_map,
        expression: saved.expression,
        levels: saved.levels,
    }))
}

/// A new message format.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateFormat {
    #[schema(value_type = super::schema::Name)]
    name: String,
    /// `json`, `xml`, `protobuf` or `pms`.
    #[schema(pattern = "^(json|xml|protobuf|pms)$")]
    kind: String,
    /// `inbound` (how payloads are read; default) or `outbound` (how commands are written).
    #[schema(pattern = "^(inbound|outbound)$")]
    direction: Option<String>,
    /// The `.proto` text (Protobuf).
    proto: Option<String>,
    /// The message type in it (Protobuf).
    message: Option<String>,
    /// A JSON Schema payloads must meet (JSON): an object or a boolean.
    schema: Option<Value>,
    /// Where values are in a payload: `{"attributes": {"temperature": "/t"}, "ts": "/time"}`
    /// (JSON pointers).
    #[serde(default)]
    #[schema(value_type = Object)]
    mapping: serde_json::Map<String, Value>,
}

/// A message format just created.
#[derive(Serialize, ToSchema)]
pub(super) struct CreatedFormat {
    name: String,
    kind: String,
    direction: String,
    created_at: chrono::DateTime<chrono::Utc>,
}

/// Create a message format
///
/// Compiled first: a format that cannot work (a `.proto` that does not compile, a bad schema) is
/// 422 `format`.
#[utoipa::path(
    post,
    path = "/api/formats",
    tag = "classes",
    operation_id = "create_format",
    params(InTenant),
    request_body = CreateFormat,
    responses(
        (status = 201, description = "Created", body = CreatedFormat),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such tenant or object", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 413, description = "The body is over 256 KiB", body = ErrorBody),
        (status = 422, description = "A field is wrong (`field` names it, the message says why)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn create_format(
    api: ApiState,
    caller: Caller,
    query: Query<InTenant>,
    body: Json<CreateFormat>,
) -> Result<HttpResponse, ApiError> {
    let scope = caller
        .scope(
            &api,
            ObjectKind::Formats,
            Operation::Create,
            query.0.tenant.as_deref(),
        )
        .await?;
    let body = body.0;
    let outbound = match body.direction.as_deref() {
        None | Some(formats::INBOUND) => false,
        Some(formats::OUTBOUND) => true,
        Some(other) => {
            return Err(invalid(
                "direction",
                format!("direction must be inbound or outbound, not `{other}`"),
            ));
        }
    };
    let mapping = Value::Object(body.mapping);
    check_format(
        &body.name,
        &body.kind,
        (body.proto.as_deref(), body.message.as_deref()),
        body.schema.as_ref(),
        &mapping,
    )?;
    let made = formats::create(
        &api.storage,
        scope,
        NewFormat {
            name: body.name,
            kind: body.kind,
            proto_text: body.proto,
            proto_message: body.message,
            json_schema: body.schema,
            mapping,
            outbound,
        },
    )
    .await?;
    audit::record(
        &api.storage,
        api_event(
            &caller,
            Some(scope.tenant),
            "format.create",
            "format",
            &made.name,
        ),
    )
    .await?;
    Ok(HttpResponse::Created().json(&CreatedFormat {
        name: made.name,
        kind: made.kind,
        direction: made.direction,
        created_at: made.created_at,
    }))
}

/// Compiles a format's definition: one that cannot work is refused at the part that is wrong.
fn check_format(
    name: &str,
    kind: &str,
    (proto_text, proto_message): (Option<&str>, Option<&str>),
    schema: Option<&Value>,
    mapping: &Value,
) -> Result<(), ApiError> {
    Format::compile(&FormatSpec {
        kind,
        proto_text,
        proto_message,
        json_schema: schema,
        mapping: Some(mapping),
    })
    .map(|_| ())
    .map_err(|e| invalid(e.part, format!("format `{name}`: {e}")))
}

/// A format's new definition (its name and direction stay).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct FormatDefinition {
    /// `json`, `xml`, `protobuf` or `pms`.
    #[schema(pattern = "^(json|xml|protobuf|pms)$")]
    kind: String,
    /// The `.proto` text (Protobuf).
    proto: Option<String>,
    /// The message type in it (Protobuf).
    message: Option<String>,
    /// A JSON Schema payloads must meet (JSON): an object or a boolean.
    schema: Option<Value>,
    /// Where values are in a payload (JSON pointers).
    #[serde(default)]
    #[schema(value_type = Object)]
    mapping: serde_json::Map<String, Value>,
}

/// Change a message format
///
/// Its definition is replaced, compiled first like a new one's (`422` at the part that is
/// wrong); the classes and devices that use it read with it from then on. Audited.
#[utoipa::path(
    put,
    path = "/api/formats/{name}",
    tag = "classes",
    operation_id = "update_format",
    params(("name" = String, Path, description = "The format"), InTenant),
    request_body = FormatDefinition,
    responses(
        (status = 200, description = "Saved", body = CreatedFormat),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such format or tenant", body = ErrorBody),
        (status = 413, description = "The body is over 256 KiB", body = ErrorBody),
        (status = 422, description = "A field is wrong (`field` names it, the message says why)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn update_format(
    api: ApiState,
    caller: Caller,
    name: web::types::Path<String>,
    query: Query<InTenant>,
    body: Json<FormatDefinition>,
) -> Result<HttpResponse, ApiError> {
    let scope = caller
        .scope(
            &api,
            ObjectKind::Formats,
            Operation::Update,
            query.0.tenant.as_deref(),
        )
        .await?;
    let body = body.0;
    let mapping = Value::Object(body.mapping);
    check_format(
        &name,
        &body.kind,
        (body.proto.as_deref(), body.message.as_deref()),
        body.schema.as_ref(),
        &mapping,
    )?;
    let saved = formats::update(
        &api.storage,
        scope,
        &name,
        NewFormat {
            name: name.to_string(),
            kind: body.kind,
            proto_text: body.proto,
            proto_message: body.message,
            json_schema: body.schema,
            mapping,
            outbound: false,
        },
    )
    .await?;
    audit::record(
        &api.storage,
        api_event(
            &caller,
            Some(scope.tenant),
            "format.update",
            "format",
            &name,
        ),
    )
    .await?;
    Ok(HttpResponse::Ok().json(&CreatedFormat {
        name: saved.name,
        kind: saved.kind,
        direction: saved.direction,
        created_at: saved.created_at,
    }))
}

/// Delete a message format
///
/// Only one no class or device uses (`409` says which use it). Audited.
#[utoipa::path(
    delete,
    path = "/api/formats/{name}",
    tag = "classes",
    operation_id = "delete_format",
    params(("name" = String, Path, description = "The format"), InTenant),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such format or tenant", body = ErrorBody),
        (status = 409, description = "Classes or devices use it", body = ErrorBody),
        (status = 422, description = "A parameter is wrong (`field` names it)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn delete_format(
    api: ApiState,
    caller: Caller,
    name: web::types::Path<String>,
    query: Query<InTenant>,
) -> Result<HttpResponse, ApiError> {
    let tenant = query.0.tenant.as_deref();
    super::delete_named(
        &api,
        &caller,
        (ObjectKind::Formats, "format"),
        tenant,
        &name,
        |scope| formats::delete(&api.storage, scope, &name),
    )
    .await
}

/// Which interpreter to delete.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct InterpreterOf {
    /// The class whose own interpreter goes (default: the tenant-wide one).
    class: Option<String>,
    /// The tenant a system administrator acts in (a tenant's user always acts in its own).
    tenant: Option<String>,
}

/// Delete an interpreter
///
/// The attribute's interpreter of a class (`class`) or of the whole tenant: its values are
/// stored as they come from then on (a tenant-wide one applies again where a class's went).
/// Audited.
#[utoipa::path(
    delete,
    path = "/api/interpreters/{attribute}",
    tag = "classes",
    operation_id = "delete_interpreter",
    params(("attribute" = String, Path, description = "The attribute"), InterpreterOf),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such interpreter, class or tenant", body = ErrorBody),
        (status = 422, description = "A parameter is wrong (`field` names it)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn delete_interpreter(
    api: ApiState,
    caller: Caller,
    attribute: web::types::Path<String>,
    query: Query<InterpreterOf>,
) -> Result<HttpResponse, ApiError> {
    let query = query.0;
    let kind = (ObjectKind::Interpreters, "interpreter");
    super::delete_named(
        &api,
        &caller,
        kind,
        query.tenant.as_deref(),
        &attribute,
        |scope| interpreters::delete(&api.storage, scope, &attribute, query.class.as_deref()),
    )
    .await
}

/// The formats of a class's devices.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ClassFormats {
    /// How its devices' payloads are read (a format's name; null: plain JSON). Absent: kept.
    #[serde(default, with = "super::serde_with_null")]
    #[schema(value_type = Option<String>)]
    inbound: Option<Option<String>>,
    /// How commands to them are written (null: JSON). Absent: kept.
    #[serde(default, with = "super::serde_with_null")]
    #[schema(value_type = Option<String>)]
    outbound: Option<Option<String>>,
}

/// Set a class's formats
///
/// How its devices' payloads are read and how commands to them are written; an absent key is
/// kept, null goes back to plain JSON.
#[utoipa::path(
    put,
    path = "/api/classes/{name}/formats",
    tag = "classes",
    operation_id = "set_class_formats",
    params(("name" = String, Path, description = "The class"), InTenant),
    request_body = ClassFormats,
    responses(
        (status = 204, description = "Set"),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such tenant or object", body = ErrorBody),
        (status = 422, description = "A field is wrong (`field` names it, the message says why)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn set_class_formats(
    api: ApiState,
    caller: Caller,
    name: web::types::Path<String>,
    query: Query<InTenant>,
    body: Json<ClassFormats>,
) -> Result<HttpResponse, ApiError> {
    let scope = caller
        .scope(
            &api,
            ObjectKind::Classes,
            Operation::Update,
            query.0.tenant.as_deref(),
        )
        .await?;
    let body = body.0;
    for (given, outbound) in [(body.inbound, false), (body.outbound, true)] {
        if let Some(format) = given {
            formats::set_class_format(&api.storage, scope, &name, format.as_deref(), outbound)
                .await?;
        }
    }
    audit::record(
        &api.storage,
        api_event(&caller, Some(scope.tenant), "class.format", "class", &name),
    )
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Get a class's model
///
/// Its functions, attribute definitions and command groups.
#[utoipa::path(
    get,
    path = "/api/classes/{name}/model",
    tag = "classes",
    operation_id = "get_class_model",
    params(("name" = String, Path, description = "The class"), InTenant),
    responses(
        (status = 200, description = "The model", body = ClassModel),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such tenant or object", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn get_model(
    api: ApiState,
    caller: Caller,
    name: web::types::Path<String>,
    query: Query<InTenant>,
) -> Result<HttpResponse, ApiError> {
    let scope = caller
        .scope(
            &api,
            ObjectKind::Classes,
            Operation::View,
            query.0.tenant.as_deref(),
        )
        .await?;
    Ok(HttpResponse::Ok().json(&class_model::get(&api.storage, scope, &name).await?))
}

/// Replace a class's model
///
/// Functions, attributes (`data_type`: number, integer, boolean, string, json; `kind`:
/// configuration, measurement, operational, event) and command groups, replaced as a whole; a
/// wrong one is 422 and nothing changes.
#[utoipa::path(
    put,
    path = "/api/classes/{name}/model",
    tag = "classes",
    operation_id = "set_class_model",
    params(("name" = String, Path, description = "The class"), InTenant),
    request_body = ClassModel,
    responses(
        (status = 200, description = "The model as saved", body = ClassModel),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such tenant or object", body = ErrorBody),
        (status = 413, description = "The body is over 256 KiB", body = ErrorBody),
        (status = 422, description = "A field is wrong (`field` names it, the message says why)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn set_model(
    api: ApiState,
    caller: Caller,
    name: web::types::Path<String>,
    query: Query<InTenant>,
    body: Json<ClassModel>,
) -> Result<HttpResponse, ApiError> {
    let scope = caller
        .scope(
            &api,
            ObjectKind::Classes,
            Operation::Update,
            query.0.tenant.as_deref(),
        )
        .await?;
    class_model::set(&api.storage, scope, &name, &body.0).await?;
    audit::record(
        &api.storage,
        api_event(&caller, Some(scope.tenant), "class.model", "class", &name),
    )
    .await?;
    Ok(HttpResponse::Ok().json(&class_model::get(&api.storage, scope, &name).await?))
}
