//! `POST /api/v1/users/join|login|logout` (seed 004).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_proto::auth::v1 as pb;

use super::envelope;
use crate::error::ApiError;
use crate::extract::ValidJson;
use crate::state::AppState;

/// Join and login body.
#[derive(Debug, Deserialize)]
pub struct Credentials {
    username: String,
    password: String,
}

/// Signs up: 201, or 409 when the name is taken.
pub async fn join(
    State(state): State<AppState>,
    ValidJson(body): ValidJson<Credentials>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    state
        .auth
        .clone()
        .register_user(pb::RegisterUserRequest {
            username: body.username,
            password: body.password,
            system_id: String::new(),
        })
        .await?;
    Ok((StatusCode::CREATED, Json(envelope("Successfully joined", Value::Null))))
}

/// Logs in: the JWT is in `data.token`.
pub async fn login(
    State(state): State<AppState>,
    ValidJson(body): ValidJson<Credentials>,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(envelope(format!("Welcome {username}"), json!({"token": answer.access_token}))))
}

/// Logs out: the presented JWT is revoked until it expires.
pub async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let token = match switchboard_kit::auth::Credential::from_headers(&headers) {
        Ok(switchboard_kit::auth::Credential::Bearer(token)) => token,
        _ => return Err(ApiError::unauthenticated("send the token to revoke as Authorization: Bearer <token>")),
    };
    state.auth.clone().logout(pb::LogoutRequest { access_token: token }).await?;
    Ok(Json(envelope("good bye", Value::Null)))
}
