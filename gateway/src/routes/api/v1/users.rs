//! `POST /api/v1/users/join|login|logout` (seed 004).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use switchboard_proto::auth::v1 as pb;
use utoipa::ToSchema;

use super::{Envelope, envelope};
use crate::error::ApiError;
use crate::extract::ValidJson;
use crate::openapi::Null;
use crate::state::AppState;

/// Join and login body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Credentials {
    /// 3-20 letters, digits and `_`.
    username: String,
    /// 8-100 characters, with a digit and an upper-case letter.
    password: String,
}

/// `data` of a login.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginData {
    /// A JWT, sent as `Authorization: Bearer`.
    token: String,
}

/// Signs up: 201, or 409 when the name is taken.
#[utoipa::path(post, path = "/api/v1/users/join", operation_id = "join", request_body = Credentials, security(()),
    responses((status = 201, description = "Joined.", body = Envelope<Null>)))]
pub async fn join(
    State(state): State<AppState>,
    ValidJson(body): ValidJson<Credentials>,
) -> Result<(StatusCode, Json<Envelope<Null>>), ApiError> {
    state
        .auth
        .clone()
        .register_user(pb::RegisterUserRequest {
            username: body.username,
            password: body.password,
            system_id: String::new(),
        })
        .await?;
    Ok((StatusCode::CREATED, Json(envelope("Successfully joined", Null))))
}

/// Logs in: the JWT is in `data.token`.
#[utoipa::path(post, path = "/api/v1/users/login", operation_id = "loginUser", request_body = Credentials,
    security(()), responses((status = 200, description = "Signed in.", body = Envelope<LoginData>)))]
pub async fn login(
    State(state): State<AppState>,
    ValidJson(body): ValidJson<Credentials>,
) -> Result<Json<Envelope<LoginData>>, ApiError> {
    let answer = state
        .auth
        .clone()
        .login(pb::LoginRequest { username: body.username, password: body.password, system_id: String::new() })
        .await
        .map_err(|status| {
            let mut err = ApiError::from(status);
            if err.status == StatusCode::UNAUTHORIZED {
                err.message = "failed to login, invalid username or password".into();
            }
            err
        })?
        .into_inner();
    let username = answer.user.map(|u| u.username).unwrap_or_default();
    Ok(Json(envelope(format!("Welcome {username}"), LoginData { token: answer.access_token })))
}

/// Logs out: the presented JWT is revoked until it expires.
#[utoipa::path(post, path = "/api/v1/users/logout", operation_id = "logout", security(("BearerAuth" = [])),
    responses((status = 200, description = "Signed out.", body = Envelope<Null>)))]
pub async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<Envelope<Null>>, ApiError> {
    let token = match switchboard_kit::auth::Credential::from_headers(&headers) {
        Ok(switchboard_kit::auth::Credential::Bearer(token)) => token,
        _ => return Err(ApiError::unauthenticated("send the token to revoke as Authorization: Bearer <token>")),
    };
    state.auth.clone().logout(pb::LogoutRequest { access_token: token }).await?;
    Ok(Json(envelope("good bye", Null)))
}
