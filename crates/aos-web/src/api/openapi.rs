//! The API's OpenAPI 3 document, generated from the handlers' `#[utoipa::path]` annotations and
//! the types they read and answer; served at `/api/openapi.json` and rendered by the web client
//! at `/api/docs`.

use std::sync::LazyLock;

use ntex::web::HttpResponse;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{
    AllOfBuilder, AnyOfBuilder, ArrayBuilder, ObjectBuilder, Schema, Type,
};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::{
    auth, brokers, classes, commands, data, device_admin, device_http, devices, entities, events,
    interpreters, live, nodes, people, queues, workflows,
};

/// The document, built once (it only changes with the binary).
static DOCUMENT: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(ApiDoc::openapi);

#[derive(OpenApi)]
#[openapi(
    info(
        title = "AOS REST API",
        description = "The REST API of AOS, the IoT platform server. Requests and responses are \
            JSON; timestamps are RFC 3339 UTC. Lists answer `{\"items\", \"total\"}` and take \
            `limit`, `offset` and `sort`; every failure answers `{\"error\": {\"code\", \
            \"message\", \"field\"}}` with the matching status.",
    ),
    paths(
        auth::sign_in,
        auth::refresh,
        auth::sign_out,
        auth::me,
        auth::change_password,
        devices::list,
        devices::get,
        devices::create,
        devices::values,
        device_admin::update,
        device_admin::delete,
        device_admin::credentials,
        device_admin::import,
        commands::send,
        commands::batch,
        commands::list,
        commands::get,
        commands::cancel,
        events::list,
        events::acknowledge,
        events::clear,
        workflows::list,
        workflows::import,
        workflows::export,
        workflows::delete,
        workflows::enable,
        workflows::disable,
        workflows::run_now,
        workflows::runs,
        classes::list,
        classes::get,
        classes::create,
        classes::update,
        classes::delete,
        classes::list_formats,
        interpreters::list,
        interpreters::set,
        interpreters::create_format,
        interpreters::update_format,
        interpreters::delete_format,
        interpreters::delete_interpreter,
        interpreters::set_class_formats,
        interpreters::get_model,
        interpreters::set_model,
        data::list_messages,
        data::figures,
        data::audit_log,
        people::list_users,
        people::create_user,
        people::update_user,
        people::reset_password,
        people::list_roles,
        people::create_role,
        people::update_role,
        people::delete_role,
        people::list_tenants,
        people::create_tenant,
        people::update_tenant,
        entities::list,
        entities::create,
        entities::update,
        entities::delete,
        entities::list_keys,
        entities::create_key,
        entities::revoke_key,
        nodes::list,
        nodes::switch_role,
        queues::list,
        queues::replay,
        queues::drop,
        brokers::clients,
        brokers::disconnect,
        brokers::retained,
        brokers::forget_retained,
        brokers::traffic,
        device_http::telemetry,
        device_http::attributes,
        device_http::events,
        device_http::pending,
        device_http::reply,
        live::live,
        crate::version,
        document,
    ),
    modifiers(&SecuritySchemes, &CommonStatuses, &SortFields, &BatchTargets),
    tags(
        (name = "auth", description = "Signing in: tokens, sign-out, who the caller is"),
        (name = "devices", description = "Devices, their latest values and their values over time"),
        (name = "commands", description = "Commands to devices and their status"),
        (name = "events", description = "Events (alarms) of devices"),
        (name = "workflows", description = "Workflows: import, export, enable, run, and their run log"),
        (name = "classes", description = "Device classes and message formats"),
        (name = "data", description = "The message log and the dashboard's key figures"),
        (name = "people", description = "Users, roles, tenants and the audit log"),
        (name = "platform", description = "The cluster's nodes and the queues' dead letters (system administrators)"),
        (name = "broker", description = "The broker view: MQTT clients, retained messages and traffic of the broker nodes"),
        (name = "device-api", description = "For devices that cannot speak MQTT: they sign every request with their access token"),
        (name = "live", description = "Live updates as Server-Sent Events"),
        (name = "meta", description = "The version, and this document"),
    ),
)]
pub struct ApiDoc;

/// How callers sign their requests: people with an access token from sign-in, devices with
/// their own access token.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut user = Http::new(HttpAuthScheme::Bearer);
        user.bearer_format = Some("JWT".into());
        user.description = Some(
            "An access token from `POST /api/auth/sign-in` (an HS256 JWT, valid 15 minutes by \
             default): `Authorization: Bearer ACCESS_TOKEN`."
                .into(),
        );
        components.add_security_scheme("bearer", SecurityScheme::Http(user));
        let mut device = Http::new(HttpAuthScheme::Bearer);
        device.description = Some(
            "The device's access token (`aos device credentials ID`, the same credential as its \
             MQTT password): `Authorization: Bearer TOKEN`."
                .into(),
        );
        components.add_security_scheme("device_token", SecurityScheme::Http(device));
    }
}

/// Calls `change` with every operation of the document.
fn each_operation(openapi: &mut utoipa::openapi::OpenApi, mut change: impl FnMut(&mut Operation)) {
    for item in openapi.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ];
        operations.into_iter().flatten().for_each(&mut change);
    }
}

/// Statuses every operation of a kind can answer, added where its annotation does not list
/// them: a body that is not JSON (400) or too large (413), input that is not valid (422), a path
/// naming nothing the caller may see (404), a user's account or roles that do not allow it
/// (403).
struct CommonStatuses;

impl Modify for CommonStatuses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        each_operation(openapi, |operation| {
            let parameters = operation.parameters.as_deref().unwrap_or_default();
            let in_path = parameters
                .iter()
                .any(|p| p.parameter_in == ParameterIn::Path);
            let has_body = operation.request_body.is_some();
            let signed_by_user = serde_json::to_value(&operation.security)
                .is_ok_and(|s| s.to_string().contains("\"bearer\""));
            let mut common = Vec::new();
            if signed_by_user {
                common.push((
                    "403",
                    "The account is disabled, or its roles do not allow it",
                ));
            }
            if has_body {
                common.push(("400", "The body is not JSON, or could not be read"));
                common.push(("413", "The body is over 256 KiB"));
            }
            if has_body || !parameters.is_empty() {
                common.push(("422", "A field or parameter is wrong (`field` names it)"));
            }
            if in_path {
                common.push(("404", "Nothing the caller may see has that name"));
            }
            for (status, description) in common {
                operation
                    .responses
                    .responses
                    .entry(status.to_string())
                    .or_insert_with(|| error_response(description));
            }
        });
    }
}

/// The fields a list sorts by — the same ones its handler accepts — by operation id.
fn sort_fields(operation_id: &str) -> Option<&'static [&'static str]> {
    use aos_storage::repo;
    Some(match operation_id {
        "list_commands" => &repo::commands::SORT_FIELDS,
        "list_messages" => &repo::messages::SORT_FIELDS,
        "list_events" => &repo::interpreters::EVENT_SORT_FIELDS,
        "list_devices" => &repo::devices::SORT_FIELDS,
        "list_audit" => &repo::audit::SORT_FIELDS,
        "workflow_runs" => &repo::workflows::RUN_SORT_FIELDS,
        "list_nodes" => &nodes::NODE_SORT,
        "list_entities" => &entities::ENTITY_SORT,
        "list_api_keys" => &entities::KEY_SORT,
        "list_interpreters" => &interpreters::SORT_FIELDS,
        "list_classes" => &classes::CLASS_SORT,
        "list_formats" => &classes::FORMAT_SORT,
        "list_workflows" => &workflows::SORT_FIELDS,
        "list_tenants" => &people::TENANT_SORT,
        "list_users" => &people::USER_SORT,
        "list_roles" => &people::ROLE_SORT,
        _ => return None,
    })
}

/// Makes each list's `sort` parameter an enum of its fields, ascending or (`-field`)
/// descending.
struct SortFields;

impl Modify for SortFields {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        each_operation(openapi, |operation| {
            let Some(fields) = operation.operation_id.as_deref().and_then(sort_fields) else {
                return;
            };
            let sort = operation
                .parameters
                .iter_mut()
                .flatten()
                .filter(|p| p.name == "sort" && p.parameter_in == ParameterIn::Query);
            for parameter in sort {
                // Empty: the list's own order.
                let values = std::iter::once(String::new()).chain(
                    fields
                        .iter()
                        .flat_map(|field| [field.to_string(), format!("-{field}")]),
                );
                parameter.schema = Some(RefOr::T(Schema::Object(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some(values))
                        .build(),
                )));
            }
        });
    }
}

/// A command batch names at least one device or one class: the rule, in its schema.
struct BatchTargets;

impl Modify for BatchTargets {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(schemas) = openapi.components.as_mut().map(|c| &mut c.schemas) else {
            return;
        };
        let Some(batch) = schemas.remove("BatchRequest") else {
            return;
        };
        let names = |list: &str| {
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .property(
                    list,
                    ArrayBuilder::new()
                        .items(ObjectBuilder::new().schema_type(Type::String))
                        .min_items(Some(1)),
                )
                .required(list)
        };
        let targeted = AllOfBuilder::new().item(batch).item(
            AnyOfBuilder::new()
                .item(names("devices"))
                .item(names("classes")),
        );
        schemas.insert(
            "BatchRequest".into(),
            RefOr::T(Schema::AllOf(targeted.build())),
        );
    }
}

/// A documented failure: its description, and the API's error body.
fn error_response(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                Content::new(Some(Ref::from_schema_name("ErrorBody"))),
            )
            .build(),
    )
}

/// This document
///
/// The OpenAPI document of this API (no sign-in needed); `/api/docs` renders it.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "meta",
    operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI document", body = Object)),
)]
pub(super) async fn document() -> HttpResponse {
    HttpResponse::Ok().json(&*DOCUMENT)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashSet};

    use ntex::http::Method;
    use ntex::web;
    use utoipa::openapi::path::Operation;

    use super::*;
    use crate::api::Routes;

    /// Lists the routes instead of serving them.
    #[derive(Default)]
    struct RouteList(BTreeSet<(String, String)>);

    impl Routes for RouteList {
        fn register(&mut self, method: Method, path: &'static str, _: web::Route) -> &mut Self {
            self.0.insert((method.to_string(), format!("/api{path}")));
            self
        }
    }

    fn operations() -> Vec<(String, String, Operation)> {
        let doc = ApiDoc::openapi();
        let mut found = Vec::new();
        for (path, item) in doc.paths.paths {
            for (method, operation) in [
                ("GET", item.get),
                ("POST", item.post),
                ("PUT", item.put),
                ("PATCH", item.patch),
                ("DELETE", item.delete),
            ] {
                if let Some(operation) = operation {
                    found.push((method.to_string(), path.clone(), operation));
                }
            }
        }
        found
    }

    #[test]
    fn every_route_is_documented_and_every_documented_route_exists() {
        let mut served = RouteList::default();
        crate::api::routes(&mut served);
        let documented: BTreeSet<(String, String)> = operations()
            .into_iter()
            .map(|(method, path, _)| (method, path))
            .collect();
        let undocumented: Vec<_> = served.0.difference(&documented).collect();
        assert!(
            undocumented.is_empty(),
            "routes without a #[utoipa::path] in ApiDoc: {undocumented:?}"
        );
        let unserved: Vec<_> = documented.difference(&served.0).collect();
        assert!(
            unserved.is_empty(),
            "documented but not routed: {unserved:?}"
        );
        assert_eq!(served.0.len(), 83);
    }

    #[test]
    fn every_operation_says_what_it_answers_and_who_may_call_it() {
        let doc = ApiDoc::openapi();
        let tags: HashSet<String> = doc.tags.iter().flatten().map(|t| t.name.clone()).collect();
        let schemes: HashSet<String> = doc
            .components
            .as_ref()
            .map(|c| c.security_schemes.keys().cloned().collect())
            .unwrap_or_default();
        assert_eq!(
            schemes,
            HashSet::from(["bearer".into(), "device_token".into()])
        );
        let public = [
            "/api/auth/sign-in",
            "/api/auth/refresh",
            "/api/auth/sign-out",
        ];
        let mut ids = HashSet::new();
        for (method, path, op) in operations() {
            let name = format!("{method} {path}");
            let id = op.operation_id.clone().unwrap_or_default();
            assert!(
                ids.insert(id.clone()),
                "{name}: operation id `{id}` is not unique"
            );
            assert!(
                op.summary.as_deref().is_some_and(|s| !s.is_empty()),
                "{name}: summary"
            );
            let op_tags = op.tags.clone().unwrap_or_default();
            assert!(
                op_tags.len() == 1 && tags.contains(&op_tags[0]),
                "{name}: one declared tag, not {op_tags:?}"
            );
            let statuses: Vec<&String> = op.responses.responses.keys().collect();
            assert!(
                statuses.iter().any(|s| s.starts_with('2')),
                "{name}: no success answer in {statuses:?}"
            );
            let security = serde_json::to_value(&op.security).unwrap_or_default();
            let open = public.contains(&path.as_str())
                || path == "/api/version"
                || path == "/api/openapi.json";
            if open {
                assert!(security.is_null(), "{name} needs no sign-in: {security}");
                continue;
            }
            assert!(
                statuses.iter().any(|s| *s == "401"),
                "{name}: a signed request can be refused (401)"
            );
            let scheme = if path.starts_with("/api/device/") {
                "device_token"
            } else {
                "bearer"
            };
            assert_eq!(
                security,
                serde_json::json!([{ scheme: [] }]),
                "{name}: signed with {scheme}"
            );
        }
    }

    #[test]
    fn every_sort_parameter_lists_its_fields_and_every_body_can_be_malformed() {
        for (method, path, operation) in operations() {
            let id = operation.operation_id.clone().unwrap_or_default();
            let sorts = operation
                .parameters
                .iter()
                .flatten()
                .any(|p| p.name == "sort");
            assert_eq!(
                sorts,
                sort_fields(&id).is_some(),
                "{method} {path} ({id}): a `sort` parameter and its fields go together"
            );
            if operation.request_body.is_some() {
                assert!(
                    operation.responses.responses.contains_key("400"),
                    "{method} {path} documents 400"
                );
            }
        }
    }

    #[test]
    fn errors_and_lists_have_their_shapes() {
        let json = serde_json::to_value(ApiDoc::openapi()).expect("the document is JSON");
        assert!(
            json["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3."))
        );
        assert_eq!(json["info"]["title"], "AOS REST API");
        assert_eq!(json["info"]["version"], env!("CARGO_PKG_VERSION"));
        let schemas = &json["components"]["schemas"];
        assert_eq!(
            schemas["ErrorBody"]["properties"]["error"]["$ref"],
            "#/components/schemas/ErrorDetail"
        );
        let detail = &schemas["ErrorDetail"]["properties"];
        for field in ["code", "message", "field"] {
            assert!(detail[field].is_object(), "ErrorDetail.{field}");
        }
        // Every reference names a schema the document has (the page resolves them).
        fn references(value: &serde_json::Value, found: &mut Vec<String>) {
            match value {
                serde_json::Value::Object(map) => {
                    if let Some(serde_json::Value::String(target)) = map.get("$ref") {
                        found.push(target.clone());
                    }
                    map.values().for_each(|v| references(v, found));
                }
                serde_json::Value::Array(list) => list.iter().for_each(|v| references(v, found)),
                _ => {}
            }
        }
        let mut found = Vec::new();
        references(&json, &mut found);
        assert!(!found.is_empty());
        for target in found {
            let name = target
                .strip_prefix("#/components/schemas/")
                .unwrap_or(&target);
            assert!(schemas[name].is_object(), "{target} is in the document");
        }
        let devices = &json["paths"]["/api/devices"]["get"]["responses"]["200"]["content"]["application/json"]
            ["schema"];
        let listed = serde_json::to_string(devices).unwrap_or_default();
        assert!(listed.contains("DeviceView"), "{listed}");
    }
}
