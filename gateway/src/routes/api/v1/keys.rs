//! `/api/v1/keys/` (seed 004): provider keys a signed-in user brings — their own OpenAI keys,
//! several like credit cards. Validated against the provider when added, encrypted at rest,
//! never returned whole; the newest one serves the user's completions.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_kit::time::timestamp_rfc3339;
use switchboard_proto::llm::v1 as pb;

use super::envelope;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::ValidJson;
use crate::ratelimit::Group;
use crate::state::AppState;

/// Body of `POST /api/v1/keys/`.
#[derive(Debug, Deserialize)]
pub struct AddKey {
    name: Option<String>,
    api_key: String,
    kind: Option<String>,
}

fn me(caller: &Caller) -> Result<pb::Principal, ApiError> {
    let principal = caller.act_as(None, None, "body")?;
    Ok(pb::Principal { system_id: principal.system_id, user_id: principal.user_id })
}

fn key_json(k: &pb::ProviderKey) -> Value {
    json!({
        "pk": k.id,
        "name": k.label,
        "key_kind": if k.provider == "openai" { "open_ai" } else { k.provider.as_str() },
        "masked_key": format!("…{}", k.last_four),
        "created_at": timestamp_rfc3339(k.created_at.as_ref()),
    })
}

/// Adds a key after the provider accepted it.
pub async fn add(
    State(state): State<AppState>,
    caller: Caller,
    ValidJson(body): ValidJson<AddKey>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let principal = me(&caller)?;
    state.limiter.principal(Group::Api, &principal.system_id, &principal.user_id).await?;
    let provider = match body.kind.as_deref().unwrap_or("open_ai") {
        "open_ai" | "openai" => "openai",
        _ => return Err(ApiError::invalid(&["body", "kind"], "value_error", "only \"open_ai\" keys can be validated")),
    };
    let request = caller.request(pb::AddProviderKeyRequest {
        principal: Some(principal),
        provider: provider.into(),
        label: body.name.unwrap_or_default(),
        secret: body.api_key,
    });
    let key = state
        .llm
        .clone()
        .add_provider_key(request)
        .await
        .map_err(|s| ApiError::from(s).renamed("secret", &["body", "api_key"]))?
        .into_inner()
        .key
        .unwrap_or_default();
    Ok((StatusCode::CREATED, Json(envelope("valid api key", key_json(&key)))))
}

/// The user's keys, masked.
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let principal = me(&caller)?;
    let request = caller.request(pb::ListProviderKeysRequest { principal: Some(principal) });
    let keys = state.llm.clone().list_provider_keys(request).await?.into_inner().keys;
    Ok(Json(envelope("chat bot api keys", Value::Array(keys.iter().map(key_json).collect()))))
}

/// Deletes one of the user's keys (someone else's is a 404).
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(pk): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let principal = me(&caller)?;
    let request = caller.request(pb::DeleteProviderKeyRequest { principal: Some(principal), id: pk });
    state.llm.clone().delete_provider_key(request).await?;
    Ok(Json(envelope("api key deleted", Value::Null)))
}

/// Usage and cost of one key.
pub async fn statistics(
    State(state): State<AppState>,
    caller: Caller,
    Path(pk): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let principal = me(&caller)?;
    let request = caller.request(pb::GetProviderKeyStatsRequest { principal: Some(principal), id: pk });
    let stats = state.llm.clone().get_provider_key_stats(request).await?.into_inner();
    let key = stats.key.unwrap_or_default();
    let mut data = key_json(&key);
    data["request_count"] = json!(stats.requests);
    data["prompt_tokens"] = json!(stats.prompt_tokens);
    data["completion_tokens"] = json!(stats.completion_tokens);
    data["total_tokens"] = json!(stats.prompt_tokens + stats.completion_tokens);
    data["cost_usd"] = json!(stats.cost_micros as f64 / 1_000_000.0);
    data["last_used_at"] = json!(timestamp_rfc3339(stats.last_used_at.as_ref()));
    Ok(Json(envelope("api key statistics", data)))
}
