//! Looking after devices: change, delete, give credentials, register many from CSV.

use aos_auth::permissions::{ObjectKind, Operation};
use aos_auth::{password, secret};
use aos_storage::repo::audit;
use aos_storage::repo::devices::{self, DeviceChange, NewCredential, NewDevice};
use ntex::http::StatusCode;
use ntex::web::{self, HttpResponse};
use serde::{Deserialize, Serialize};

use super::people::api_event;
use utoipa::ToSchema;

use super::devices::{DeviceView, class_names, view};
use super::{ApiError, ApiState, Caller, ErrorBody, InTenant, Json, Query, RawBody, Routes};

pub fn routes(r: &mut impl Routes) {
    r.post("/devices/import", import)
        .patch("/devices/{uid}", update)
        .delete("/devices/{uid}", delete)
        .post("/devices/{uid}/credentials", credentials);
}

/// Most rows one import takes.
pub const MAX_IMPORT_ROWS: usize = 10_000;

/// What to change of a device (an absent field is kept).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Change {
    #[schema(value_type = Option<super::schema::Name>)]
    name: Option<String>,
    disabled: Option<bool>,
}

/// Change a device
///
/// Its name, or whether it is disabled: disabling one closes its session and refuses its
/// sign-ins.
#[utoipa::path(
    patch,
    path = "/api/devices/{uid}",
    tag = "devices",
    operation_id = "update_device",
    params(("uid" = String, Path, description = "The device's id"), InTenant),
    request_body = Change,
    responses(
        (status = 200, description = "The device", body = DeviceView),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such tenant or object", body = ErrorBody),
        (status = 422, description = "A field is wrong (`field` names it, the message says why)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn update(
    api: ApiState,
    caller: Caller,
    uid: web::types::Path<String>,
    query: Query<InTenant>,
    body: Json<Change>,
) -> Result<HttpResponse, ApiError> {
    let scope = caller
        .scope(
            &api,
            ObjectKind::Devices,
            Operation::Update,
            query.0.tenant.as_deref(),
        )
        .await?;
    let change = DeviceChange {
        name: body.0.name,
        disabled: body.0.disabled,
    };
    let changed = devices::update(&api.storage, scope, &uid, change).await?;
    audit::record(
        &api.storage,
        api_event(
            &caller,
            Some(scope.tenant),
            "device.update",
            "device",
            &changed.uid,
        ),
    )
    .await?;
    let classes = class_names(&api.storage, scope).await?;
    Ok(HttpResponse::Ok().json(&view(changed, &classes)))
}

/// Delete a device
///
/// The device, its values, events, commands and credentials go (its logged messages stay); its
/// live session is closed.
#[utoipa::path(
    delete,
    path = "/api/devices/{uid}",
    tag = "devices",
    operation_id = "delete_device",
    params(("uid" = String, Path, description = "The device's id"), InTenant),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such tenant or object", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn delete(
    api: ApiState,
    caller: Caller,
    uid: web::types::Path<String>,
    query: Query<InTenant>,
) -> Result<HttpResponse, ApiError> {
    let scope = caller
        .scope(
            &api,
            ObjectKind::Devices,
            Operation::Delete,
            query.0.tenant.as_deref(),
        )
        .await?;
    devices::delete(&api.storage, scope, &uid).await?;
    audit::record(
        &api.storage,
        api_event(&caller, Some(scope.tenant), "device.delete", "device", &uid),
    )
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// A new credential of a device.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewCredentials {
    /// `token` (default): a new access token; `password`: an MQTT username and password;
    /// `certificate`: a client certificate (PEM) that names the device on TLS listeners.
    #[schema(pattern = "^(token|password|certificate)$")]
    kind: Option<String>,
    #[schema(value_type = Option<super::schema::Identifier>)]
    username: Option<String>,
    #[schema(min_length = 8)]
    password: Option<String>,
    certificate: Option<String>,
}

/// A credential just given.
#[derive(Serialize, ToSchema)]
pub(super) struct IssuedCredentials {
    kind: String,
    /// The new access token, shown this once (kind `token`).
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    /// The certificate's SHA-256 (kind `certificate`).
    #[serde(skip_serializing_if = "Option::is_none")]
    fingerprint: Option<String>,
}

/// Give a device a credential
///
/// A new access token (shown once), an MQTT username and password, or a client certificate;
/// earlier credentials of that kind are revoked and the device's live session closed.
#[utoipa::path(
    post,
    path = "/api/devices/{uid}/credentials",
    tag = "devices",
    operation_id = "device_credentials",
    params(("uid" = String, Path, description = "The device's id"), InTenant),
    request_body = NewCredentials,
    responses(
        (status = 201, description = "Given", body = IssuedCredentials),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such tenant or object", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 422, description = "A field is wrong (`field` names it, the message says why)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn credentials(
    api: ApiState,
    caller: Caller,
    uid: web::types::Path<String>,
    query: Query<InTenant>,
    body: Json<NewCredentials>,
) -> Result<HttpResponse, ApiError> {
    let scope = caller
        .scope(
            &api,
            ObjectKind::Devices,
            Operation::Update,
            query.0.tenant.as_deref(),
        )
        .await?;
    let body = body.0;
    let missing = |field: &str| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!("`{field}` is needed for this kind of credential"),
        )
        .field(field)
    };
    // A field of another kind of credential is a mistake to point out, not to ignore.
    let kind = body.kind.as_deref().unwrap_or("token");
    let given = [
        ("username", body.username.is_some(), "password"),
        ("password", body.password.is_some(), "password"),
        ("certificate", body.certificate.is_some(), "certificate"),
    ];
    let known = matches!(kind, "token" | "password" | "certificate");
    if let Some((field, _, owner)) = given
        .iter()
        .find(|(_, set, owner)| known && *set && *owner != kind)
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!("`{field}` belongs to a credential of kind `{owner}`, not `{kind}`"),
        )
        .field(*field));
    }
    let mut issued = IssuedCredentials {
        kind: kind.to_string(),
        token: None,
        fingerprint: None,
    };
    let credential = match issued.kind.as_str() {
        "token" => {
            let token = secret::generate();
            let lookup = secret::lookup_hash(&token);
            issued.token = Some(token);
            NewCredential::Token { lookup }
        }
        "password" => {
            let username = body.username.ok_or_else(|| missing("username"))?;
            let given = body.password.ok_or_else(|| missing("password"))?;
            if !password::long_enough(&given) {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid",
                    format!(
                        "the password is too short: use at least {} characters",
                        password::MIN_CHARS
                    ),
                )
                .field("password"));
            }
            let hash = password::hash_off_thread(given, api.accounts.hash_params())
                .await
                .map_err(ApiError::internal)?;
            NewCredential::Password { username, hash }
        }
        "certificate" => {
            let pem = body.certificate.ok_or_else(|| missing("certificate"))?;
            let fingerprint =
                secret::certificate_fingerprint_pem(pem.as_bytes()).ok_or_else(|| {
                    ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid",
                        "`certificate` holds no PEM certificate",
                    )
                    .field("certificate")
                })?;
            issued.fingerprint = Some(fingerprint.clone());
            NewCredential::Certificate { fingerprint }
        }
        other => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                format!("kind must be token, password or certificate, not `{other}`"),
            )
            .field("kind"));
        }
    };
    devices::set_credential(&api.storage, scope, &uid, credential).await?;
    let mut event = api_event(
        &caller,
        Some(scope.tenant),
        "device.credential",
        "device",
        &uid,
    );
    event.detail = serde_json::json!({ "kind": issued.kind });
    audit::record(&api.storage, event).await?;
    Ok(HttpResponse::Created().json(&issued))
}

/// One row of an import: `uid,name,class[,entity,gateway,format]` under a header line.
#[derive(Deserialize)]
struct ImportRow {
    uid: String,
    #[serde(default)]
    name: Option<String>,
    class: String,
    #[serde(default)]
    entity: Option<String>,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    format: Option<String>,
}

/// A line of an import that was not registered.
#[derive(Serialize, ToSchema)]
pub(super) struct RowError {
    /// The line of the CSV text (the header is line 1).
    line: u64,
    message: String,
}

/// What an import did.
#[derive(Serialize, ToSchema)]
pub(super) struct Imported {
    created: u64,
    errors: Vec<RowError>,
}

/// Register devices from CSV
///
/// CSV text: a header with `uid` and `class` (optionally `name`, `entity`, `gateway`, `format`),
/// one device per line, at most 10,000; every good line is registered, every bad one reported
/// with its line.
#[utoipa::path(
    post,
    path = "/api/devices/import",
    tag = "devices",
    operation_id = "import_devices",
    params(InTenant),
    request_body(content = String, content_type = "text/csv", description = "uid,name,class per line, under a header"),
    responses(
        (status = 200, description = "What was registered and what not", body = Imported),
        (status = 400, description = "The CSV cannot be read", body = ErrorBody),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such tenant or object", body = ErrorBody),
        (status = 413, description = "The body is over 256 KiB", body = ErrorBody),
        (status = 422, description = "A field is wrong (`field` names it, the message says why)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn import(
    api: ApiState,
    caller: Caller,
    query: Query<InTenant>,
    body: RawBody,
) -> Result<HttpResponse, ApiError> {
    let scope = caller
        .scope(
            &api,
            ObjectKind::Devices,
            Operation::Create,
            query.0.tenant.as_deref(),
        )
        .await?;
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(body.0.as_slice());
    let headers = reader.headers().map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_csv",
            format!("the CSV header cannot be read: {e}"),
        )
    })?;
    if !(headers.iter().any(|h| h == "uid") && headers.iter().any(|h| h == "class")) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "the first line must name the columns, with at least `uid` and `class` (e.g. uid,name,class)",
        ));
    }
    let mut outcome = Imported {
        created: 0,
        errors: Vec::new(),
    };
    for (index, row) in reader.deserialize::<ImportRow>().enumerate() {
        if index >= MAX_IMPORT_ROWS {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "an import takes at most {MAX_IMPORT_ROWS} devices; the first ones are registered: split the rest"
                ),
            ));
        }
        let line = index as u64 + 2;
        let row = match row {
            Ok(row) => row,
            Err(err) => {
                outcome.errors.push(RowError {
                    line,
                    message: err.to_string(),
                });
                continue;
            }
        };
        let new = NewDevice {
            name: row
                .name
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| row.uid.clone()),
            uid: row.uid,
            class: row.class,
            entity: row.entity.filter(|e| !e.is_empty()),
            gateway: row.gateway.filter(|g| !g.is_empty()),
            format: row.format.filter(|f| !f.is_empty()),
        };
        match devices::create(&api.storage, scope, new).await {
            Ok(_) => outcome.created += 1,
            Err(err) => outcome.errors.push(RowError {
                line,
                message: err.to_string(),
            }),
        }
    }
    let mut event = api_event(
        &caller,
        Some(scope.tenant),
        "device.import",
        "device",
        "csv",
    );
    event.detail =
        serde_json::json!({ "created": outcome.created, "failed": outcome.errors.len() });
    audit::record(&api.storage, event).await?;
    Ok(HttpResponse::Ok().json(&outcome))
}
