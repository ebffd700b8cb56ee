//! Seed 000's API (errors `{"error": "..."}`), one running conversation and one model choice
//! per client key: `GET /models`, `GET|POST /model`, `POST /query`, `GET|DELETE /history`.
//! A service key names the user with `?system_id=&user_id=`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_kit::time::timestamp_rfc3339;
use switchboard_proto::conversation::v1 as conv;
use switchboard_proto::llm::v1 as llm;

use crate::auth::{Caller, Principal};
use crate::error::ApiError;
use crate::extract::{ValidJson, ValidQuery};
use crate::ratelimit::Group;
use crate::state::AppState;

/// Who a seed-000 request is for (service keys only).
#[derive(Debug, Deserialize)]
pub struct Who {
    system_id: Option<String>,
    user_id: Option<String>,
}

async fn principal(state: &AppState, caller: &Caller, who: &Who, group: Group) -> Result<Principal, ApiError> {
    let principal = caller.act_as(who.system_id.as_deref(), who.user_id.as_deref(), "query")?;
    state.limiter.principal(group, &principal.system_id, &principal.user_id).await?;
    Ok(principal)
}

fn conv_principal(p: &Principal) -> conv::Principal {
    conv::Principal { system_id: p.system_id.clone(), user_id: p.user_id.clone() }
}

fn llm_principal(p: &Principal) -> llm::Principal {
    llm::Principal { system_id: p.system_id.clone(), user_id: p.user_id.clone() }
}

/// The principal's running conversation: its most recent one.
async fn running(state: &AppState, caller: &Caller, p: &Principal) -> Result<Option<String>, ApiError> {
    let request = caller.request(conv::ListConversationsRequest {
        principal: Some(conv_principal(p)),
        page_size: 1,
        ..Default::default()
    });
    let page = state.conversations.clone().list_conversations(request).await?.into_inner();
    Ok(page.conversations.into_iter().next().map(|c| c.id))
}

/// `getModels`: the catalogue in OpenAI's list shape.
pub async fn models(
    State(state): State<AppState>,
    caller: Caller,
    ValidQuery(who): ValidQuery<Who>,
) -> Result<Json<Value>, ApiError> {
    let p = principal(&state, &caller, &who, Group::Api).await?;
    let request = caller.request(llm::ListModelsRequest { principal: Some(llm_principal(&p)) });
    let models = state.llm.clone().list_models(request).await?.into_inner().models;
    let data: Vec<Value> = models
        .into_iter()
        .map(|m| json!({"id": m.id, "object": "model", "created": 0, "owned_by": m.provider, "permission": [], "root": m.id, "parent": null}))
        .collect();
    Ok(Json(json!({"data": data, "object": "list"})))
}

/// `getCurrentModel`.
pub async fn current_model(
    State(state): State<AppState>,
    caller: Caller,
    ValidQuery(who): ValidQuery<Who>,
) -> Result<Json<Value>, ApiError> {
    let p = principal(&state, &caller, &who, Group::Api).await?;
    let request = caller.request(llm::GetModelChoiceRequest { principal: Some(llm_principal(&p)) });
    let choice = state.llm.clone().get_model_choice(request).await?.into_inner();
    Ok(Json(json!({"model": choice.model})))
}

/// `setModel` body.
#[derive(Debug, Deserialize)]
pub struct SetModel {
    model: String,
}

/// `setModel`: an unknown model is a 400 listing the available ones.
pub async fn set_model(
    State(state): State<AppState>,
    caller: Caller,
    ValidQuery(who): ValidQuery<Who>,
    ValidJson(body): ValidJson<SetModel>,
) -> Result<Json<Value>, ApiError> {
    let p = principal(&state, &caller, &who, Group::Api).await?;
    let request = caller.request(llm::SetModelChoiceRequest { principal: Some(llm_principal(&p)), model: body.model });
    match state.llm.clone().set_model_choice(request).await {
        Ok(answer) => Ok(Json(json!({"model": answer.into_inner().model}))),
        Err(status) if status.code() == tonic::Code::InvalidArgument => {
            let request = caller.request(llm::ListModelsRequest { principal: Some(llm_principal(&p)) });
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
#[derive(Debug, Deserialize)]
pub struct Query {
    input: String,
}

/// `query`: a turn in the running conversation.
pub async fn query(
    State(state): State<AppState>,
    caller: Caller,
    ValidQuery(who): ValidQuery<Who>,
    ValidJson(body): ValidJson<Query>,
) -> Result<Json<Value>, ApiError> {
    let p = principal(&state, &caller, &who, Group::Chat).await?;
    if body.input.trim().is_empty() {
        return Err(ApiError::invalid(&["body", "input"], "string_too_short", "must not be empty"));
    }
    let conversation_id = running(&state, &caller, &p).await?.unwrap_or_default();
    let mut request = caller.request(conv::SendMessageRequest {
        principal: Some(conv_principal(&p)),
        message: body.input,
        conversation_id,
        key_id: caller.key_id().to_owned(),
        ..Default::default()
    });
    request.set_timeout(super::v1::TURN_DEADLINE);
    let answer = state.conversations.clone().send_message(request).await?.into_inner();
    Ok(Json(json!({"response": answer.assistant_message.unwrap_or_default().content})))
}

/// `getHistory`: the running conversation, oldest first, as a bare array.
pub async fn history(
    State(state): State<AppState>,
    caller: Caller,
    ValidQuery(who): ValidQuery<Who>,
) -> Result<Json<Value>, ApiError> {
    let p = principal(&state, &caller, &who, Group::Api).await?;
    let Some(conversation_id) = running(&state, &caller, &p).await? else { return Ok(Json(json!([]))) };
    let mut items = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = caller.request(conv::ListMessagesRequest {
            principal: Some(conv_principal(&p)),
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
            items.push(
                json!({"role": role, "content": m.content, "timestamp": timestamp_rfc3339(m.created_at.as_ref())}),
            );
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    Ok(Json(Value::Array(items)))
}

/// `clearHistory`.
pub async fn clear_history(
    State(state): State<AppState>,
    caller: Caller,
    ValidQuery(who): ValidQuery<Who>,
) -> Result<Json<Value>, ApiError> {
    let p = principal(&state, &caller, &who, Group::Api).await?;
    let request = caller.request(conv::ClearHistoryRequest { principal: Some(conv_principal(&p)) });
    state.conversations.clone().clear_history(request).await?;
    Ok(Json(json!({"message": "대화 기록이 초기화되었습니다."})))
}
