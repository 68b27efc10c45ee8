//! The REST API under `/api`: JSON in and out, one error shape for every failure
//! (`{"error": {"code", "message", "field"}}` with the matching HTTP status), request bodies
//! bounded, callers named by `Authorization: Bearer` access tokens. Every handler is described
//! in the OpenAPI document ([`openapi`], served at `/api/openapi.json`).

mod auth;
mod brokers;
mod classes;
mod commands;
mod data;
mod device_admin;
mod device_http;
mod devices;
mod entities;
mod events;
mod interpreters;
mod live;
mod nodes;
pub mod openapi;
mod people;
mod queues;
mod schema;
mod workflows;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use aos_auth::accounts::{Accounts, SignInError};
use aos_auth::permissions::{Access, Denied, ObjectKind, Operation, Subject, authorize};
use aos_core::access::ClientDirectory;
use aos_core::acquisition::Acquirer;
use aos_core::live::LiveFeed;
use aos_core::{Bus, Kv, WorkQueue};
use aos_storage::repo::paging::Page;
use aos_storage::repo::{Scope, tenants};
use aos_storage::{Storage, StorageError};
use ntex::http::{Method, StatusCode};
use ntex::web::error::DefaultError;
use ntex::web::{self, FromRequest, Handler, HttpRequest, HttpResponse, WebResponseError};
use serde::de::DeserializeOwned;
use utoipa::{IntoParams, ToSchema};

/// Largest request body accepted (JSON documents, not uploads).
pub const MAX_BODY: usize = 256 * 1024;
/// How much of an oversize body is still read (and dropped) so that the client, which is still
/// sending, gets its 413 answer instead of a broken connection; beyond it the connection goes.
const DRAINED: usize = 16 * MAX_BODY;

/// What the API handlers share.
pub struct Api {
    pub storage: Storage,
    pub accounts: Arc<Accounts>,
    /// The node's work queues (their dead letters are looked at and replayed).
    pub queue: Arc<dyn WorkQueue>,
    /// Tells the workers about new commands.
    pub bus: Arc<dyn Bus>,
    /// Where the cluster's nodes register themselves (and their health).
    pub kv: Arc<dyn Kv>,
    /// Signs devices in (the HTTP device API); None where the node has no platform directory.
    pub clients: Option<Arc<dyn ClientDirectory>>,
    /// Hands what devices post over HTTP to the workers.
    pub acquirer: Acquirer,
    /// Tells people watching about commands devices fetched.
    pub live: LiveFeed,
}

pub type ApiState = web::types::State<Arc<Api>>;

/// Where the API's routes go: an app's [`web::ServiceConfig`] serves them, and the tests list
/// them to check that the OpenAPI document describes every one.
pub trait Routes {
    /// `route` answers `method` on `path` (under `/api`).
    fn register(&mut self, method: Method, path: &'static str, route: web::Route) -> &mut Self;

    fn get<F, Args>(&mut self, path: &'static str, handler: F) -> &mut Self
    where
        F: Handler<Args, DefaultError> + 'static,
        Args: FromRequest<DefaultError> + 'static,
        Args::Error: Into<web::Error>,
    {
        self.register(Method::GET, path, web::get().to(handler))
    }

    fn post<F, Args>(&mut self, path: &'static str, handler: F) -> &mut Self
    where
        F: Handler<Args, DefaultError> + 'static,
        Args: FromRequest<DefaultError> + 'static,
        Args::Error: Into<web::Error>,
    {
        self.register(Method::POST, path, web::post().to(handler))
    }

    fn delete<F, Args>(&mut self, path: &'static str, handler: F) -> &mut Self
    where
        F: Handler<Args, DefaultError> + 'static,
        Args: FromRequest<DefaultError> + 'static,
        Args::Error: Into<web::Error>,
    {
        self.register(Method::DELETE, path, web::delete().to(handler))
    }

    fn put<F, Args>(&mut self, path: &'static str, handler: F) -> &mut Self
    where
        F: Handler<Args, DefaultError> + 'static,
        Args: FromRequest<DefaultError> + 'static,
        Args::Error: Into<web::Error>,
    {
        self.register(Method::PUT, path, web::put().to(handler))
    }

    fn patch<F, Args>(&mut self, path: &'static str, handler: F) -> &mut Self
    where
        F: Handler<Args, DefaultError> + 'static,
        Args: FromRequest<DefaultError> + 'static,
        Args::Error: Into<web::Error>,
    {
        self.register(Method::PATCH, path, web::patch().to(handler))
    }
}

impl Routes for web::ServiceConfig {
    fn register(&mut self, _: Method, path: &'static str, route: web::Route) -> &mut Self {
        self.route(path, route)
    }
}

/// Every route of the API, relative to `/api`. Each goes through here rather than straight into
/// a `ServiceConfig`, so that the OpenAPI document's test sees it.
pub fn routes(r: &mut impl Routes) {
    auth::routes(r);
    brokers::routes(r);
    classes::routes(r);
    commands::routes(r);
    data::routes(r);
    device_admin::routes(r);
    device_http::routes(r);
    devices::routes(r);
    entities::routes(r);
    events::routes(r);
    interpreters::routes(r);
    nodes::routes(r);
    people::routes(r);
    queues::routes(r);
    workflows::routes(r);
    r.get("/version", crate::version)
        .get("/live", live::live)
        .get("/openapi.json", openapi::document);
}

/// Registers routes and notes which methods each path answers.
struct Served<'a> {
    cfg: &'a mut web::ServiceConfig,
    methods: Vec<(&'static str, Method)>,
}

impl Routes for Served<'_> {
    fn register(&mut self, method: Method, path: &'static str, route: web::Route) -> &mut Self {
        self.methods.push((path, method));
        self.cfg.route(path, route);
        self
    }
}

/// Whether `path` (under `/api`) fits the route pattern `pattern` (`{name}`: one segment).
fn fits(pattern: &str, path: &str) -> bool {
    let (mut want, mut have) = (pattern.split('/'), path.split('/'));
    loop {
        match (want.next(), have.next()) {
            (None, None) => return true,
            (Some(w), Some(h)) if w == h || (w.starts_with('{') && !h.is_empty()) => {}
            _ => return false,
        }
    }
}

/// The API under `/api`. What no route answers is, in the API's shape, a 405 with `Allow` when
/// the path is one the API serves with other methods, and a 404 otherwise.
pub fn configure(cfg: &mut web::ServiceConfig) {
    let methods: Rc<RefCell<Vec<(&'static str, Method)>>> = Rc::default();
    let noted = methods.clone();
    cfg.service(
        web::scope("/api")
            .configure(move |cfg| {
                let mut served = Served {
                    cfg,
                    methods: Vec::new(),
                };
                routes(&mut served);
                *noted.borrow_mut() = served.methods;
            })
            .default_service(web::to(move |req: HttpRequest| {
                let methods = methods.clone();
                async move { Err::<HttpResponse, _>(unanswered(&req, &methods.borrow())) }
            })),
    );
}

fn unanswered(req: &HttpRequest, methods: &[(&'static str, Method)]) -> ApiError {
    let path = req.path().strip_prefix("/api").unwrap_or_default();
    // The patterns that fit best: `/devices/import` over `/devices/{uid}`.
    let literal = |pattern: &str| pattern.split('/').filter(|s| !s.starts_with('{')).count();
    let best = methods
        .iter()
        .filter(|(pattern, _)| fits(pattern, path))
        .map(|(pattern, _)| literal(pattern))
        .max();
    let mut allowed: Vec<&str> = methods
        .iter()
        .filter(|(pattern, _)| fits(pattern, path) && Some(literal(pattern)) == best)
        .map(|(_, method)| method.as_str())
        .collect();
    allowed.sort_unstable();
    allowed.dedup();
    // The method is served there, but the router took no route for this path: a value no
    // object can have (a name with a line break, say).
    if allowed.is_empty() || allowed.contains(&req.method().as_str()) {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no API operation {} {}", req.method(), req.path()),
        );
    }
    let allow = allowed.join(", ");
    let mut error = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} does not answer {}: use {allow}",
            req.path(),
            req.method()
        ),
    );
    error.allow = Some(allow);
    error
}

/// An API failure, as the client sees it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// The request field that was wrong, when one was.
    pub field: Option<String>,
    /// For 405: the methods the path answers (the `Allow` header).
    pub allow: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            allow: None,
        }
    }

    pub fn field(mut self, field: impl Into<String>) -> ApiError {
        self.field = Some(field.into());
        self
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    fn internal(err: impl std::fmt::Display) -> ApiError {
        tracing::error!(%err, "API request failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server could not complete the request; it is logged",
        )
    }
}

impl WebResponseError<DefaultError> for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self, _: &HttpRequest) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if self.status == StatusCode::UNAUTHORIZED {
            response.header("www-authenticate", "Bearer");
        }
        if let Some(allow) = &self.allow {
            response.header("allow", allow.as_str());
        }
        response.json(&ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message.clone(),
                field: self.field.clone(),
            },
        })
    }
}

/// Every failure's answer, with the matching HTTP status.
#[derive(serde::Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(serde::Serialize, ToSchema)]
pub struct ErrorDetail {
    /// `malformed_json`, `bad_body` (400), `unauthorized` (401), `forbidden` (403), `not_found`
    /// (404), `conflict` (409), `too_large` (413), `invalid` (422), `throttled` (429),
    /// `internal` (500), `busy` or `unavailable` (503).
    #[schema(example = "invalid")]
    pub code: &'static str,
    /// In words, for people.
    pub message: String,
    /// The request field (body, query or path) that was wrong, when one was.
    pub field: Option<String>,
}

impl From<StorageError> for ApiError {
    fn from(err: StorageError) -> ApiError {
        match &err {
            StorageError::NotFound { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", err.to_string())
            }
            StorageError::Duplicate { .. } | StorageError::InUse { .. } => {
                ApiError::new(StatusCode::CONFLICT, "conflict", err.to_string())
            }
            StorageError::Invalid { field, .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", err.to_string())
                    .field(*field)
            }
            StorageError::Forbidden(_) => {
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", err.to_string())
            }
            _ => ApiError::internal(err),
        }
    }
}

impl From<Denied> for ApiError {
    fn from(denied: Denied) -> ApiError {
        match denied {
            Denied::NoTenant => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                "say which tenant this is for: add ?tenant=NAME",
            )
            .field("tenant"),
            other => ApiError::new(StatusCode::FORBIDDEN, "forbidden", other.to_string()),
        }
    }
}

impl From<SignInError> for ApiError {
    fn from(err: SignInError) -> ApiError {
        let err = match err {
            // An unknown user, a taken name...: what storage says, in its words.
            SignInError::Storage(storage) => return ApiError::from(storage),
            other => other,
        };
        let (status, code) = match &err {
            SignInError::BadCredentials | SignInError::InvalidToken => {
                (StatusCode::UNAUTHORIZED, "unauthorized")
            }
            SignInError::Throttled { .. } => (StatusCode::TOO_MANY_REQUESTS, "throttled"),
            SignInError::Disabled | SignInError::Denied(_) => (StatusCode::FORBIDDEN, "forbidden"),
            SignInError::WeakPassword => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            SignInError::Storage(_) | SignInError::Password(_) => return ApiError::internal(err),
        };
        ApiError::new(status, code, err.to_string())
    }
}

/// A JSON request body, read up to [`MAX_BODY`] and parsed strictly (types checked, unknown
/// fields refused where the type says so), every failure a 4xx in the API's shape.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, Err: web::ErrorRenderer> FromRequest<Err> for Json<T> {
    type Error = ApiError;

    async fn from_request(
        req: &HttpRequest,
        payload: &mut ntex::http::Payload,
    ) -> Result<Json<T>, ApiError> {
        parse(&read_body(req, payload).await?).map(Json)
    }
}

/// A request body as it came (a device's payload), read up to [`MAX_BODY`].
pub struct RawBody(pub Vec<u8>);

impl<Err: web::ErrorRenderer> FromRequest<Err> for RawBody {
    type Error = ApiError;

    async fn from_request(
        req: &HttpRequest,
        payload: &mut ntex::http::Payload,
    ) -> Result<RawBody, ApiError> {
        read_body(req, payload).await.map(RawBody)
    }
}

/// Reads a body of at most [`MAX_BODY`] bytes; a larger one is read on up to [`DRAINED`] and
/// refused (413).
async fn read_body(
    req: &HttpRequest,
    payload: &mut ntex::http::Payload,
) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the request body is over {MAX_BODY} bytes"),
        )
    };
    let announced = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if announced.is_some_and(|n| n > DRAINED) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    let mut received = 0;
    while let Some(chunk) = ntex::util::stream_recv(payload).await {
        let chunk = chunk.map_err(|err| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_body",
                format!("the request body could not be read: {err}"),
            )
        })?;
        received += chunk.len();
        if received > DRAINED {
            return Err(too_large());
        }
        if received <= MAX_BODY {
            body.extend_from_slice(&chunk);
        }
    }
    if received > MAX_BODY {
        return Err(too_large());
    }
    Ok(body)
}

/// Reads a JSON document; a syntax error is 400, a document of the wrong shape 422 naming the
/// field (its path, `grants[0].filter`) for a wrong type as for a missing or unknown one.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    // Whether the body is JSON at all decides 400 or 422: serde reports some shape errors (an
    // empty object where an enum's variant is due) as syntax errors.
    let syntax = serde_json::from_slice::<serde::de::IgnoredAny>(body).err();
    if let Some(err) = syntax {
        return Err(body_error(err, ".", false));
    }
    // Every body is an object (serde would also read a struct from an array of its fields).
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "the request body must be a JSON object",
        ));
    }
    let mut document = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut document).map_err(|err| {
        let path = err.path().to_string();
        body_error(err.into_inner(), &path, true)
    })
}

/// The answer to a body that does not read: `path` is where the error is (`.` for the top);
/// `json`: the body is JSON, of the wrong shape.
fn body_error(err: serde_json::Error, path: &str, json: bool) -> ApiError {
    let message = err.to_string();
    match err.classify() {
        serde_json::error::Category::Data | serde_json::error::Category::Syntax if json => {
            // Serde names a missing or unknown field in its message; the path holds the field
            // whose value was wrong, or the object the named one is missing from.
            let field = match (named_field(&message), path) {
                (Some(name), ".") => Some(name),
                (Some(name), at) if at == name || at.ends_with(&format!(".{name}")) => {
                    Some(at.to_string())
                }
                (Some(name), parent) => Some(format!("{parent}.{name}")),
                (None, ".") => None,
                (None, at) => Some(at.to_string()),
            };
            let mut error = ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                match &field {
                    Some(field) => format!("`{field}` is not valid: {message}"),
                    None => format!("the request body is not valid: {message}"),
                },
            );
            if let Some(field) = field {
                error = error.field(field);
            }
            error
        }
        _ => ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("the request body is not JSON: {message}"),
        ),
    }
}

/// A query string, parsed strictly like a body (unknown parameters refused).
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, Err: web::ErrorRenderer> FromRequest<Err> for Query<T> {
    type Error = ApiError;

    async fn from_request(
        req: &HttpRequest,
        _: &mut ntex::http::Payload,
    ) -> Result<Query<T>, ApiError> {
        let query = req.query_string();
        serde_urlencoded::from_str(query).map(Query).map_err(|err| {
            let message = err.to_string();
            let field = named_field(&message).or_else(|| bad_parameter::<T>(query));
            let mut error = ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                match &field {
                    Some(name) => format!("the query string is not valid: `{name}`: {message}"),
                    None => format!("the query string is not valid: {message}"),
                },
            );
            if let Some(field) = field {
                error = error.field(field);
            }
            error
        })
    }
}

/// The field serde's message names, when it names one (unknown, missing, repeated).
fn named_field(message: &str) -> Option<String> {
    ["unknown field `", "missing field `", "duplicate field `"]
        .iter()
        .find_map(|start| message.split_once(start))
        .and_then(|(_, rest)| rest.split('`').next())
        .map(String::from)
}

/// Which parameter of `query` makes it unreadable as `T` (serde_urlencoded does not say for a
/// value of the wrong type): the one without which it reads, or misses only that one.
fn bad_parameter<T: DeserializeOwned>(query: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).ok()?;
    pairs.iter().map(|(key, _)| key).find_map(|key| {
        let others: Vec<&(String, String)> = pairs.iter().filter(|(k, _)| k != key).collect();
        let rest = serde_urlencoded::to_string(others).ok()?;
        match serde_urlencoded::from_str::<T>(&rest) {
            Ok(_) => Some(key.clone()),
            Err(err) if err.to_string().contains(&format!("missing field `{key}`")) => {
                Some(key.clone())
            }
            Err(_) => None,
        }
    })
}

/// `?tenant=NAME`: the tenant a system administrator acts in.
#[derive(serde::Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct InTenant {
    /// The tenant a system administrator acts in (a tenant's user always acts in its own).
    pub tenant: Option<String>,
}

/// Absent (None) and null (Some(None)) told apart.
pub(crate) mod serde_with_null {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Option<String>>, D::Error> {
        Option::<String>::deserialize(deserializer).map(Some)
    }
}

/// Deletes the object `name` of the caller's tenant (`kind`, audited as `{noun}.delete`) with
/// `remove`; answers 204.
pub(super) async fn delete_named<F, Fut>(
    api: &ApiState,
    caller: &Caller,
    (kind, noun): (ObjectKind, &str),
    tenant: Option<&str>,
    name: &str,
    remove: F,
) -> Result<HttpResponse, ApiError>
where
    F: FnOnce(Scope) -> Fut,
    Fut: std::future::Future<Output = Result<(), StorageError>>,
{
    let scope = caller.scope(api, kind, Operation::Delete, tenant).await?;
    remove(scope).await?;
    let action = format!("{noun}.delete");
    let event = people::api_event(caller, Some(scope.tenant), &action, noun, name);
    aos_storage::repo::audit::record(&api.storage, event).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The numeric id in a path; anything else names nothing (404).
pub fn object_id(text: &str, what: &str) -> Result<i64, ApiError> {
    text.parse().map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no {what} `{text}`"),
        )
    })
}

/// Checks a list's `limit` (1 to 1,000; default 50).
pub fn limit(given: Option<u64>) -> Result<u64, ApiError> {
    match given.unwrap_or(50) {
        n @ 1..=1000 => Ok(n),
        n => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!("limit must be 1 to 1000, not {n}"),
        )
        .field("limit")),
    }
}

/// Largest `offset` a list accepts (deeper pages: filter instead).
pub const MAX_OFFSET: u64 = 1_000_000;

/// A list's page from its `limit`, `offset` and `sort` parameters, checked.
pub fn page(
    limit_given: Option<u64>,
    offset: Option<u64>,
    sort: Option<String>,
) -> Result<Page, ApiError> {
    let offset = offset.unwrap_or(0);
    if offset > MAX_OFFSET {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!("offset must be at most {MAX_OFFSET}; narrow the list with its filters"),
        )
        .field("offset"));
    }
    Ok(Page {
        limit: limit(limit_given)?,
        offset,
        sort,
    })
}

/// A page of a list, as every list answers: `{"items": [...], "total": n}`.
#[derive(serde::Serialize, ToSchema)]
pub struct Listed<T> {
    /// The page.
    pub items: Vec<T>,
    /// How many items the list's filters match, on every page.
    pub total: u64,
}

impl<T: serde::Serialize> Listed<T> {
    pub fn new(items: Vec<T>, total: u64) -> Listed<T> {
        Listed { items, total }
    }

    pub fn response(&self) -> HttpResponse {
        HttpResponse::Ok().json(self)
    }
}

/// What a list without filters of its own takes: the tenant, `limit`, `offset`, `sort`.
#[derive(serde::Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// The tenant a system administrator acts in (a tenant's user always acts in its own).
    pub tenant: Option<String>,
    /// Items per page, 1 to 1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u64>,
    /// Items to skip, up to 1,000,000 (default 0).
    #[param(maximum = 1_000_000)]
    pub offset: Option<u64>,
    /// A field the list sorts by, `-field` for descending.
    pub sort: Option<String>,
}

/// What a list of platform objects (tenants, nodes) takes: `limit`, `offset`, `sort`.
#[derive(serde::Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PlatformListQuery {
    /// Items per page, 1 to 1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u64>,
    /// Items to skip, up to 1,000,000 (default 0).
    #[param(maximum = 1_000_000)]
    pub offset: Option<u64>,
    /// A field the list sorts by, `-field` for descending.
    pub sort: Option<String>,
}

/// The token of `Authorization: Bearer TOKEN`; the scheme's case does not matter (RFC 9110
/// §11.1).
pub(crate) fn bearer_token(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The id of the tenant a request names (`?tenant=NAME`); an unknown one is 404 at `tenant`.
pub(crate) async fn tenant_named(api: &Api, name: &str) -> Result<i64, ApiError> {
    Ok(tenants::by_name(&api.storage, name)
        .await
        .map_err(|e| ApiError::from(e).field("tenant"))?
        .id)
}

/// The signed-in user making a request (from `Authorization: Bearer ACCESS_TOKEN`).
pub struct Caller(pub Subject);

impl Caller {
    /// The scope the caller may do `operation` on `kind` in: its own tenant, or for a platform
    /// user the tenant the request names (`?tenant=NAME`).
    pub async fn scope(
        &self,
        api: &Api,
        kind: ObjectKind,
        operation: Operation,
        tenant: Option<&str>,
    ) -> Result<Scope, ApiError> {
        let named = match (self.0.tenant, tenant) {
            (None, Some(name)) => Some(tenant_named(api, name).await?),
            _ => None,
        };
        match authorize(&self.0, kind, operation, named)? {
            Access::Tenant(scope) => Ok(scope),
            Access::Platform => Err(ApiError::internal(
                "a tenant kind was authorized as platform",
            )),
        }
    }

    /// Checks a platform operation (system administrators only).
    pub fn platform(&self, kind: ObjectKind, operation: Operation) -> Result<(), ApiError> {
        authorize(&self.0, kind, operation, None)?;
        Ok(())
    }
}

impl<Err: web::ErrorRenderer> FromRequest<Err> for Caller {
    type Error = ApiError;

    async fn from_request(
        req: &HttpRequest,
        _: &mut ntex::http::Payload,
    ) -> Result<Caller, ApiError> {
        let api = req
            .app_state::<Arc<Api>>()
            .ok_or_else(|| ApiError::internal("the API state is missing"))?;
        let token = bearer_token(req).ok_or_else(|| {
            ApiError::unauthorized(
                "sign in first: send `Authorization: Bearer ACCESS_TOKEN` (POST /api/auth/sign-in)",
            )
        })?;
        let claims = api.accounts.verify(token)?;
        Ok(Caller(api.accounts.subject(&claims).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Grant {
        filter: String,
        publish: bool,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        grants: Vec<Grant>,
        #[serde(default)]
        action: Option<Action>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "snake_case")]
    #[allow(dead_code)]
    enum Action {
        Assign { name: String },
    }

    fn field_of(body: &str) -> (StatusCode, Option<String>) {
        let err = parse::<Body>(body.as_bytes()).expect_err("refused");
        (err.status, err.field)
    }

    #[test]
    fn body_errors_name_the_field() {
        let wrong = StatusCode::UNPROCESSABLE_ENTITY;
        assert_eq!(
            field_of(r#"{"name": 7, "grants": []}"#),
            (wrong, Some("name".into()))
        );
        assert_eq!(
            field_of(r#"{"name": "a", "grants": [{"filter": "x", "publish": "yes"}]}"#),
            (wrong, Some("grants[0].publish".into()))
        );
        assert_eq!(
            field_of(r#"{"name": "a", "grants": [{"filter": "x"}]}"#),
            (wrong, Some("grants[0].publish".into()))
        );
        assert_eq!(
            field_of(r#"{"name": "a", "grants": [], "colour": 1}"#),
            (wrong, Some("colour".into()))
        );
        assert_eq!(field_of(r#"{"grants": []}"#), (wrong, Some("name".into())));
        // serde calls an object without the variant a syntax error; it is JSON all the same.
        assert_eq!(
            field_of(r#"{"name": "a", "grants": [], "action": {}}"#),
            (wrong, Some("action".into()))
        );
        assert_eq!(field_of("[]"), (wrong, None));
        assert_eq!(field_of(r#"["a", []]"#), (wrong, None));
        assert_eq!(field_of(""), (StatusCode::BAD_REQUEST, None));
        assert_eq!(field_of(r#"{"name": "#), (StatusCode::BAD_REQUEST, None));
        assert_eq!(
            field_of(r#"{"name": "a", "grants": []} trailing"#),
            (StatusCode::BAD_REQUEST, None)
        );
    }
}
