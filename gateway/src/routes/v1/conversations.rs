//! `GET /v1/conversations` and `GET /v1/conversations/{id}/messages`.

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use switchboard_kit::time::{Timestamp, parse_date_ms, timestamp_rfc3339, to_timestamp};
use switchboard_proto::conversation::v1 as pb;

use super::{ListBody, READ_DEADLINE, UsageBody};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::ValidQuery;
use crate::ratelimit::Group;
use crate::state::AppState;

/// Query of the conversation list.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    system_id: Option<String>,
    user_id: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
    from_date: Option<String>,
    to_date: Option<String>,
}

/// A conversation as listed.
#[derive(Debug, Serialize)]
pub struct ConversationBody {
    id: String,
    title: String,
    message_count: u32,
    created_at: Option<String>,
    updated_at: Option<String>,
}

/// Query of the message list.
#[derive(Debug, Deserialize)]
pub struct MessagesQuery {
    system_id: Option<String>,
    user_id: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// A message as listed.
#[derive(Debug, Serialize)]
pub struct MessageBody {
    id: String,
    conversation_id: String,
    role: &'static str,
    content: String,
    status: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    model: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageBody>,
    #[serde(skip_serializing_if = "String::is_empty")]
    error: String,
    created_at: Option<String>,
}

fn date(raw: Option<&str>, field: &'static str, end_of_day: bool) -> Result<Option<Timestamp>, ApiError> {
    let Some(raw) = raw.map(str::trim).filter(|s| !s.is_empty()) else { return Ok(None) };
    let ms = parse_date_ms(raw).ok_or_else(|| {
        ApiError::invalid(&["query", field], "date_parsing", "expected YYYY-MM-DD or an RFC 3339 date-time")
    })?;
    // A plain date as an upper bound includes that whole day.
    let ms = if end_of_day && raw.len() == 10 { ms + 86_400_000 - 1 } else { ms };
    Ok(Some(to_timestamp(ms)))
}

/// Lists the principal's conversations, newest first.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ValidQuery(query): ValidQuery<ListQuery>,
) -> Result<Json<ListBody<ConversationBody>>, ApiError> {
    let principal = caller.act_as(query.system_id.as_deref(), query.user_id.as_deref(), "query")?;
    state.limiter.principal(Group::Api, &principal.system_id, &principal.user_id).await?;
    let mut request = caller.request(pb::ListConversationsRequest {
        principal: Some(pb::Principal { system_id: principal.system_id, user_id: principal.user_id }),
        page_size: query.limit.unwrap_or(0),
        page_token: query.cursor.unwrap_or_default(),
        from_time: date(query.from_date.as_deref(), "from_date", false)?,
        to_time: date(query.to_date.as_deref(), "to_date", true)?,
    });
    request.set_timeout(READ_DEADLINE);
    let page = state
        .conversations
        .clone()
        .list_conversations(request)
        .await
        .map_err(|s| ApiError::from(s).renamed("page_token", &["query", "cursor"]))?
        .into_inner();
    let data = page
        .conversations
        .into_iter()
        .map(|c| ConversationBody {
            created_at: timestamp_rfc3339(c.created_at.as_ref()),
            updated_at: timestamp_rfc3339(c.updated_at.as_ref()),
            id: c.id,
            title: c.title,
            message_count: c.message_count,
        })
        .collect();
    Ok(Json(ListBody::new(data, page.next_page_token)))
}

/// Lists a conversation's messages, oldest first.
pub async fn messages(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ValidQuery(query): ValidQuery<MessagesQuery>,
) -> Result<Json<ListBody<MessageBody>>, ApiError> {
    // A service credential reads any conversation of its tenants by id (seed 003 documents
    // no query parameters); `system_id`/`user_id` are then filters. Others read their own.
    let principal = if caller.0.service {
        let given = |v: Option<String>| v.map(|v| v.trim().to_owned()).unwrap_or_default();
        pb::Principal { system_id: given(query.system_id), user_id: given(query.user_id) }
    } else {
        let principal = caller.act_as(query.system_id.as_deref(), query.user_id.as_deref(), "query")?;
        state.limiter.principal(Group::Api, &principal.system_id, &principal.user_id).await?;
        pb::Principal { system_id: principal.system_id, user_id: principal.user_id }
    };
    let mut request = caller.request(pb::ListMessagesRequest {
        principal: Some(principal),
        conversation_id: id,
        page_size: query.limit.unwrap_or(0),
        page_token: query.cursor.unwrap_or_default(),
    });
    request.set_timeout(READ_DEADLINE);
    let page = state
        .conversations
        .clone()
        .list_messages(request)
        .await
        .map_err(|s| ApiError::from(s).renamed("page_token", &["query", "cursor"]))?
        .into_inner();
    let data = page.messages.into_iter().map(message_body).collect();
    Ok(Json(ListBody::new(data, page.next_page_token)))
}

fn message_body(m: pb::Message) -> MessageBody {
    let role = match pb::Role::try_from(m.role).unwrap_or(pb::Role::Unspecified) {
        pb::Role::System => "system",
        pb::Role::Assistant => "assistant",
        pb::Role::User | pb::Role::Unspecified => "user",
    };
    let status = match pb::MessageStatus::try_from(m.status).unwrap_or(pb::MessageStatus::Unspecified) {
        pb::MessageStatus::InProgress => "in_progress",
        pb::MessageStatus::Failed => "failed",
        pb::MessageStatus::Partial => "partial",
        pb::MessageStatus::Complete | pb::MessageStatus::Unspecified => "complete",
    };
    MessageBody {
        created_at: timestamp_rfc3339(m.created_at.as_ref()),
        id: m.id,
        conversation_id: m.conversation_id,
        role,
        content: m.content,
        status,
        model: m.model,
        usage: m.usage.map(Into::into),
        error: m.error,
    }
}
