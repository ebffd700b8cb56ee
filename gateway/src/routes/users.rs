//! Seed 002's FastAPI user routes: `POST /register`, `POST /token` (OAuth2 password flow,
//! form-encoded), `GET /users/me`. Errors are FastAPI's `{"detail": ...}`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_kit::time::timestamp_rfc3339;
use switchboard_proto::auth::v1 as pb;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ValidForm, ValidJson};
use crate::state::AppState;

/// `POST /register` body.
#[derive(Debug, Deserialize)]
pub struct Register {
    username: String,
    password: String,
    system_id: Option<String>,
}

/// Registers a user: 201 with the user (never the password), 409 when the name is taken.
pub async fn register(
    State(state): State<AppState>,
    ValidJson(body): ValidJson<Register>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let user = state
        .auth
        .clone()
        .register_user(pb::RegisterUserRequest {
            username: body.username,
            password: body.password,
            system_id: body.system_id.unwrap_or_default(),
        })
        .await?
        .into_inner()
        .user
        .unwrap_or_default();
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": user.id, "username": user.username, "system_id": user.system_id,
                    "created_at": timestamp_rfc3339(user.created_at.as_ref())})),
    ))
}

/// `POST /token` form (OAuth2 password flow).
#[derive(Debug, Deserialize)]
pub struct TokenForm {
    username: String,
    password: String,
    grant_type: Option<String>,
    system_id: Option<String>,
}

/// Logs in: `{"access_token", "token_type": "bearer"}`.
pub async fn token(
    State(state): State<AppState>,
    ValidForm(form): ValidForm<TokenForm>,
) -> Result<Json<Value>, ApiError> {
    if form.grant_type.as_deref().is_some_and(|g| g != "password") {
        return Err(ApiError::invalid(&["body", "grant_type"], "string_pattern_mismatch", "must be \"password\""));
    }
    let answer = state
        .auth
        .clone()
        .login(pb::LoginRequest {
            username: form.username,
            password: form.password,
            system_id: form.system_id.unwrap_or_default(),
        })
        .await
        .map_err(|status| {
            let mut err = ApiError::from(status);
            if err.status == StatusCode::UNAUTHORIZED {
                err.message = "Incorrect username or password".into();
            }
            err
        })?
        .into_inner();
    Ok(Json(json!({"access_token": answer.access_token, "token_type": answer.token_type})))
}

/// The signed-in user.
pub async fn me(caller: Caller) -> Result<Json<Value>, ApiError> {
    if caller.0.service || caller.0.user_id.is_empty() {
        return Err(ApiError::forbidden("a service key is not a user; sign in with /token"));
    }
    let username = switchboard_kit::principal::username(&caller.0.user_id).unwrap_or(&caller.0.user_id);
    Ok(Json(json!({"username": username, "system_id": caller.0.system_id})))
}
