//! `/api/v1/conversations/` and `/api/v1/conversations/{pk}/messages` (seed 004): a signed-in
//! user's chat rooms and their messages, in the `{success, message, data, errors}` envelope,
//! with whole-number `pk`s. Posting a message runs a chat turn (with the user's own provider
//! key when they brought one) and answers the model's message.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use switchboard_kit::time::timestamp_rfc3339;
use switchboard_proto::conversation::v1 as pb;
use utoipa::ToSchema;

use super::{Envelope, envelope};
use crate::auth::{Caller, Principal};
use crate::error::ApiError;
use crate::extract::ValidJson;
use crate::ratelimit::Group;
use crate::state::AppState;

/// Body of `POST /api/v1/conversations/`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateRoom {
    /// At most 100 characters; `ChatRoom: yy-mm-dd-HH-MM` when absent or blank.
    #[schema(max_length = 100)]
    title: Option<String>,
}

/// Body of `POST /api/v1/conversations/{pk}/messages`: the text as `payload` (the model's
/// field) or `message` (what the seed's front end sends).
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = PostRoomMessage)]
pub struct PostMessage {
    /// The text; one of `payload` and `message` is required and not blank.
    payload: Option<String>,
    /// The text, if `payload` is absent.
    message: Option<String>,
}

/// A chat room.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Room)]
pub struct RoomBody {
    /// Its number.
    id: u64,
    /// Its title.
    title: String,
    /// Its user's name.
    user: String,
    /// RFC 3339.
    created_at: Option<String>,
    /// RFC 3339: its last message.
    updated_at: Option<String>,
}

/// A message of a room.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = RoomMessage)]
pub struct MessageBody {
    /// Its number.
    id: u64,
    /// `user`, `chatbot` or `system`.
    role: &'static str,
    /// The text.
    payload: String,
    /// Tokens it took (answers only; 0 for the others).
    token_number: u32,
    /// The room's user's name.
    user: String,
    /// The room's number.
    conversation: u64,
    /// RFC 3339.
    created_at: Option<String>,
    /// RFC 3339 (as `created_at`: messages do not change).
    updated_at: Option<String>,
}

/// The user's name as shown: the username of a signed-in user.
fn shown(p: &Principal) -> String {
    switchboard_kit::principal::username(&p.user_id).unwrap_or(&p.user_id).to_owned()
}

fn room(c: pb::Conversation, user: &str) -> RoomBody {
    RoomBody {
        id: c.number,
        title: c.title,
        user: user.to_owned(),
        created_at: timestamp_rfc3339(c.created_at.as_ref()),
        updated_at: timestamp_rfc3339(c.updated_at.as_ref()),
    }
}

fn message(m: pb::Message, user: &str, room: u64) -> MessageBody {
    let role = match pb::Role::try_from(m.role).unwrap_or(pb::Role::Unspecified) {
        pb::Role::Assistant => "chatbot",
        pb::Role::System => "system",
        pb::Role::User | pb::Role::Unspecified => "user",
    };
    let created_at = timestamp_rfc3339(m.created_at.as_ref());
    MessageBody {
        id: m.number,
        role,
        token_number: m.usage.map_or(0, |u| u.total_tokens),
        payload: m.content,
        user: user.to_owned(),
        conversation: room,
        updated_at: created_at.clone(),
        created_at,
    }
}

/// The user's rooms.
///
/// The signed-in user's rooms, most recently used first (at most a thousand).
#[utoipa::path(get, path = "/api/v1/conversations/", operation_id = "listRooms",
    responses((status = 200, description = "The rooms.", body = Envelope<Vec<RoomBody>>)))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Envelope<Vec<RoomBody>>>, ApiError> {
    let principal = caller.act_as(None, None, "query")?;
    state.limiter.principal(Group::Api, &principal.system_id, &principal.user_id).await?;
    let (mut rooms, mut page_token) = (Vec::new(), String::new());
    let user = shown(&principal);
    // Seed 004 lists every room at once; a thousand is the most one answer holds.
    while rooms.len() < 1000 {
        let request = caller.request(pb::ListConversationsRequest {
            principal: Some(pb::Principal::from(&principal)),
            page_size: 100,
            page_token,
            ..Default::default()
        });
        let page = state.conversations.clone().list_conversations(request).await?.into_inner();
        rooms.extend(page.conversations.into_iter().map(|c| room(c, &user)));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    Ok(Json(envelope("get Every Conversation of user", rooms)))
}

/// Opens a room.
///
/// An empty title becomes `ChatRoom: yy-mm-dd-HH-MM`, as seed 004 names them.
#[utoipa::path(post, path = "/api/v1/conversations/", operation_id = "createRoom", request_body = CreateRoom,
    responses((status = 201, description = "Opened.", body = Envelope<RoomBody>)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ValidJson(body): ValidJson<CreateRoom>,
) -> Result<(StatusCode, Json<Envelope<RoomBody>>), ApiError> {
    let principal = caller.act_as(None, None, "body")?;
    state.limiter.principal(Group::Api, &principal.system_id, &principal.user_id).await?;
    let title = body.title.unwrap_or_default().trim().to_owned();
    if title.chars().count() > 100 {
        return Err(ApiError::invalid(&["body", "title"], "string_too_long", "must be at most 100 characters"));
    }
    let title = if title.is_empty() { default_title() } else { title };
    let request =
        caller.request(pb::CreateConversationRequest { principal: Some(pb::Principal::from(&principal)), title });
    let created = state.conversations.clone().create_conversation(request).await?.into_inner();
    let body = room(created.conversation.unwrap_or_default(), &shown(&principal));
    Ok((StatusCode::CREATED, Json(envelope("Conversation created successfully", body))))
}

fn default_title() -> String {
    let format = time::macros::format_description!("[year repr:last_two]-[month]-[day]-[hour]-[minute]");
    let now = time::OffsetDateTime::now_utc();
    format!("ChatRoom: {}", now.format(&format).unwrap_or_default())
}

fn pk(raw: &str) -> Result<u64, ApiError> {
    raw.trim()
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| ApiError::invalid(&["path", "pk"], "int_parsing", "must be a positive whole number"))
}

/// The user's room `pk`; 404 when it is missing or someone else's.
async fn owned_room(state: &AppState, caller: &Caller, p: &Principal, pk: u64) -> Result<pb::Conversation, ApiError> {
    crate::routes::api::conversation_by_number(
        state,
        caller,
        Some(pb::Principal::from(p)),
        pk,
        "No conversation found.",
    )
    .await
}

/// A room's messages.
///
/// Oldest first; someone else's room is a 404.
#[utoipa::path(get, path = "/api/v1/conversations/{pk}/messages", operation_id = "listRoomMessages",
    params(("pk" = u64, Path, minimum = 1, description = "The room's number.")),
    responses((status = 200, description = "Its messages.", body = Envelope<Vec<MessageBody>>)))]
pub async fn messages(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Json<Envelope<Vec<MessageBody>>>, ApiError> {
    let number = pk(&raw)?;
    let principal = caller.act_as(None, None, "query")?;
    state.limiter.principal(Group::Api, &principal.system_id, &principal.user_id).await?;
    let conversation = owned_room(&state, &caller, &principal, number).await?;
    let user = shown(&principal);
    let (mut items, mut page_token) = (Vec::new(), String::new());
    while items.len() < 5000 {
        let request = caller.request(pb::ListMessagesRequest {
            principal: Some(pb::Principal::from(&principal)),
            conversation_id: conversation.id.clone(),
            page_size: 500,
            page_token,
        });
        let page = state.conversations.clone().list_messages(request).await?.into_inner();
        items.extend(page.messages.into_iter().map(|m| message(m, &user, number)));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    Ok(Json(envelope("messages of chatroom", items)))
}

/// Sends a message in a room and answers with the reply.
///
/// A chat turn in the room (with the user's own provider key when they brought one); the
/// answer is the model's message.
#[utoipa::path(post, path = "/api/v1/conversations/{pk}/messages", operation_id = "postRoomMessage",
    params(("pk" = u64, Path, minimum = 1, description = "The room's number.")), request_body = PostMessage,
    responses((status = 201, description = "The model's message.", body = Envelope<MessageBody>)))]
pub async fn post_message(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    ValidJson(body): ValidJson<PostMessage>,
) -> Result<(StatusCode, Json<Envelope<MessageBody>>), ApiError> {
    let number = pk(&raw)?;
    let principal = caller.act_as(None, None, "body")?;
    state.limiter.principal(Group::Chat, &principal.system_id, &principal.user_id).await?;
    let text = body.payload.or(body.message).unwrap_or_default();
    if text.trim().is_empty() {
        return Err(ApiError::invalid(&["body", "payload"], "missing", "Field required"));
    }
    let conversation = owned_room(&state, &caller, &principal, number).await?;
    let mut request = caller.request(pb::SendMessageRequest {
        principal: Some(pb::Principal::from(&principal)),
        message: text,
        conversation_id: conversation.id,
        key_id: caller.key_id().to_owned(),
        ..Default::default()
    });
    request.set_timeout(crate::routes::v1::TURN_DEADLINE);
    let answer = state.conversations.clone().send_message(request).await?.into_inner();
    let reply = message(answer.assistant_message.unwrap_or_default(), &shown(&principal), number);
    Ok((StatusCode::CREATED, Json(envelope("Message created successfully", reply))))
}
