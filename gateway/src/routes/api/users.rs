//! `POST /api/users` and `GET /api/users?userId=` (seed 001): profiles, in the
//! `{success, message, data}` envelope.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_kit::time::timestamp_rfc3339;
use switchboard_proto::auth::v1 as pb;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ValidJson, ValidQuery};
use crate::ratelimit::Group;
use crate::state::AppState;

/// Body of `POST /api/users`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateUser {
    user_id: String,
    name: String,
    email: String,
    system_id: Option<String>,
}

/// Query of `GET /api/users`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserQuery {
    user_id: String,
    system_id: Option<String>,
}

fn profile_json(p: pb::Profile) -> Value {
    json!({
        "user_id": p.user_id,
        "name": p.name,
        "email": p.email,
        "system_id": p.system_id,
        "created_at": timestamp_rfc3339(p.created_at.as_ref()),
    })
}

/// The tenant of a seed-001 request: the one named, else the caller's, else `default`.
fn tenant(caller: &Caller, named: Option<&str>) -> String {
    named
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .or_else(|| Some(caller.0.system_id.clone()).filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "default".to_owned())
}

/// Creates a profile; 409 when the user exists.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ValidJson(body): ValidJson<CreateUser>,
) -> Result<Json<Value>, ApiError> {
    let system_id = tenant(&caller, body.system_id.as_deref());
    let principal = caller.act_as(Some(&system_id), Some(&body.user_id), "body")?;
    state.limiter.principal(Group::Api, &principal.system_id, &principal.user_id).await?;
    let request = caller.request(pb::UpsertProfileRequest {
        profile: Some(pb::Profile {
            user_id: principal.user_id,
            name: body.name,
            email: body.email,
            system_id: principal.system_id,
            created_at: None,
        }),
        create_only: true,
    });
    let answer = state.auth.clone().upsert_profile(request).await?.into_inner();
    Ok(Json(json!({
        "success": true,
        "message": "User created successfully",
        "data": profile_json(answer.profile.unwrap_or_default()),
    })))
}

/// Reads a profile; 404 when there is none.
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ValidQuery(query): ValidQuery<UserQuery>,
) -> Result<Json<Value>, ApiError> {
    let system_id = tenant(&caller, query.system_id.as_deref());
    let principal = caller.act_as(Some(&system_id), Some(&query.user_id), "query")?;
    state.limiter.principal(Group::Api, &principal.system_id, &principal.user_id).await?;
    let request = caller.request(pb::GetProfileRequest { system_id: principal.system_id, user_id: principal.user_id });
    let answer = state.auth.clone().get_profile(request).await?.into_inner();
    Ok(Json(json!({
        "success": true,
        "message": "User found",
        "data": profile_json(answer.profile.unwrap_or_default()),
    })))
}
