//! `/api-keys` (seed 000, errors `{"error": "..."}`): issue, list, revoke and rotate API keys.
//! Issuing needs the admin token unless `SWITCHBOARD_OPEN_KEY_REGISTRATION=true`; revoking
//! needs the admin token or the key itself; listing and rotating need the admin token.

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use switchboard_kit::time::timestamp_rfc3339;
use switchboard_proto::auth::v1 as pb;

use crate::admin::AdminToken;
use crate::error::ApiError;
use crate::extract::{ValidJson, ValidQuery, parse_json};
use crate::state::AppState;

/// `POST /api-keys` body.
#[derive(Debug, Deserialize)]
pub struct CreateKey {
    client_name: String,
    expires_in_days: Option<i64>,
    /// Tenant of the key (admin only); `default` when absent.
    system_id: Option<String>,
    /// `client` (default) or `service` (admin only).
    scope: Option<String>,
}

/// An issued key as answered.
#[derive(Debug, Serialize)]
pub struct KeyBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    api_key: Option<String>,
    key_id: String,
    prefix: String,
    client_name: String,
    system_id: String,
    scope: &'static str,
    created_at: Option<String>,
    expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    revoked_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_used_at: Option<String>,
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

/// Issues a key; the plaintext is in this answer only.
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
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    system_id: Option<String>,
    include_inactive: Option<bool>,
}

/// Lists keys (admin), never their secrets.
pub async fn list(
    State(state): State<AppState>,
    admin: AdminToken,
    ValidQuery(query): ValidQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let request = admin.request(pb::ListApiKeysRequest {
        system_id: query.system_id.unwrap_or_default(),
        include_inactive: query.include_inactive.unwrap_or(false),
    });
    let answer = state.auth.clone().list_api_keys(request).await?.into_inner();
    let data: Vec<KeyBody> = answer.keys.into_iter().map(|k| key_body(k, None)).collect();
    Ok(Json(json!({ "data": data })))
}

/// Revokes a key, named by its plaintext (anyone holding it) or its id (admin).
pub async fn revoke(
    State(state): State<AppState>,
    admin: AdminToken,
    Path(api_key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let request = admin.request(pb::RevokeApiKeyRequest { key: api_key });
    state.auth.clone().revoke_api_key(request).await?;
    Ok(Json(json!({"message": "API 키가 비활성화되었습니다."})))
}

/// `POST /api-keys/{id}/rotate` body.
#[derive(Debug, Default, Deserialize)]
pub struct RotateKey {
    /// How long the old key keeps working; one hour when absent.
    overlap_seconds: Option<i64>,
}

/// Issues a successor key; the old one keeps working for the overlap window (admin).
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
