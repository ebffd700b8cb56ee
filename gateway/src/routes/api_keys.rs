//! `/api-keys` (seed 000's family, see `classic.rs`): issue, list, revoke and rotate API keys.
//! Issuing needs the admin token unless `SWITCHBOARD_OPEN_KEY_REGISTRATION=true`; revoking
//! needs the admin token or the key itself; listing and rotating need the admin token.

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use switchboard_kit::time::timestamp_rfc3339;
use switchboard_proto::auth::v1 as pb;
use utoipa::{IntoParams, ToSchema};

use super::classic::Done;
use crate::admin::AdminToken;
use crate::error::ApiError;
use crate::extract::{ValidJson, ValidQuery, parse_json};
use crate::state::AppState;

/// `POST /api-keys` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateKey {
    /// Who the key is for, shown in listings.
    client_name: String,
    /// Days until it expires (1-3650); never when absent.
    expires_in_days: Option<i64>,
    /// Tenant of the key (admin only); `default` when absent.
    system_id: Option<String>,
    /// `client` (default) or `service` (admin only).
    scope: Option<String>,
}

/// An issued key as answered.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyBody {
    /// The key itself: in the answer that issues it, and never again.
    #[serde(skip_serializing_if = "Option::is_none")]
    api_key: Option<String>,
    /// Public id (for listing, rotating and revoking by an admin).
    key_id: String,
    /// The first characters of the key, to recognise it.
    prefix: String,
    /// Who it is for.
    client_name: String,
    /// Its tenant.
    system_id: String,
    /// `client` (acts as itself) or `service` (acts for any user of its tenant).
    scope: &'static str,
    /// RFC 3339.
    created_at: Option<String>,
    /// RFC 3339; `null` for never.
    expires_at: Option<String>,
    /// RFC 3339, when revoked.
    #[serde(skip_serializing_if = "Option::is_none")]
    revoked_at: Option<String>,
    /// RFC 3339, roughly (recorded off the request path).
    #[serde(skip_serializing_if = "Option::is_none")]
    last_used_at: Option<String>,
}

/// The key list.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    /// The keys, never their secrets.
    data: Vec<KeyBody>,
}

fn key_body(key: pb::ApiKey, secret: Option<String>) -> KeyBody {
    KeyBody {
        api_key: secret,
        scope: if key.scope == pb::KeyScope::Service as i32 { "service" } else { "client" },
        created_at: timestamp_rfc3339(key.created_at.as_ref()),
        expires_at: timestamp_rfc3339(key.expires_at.as_ref()),
        revoked_at: timestamp_rfc3339(key.revoked_at.as_ref()),
        last_used_at: timestamp_rfc3339(key.last_used_at.as_ref()),
        key_id: key.id,
        prefix: key.prefix,
        client_name: key.client_name,
        system_id: key.system_id,
    }
}

/// Issues an API key.
///
/// The plaintext is in this answer only. Needs the admin token unless open key registration is on.
#[utoipa::path(post, path = "/api-keys", operation_id = "createApiKey", request_body = CreateKey,
    security((), ("AdminToken" = [])),
    responses((status = 200, description = "The new key, shown once.", body = KeyBody)))]
pub async fn create(
    State(state): State<AppState>,
    admin: AdminToken,
    ValidJson(body): ValidJson<CreateKey>,
) -> Result<Json<KeyBody>, ApiError> {
    let ttl_seconds = match body.expires_in_days {
        None => 0,
        Some(days) if (1..=3650).contains(&days) => days * 86_400,
        Some(_) => return Err(ApiError::invalid(&["body", "expires_in_days"], "value_error", "must be 1-3650 days")),
    };
    let scope = match body.scope.as_deref() {
        None | Some("client") => pb::KeyScope::Client,
        Some("service") => pb::KeyScope::Service,
        Some(_) => {
            return Err(ApiError::invalid(&["body", "scope"], "value_error", "must be \"client\" or \"service\""));
        }
    };
    let request = admin.request(pb::CreateApiKeyRequest {
        client_name: body.client_name,
        system_id: body.system_id.unwrap_or_default(),
        scope: scope as i32,
        ttl_seconds,
    });
    let answer = state.auth.clone().create_api_key(request).await?.into_inner();
    Ok(Json(key_body(answer.key.unwrap_or_default(), Some(answer.secret))))
}

/// `GET /api-keys` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this tenant's keys.
    system_id: Option<String>,
    /// Include revoked and expired keys.
    include_inactive: Option<bool>,
}

/// Lists API keys (admin), never their secrets.
#[utoipa::path(get, path = "/api-keys", operation_id = "listApiKeys", params(ListQuery),
    security(("AdminToken" = [])),
    responses((status = 200, description = "The keys.", body = KeyList)))]
pub async fn list(
    State(state): State<AppState>,
    admin: AdminToken,
    ValidQuery(query): ValidQuery<ListQuery>,
) -> Result<Json<KeyList>, ApiError> {
    let request = admin.request(pb::ListApiKeysRequest {
        system_id: query.system_id.unwrap_or_default(),
        include_inactive: query.include_inactive.unwrap_or(false),
    });
    let answer = state.auth.clone().list_api_keys(request).await?.into_inner();
    let data = answer.keys.into_iter().map(|k| key_body(k, None)).collect();
    Ok(Json(KeyList { data }))
}

/// Revokes an API key.
///
/// Named by its plaintext (anyone holding it) or by its id (admin).
#[utoipa::path(delete, path = "/api-keys/{api_key}", operation_id = "revokeApiKey",
    params(("api_key" = String, Path, description = "The key itself, or its id (admin).")),
    security((), ("AdminToken" = [])),
    responses((status = 200, description = "Revoked.", body = Done)))]
pub async fn revoke(
    State(state): State<AppState>,
    admin: AdminToken,
    Path(api_key): Path<String>,
) -> Result<Json<Done>, ApiError> {
    let request = admin.request(pb::RevokeApiKeyRequest { key: api_key });
    state.auth.clone().revoke_api_key(request).await?;
    Ok(Json(Done { message: "API 키가 비활성화되었습니다." }))
}

/// `POST /api-keys/{id}/rotate` body.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct RotateKey {
    /// How long the old key keeps working, in seconds; one hour when absent.
    overlap_seconds: Option<i64>,
}

/// Rotates an API key (admin).
///
/// Issues a successor; the old key keeps working for the overlap window.
#[utoipa::path(post, path = "/api-keys/{id}/rotate", operation_id = "rotateApiKey",
    params(("id" = String, Path, description = "Id of the key to replace.")),
    request_body(content = Option<RotateKey>, description = "Optional."),
    security(("AdminToken" = [])),
    responses((status = 200, description = "The successor key, shown once.", body = KeyBody)))]
pub async fn rotate(
    State(state): State<AppState>,
    admin: AdminToken,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<KeyBody>, ApiError> {
    // The body is optional.
    let body: RotateKey =
        if body.iter().all(u8::is_ascii_whitespace) { RotateKey::default() } else { parse_json(&body)? };
    let request = admin.request(pb::RotateApiKeyRequest { id, overlap_seconds: body.overlap_seconds.unwrap_or(3600) });
    let answer = state.auth.clone().rotate_api_key(request).await?.into_inner();
    Ok(Json(key_body(answer.key.unwrap_or_default(), Some(answer.secret))))
}
