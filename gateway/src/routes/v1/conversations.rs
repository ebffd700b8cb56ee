//! `GET /v1/conversations` and `GET /v1/conversations/{id}/messages` (the same reads answer
//! `/v1/cache/*`, see `cache.rs`).

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use switchboard_kit::time::{Timestamp, parse_date_ms, timestamp_rfc3339, to_timestamp};
use switchboard_proto::conversation::v1 as pb;
use utoipa::{IntoParams, ToSchema};

use super::{ListBody, READ_DEADLINE, UsageBody};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::ValidQuery;
use crate::ratelimit::Group;
use crate::state::AppState;

/// Query of the conversation list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Tenant of the user (a service key names it unless bound to one; other credentials are
    /// their own).
    system_id: Option<String>,
    /// The user (likewise). A service key may leave it out to list every user's
    /// conversations of the tenant.
    user_id: Option<String>,
    /// Page size (default 20, at most 100).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Only conversations active from this day (`YYYY-MM-DD`) or instant (RFC 3339).
    from_date: Option<String>,
    /// Only conversations active until this day (inclusive) or instant.
    to_date: Option<String>,
}

/// A conversation as listed.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationBody {
    /// Conversation id.
    id: String,
    /// Its tenant.
    system_id: String,
    /// Its user.
    user_id: String,
    /// Its title (the first line of its first message).
    title: String,
    /// How many messages it holds.
    message_count: u32,
    /// RFC 3339.
    created_at: Option<String>,
    /// RFC 3339: its last message.
    updated_at: Option<String>,
}

/// Query of the message list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MessagesQuery {
    /// Only if the conversation is this tenant's (a filter for service keys).
    system_id: Option<String>,
    /// Only if the conversation is this user's (likewise).
    user_id: Option<String>,
    /// Page size (default 100, at most 500).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// A message as listed.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageBody {
    /// Message id.
    id: String,
    /// Its conversation.
    conversation_id: String,
    /// `user`, `assistant` or `system`.
    role: &'static str,
    /// The text (so far, for an answer in progress).
    content: String,
    /// `complete`, `in_progress`, `partial` (the stream was cut) or `failed`.
    status: &'static str,
    /// The model that answered (answers only).
    #[serde(skip_serializing_if = "String::is_empty")]
    model: String,
    /// Tokens used (answers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageBody>,
    /// Why the answer failed.
    #[serde(skip_serializing_if = "String::is_empty")]
    error: String,
    /// RFC 3339.
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

/// Lists the user's conversations, newest first.
#[utoipa::path(get, path = "/v1/conversations", operation_id = "listConversations", params(ListQuery),
    responses((status = 200, description = "A page of conversations.", body = ListBody<ConversationBody>)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ValidQuery(query): ValidQuery<ListQuery>,
) -> Result<Json<ListBody<ConversationBody>>, ApiError> {
    let given = |v: &Option<String>| v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned);
    let principal = match (caller.0.service, given(&query.user_id)) {
        // A service credential naming no user lists every user's conversations of the tenant
        // (the history page); the conversation service checks it serves that tenant.
        (true, None) => {
            pb::Principal { system_id: given(&query.system_id).unwrap_or_default(), user_id: String::new() }
        }
        _ => {
            let principal = caller.act_as(query.system_id.as_deref(), query.user_id.as_deref(), "query")?;
            state.limiter.principal(Group::Api, &principal.system_id, &principal.user_id).await?;
            pb::Principal { system_id: principal.system_id, user_id: principal.user_id }
        }
    };
    let mut request = caller.request(pb::ListConversationsRequest {
        principal: Some(principal),
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
            system_id: c.principal.as_ref().map(|p| p.system_id.clone()).unwrap_or_default(),
            user_id: c.principal.map(|p| p.user_id).unwrap_or_default(),
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
///
/// A service key reads any conversation of its tenants by id; other credentials read their own.
#[utoipa::path(get, path = "/v1/conversations/{id}/messages", operation_id = "listMessages",
    params(("id" = String, Path, description = "Conversation id."), MessagesQuery),
    responses((status = 200, description = "A page of messages.", body = ListBody<MessageBody>)))]
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
