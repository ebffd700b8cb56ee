//! Seed 002's API family (FastAPI: `{"detail": ...}` errors, 422 for invalid input): its user
//! routes here, `POST /register`, `POST /token` (OAuth2 password flow, form-encoded),
//! `GET /users/me`; its chat routes in `chat.rs`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use switchboard_kit::time::timestamp_rfc3339;
use switchboard_proto::auth::v1 as pb;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Family, RouteExt};
use crate::auth::Caller;
use crate::error::{ApiError, Dialect};
use crate::extract::{ValidForm, ValidJson};
use crate::ratelimit::Group;
use crate::state::AppState;

/// Seed 002's routes.
pub fn router(state: &AppState) -> OpenApiRouter<AppState> {
    let routes = OpenApiRouter::new()
        .routes(routes!(register).limit(state, Group::Login))
        .routes(routes!(token).limit(state, Group::Login))
        .routes(routes!(me).limit(state, Group::Api))
        .routes(routes!(super::chat::simple).limit(state, Group::Chat))
        .routes(routes!(super::chat::history).limit(state, Group::Api));
    Family { tag: "accounts", dialect: Dialect::FastApi }.serve(routes)
}

/// `POST /register` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Register {
    /// 3-20 letters, digits and `_`.
    username: String,
    /// 8-100 characters, with a digit and an upper-case letter.
    password: String,
    /// Tenant to join (it must allow sign-up); `default` when absent.
    system_id: Option<String>,
}

/// A registered user.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegisteredUser {
    /// User id.
    id: String,
    /// The name they sign in with.
    username: String,
    /// Their tenant.
    system_id: String,
    /// RFC 3339.
    created_at: Option<String>,
}

/// Registers a user.
///
/// 201 with the user (never the password); 409 when the name is taken.
#[utoipa::path(post, path = "/register", operation_id = "register", request_body = Register, security(()),
    responses((status = 201, description = "Registered.", body = RegisteredUser)))]
pub async fn register(
    State(state): State<AppState>,
    ValidJson(body): ValidJson<Register>,
) -> Result<(StatusCode, Json<RegisteredUser>), ApiError> {
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
        Json(RegisteredUser {
            created_at: timestamp_rfc3339(user.created_at.as_ref()),
            id: user.id,
            username: user.username,
            system_id: user.system_id,
        }),
    ))
}

/// `POST /token` form (OAuth2 password flow).
#[derive(Debug, Deserialize, ToSchema)]
pub struct TokenForm {
    /// The user's name.
    username: String,
    /// Their password.
    password: String,
    /// `password` when given.
    grant_type: Option<String>,
    /// Their tenant; `default` when absent.
    system_id: Option<String>,
}

/// A login token.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccessToken {
    /// A JWT, sent as `Authorization: Bearer`.
    access_token: String,
    /// Always `bearer`.
    token_type: String,
}

/// Signs in (OAuth2 password flow, form-encoded) for a bearer JWT.
#[utoipa::path(post, path = "/token", operation_id = "login",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"), security(()),
    responses((status = 200, description = "Signed in.", body = AccessToken)))]
pub async fn token(
    State(state): State<AppState>,
    ValidForm(form): ValidForm<TokenForm>,
) -> Result<Json<AccessToken>, ApiError> {
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
    Ok(Json(AccessToken { access_token: answer.access_token, token_type: answer.token_type }))
}

/// The signed-in user.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    /// Their name.
    username: String,
    /// Their tenant.
    system_id: String,
}

/// The signed-in user (a JWT or a client key; a service key is not a user).
#[utoipa::path(get, path = "/users/me", operation_id = "getMe",
    responses((status = 200, description = "The signed-in user.", body = Me)))]
pub async fn me(caller: Caller) -> Result<Json<Me>, ApiError> {
    if caller.0.service || caller.0.user_id.is_empty() {
        return Err(ApiError::forbidden("a service key is not a user; sign in with /token"));
    }
    let username = switchboard_kit::principal::username(&caller.0.user_id).unwrap_or(&caller.0.user_id);
    Ok(Json(Me { username: username.to_owned(), system_id: caller.0.system_id }))
}
