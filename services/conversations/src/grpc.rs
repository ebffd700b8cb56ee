//! The `switchboard.conversation.v1.ConversationService` implementation: a thin translation
//! between protobuf and the turn runner and store.

use std::sync::Arc;

use switchboard_kit::time::{from_timestamp, to_timestamp};
use switchboard_proto::conversation::v1 as pb;
use switchboard_proto::conversation::v1::conversation_service_server::ConversationService;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use crate::domain::{self, Conversation, Cursor, Message, MessageStatus, PageRequest, Principal, Role, page_size};
use crate::error::ConversationError;
use prost::Message as _;

use switchboard_kit::auth::Caller;
use switchboard_kit::grpc::Channel;
use switchboard_proto::llm::v1 as llm;
use switchboard_proto::llm::v1::llm_service_client::LlmServiceClient;

use crate::api_usage::ApiUsageTally;
use crate::store::{
    ApiUsageStore, Claim, ClaimTerms, ConversationFilter, ConversationStore, IdempotencyStore, UpstreamConversation,
    UpstreamMessage,
};
use crate::turn::{TurnRequest, Turns};

/// The gRPC face of the conversation service.
pub(crate) struct ConversationGrpc {
    store: Arc<dyn ConversationStore>,
    idempotency: Arc<dyn IdempotencyStore>,
    turns: Turns,
    llm: LlmServiceClient<Channel>,
    api_usage: ApiUsageTally,
    usage_store: Arc<dyn ApiUsageStore>,
}

/// How long an idempotency key is remembered.
const IDEMPOTENCY_TTL_MS: i64 = 24 * 3600 * 1000;
/// How long a claimed key is its turn's alone. The turn stores its outcome itself, so the
/// lease matters only when its process died: then a retry after the lease runs the turn.
const IDEMPOTENCY_LEASE_MS: i64 = 10 * 60 * 1000;

impl ConversationGrpc {
    pub(crate) fn new(
        store: Arc<dyn ConversationStore>,
        idempotency: Arc<dyn IdempotencyStore>,
        turns: Turns,
        llm: LlmServiceClient<Channel>,
        api_usage: (ApiUsageTally, Arc<dyn ApiUsageStore>),
    ) -> Self {
        Self { store, idempotency, turns, llm, api_usage: api_usage.0, usage_store: api_usage.1 }
    }

    /// Counts a request of `owner` (seed 001's API usage): under the endpoint the gateway
    /// names, or the RPC for direct callers.
    fn counted<T>(&self, request: &Request<T>, owner: &Principal) {
        self.api_usage.count(&owner.system_id, &owner.user_id, &endpoint_of(request), switchboard_kit::time::now_ms());
    }

    /// Pulls one principal's upstream conversations and messages into the store; `None` when
    /// its tenant has no upstream app. Returns `(conversations touched, messages added)`.
    async fn sync_principal(&self, caller: &Caller, owner: &Principal) -> Result<Option<(u32, u32)>, Status> {
        let principal = llm::Principal::from(owner);
        let mut request = Request::new(llm::ListUpstreamConversationsRequest { principal: Some(principal.clone()) });
        caller.credential.write_to(request.metadata_mut());
        let conversations = match self.llm.clone().list_upstream_conversations(request).await {
            Ok(r) => r.into_inner().conversations,
            Err(status) if status.code() == tonic::Code::FailedPrecondition => return Ok(None),
            Err(status) => return Err(status),
        };
        let (mut touched, mut added) = (0, 0);
        for upstream in conversations {
            let created_at = upstream.created_at.as_ref().map_or(0, from_timestamp);
            let record = UpstreamConversation {
                title: domain::title_from(&upstream.name),
                id: upstream.id.clone(),
                created_at,
                updated_at: upstream.updated_at.as_ref().map_or(created_at, from_timestamp),
            };
            let (conversation_id, created) =
                self.store.upsert_upstream_conversation(owner, &record).await.map_err(ConversationError::from)?;
            let mut request = Request::new(llm::ListUpstreamMessagesRequest {
                principal: Some(principal.clone()),
                conversation_id: upstream.id,
            });
            caller.credential.write_to(request.metadata_mut());
            let exchanges = self.llm.clone().list_upstream_messages(request).await?.into_inner().messages;
            let mut new_here = 0;
            for exchange in exchanges {
                let at = exchange.created_at.as_ref().map_or(0, from_timestamp);
                let sides = [
                    (format!("{}:q", exchange.id), Role::User, exchange.query, at),
                    (format!("{}:a", exchange.id), Role::Assistant, exchange.answer, at + 1),
                ];
                for (id, role, content, created_at) in sides {
                    let message = UpstreamMessage { id, role, content, created_at };
                    if self
                        .store
                        .upsert_upstream_message(&conversation_id, &message)
                        .await
                        .map_err(ConversationError::from)?
                    {
                        new_here += 1;
                    }
                }
            }
            if created || new_here > 0 {
                touched += 1;
            }
            added += new_here;
        }
        Ok(Some((touched, added)))
    }

    /// A turn under an idempotency key (Stripe's and the IETF draft's rules): the same key and
    /// request answer the first result without a second upstream call; another request under
    /// the same key is refused; so is a retry while the first is still running.
    async fn idempotent_turn(&self, key: &str, turn: TurnRequest) -> Result<pb::SendMessageResponse, Status> {
        if key.len() > 255 || key.chars().any(char::is_control) {
            return Err(
                ConversationError::invalid("idempotency_key", "must be at most 255 printable characters").into()
            );
        }
        let owner = turn.owner.clone();
        let now = switchboard_kit::time::now_ms();
        let holder = uuid::Uuid::now_v7().to_string();
        let hash = fingerprint(&turn);
        let terms = ClaimTerms {
            hash: &hash,
            holder: &holder,
            now,
            lease_until: now + IDEMPOTENCY_LEASE_MS,
            expired_before: now - IDEMPOTENCY_TTL_MS,
        };
        let claim = self.idempotency.claim(&owner, key, &terms).await.map_err(ConversationError::from)?;
        match claim {
            // The turn and the key's outcome run in a task of their own: a caller that leaves
            // (client gone, deadline) must not leave the key claimed with its answer stored.
            Claim::New => {
                let (turns, idempotency, key) = (self.turns.clone(), self.idempotency.clone(), key.to_owned());
                let task = tokio::spawn(
                    async move {
                        match turns.run(turn).await {
                            Ok(result) => {
                                let answer = turn_pb(result);
                                idempotency
                                    .finish(&owner, &key, &holder, &answer.encode_to_vec())
                                    .await
                                    .map_err(ConversationError::from)?;
                                Ok(answer)
                            }
                            Err(e) => {
                                // A failed turn is not remembered: retrying it runs again.
                                if let Err(release) = idempotency.release(&owner, &key, &holder).await {
                                    tracing::error!(error = %release, "cannot release an idempotency key");
                                }
                                Err(e)
                            }
                        }
                    }
                    .in_current_span(),
                );
                match task.await {
                    Ok(outcome) => outcome.map_err(Status::from),
                    Err(e) => Err(Status::internal(format!("turn task failed: {e}"))),
                }
            }
            Claim::Replay(bytes) => pb::SendMessageResponse::decode(bytes.as_slice())
                .map_err(|e| Status::internal(format!("stored answer unreadable: {e}"))),
            Claim::InProgress => Err(Status::aborted("a request with this Idempotency-Key is still being processed")),
            Claim::Mismatch => Err(ConversationError::invalid(
                "idempotency_key",
                "was already used with a different request; use a new key for a new request",
            )
            .into()),
        }
    }

    /// A conversation the caller may read. A principal named in full must own it; a service
    /// credential may leave either field empty and read any conversation of its tenants by
    /// id, the fields given acting as filters. Anything else is NOT_FOUND, like a missing id.
    async fn readable<T>(
        &self,
        request: &Request<T>,
        named: Option<&pb::Principal>,
        lookup: Lookup<'_>,
    ) -> Result<Conversation, Status> {
        let caller = switchboard_kit::auth::caller(request)?;
        let (system_id, user_id) = named.map_or(("", ""), |p| (p.system_id.trim(), p.user_id.trim()));
        let owner = if !caller.service || (!system_id.is_empty() && !user_id.is_empty()) {
            Some(owner(request, named)?)
        } else {
            None
        };
        let found = match lookup {
            Lookup::Id("") => return Err(ConversationError::invalid("conversation_id", "is required").into()),
            Lookup::Id(id) => match &owner {
                Some(owner) => {
                    self.counted(request, owner);
                    return Ok(self.owned(owner, id).await?);
                }
                None => self.store.find_conversation(id).await,
            },
            Lookup::Number(number) => self.store.find_conversation_by_number(number).await,
        };
        let conversation = found.map_err(ConversationError::from)?.ok_or(ConversationError::NotFound)?;
        if owner.as_ref().is_some_and(|o| *o != conversation.owner) {
            return Err(ConversationError::NotFound.into());
        }
        let owner = &conversation.owner;
        let filtered_out = (!system_id.is_empty() && owner.system_id != system_id)
            || (!user_id.is_empty() && owner.user_id != user_id);
        if filtered_out || caller.check(&owner.system_id, &owner.user_id).is_err() {
            return Err(ConversationError::NotFound.into());
        }
        self.counted(request, owner);
        Ok(conversation)
    }

    async fn owned(&self, owner: &Principal, id: &str) -> Result<Conversation, ConversationError> {
        if id.trim().is_empty() {
            return Err(ConversationError::invalid("conversation_id", "is required"));
        }
        self.store.get_conversation(owner, id.trim()).await?.ok_or(ConversationError::NotFound)
    }
}

/// The endpoint a call serves: as the gateway names it, or the RPC for direct callers.
fn endpoint_of<T>(request: &Request<T>) -> String {
    request
        .metadata()
        .get(crate::api_usage::ENDPOINT_METADATA)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| request.extensions().get::<tonic::GrpcMethod>().map(|m| format!("rpc {}", m.method())))
        .unwrap_or_default()
}

/// How a conversation is named: by id, or by its whole-number alias.
#[derive(Debug, Clone, Copy)]
enum Lookup<'a> {
    Id(&'a str),
    Number(i64),
}

/// The request's principal, validated, once the caller is known to be allowed to act for it.
/// The tenant whose every user's conversations a list asks for: a service credential naming
/// no user (and a tenant it serves, unless it is bound to one). `None` for a list of one
/// principal's conversations.
fn every_user_of(request: &Request<pb::ListConversationsRequest>) -> Result<Option<String>, Status> {
    let caller = switchboard_kit::auth::caller(request)?;
    let named = request.get_ref().principal.as_ref();
    if !caller.service || named.is_some_and(|p| !p.user_id.trim().is_empty()) {
        return Ok(None);
    }
    let system_id = named.map(|p| p.system_id.trim()).filter(|s| !s.is_empty()).unwrap_or(caller.system_id.as_str());
    if system_id.is_empty() {
        return Err(switchboard_kit::grpc::invalid_field("system_id", "system_id: is required".to_owned()));
    }
    if !caller.serves(system_id) {
        return Err(Status::permission_denied(format!("system_id {system_id:?} is not allowed for this credential")));
    }
    Ok(Some(system_id.to_owned()))
}

fn owner<T>(request: &Request<T>, p: Option<&pb::Principal>) -> Result<Principal, Status> {
    let caller = switchboard_kit::auth::caller(request)?;
    let p = p.ok_or_else(|| ConversationError::invalid("principal", "is required"))?;
    let named = Principal::parse(&p.system_id, &p.user_id)?;
    let (system_id, user_id) = caller.check(&named.system_id, &named.user_id)?;
    Ok(Principal::parse(&system_id, &user_id)?)
}

fn turn_pb(result: crate::turn::TurnResult) -> pb::SendMessageResponse {
    pb::SendMessageResponse {
        conversation_number: u64::try_from(result.conversation.number).unwrap_or_default(),
        conversation_id: result.conversation.id,
        user_message: Some(message_pb(result.user_message)),
        assistant_message: Some(message_pb(result.assistant_message)),
    }
}

/// What makes two turn requests "the same request" for an idempotency key.
fn fingerprint(turn: &TurnRequest) -> String {
    use sha2::{Digest, Sha256};
    let canonical = format!(
        "{}\n{:?}\n{}\n{}\n{:?}\n{:?}",
        turn.message.trim(),
        turn.conversation_id,
        turn.model,
        turn.lang,
        turn.temperature.map(f32::to_bits),
        turn.max_tokens
    );
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

/// The turn a `SendMessageRequest` asks for, once its caller may act for its principal.
fn turn_request(request: Request<pb::SendMessageRequest>, usage: &ApiUsageTally) -> Result<TurnRequest, Status> {
    let owner = owner(&request, request.get_ref().principal.as_ref())?;
    let endpoint = endpoint_of(&request);
    usage.count(&owner.system_id, &owner.user_id, &endpoint, switchboard_kit::time::now_ms());
    let caller = switchboard_kit::auth::caller(&request)?;
    // The verified key, never one named in the body.
    let (credential, key_id) = (caller.credential.clone(), caller.key_id.clone());
    let deadline = switchboard_kit::grpc::deadline(request.metadata());
    let req = request.into_inner();
    Ok(TurnRequest {
        deadline,
        owner,
        message: req.message,
        conversation_id: non_empty(&req.conversation_id),
        model: req.model.trim().to_owned(),
        lang: req.lang,
        key_id,
        temperature: req.temperature,
        max_tokens: req.max_tokens,
        credential,
    })
}

fn conversation_pb(c: Conversation) -> pb::Conversation {
    pb::Conversation {
        principal: Some((&c.owner).into()),
        id: c.id,
        title: c.title,
        created_at: Some(to_timestamp(c.created_at)),
        updated_at: Some(to_timestamp(c.updated_at)),
        message_count: u32::try_from(c.message_count).unwrap_or(u32::MAX),
        upstream_id: c.upstream_id.unwrap_or_default(),
        number: u64::try_from(c.number).unwrap_or_default(),
    }
}

pub(crate) fn message_pb(m: Message) -> pb::Message {
    let role = match m.role {
        Role::System => pb::Role::System,
        Role::User => pb::Role::User,
        Role::Assistant => pb::Role::Assistant,
    };
    let status = match m.status {
        MessageStatus::Complete => pb::MessageStatus::Complete,
        MessageStatus::InProgress => pb::MessageStatus::InProgress,
        MessageStatus::Failed => pb::MessageStatus::Failed,
        MessageStatus::Partial => pb::MessageStatus::Partial,
    };
    let prompt = u32::try_from(m.prompt_tokens).unwrap_or(u32::MAX);
    let completion = u32::try_from(m.completion_tokens).unwrap_or(u32::MAX);
    pb::Message {
        usage: (m.role == Role::Assistant).then_some(pb::Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt.saturating_add(completion),
        }),
        id: m.id,
        conversation_id: m.conversation_id,
        role: role as i32,
        content: m.content,
        status: status as i32,
        model: m.model,
        error: m.error,
        created_at: Some(to_timestamp(m.created_at)),
        number: u64::try_from(m.number).unwrap_or_default(),
    }
}

fn non_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

#[tonic::async_trait]
impl ConversationService for ConversationGrpc {
    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::SendMessageResponse>, Status> {
        let key = request.get_ref().idempotency_key.trim().to_owned();
        let turn = turn_request(request, &self.api_usage)?;
        if key.is_empty() {
            return Ok(Response::new(turn_pb(self.turns.run(turn).await?)));
        }
        Ok(Response::new(self.idempotent_turn(&key, turn).await?))
    }

    type StreamMessageStream = tokio_stream::wrappers::ReceiverStream<Result<pb::StreamMessageResponse, Status>>;

    async fn stream_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<Self::StreamMessageStream>, Status> {
        let events = self.turns.stream(turn_request(request, &self.api_usage)?).await?;
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(events)))
    }

    async fn list_conversations(
        &self,
        request: Request<pb::ListConversationsRequest>,
    ) -> Result<Response<pb::ListConversationsResponse>, Status> {
        let req = request.get_ref();
        let page = PageRequest {
            size: page_size(req.page_size, 20, 100),
            cursor: Cursor::decode(&req.page_token, "page_token")?,
        };
        let filter = ConversationFilter {
            from: req.from_time.as_ref().map(from_timestamp),
            to: req.to_time.as_ref().map(from_timestamp),
        };
        let page = match every_user_of(&request)? {
            Some(system_id) => {
                self.api_usage.count(&system_id, "", &endpoint_of(&request), switchboard_kit::time::now_ms());
                self.store.list_tenant_conversations(&system_id, &filter, &page).await
            }
            None => {
                let owner = owner(&request, req.principal.as_ref())?;
                self.counted(&request, &owner);
                self.store.list_conversations(&owner, &filter, &page).await
            }
        }
        .map_err(ConversationError::from)?;
        Ok(Response::new(pb::ListConversationsResponse {
            conversations: page.items.into_iter().map(conversation_pb).collect(),
            next_page_token: page.next.map(|c| c.encode()).unwrap_or_default(),
        }))
    }

    async fn get_conversation(
        &self,
        request: Request<pb::GetConversationRequest>,
    ) -> Result<Response<pb::GetConversationResponse>, Status> {
        let req = request.get_ref();
        let lookup = match (req.conversation_id.trim(), req.number) {
            ("", 0) => return Err(ConversationError::invalid("conversation_id", "is required").into()),
            ("", number) => Lookup::Number(i64::try_from(number).unwrap_or(i64::MAX)),
            (id, _) => Lookup::Id(id),
        };
        let conversation = self.readable(&request, req.principal.as_ref(), lookup).await?;
        Ok(Response::new(pb::GetConversationResponse { conversation: Some(conversation_pb(conversation)) }))
    }

    async fn create_conversation(
        &self,
        request: Request<pb::CreateConversationRequest>,
    ) -> Result<Response<pb::CreateConversationResponse>, Status> {
        let owner = owner(&request, request.get_ref().principal.as_ref())?;
        self.counted(&request, &owner);
        let req = request.into_inner();
        let title = domain::title_from(&req.title);
        let conversation = self.store.create_conversation(&owner, &title).await.map_err(ConversationError::from)?;
        Ok(Response::new(pb::CreateConversationResponse { conversation: Some(conversation_pb(conversation)) }))
    }

    async fn list_messages(
        &self,
        request: Request<pb::ListMessagesRequest>,
    ) -> Result<Response<pb::ListMessagesResponse>, Status> {
        let id = request.get_ref().conversation_id.trim();
        let conversation = self.readable(&request, request.get_ref().principal.as_ref(), Lookup::Id(id)).await?;
        let req = request.into_inner();
        let page = PageRequest {
            size: page_size(req.page_size, 100, 500),
            cursor: Cursor::decode(&req.page_token, "page_token")?,
        };
        let page = self.store.list_messages(&conversation.id, &page).await.map_err(ConversationError::from)?;
        Ok(Response::new(pb::ListMessagesResponse {
            messages: page.items.into_iter().map(message_pb).collect(),
            next_page_token: page.next.map(|c| c.encode()).unwrap_or_default(),
        }))
    }

    async fn clear_history(
        &self,
        request: Request<pb::ClearHistoryRequest>,
    ) -> Result<Response<pb::ClearHistoryResponse>, Status> {
        let owner = owner(&request, request.get_ref().principal.as_ref())?;
        self.counted(&request, &owner);
        let deleted = self.store.clear_history(&owner).await.map_err(ConversationError::from)?;
        self.turns.forget(&deleted).await;
        Ok(Response::new(pb::ClearHistoryResponse {
            deleted_conversations: u32::try_from(deleted.len()).unwrap_or(u32::MAX),
        }))
    }

    async fn get_api_usage(
        &self,
        request: Request<pb::GetApiUsageRequest>,
    ) -> Result<Response<pb::GetApiUsageResponse>, Status> {
        let owner = owner(&request, request.get_ref().principal.as_ref())?;
        let rows = self.usage_store.api_usage(&owner).await.map_err(ConversationError::from)?;
        Ok(Response::new(pb::GetApiUsageResponse {
            usage: rows
                .into_iter()
                .map(|r| pb::ApiUsage {
                    endpoint: r.endpoint,
                    request_count: u64::try_from(r.request_count).unwrap_or_default(),
                    last_request_at: Some(to_timestamp(r.last_request_at)),
                    created_at: Some(to_timestamp(r.created_at)),
                })
                .collect(),
        }))
    }

    async fn sync(&self, request: Request<pb::SyncRequest>) -> Result<Response<pb::SyncResponse>, Status> {
        let caller = switchboard_kit::auth::caller(&request)?.clone();
        if !caller.service {
            return Err(Status::permission_denied("sync needs a service key"));
        }
        let system_id = request.get_ref().system_id.trim().to_owned();
        if !system_id.is_empty() {
            caller.check(&system_id, "sync")?;
        }
        let principals = self
            .store
            .principals(Some(system_id.as_str()).filter(|s| !s.is_empty()))
            .await
            .map_err(ConversationError::from)?;
        let mut answer = pb::SyncResponse::default();
        for owner in principals {
            if caller.check(&owner.system_id, &owner.user_id).is_err() {
                continue;
            }
            if let Some((conversations, messages)) = self.sync_principal(&caller, &owner).await? {
                answer.users += 1;
                answer.conversations += conversations;
                answer.messages += messages;
            }
        }
        tracing::info!(
            users = answer.users,
            conversations = answer.conversations,
            messages = answer.messages,
            "sync done"
        );
        Ok(Response::new(answer))
    }
}
