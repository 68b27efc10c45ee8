//! Sign-in, token refresh, sign-out, and who the caller is.

use aos_auth::accounts::Tokens;
use ntex::web::{HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::{ApiError, ApiState, Caller, ErrorBody, Json, Routes};

pub fn routes(r: &mut impl Routes) {
    r.post("/auth/sign-in", sign_in)
        .post("/auth/refresh", refresh)
        .post("/auth/sign-out", sign_out)
        .get("/me", me)
        .post("/me/password", change_password);
}

/// The caller's own new password.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PasswordChange {
    /// The password it has now.
    current: String,
    /// At least 8 characters.
    new: String,
}

/// Change one's own password
///
/// The current one is checked first; afterwards every session of the user must sign in again
/// (its refresh tokens are revoked).
#[utoipa::path(
    post,
    path = "/api/me/password",
    tag = "auth",
    operation_id = "change_password",
    request_body = PasswordChange,
    responses(
        (status = 204, description = "Changed"),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 401, description = "No valid access token, or the current password is wrong", body = ErrorBody),
        (status = 422, description = "The new password is too short", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn change_password(
    api: ApiState,
    caller: Caller,
    body: Json<PasswordChange>,
) -> Result<HttpResponse, ApiError> {
    api.accounts
        .change_password(&caller.0.login, &body.0.current, &body.0.new)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SignIn {
    login: String,
    password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RefreshToken {
    refresh_token: String,
}

/// What a sign-in or a refresh answers (`aos_auth::accounts::Tokens`, field for field).
#[derive(Serialize, ToSchema)]
pub(super) struct TokensView {
    /// Goes in `Authorization: Bearer ACCESS_TOKEN` (an HS256 JWT).
    access_token: String,
    /// Gets a new pair from `POST /api/auth/refresh`, once.
    refresh_token: String,
    /// Seconds the access token is valid.
    expires_in: u64,
}

impl From<Tokens> for TokensView {
    fn from(tokens: Tokens) -> TokensView {
        TokensView {
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token,
            expires_in: tokens.expires_in,
        }
    }
}

/// Sign in
///
/// `{"login", "password"}` → an access token and a refresh token. Failed sign-ins are throttled
/// per account and per client address.
#[utoipa::path(
    post,
    path = "/api/auth/sign-in",
    tag = "auth",
    operation_id = "sign_in",
    request_body = SignIn,
    responses(
        (status = 200, description = "Signed in", body = TokensView),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 401, description = "Wrong login or password", body = ErrorBody),
        (status = 403, description = "The account is disabled", body = ErrorBody),
        (status = 413, description = "The body is over 256 KiB", body = ErrorBody),
        (status = 422, description = "The body has the wrong shape", body = ErrorBody),
        (status = 429, description = "Too many failed sign-ins; the message says when to try again", body = ErrorBody),
    ),
)]
pub(super) async fn sign_in(
    api: ApiState,
    req: HttpRequest,
    body: Json<SignIn>,
) -> Result<HttpResponse, ApiError> {
    let client = req.peer_addr().map(|a| a.ip());
    let tokens = api
        .accounts
        .sign_in(&body.0.login, &body.0.password, client)
        .await?;
    Ok(HttpResponse::Ok().json(&TokensView::from(tokens)))
}

/// Refresh the tokens
///
/// `{"refresh_token"}` → a new pair. The refresh token given is spent: using it again revokes
/// its whole family.
#[utoipa::path(
    post,
    path = "/api/auth/refresh",
    tag = "auth",
    operation_id = "refresh",
    request_body = RefreshToken,
    responses(
        (status = 200, description = "A new pair of tokens", body = TokensView),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 401, description = "The refresh token is unknown, spent or expired", body = ErrorBody),
        (status = 403, description = "The account is disabled", body = ErrorBody),
        (status = 413, description = "The body is over 256 KiB", body = ErrorBody),
        (status = 422, description = "The body has the wrong shape", body = ErrorBody),
    ),
)]
pub(super) async fn refresh(
    api: ApiState,
    body: Json<RefreshToken>,
) -> Result<HttpResponse, ApiError> {
    let tokens = api.accounts.refresh(&body.0.refresh_token).await?;
    Ok(HttpResponse::Ok().json(&TokensView::from(tokens)))
}

/// Sign out
///
/// `{"refresh_token"}`: the session's tokens can no longer refresh.
#[utoipa::path(
    post,
    path = "/api/auth/sign-out",
    tag = "auth",
    operation_id = "sign_out",
    request_body = RefreshToken,
    responses(
        (status = 204, description = "Signed out"),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 401, description = "The refresh token is unknown", body = ErrorBody),
        (status = 413, description = "The body is over 256 KiB", body = ErrorBody),
        (status = 422, description = "The body has the wrong shape", body = ErrorBody),
    ),
)]
pub(super) async fn sign_out(
    api: ApiState,
    body: Json<RefreshToken>,
) -> Result<HttpResponse, ApiError> {
    api.accounts.sign_out(&body.0.refresh_token).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The signed-in user, its tenant and what its roles grant.
#[derive(Serialize, ToSchema)]
pub(super) struct MeView {
    login: String,
    /// The tenant's id; null for a system administrator.
    tenant: Option<i64>,
    tenant_name: Option<String>,
    /// The customer entity a customer-bound user belongs to.
    customer: Option<i64>,
    grants: GrantsView,
}

/// What the user's roles grant, together.
#[derive(Serialize, ToSchema)]
pub(super) struct GrantsView {
    /// Object kind (`devices`, `commands`, …) → level (`view`, `manage` or `full`).
    #[schema(value_type = std::collections::BTreeMap<String, String>)]
    permissions: Value,
    /// The advanced actions granted one by one.
    #[schema(value_type = Vec<String>)]
    actions: Value,
}

/// Who am I
///
/// The signed-in user, its tenant and what its roles grant.
#[utoipa::path(
    get,
    path = "/api/me",
    tag = "auth",
    operation_id = "me",
    responses(
        (status = 200, description = "The caller", body = MeView),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The account is disabled", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn me(api: ApiState, caller: Caller) -> Result<HttpResponse, ApiError> {
    let subject = caller.0;
    let grants = subject.grants.stored();
    let tenant_name = match subject.tenant {
        Some(id) => Some(
            aos_storage::repo::tenants::by_id(&api.storage, id)
                .await?
                .name,
        ),
        None => None,
    };
    Ok(HttpResponse::Ok().json(&MeView {
        login: subject.login,
        tenant: subject.tenant,
        tenant_name,
        customer: subject.customer,
        grants: GrantsView {
            permissions: grants.permissions,
            actions: grants.actions,
        },
    }))
}
