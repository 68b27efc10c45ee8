//! Sign-in, token refresh, sign-out, and who the caller is.

use ntex::web::{self, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::{ApiError, ApiState, Caller, Json};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/auth/sign-in", web::post().to(sign_in))
        .route("/auth/refresh", web::post().to(refresh))
        .route("/auth/sign-out", web::post().to(sign_out))
        .route("/me", web::get().to(me));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    login: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshToken {
    refresh_token: String,
}

/// `POST /api/auth/sign-in {"login", "password"}` → `{"access_token", "refresh_token", …}`.
async fn sign_in(
    api: ApiState,
    req: HttpRequest,
    body: Json<SignIn>,
) -> Result<HttpResponse, ApiError> {
    let client = req.peer_addr().map(|a| a.ip());
    let tokens = api
        .accounts
        .sign_in(&body.0.login, &body.0.password, client)
        .await?;
    Ok(HttpResponse::Ok().json(&tokens))
}

/// `POST /api/auth/refresh {"refresh_token"}` → new tokens (the old refresh token is spent).
async fn refresh(api: ApiState, body: Json<RefreshToken>) -> Result<HttpResponse, ApiError> {
    let tokens = api.accounts.refresh(&body.0.refresh_token).await?;
    Ok(HttpResponse::Ok().json(&tokens))
}

/// `POST /api/auth/sign-out {"refresh_token"}`: the session's tokens can no longer refresh.
async fn sign_out(api: ApiState, body: Json<RefreshToken>) -> Result<HttpResponse, ApiError> {
    api.accounts.sign_out(&body.0.refresh_token).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `GET /api/me`: the signed-in user, its tenant and what its roles grant.
async fn me(api: ApiState, caller: Caller) -> Result<HttpResponse, ApiError> {
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
    Ok(HttpResponse::Ok().json(&serde_json::json!({
        "login": subject.login,
        "tenant": subject.tenant,
        "tenant_name": tenant_name,
        "customer": subject.customer,
        "grants": {
            "permissions": grants.permissions,
            "actions": grants.actions,
        },
    })))
}
