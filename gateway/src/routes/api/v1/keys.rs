//! `/api/v1/keys/` (seed 004): provider keys a signed-in user brings — their own OpenAI keys,
//! several like credit cards. Validated against the provider when added, encrypted at rest,
//! never returned whole; the newest one serves the user's completions.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use switchboard_kit::time::timestamp_rfc3339;
use switchboard_proto::llm::v1 as pb;
use utoipa::ToSchema;

use super::{Envelope, envelope};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::ValidJson;
use crate::openapi::Null;
use crate::ratelimit::Group;
use crate::state::AppState;

/// Body of `POST /api/v1/keys/`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct AddKey {
    /// A label for the key.
    name: Option<String>,
    /// The provider key itself (checked with the provider, stored encrypted).
    api_key: String,
    /// `open_ai` (the default and, for now, the only kind).
    kind: Option<String>,
}

/// A provider key, masked.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderKeyBody {
    /// Key id.
    pk: String,
    /// Its label.
    name: String,
    /// `open_ai`.
    key_kind: String,
    /// `…` and its last four characters.
    masked_key: String,
    /// RFC 3339.
    created_at: Option<String>,
}

/// Usage and cost of one provider key.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyStatistics {
    /// The key.
    #[serde(flatten)]
    key: ProviderKeyBody,
    /// Completions it served.
    request_count: u64,
    /// Tokens sent.
    prompt_tokens: u64,
    /// Tokens answered.
    completion_tokens: u64,
    /// Their sum.
    total_tokens: u64,
    /// Estimated cost in US dollars.
    cost_usd: f64,
    /// RFC 3339; `null` if never used.
    last_used_at: Option<String>,
}

fn me(caller: &Caller) -> Result<pb::Principal, ApiError> {
    let principal = caller.act_as(None, None, "body")?;
    Ok(pb::Principal { system_id: principal.system_id, user_id: principal.user_id })
}

fn key_body(k: &pb::ProviderKey) -> ProviderKeyBody {
    ProviderKeyBody {
        pk: k.id.clone(),
        name: k.label.clone(),
        key_kind: if k.provider == "openai" { "open_ai".to_owned() } else { k.provider.clone() },
        masked_key: format!("…{}", k.last_four),
        created_at: timestamp_rfc3339(k.created_at.as_ref()),
    }
}

/// Adds a provider key.
///
/// Checked with the provider first; the newest key serves the user's completions.
#[utoipa::path(post, path = "/api/v1/keys/", operation_id = "addProviderKey", request_body = AddKey,
    responses((status = 201, description = "Added.", body = Envelope<ProviderKeyBody>)))]
pub async fn add(
    State(state): State<AppState>,
    caller: Caller,
    ValidJson(body): ValidJson<AddKey>,
) -> Result<(StatusCode, Json<Envelope<ProviderKeyBody>>), ApiError> {
    let principal = me(&caller)?;
    state.limiter.principal(Group::Api, &principal.system_id, &principal.user_id).await?;
    let provider = match body.kind.as_deref().unwrap_or("open_ai") {
        "open_ai" | "openai" => "openai",
        _ => return Err(ApiError::invalid(&["body", "kind"], "value_error", "only \"open_ai\" keys can be validated")),
    };
    // A key travels in an HTTP header to be checked: one that cannot is not a key (and not
    // the provider's failure).
    if !body.api_key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::invalid(&["body", "api_key"], "value_error", "must be printable ASCII without spaces"));
    }
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
    Ok((StatusCode::CREATED, Json(envelope("valid api key", key_body(&key)))))
}

/// The user's provider keys, masked.
#[utoipa::path(get, path = "/api/v1/keys/", operation_id = "listProviderKeys",
    responses((status = 200, description = "The keys.", body = Envelope<Vec<ProviderKeyBody>>)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Envelope<Vec<ProviderKeyBody>>>, ApiError> {
    let principal = me(&caller)?;
    let request = caller.request(pb::ListProviderKeysRequest { principal: Some(principal) });
    let keys = state.llm.clone().list_provider_keys(request).await?.into_inner().keys;
    Ok(Json(envelope("chat bot api keys", keys.iter().map(key_body).collect())))
}

/// Deletes one of the user's provider keys (someone else's is a 404).
#[utoipa::path(delete, path = "/api/v1/keys/{pk}/", operation_id = "deleteProviderKey",
    params(("pk" = String, Path, description = "Key id.")),
    responses((status = 200, description = "Deleted.", body = Envelope<Null>)))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(pk): Path<String>,
) -> Result<Json<Envelope<Null>>, ApiError> {
    let principal = me(&caller)?;
    let request = caller.request(pb::DeleteProviderKeyRequest { principal: Some(principal), id: pk });
    state.llm.clone().delete_provider_key(request).await?;
    Ok(Json(envelope("api key deleted", Null)))
}

/// Usage and cost of one provider key.
#[utoipa::path(get, path = "/api/v1/keys/{pk}/statics", operation_id = "getProviderKeyStatistics",
    params(("pk" = String, Path, description = "Key id.")),
    responses((status = 200, description = "Its usage.", body = Envelope<KeyStatistics>)))]
pub async fn statistics(
    State(state): State<AppState>,
    caller: Caller,
    Path(pk): Path<String>,
) -> Result<Json<Envelope<KeyStatistics>>, ApiError> {
    let principal = me(&caller)?;
    let request = caller.request(pb::GetProviderKeyStatsRequest { principal: Some(principal), id: pk });
    let stats = state.llm.clone().get_provider_key_stats(request).await?.into_inner();
    let data = KeyStatistics {
        key: key_body(&stats.key.unwrap_or_default()),
        request_count: stats.requests,
        prompt_tokens: stats.prompt_tokens,
        completion_tokens: stats.completion_tokens,
        total_tokens: stats.prompt_tokens + stats.completion_tokens,
        cost_usd: stats.cost_micros as f64 / 1_000_000.0,
        last_used_at: timestamp_rfc3339(stats.last_used_at.as_ref()),
    };
    Ok(Json(envelope("api key statistics", data)))
}
