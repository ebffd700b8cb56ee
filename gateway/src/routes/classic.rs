//! Seed 000's API family (errors `{"error": "..."}`, operationIds of its OpenAPI document):
//! API keys (`/api-keys*`, in `api_keys.rs`) and, here, one running conversation and one model
//! choice per client key: `GET /models`, `GET|POST /model`, `POST /query`, `GET|DELETE /history`.
//! A service key names the user with `?system_id=&user_id=`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use switchboard_kit::time::timestamp_rfc3339;
use switchboard_proto::conversation::v1 as conv;
use switchboard_proto::llm::v1 as llm;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::api_keys;
use super::{Family, RouteExt};
use crate::auth::{Caller, Principal};
use crate::error::{ApiError, Dialect};
use crate::extract::{ValidJson, ValidQuery};
use crate::ratelimit::Group;
use crate::state::AppState;

/// Seed 000's routes.
pub fn router(state: &AppState) -> OpenApiRouter<AppState> {
    let routes = OpenApiRouter::new()
        .routes(routes!(api_keys::create, api_keys::list).limit(state, Group::Api))
        .routes(routes!(api_keys::revoke).limit(state, Group::Api))
        .routes(routes!(api_keys::rotate).limit(state, Group::Api))
        .routes(routes!(models).limit(state, Group::Api))
        .routes(routes!(current_model, set_model).limit(state, Group::Api))
        .routes(routes!(query).limit(state, Group::Chat))
        .routes(routes!(history, clear_history).limit(state, Group::Api));
    Family { tag: "classic", dialect: Dialect::Classic }.serve(routes)
}

/// Whom a seed-000 request is for: only a service key names them; a client key is its own user.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Who {
    /// Tenant of the user (service keys only).
    system_id: Option<String>,
    /// The user (service keys only).
    user_id: Option<String>,
}

async fn principal(state: &AppState, caller: &Caller, who: &Who, group: Group) -> Result<Principal, ApiError> {
    let principal = caller.act_as(who.system_id.as_deref(), who.user_id.as_deref(), "query")?;
    state.limiter.principal(group, &principal.system_id, &principal.user_id).await?;
    Ok(principal)
}

/// The principal's running conversation: its most recent one.
pub(super) async fn running(state: &AppState, caller: &Caller, p: &Principal) -> Result<Option<String>, ApiError> {
    let request = caller.request(conv::ListConversationsRequest {
        principal: Some(conv::Principal::from(p)),
        page_size: 1,
        ..Default::default()
    });
    let page = state.conversations.clone().list_conversations(request).await?.into_inner();
    Ok(page.conversations.into_iter().next().map(|c| c.id))
}

/// The model list, in OpenAI's shape.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ClassicModelList)]
pub struct ModelList {
    /// The models.
    data: Vec<ClassicModel>,
    /// Always `list`.
    object: &'static str,
}

/// A model, in OpenAI's (older) shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClassicModel {
    /// The id to choose it by.
    id: String,
    /// Always `model`.
    object: &'static str,
    /// Always 0.
    created: i64,
    /// Its provider (`openai`, `dify`, `mock`).
    owned_by: String,
    /// Always empty.
    permission: Vec<serde_json::Value>,
    /// Same as `id`.
    root: String,
    /// Always `null`.
    parent: Option<String>,
}

/// The model a key's conversation uses.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ModelChoice {
    /// Model id.
    model: String,
}

/// Lists the models, in OpenAI's list shape.
#[utoipa::path(get, path = "/models", operation_id = "getModels", params(Who),
    responses((status = 200, description = "The models.", body = ModelList)))]
pub async fn models(
    State(state): State<AppState>,
    caller: Caller,
    ValidQuery(who): ValidQuery<Who>,
) -> Result<Json<ModelList>, ApiError> {
    let p = principal(&state, &caller, &who, Group::Api).await?;
    let request = caller.request(llm::ListModelsRequest { principal: Some(llm::Principal::from(&p)) });
    let models = state.llm.clone().list_models(request).await?.into_inner().models;
    let data = models
        .into_iter()
        .map(|m| ClassicModel {
            root: m.id.clone(),
            id: m.id,
            object: "model",
            created: 0,
            owned_by: m.provider,
            permission: Vec::new(),
            parent: None,
        })
        .collect();
    Ok(Json(ModelList { data, object: "list" }))
}

/// The model the running conversation uses.
#[utoipa::path(get, path = "/model", operation_id = "getCurrentModel", params(Who),
    responses((status = 200, description = "The model in use.", body = ModelChoice)))]
pub async fn current_model(
    State(state): State<AppState>,
    caller: Caller,
    ValidQuery(who): ValidQuery<Who>,
) -> Result<Json<ModelChoice>, ApiError> {
    let p = principal(&state, &caller, &who, Group::Api).await?;
    let request = caller.request(llm::GetModelChoiceRequest { principal: Some(llm::Principal::from(&p)) });
    let choice = state.llm.clone().get_model_choice(request).await?.into_inner();
    Ok(Json(ModelChoice { model: choice.model }))
}

/// Chooses the model.
///
/// An unknown model is a 400 listing the available ones.
#[utoipa::path(post, path = "/model", operation_id = "setModel", params(Who), request_body = ModelChoice,
    responses((status = 200, description = "The model now in use.", body = ModelChoice)))]
pub async fn set_model(
    State(state): State<AppState>,
    caller: Caller,
    ValidQuery(who): ValidQuery<Who>,
    ValidJson(body): ValidJson<ModelChoice>,
) -> Result<Json<ModelChoice>, ApiError> {
    let p = principal(&state, &caller, &who, Group::Api).await?;
    let request =
        caller.request(llm::SetModelChoiceRequest { principal: Some(llm::Principal::from(&p)), model: body.model });
    match state.llm.clone().set_model_choice(request).await {
        Ok(answer) => Ok(Json(ModelChoice { model: answer.into_inner().model })),
        Err(status) if status.code() == tonic::Code::InvalidArgument => {
            let request = caller.request(llm::ListModelsRequest { principal: Some(llm::Principal::from(&p)) });
            let models = state.llm.clone().list_models(request).await?.into_inner().models;
            let names: Vec<String> = models.into_iter().map(|m| m.id).collect();
            Err(ApiError {
                status: StatusCode::BAD_REQUEST,
                loc: None,
                ..ApiError::invalid(
                    &["body", "model"],
                    "value_error",
                    format!("사용할 수 없는 모델입니다. 사용 가능한 모델: {}", names.join(", ")),
                )
            })
        }
        Err(status) => Err(status.into()),
    }
}

/// `query` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Query {
    /// The user's message.
    input: String,
}

/// `query` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueryAnswer {
    /// The model's reply.
    response: String,
}

/// One message of the running conversation.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryItem {
    /// `user` or `assistant`.
    role: &'static str,
    /// The text.
    content: String,
    /// When it was written (RFC 3339).
    timestamp: Option<String>,
}

/// A confirmation.
#[derive(Debug, Serialize, ToSchema)]
pub struct Done {
    /// What was done.
    pub message: &'static str,
}

/// Sends a message in the running conversation and answers with the model's reply.
#[utoipa::path(post, path = "/query", operation_id = "query", params(Who), request_body = Query,
    responses((status = 200, description = "The model's reply.", body = QueryAnswer)))]
pub async fn query(
    State(state): State<AppState>,
    caller: Caller,
    ValidQuery(who): ValidQuery<Who>,
    ValidJson(body): ValidJson<Query>,
) -> Result<Json<QueryAnswer>, ApiError> {
    let p = principal(&state, &caller, &who, Group::Chat).await?;
    if body.input.trim().is_empty() {
        return Err(ApiError::invalid(&["body", "input"], "string_too_short", "must not be empty"));
    }
    let conversation_id = running(&state, &caller, &p).await?.unwrap_or_default();
    let mut request = caller.request(conv::SendMessageRequest {
        principal: Some(conv::Principal::from(&p)),
        message: body.input,
        conversation_id,
        key_id: caller.key_id().to_owned(),
        ..Default::default()
    });
    request.set_timeout(super::v1::TURN_DEADLINE);
    let answer = state.conversations.clone().send_message(request).await?.into_inner();
    Ok(Json(QueryAnswer { response: answer.assistant_message.unwrap_or_default().content }))
}

/// Most messages one `/history` answer holds.
const HISTORY_MAX_MESSAGES: usize = 5_000;
/// Most bytes of text one `/history` answer holds (give or take one page).
const HISTORY_MAX_BYTES: usize = 3 * 1024 * 1024;

/// The running conversation, oldest first, as a bare array.
#[utoipa::path(get, path = "/history", operation_id = "getHistory", params(Who),
    responses((status = 200, description = "The running conversation, oldest first.", body = Vec<HistoryItem>)))]
pub async fn history(
    State(state): State<AppState>,
    caller: Caller,
    ValidQuery(who): ValidQuery<Who>,
) -> Result<Json<Vec<HistoryItem>>, ApiError> {
    let p = principal(&state, &caller, &who, Group::Api).await?;
    let Some(conversation_id) = running(&state, &caller, &p).await? else { return Ok(Json(Vec::new())) };
    let mut items = Vec::new();
    let mut page_token = String::new();
    let mut bytes = 0;
    // One answer holds at most this much of a conversation, oldest first: the memory of a
    // request stays bounded however long the conversation grew.
    while items.len() < HISTORY_MAX_MESSAGES && bytes < HISTORY_MAX_BYTES {
        let request = caller.request(conv::ListMessagesRequest {
            principal: Some(conv::Principal::from(&p)),
            conversation_id: conversation_id.clone(),
            page_size: 500,
            page_token,
        });
        let page = state.conversations.clone().list_messages(request).await?.into_inner();
        for m in page.messages {
            let role = if m.role == conv::Role::Assistant as i32 { "assistant" } else { "user" };
            if m.content.is_empty() {
                continue;
            }
            bytes += m.content.len();
            items.push(HistoryItem { role, content: m.content, timestamp: timestamp_rfc3339(m.created_at.as_ref()) });
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    Ok(Json(items))
}

/// Clears the history.
///
/// Deletes the user's conversations; the next query starts a new one.
#[utoipa::path(delete, path = "/history", operation_id = "clearHistory", params(Who),
    responses((status = 200, description = "Cleared.", body = Done)))]
pub async fn clear_history(
    State(state): State<AppState>,
    caller: Caller,
    ValidQuery(who): ValidQuery<Who>,
) -> Result<Json<Done>, ApiError> {
    let p = principal(&state, &caller, &who, Group::Api).await?;
    let request = caller.request(conv::ClearHistoryRequest { principal: Some(conv::Principal::from(&p)) });
    state.conversations.clone().clear_history(request).await?;
    Ok(Json(Done { message: "대화 기록이 초기화되었습니다." }))
}
