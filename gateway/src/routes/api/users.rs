//! `POST /api/users` and `GET /api/users?userId=` (seed 001): profiles, in the
//! `{success, message, data}` envelope.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use switchboard_kit::time::timestamp_rfc3339;
use switchboard_proto::auth::v1 as pb;
use utoipa::{IntoParams, ToSchema};

use super::Envelope;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ValidJson, ValidQuery};
use crate::ratelimit::Group;
use crate::state::AppState;

/// Body of `POST /api/users`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateUser {
    /// The backend's id of the user.
    user_id: String,
    /// Their name.
    name: String,
    /// Their e-mail address.
    email: String,
    /// Their tenant; the key's (or `default`) when absent.
    system_id: Option<String>,
}

/// Query of `GET /api/users`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct UserQuery {
    /// The backend's id of the user.
    user_id: String,
    /// Their tenant; the key's (or `default`) when absent.
    system_id: Option<String>,
}

/// A user's profile.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProfileBody {
    /// The backend's id of the user.
    user_id: String,
    /// Their name.
    name: String,
    /// Their e-mail address.
    email: String,
    /// Their tenant.
    system_id: String,
    /// RFC 3339.
    created_at: Option<String>,
}

fn profile_body(p: pb::Profile) -> ProfileBody {
    ProfileBody {
        created_at: timestamp_rfc3339(p.created_at.as_ref()),
        user_id: p.user_id,
        name: p.name,
        email: p.email,
        system_id: p.system_id,
    }
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

/// Creates a user's profile; 409 when the user exists.
#[utoipa::path(post, path = "/api/users", operation_id = "createUser", request_body = CreateUser,
    responses((status = 200, description = "Created.", body = Envelope<ProfileBody>)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ValidJson(body): ValidJson<CreateUser>,
) -> Result<Json<Envelope<ProfileBody>>, ApiError> {
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
    Ok(Json(Envelope::ok("User created successfully", profile_body(answer.profile.unwrap_or_default()))))
}

/// Reads a user's profile; 404 when there is none.
#[utoipa::path(get, path = "/api/users", operation_id = "getUser", params(UserQuery),
    responses((status = 200, description = "Found.", body = Envelope<ProfileBody>)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ValidQuery(query): ValidQuery<UserQuery>,
) -> Result<Json<Envelope<ProfileBody>>, ApiError> {
    let system_id = tenant(&caller, query.system_id.as_deref());
    let principal = caller.act_as(Some(&system_id), Some(&query.user_id), "query")?;
    state.limiter.principal(Group::Api, &principal.system_id, &principal.user_id).await?;
    let request = caller.request(pb::GetProfileRequest { system_id: principal.system_id, user_id: principal.user_id });
    let answer = state.auth.clone().get_profile(request).await?.into_inner();
    Ok(Json(Envelope::ok("User found", profile_body(answer.profile.unwrap_or_default()))))
}
