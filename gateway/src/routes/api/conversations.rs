//! Seed 001's conversations: `POST /api/conversations`, `GET /api/conversations?userId=` and
//! `GET /api/conversations/{id}/messages`, with whole-number ids and `limit`/`offset` paging.

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use switchboard_kit::time::timestamp_rfc3339;
use switchboard_proto::conversation::v1 as pb;
use utoipa::{IntoParams, ToSchema};

use super::{Envelope, act_for};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ValidJson, ValidQuery};
use crate::ratelimit::Group;
use crate::state::AppState;

/// Largest `limit`, and the deepest `offset`, a list accepts.
const MAX_LIMIT: u32 = 100;
const MAX_OFFSET: u32 = 10_000;

/// Body of `POST /api/conversations`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = GptsCreateConversation)]
pub struct CreateBody {
    /// The user it is for (a service key names anyone; other credentials themselves).
    user_id: String,
    /// At most 500 characters; `New Conversation` when absent or blank.
    #[schema(max_length = 500)]
    title: Option<String>,
}

/// Query of `GET /api/conversations`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct ListQuery {
    /// Whose conversations (a service key names anyone; other credentials themselves).
    user_id: String,
    /// Page size: 1 to 100, 20 by default.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// Conversations to skip: at most 10000, none by default.
    #[param(maximum = 10_000)]
    offset: Option<u32>,
}

/// Query of `GET /api/conversations/{id}/messages`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct MessagesQuery {
    /// Whose conversation: optional for a service key (ids are unique), a filter when given.
    user_id: Option<String>,
    /// Page size: 1 to 100, 50 by default.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// Messages to skip: at most 10000, none by default.
    #[param(maximum = 10_000)]
    offset: Option<u32>,
}

/// A conversation as seed 001 shows it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = GptsConversation)]
pub struct ConversationBody {
    /// Its number.
    id: u64,
    /// Its user.
    user_id: String,
    /// Its title.
    title: String,
    /// RFC 3339.
    created_at: Option<String>,
    /// RFC 3339: its last message.
    updated_at: Option<String>,
    /// How many messages it holds.
    message_count: u32,
}

impl From<pb::Conversation> for ConversationBody {
    fn from(c: pb::Conversation) -> Self {
        Self {
            id: c.number,
            user_id: c.principal.map(|p| p.user_id).unwrap_or_default(),
            created_at: timestamp_rfc3339(c.created_at.as_ref()),
            updated_at: timestamp_rfc3339(c.updated_at.as_ref()),
            title: c.title,
            message_count: c.message_count,
        }
    }
}

/// Token usage of an answer, kept as the message's metadata.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = GptsMessageMetadata)]
pub struct MessageMetadata {
    /// Its token usage.
    usage: MetadataUsage,
    /// The model that answered.
    model: String,
}

/// Usage as the upstream reports it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = GptsMetadataUsage)]
pub struct MetadataUsage {
    /// Tokens sent.
    prompt_tokens: u32,
    /// Tokens answered.
    completion_tokens: u32,
    /// Their sum.
    total_tokens: u32,
}

/// A message as seed 001 shows it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = GptsMessage)]
pub struct MessageBody {
    /// Its number.
    id: u64,
    /// `user`, `assistant` or `system`.
    role: &'static str,
    /// The text.
    content: String,
    /// Usage and model of an answer; `null` for the others.
    metadata: Option<MessageMetadata>,
    /// RFC 3339.
    created_at: Option<String>,
}

/// `data` of the messages answer.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = GptsMessages)]
pub struct MessagesData {
    /// The conversation.
    conversation: ConversationBody,
    /// A page of its messages, oldest first.
    messages: Vec<MessageBody>,
}

fn window(limit: Option<u32>, offset: Option<u32>, default: u32) -> Result<(u32, u32), ApiError> {
    let limit = limit.unwrap_or(default);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid(
            &["query", "limit"],
            "value_error",
            format!("must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let offset = offset.unwrap_or(0);
    if offset > MAX_OFFSET {
        return Err(ApiError::invalid(&["query", "offset"], "value_error", format!("must be at most {MAX_OFFSET}")));
    }
    Ok((limit, offset))
}

/// Opens a conversation for `userId`.
///
/// Creates an empty conversation.
#[utoipa::path(post, path = "/api/conversations", operation_id = "createApiConversation",
    request_body = CreateBody,
    responses((status = 200, description = "Created.", body = Envelope<ConversationBody>)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ValidJson(body): ValidJson<CreateBody>,
) -> Result<Json<Envelope<ConversationBody>>, ApiError> {
    let principal = act_for(&caller, &body.user_id, "body")?;
    state.limiter.principal(Group::Api, &principal.system_id, &principal.user_id).await?;
    let title = body.title.unwrap_or_default();
    if title.chars().count() > 500 {
        return Err(ApiError::invalid(&["body", "title"], "string_too_long", "must be at most 500 characters"));
    }
    let title = if title.trim().is_empty() { "New Conversation".to_owned() } else { title };
    let request =
        caller.request(pb::CreateConversationRequest { principal: Some(pb::Principal::from(&principal)), title });
    let created = state.conversations.clone().create_conversation(request).await?.into_inner();
    let conversation = created.conversation.unwrap_or_default();
    Ok(Json(Envelope::ok("Conversation created successfully", conversation.into())))
}

/// Lists the conversations of `userId`.
///
/// The user's conversations, most recently updated first.
#[utoipa::path(get, path = "/api/conversations", operation_id = "listApiConversations", params(ListQuery),
    responses((status = 200, description = "A page of conversations.", body = Envelope<Vec<ConversationBody>>)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ValidQuery(query): ValidQuery<ListQuery>,
) -> Result<Json<Envelope<Vec<ConversationBody>>>, ApiError> {
    let principal = act_for(&caller, &query.user_id, "query")?;
    state.limiter.principal(Group::Api, &principal.system_id, &principal.user_id).await?;
    let (limit, offset) = window(query.limit, query.offset, 20)?;
    let mut seen = Vec::new();
    let mut page_token = String::new();
    while seen.len() < (offset + limit) as usize {
        let request = caller.request(pb::ListConversationsRequest {
            principal: Some(pb::Principal::from(&principal)),
            page_size: MAX_LIMIT,
            page_token,
            ..Default::default()
        });
        let page = state.conversations.clone().list_conversations(request).await?.into_inner();
        seen.extend(page.conversations);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let data = seen.into_iter().skip(offset as usize).take(limit as usize).map(Into::into).collect();
    Ok(Json(Envelope::ok("Conversations retrieved successfully", data)))
}

/// Lists a conversation's messages.
///
/// A conversation's messages, oldest first.
#[utoipa::path(get, path = "/api/conversations/{id}/messages", operation_id = "listApiConversationMessages",
    params(("id" = u64, Path, minimum = 1, description = "The conversation's number."), MessagesQuery),
    responses((status = 200, description = "The conversation and a page of its messages.",
        body = Envelope<MessagesData>)))]
pub async fn messages(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ValidQuery(query): ValidQuery<MessagesQuery>,
) -> Result<Json<Envelope<MessagesData>>, ApiError> {
    let number: u64 = id
        .trim()
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| ApiError::invalid(&["path", "id"], "int_parsing", "Invalid conversation ID"))?;
    let (limit, offset) = window(query.limit, query.offset, 50)?;
    // A service key reads by id alone (`userId` is then a filter); others read their own.
    let named = match (&query.user_id, caller.0.service) {
        (Some(user_id), _) => Some(pb::Principal::from(&act_for(&caller, user_id, "query")?)),
        (None, true) => None,
        (None, false) => Some(pb::Principal::from(&caller.act_as(None, None, "query")?)),
    };
    let conversation = super::conversation_by_number(&state, &caller, named, number, "Conversation not found").await?;
    let mut seen = Vec::new();
    let mut page_token = String::new();
    while seen.len() < (offset + limit) as usize {
        let request = caller.request(pb::ListMessagesRequest {
            principal: conversation.principal.clone(),
            conversation_id: conversation.id.clone(),
            page_size: 500,
            page_token,
        });
        let page = state.conversations.clone().list_messages(request).await?.into_inner();
        seen.extend(page.messages);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let messages = seen.into_iter().skip(offset as usize).take(limit as usize).map(message_body).collect();
    Ok(Json(Envelope::ok(
        "Messages retrieved successfully",
        MessagesData { conversation: conversation.into(), messages },
    )))
}

fn message_body(m: pb::Message) -> MessageBody {
    let role = match pb::Role::try_from(m.role).unwrap_or(pb::Role::Unspecified) {
        pb::Role::System => "system",
        pb::Role::Assistant => "assistant",
        pb::Role::User | pb::Role::Unspecified => "user",
    };
    let metadata = (role == "assistant").then(|| {
        let u = m.usage.unwrap_or_default();
        MessageMetadata {
            usage: MetadataUsage {
                prompt_tokens: u.prompt_tokens,
                completion_tokens: u.completion_tokens,
                total_tokens: u.total_tokens,
            },
            model: m.model.clone(),
        }
    });
    MessageBody {
        id: m.number,
        role,
        content: m.content,
        metadata,
        created_at: timestamp_rfc3339(m.created_at.as_ref()),
    }
}
