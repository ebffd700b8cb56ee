//! The chat turn: store the user message, send the history upstream, store the answer.
//!
//! Durability: the user message is committed before the upstream call; the answer row is
//! created `in_progress` and ends `complete` with its usage, `failed` with the reason, or
//! `partial` with the text delivered when a streaming client goes away. Turns of one
//! conversation run one at a time, in arrival order, so each sees the ones before it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use switchboard_kit::auth::Credential;
use switchboard_kit::grpc::Channel;
use switchboard_proto::conversation::v1 as pb;
use switchboard_proto::llm::v1 as llm;
use switchboard_proto::llm::v1::llm_service_client::LlmServiceClient;
use tokio::sync::{OwnedMutexGuard, OwnedSemaphorePermit, Semaphore, mpsc};
use tonic::Status;
use tracing::Instrument as _;

use crate::context::ContextCache;
use crate::domain::{
    Conversation, MAX_MESSAGE_CHARS, Message, MessageOutcome, MessageStatus, Principal, Role, UsageRecord, new_id,
    title_from,
};
use crate::error::ConversationError;
use crate::lease::TurnLease;
use crate::store::{ConversationStore, OpenedTurn, TurnOpening};
use crate::usage::UsageWriter;

/// Time kept back from the caller's deadline to store a turn's outcome.
const DEADLINE_MARGIN: std::time::Duration = std::time::Duration::from_millis(100);

/// What a turn is asked to do.
#[derive(Debug, Clone)]
pub struct TurnRequest {
    /// Who.
    pub owner: Principal,
    /// The user's message.
    pub message: String,
    /// Conversation to continue, if any.
    pub conversation_id: Option<String>,
    /// Model, if chosen.
    pub model: String,
    /// Language hint.
    pub lang: String,
    /// API key id for the usage record.
    pub key_id: String,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Completion token cap.
    pub max_tokens: Option<u32>,
    /// The caller's credential, forwarded to the LLM proxy.
    pub credential: Credential,
    /// When the caller gives up (its `grpc-timeout`), passed on to the LLM proxy.
    pub deadline: Option<std::time::Instant>,
}

/// What a turn produced.
#[derive(Debug, Clone)]
pub struct TurnResult {
    /// Conversation.
    pub conversation: Conversation,
    /// Stored user message.
    pub user_message: Message,
    /// Stored answer.
    pub assistant_message: Message,
}

/// A turn whose user message is stored and whose answer row waits for the upstream.
struct Begun {
    conversation: Conversation,
    user_message: Message,
    assistant: Message,
    call: tonic::Request<llm::CompleteRequest>,
    request: TurnRequest,
    /// The context sent upstream (ending with the user message).
    context: Vec<Message>,
    turn: Held,
}

/// A turn's hold on its conversation: the lock in this process and the lease across replicas.
struct Held {
    _local: OwnedMutexGuard<()>,
    lease: TurnLease,
}

/// One lock per conversation with a turn under way.
#[derive(Default)]
struct TurnLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl TurnLocks {
    /// Waits for the conversation's earlier turns (tokio's mutex is fair: first come, first
    /// served).
    async fn acquire(&self, conversation_id: &str) -> OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
            // Forget conversations nobody is waiting for.
            locks.retain(|_, l| Arc::strong_count(l) > 1);
            locks.entry(conversation_id.to_owned()).or_default().clone()
        };
        lock.lock_owned().await
    }
}

/// Bounds the turns waiting on the store to open (to store the user message and the answer
/// row). When the store cannot keep up, a turn past the bound is refused at once, before
/// anything of it is stored: a flood beyond the store's capacity then costs neither memory
/// without bound nor ever longer waits, and the caller is told to retry.
struct OpeningQueue {
    permits: Arc<Semaphore>,
    limit: usize,
    /// Turns refused since the last warning, and when that was (ms since the epoch).
    shed: AtomicU64,
    warned_at: AtomicI64,
}

/// At most one warning about refused turns in this long.
const SHED_WARNING_EVERY_MS: i64 = 10_000;

impl OpeningQueue {
    fn new(limit: usize) -> Self {
        let limit = limit.max(1);
        Self { permits: Arc::new(Semaphore::new(limit)), limit, shed: AtomicU64::new(0), warned_at: AtomicI64::new(0) }
    }

    /// A place in the queue, or [`ConversationError::Overloaded`] when it is full.
    fn enter(&self) -> Result<OwnedSemaphorePermit, ConversationError> {
        self.permits.clone().try_acquire_owned().map_err(|_| {
            self.shed.fetch_add(1, Ordering::Relaxed);
            let now = switchboard_kit::time::now_ms();
            let last = self.warned_at.load(Ordering::Relaxed);
            if now - last >= SHED_WARNING_EVERY_MS
                && self.warned_at.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
            {
                tracing::warn!(
                    waiting = self.limit,
                    refused = self.shed.swap(0, Ordering::Relaxed),
                    "the store is behind: turns past SWITCHBOARD_TURN_QUEUE_LIMIT are refused with a retry-after"
                );
            }
            ConversationError::Overloaded { waiting: self.limit }
        })
    }
}

/// Runs chat turns.
#[derive(Clone)]
pub struct Turns {
    store: Arc<dyn ConversationStore>,
    llm: LlmServiceClient<Channel>,
    usage: UsageWriter,
    history: u32,
    locks: Arc<TurnLocks>,
    context: Arc<ContextCache>,
    context_lookups: switchboard_kit::metrics::CacheLookups,
    opening: Arc<OpeningQueue>,
}

/// How a turn runner is set up besides its store and LLM proxy.
pub struct TurnSettings {
    /// Prior messages sent upstream with a turn.
    pub history: u32,
    /// Turns that may wait on the store to open at once; more are refused.
    pub queue_limit: usize,
}

impl Turns {
    /// A turn runner over `store`, calling the LLM proxy through `llm`.
    pub fn new(
        store: Arc<dyn ConversationStore>,
        llm: LlmServiceClient<Channel>,
        usage: UsageWriter,
        settings: TurnSettings,
        context: Arc<ContextCache>,
        context_lookups: switchboard_kit::metrics::CacheLookups,
    ) -> Self {
        Self {
            store,
            llm,
            usage,
            history: settings.history,
            locks: Arc::default(),
            context,
            context_lookups,
            opening: Arc::new(OpeningQueue::new(settings.queue_limit)),
        }
    }

    /// After a turn: the cached context grows by the answer, if there is one to show. The
    /// conversation then holds two more messages (the user message and the answer row,
    /// whatever became of the answer); a count that is off only makes the next turn read the
    /// store.
    async fn remember(&self, conversation: &Conversation, context: &[Message], answer: Option<&Message>) {
        let mut next = context.to_vec();
        if let Some(answer) = answer.filter(|a| !a.content.is_empty()) {
            next.push(answer.clone());
        }
        let count = conversation.message_count + 2;
        self.context.put(&conversation.id, count, &next, self.history as usize).await;
    }

    async fn begin(&self, request: TurnRequest) -> Result<Begun, ConversationError> {
        let message = request.message.trim().to_owned();
        if message.is_empty() {
            return Err(ConversationError::invalid("message", "must not be empty"));
        }
        if message.chars().count() > MAX_MESSAGE_CHARS {
            return Err(ConversationError::invalid(
                "message",
                format!("is longer than {MAX_MESSAGE_CHARS} characters"),
            ));
        }
        // The turn lock (in this process), then the lease (across replicas), taken in the
        // transaction that stores the user message and the answer row: so what the turn
        // reads is current, and a new conversation is born leased.
        let (conversation_id, create) = match request.conversation_id.as_deref() {
            Some(id) => (id.to_owned(), None),
            None => (new_id(), Some(title_from(&message))),
        };
        let local = self.locks.acquire(&conversation_id).await;
        // Held until the turn is open (or failed to open).
        let _waiting = self.opening.enter()?;
        let (store, owner, create, message) = (&self.store, &request.owner, create.as_deref(), message.as_str());
        let (id, model) = (conversation_id.as_str(), request.model.as_str());
        let (lease, opened) = crate::lease::acquire(store, id, owner, request.deadline, move |terms| async move {
            let opening = TurnOpening {
                owner,
                conversation_id: id,
                create,
                holder: &terms.holder,
                now: terms.now,
                until: terms.until,
                message,
                model,
            };
            store.open_turn(opening).await
        })
        .await?;
        let OpenedTurn { conversation, user_message, assistant } = opened;
        // The answer row is `in_progress`, so the store's context leaves it out; a conversation
        // that had no message has only the new one.
        let context = if conversation.message_count == 0 {
            vec![user_message.clone()]
        } else {
            let cached = self.context.get(&conversation.id, conversation.message_count).await;
            self.context_lookups.record(cached.is_some());
            match cached {
                Some(mut cached) => {
                    cached.push(user_message.clone());
                    cached
                }
                None => self.store.recent_messages(&conversation.id, self.history).await?,
            }
        };
        let context = within_bytes(context, MAX_PROMPT_BYTES);
        let mut call = tonic::Request::new(llm::CompleteRequest {
            principal: Some((&request.owner).into()),
            model: request.model.clone(),
            messages: context
                .iter()
                .map(|m| llm::ChatMessage { role: llm_role(m.role) as i32, content: m.content.clone() })
                .collect(),
            temperature: request.temperature,
            max_tokens: request.max_tokens,
            lang: request.lang.clone(),
            upstream_conversation_id: conversation.upstream_id.clone().unwrap_or_default(),
        });
        request.credential.write_to(call.metadata_mut());
        // The upstream call ends a little before the caller's deadline, so that the outcome
        // is recorded before the caller gives up.
        switchboard_kit::grpc::propagate(&mut call, request.deadline, DEADLINE_MARGIN);
        Ok(Begun { conversation, user_message, assistant, call, request, context, turn: Held { _local: local, lease } })
    }

    /// Forgets the cached contexts of deleted conversations.
    pub async fn forget(&self, conversation_ids: &[String]) {
        self.context.forget(conversation_ids).await;
    }

    /// Runs one turn to completion. The turn runs as a task of its own: a caller that goes
    /// away (or times out) does not cut it short halfway between two writes.
    pub async fn run(&self, request: TurnRequest) -> Result<TurnResult, ConversationError> {
        let this = self.clone();
        tokio::spawn(async move { this.run_to_end(request).await }.in_current_span())
            .await
            .unwrap_or_else(|e| Err(ConversationError::Llm(Status::internal(format!("turn task failed: {e}")))))
    }

    async fn run_to_end(&self, request: TurnRequest) -> Result<TurnResult, ConversationError> {
        let begun = self.begin(request).await?;
        let Begun { conversation, user_message, assistant, call, request, context, mut turn } = begun;
        match self.llm.clone().complete(call).await {
            Ok(answer) => {
                let assistant =
                    self.complete(assistant, &user_message, &request, answer.into_inner(), &mut turn.lease).await?;
                self.remember(&conversation, &context, Some(&assistant)).await;
                Ok(TurnResult { conversation, user_message, assistant_message: assistant })
            }
            Err(status) => {
                self.fail(&assistant, &request.model, &public_reason(&status), String::new(), &mut turn.lease).await?;
                self.remember(&conversation, &context, None).await;
                Err(ConversationError::Llm(status))
            }
        }
    }

    /// Runs one turn, streaming the answer. The turn is finished (and stored) by a task of
    /// its own, so it ends properly however the client behaves.
    pub async fn stream(
        &self,
        request: TurnRequest,
    ) -> Result<mpsc::Receiver<Result<pb::StreamMessageResponse, Status>>, ConversationError> {
        let this = self.clone();
        tokio::spawn(async move { this.stream_to_end(request).await }.in_current_span())
            .await
            .unwrap_or_else(|e| Err(ConversationError::Llm(Status::internal(format!("turn task failed: {e}")))))
    }

    async fn stream_to_end(
        &self,
        request: TurnRequest,
    ) -> Result<mpsc::Receiver<Result<pb::StreamMessageResponse, Status>>, ConversationError> {
        let begun = self.begin(request).await?;
        let Begun { conversation, user_message, assistant, call, request, context, mut turn } = begun;
        let mut upstream = match self.llm.clone().stream_complete(call).await {
            Ok(stream) => stream.into_inner(),
            Err(status) => {
                self.fail(&assistant, &request.model, &public_reason(&status), String::new(), &mut turn.lease).await?;
                return Err(ConversationError::Llm(status));
            }
        };
        let (tx, rx) = mpsc::channel(64);
        let started = pb::TurnStarted {
            conversation_id: conversation.id.clone(),
            user_message_id: user_message.id.clone(),
            assistant_message_id: assistant.id.clone(),
            model: request.model.clone(),
        };
        let this = self.clone();
        tokio::spawn(async move {
            let mut turn = turn;
            let event = |e| Ok(pb::StreamMessageResponse { event: Some(e) });
            let mut delivered = String::new();
            let mut client_gone = tx.send(event(pb::stream_message_response::Event::Started(started))).await.is_err();
            while !client_gone {
                let next = upstream.message().await;
                match next {
                    Ok(Some(llm::StreamCompleteResponse {
                        event: Some(llm::stream_complete_response::Event::Delta(d)),
                    })) => {
                        client_gone =
                            tx.send(event(pb::stream_message_response::Event::Delta(d.clone()))).await.is_err();
                        if !client_gone {
                            delivered.push_str(&d);
                        }
                    }
                    Ok(Some(llm::StreamCompleteResponse {
                        event: Some(llm::stream_complete_response::Event::Done(done)),
                    })) => {
                        let finished =
                            this.complete(assistant.clone(), &user_message, &request, done, &mut turn.lease).await;
                        match finished {
                            Ok(stored) => {
                                this.remember(&conversation, &context, Some(&stored)).await;
                                let completed = pb::SendMessageResponse {
                                    conversation_number: u64::try_from(conversation.number).unwrap_or_default(),
                                    conversation_id: conversation.id.clone(),
                                    user_message: Some(crate::grpc::message_pb(user_message.clone())),
                                    assistant_message: Some(crate::grpc::message_pb(stored)),
                                };
                                let _ = tx.send(event(pb::stream_message_response::Event::Completed(completed))).await;
                            }
                            Err(e) => {
                                let _ = tx.send(Err(e.into())).await;
                            }
                        }
                        return;
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        let reason = "the model stream ended without its last event";
                        this.finish_quietly(&assistant, &request.model, reason, delivered, &mut turn.lease).await;
                        let _ = tx.send(Err(Status::unavailable(reason))).await;
                        return;
                    }
                    Err(status) => {
                        this.finish_quietly(
                            &assistant,
                            &request.model,
                            &public_reason(&status),
                            delivered,
                            &mut turn.lease,
                        )
                        .await;
                        // Mapped as for an unstreamed turn: the LLM proxy dying mid-stream is an outage.
                        let _ = tx.send(Err(ConversationError::Llm(status).into())).await;
                        return;
                    }
                }
            }
            // The client went away: keep what it was shown.
            let outcome = MessageOutcome {
                status: MessageStatus::Partial,
                content: delivered,
                model: request.model.clone(),
                prompt_tokens: 0,
                completion_tokens: 0,
                error: "the client went away before the answer was complete".into(),
            };
            if let Err(e) = this.close(&assistant, outcome, &mut turn.lease).await {
                tracing::error!(error = %e, message_id = %assistant.id, "cannot store a partial answer");
            }
        });
        Ok(rx)
    }

    /// Stores a finished answer and queues its usage record.
    async fn complete(
        &self,
        mut assistant: Message,
        user_message: &Message,
        request: &TurnRequest,
        answer: llm::CompleteResponse,
        lease: &mut TurnLease,
    ) -> Result<Message, ConversationError> {
        let usage = answer.usage.unwrap_or_default();
        if !answer.upstream_conversation_id.is_empty() {
            // A stateful upstream (Dify): remember its ids for the next turn and for sync.
            let mut linked = Vec::new();
            if !answer.upstream_message_id.is_empty() {
                linked.push((user_message.id.as_str(), format!("{}:q", answer.upstream_message_id)));
                linked.push((assistant.id.as_str(), format!("{}:a", answer.upstream_message_id)));
            }
            self.store.link_upstream(&assistant.conversation_id, &answer.upstream_conversation_id, &linked).await?;
        }
        let outcome = MessageOutcome {
            status: MessageStatus::Complete,
            content: answer.content,
            model: answer.model.clone(),
            prompt_tokens: i64::from(usage.prompt_tokens),
            completion_tokens: i64::from(usage.completion_tokens),
            error: String::new(),
        };
        self.close(&assistant, outcome.clone(), lease).await?;
        assistant.content = outcome.content;
        assistant.status = outcome.status;
        assistant.model = outcome.model;
        assistant.prompt_tokens = outcome.prompt_tokens;
        assistant.completion_tokens = outcome.completion_tokens;
        self.usage
            .record(UsageRecord {
                owner: request.owner.clone(),
                conversation_id: assistant.conversation_id.clone(),
                message_id: assistant.id.clone(),
                key_id: request.key_id.clone(),
                model: answer.model,
                provider: answer.provider,
                prompt_tokens: assistant.prompt_tokens,
                completion_tokens: assistant.completion_tokens,
                latency_ms: i64::from(answer.latency_ms),
                cost_micros: i64::try_from(answer.cost_micros).unwrap_or(i64::MAX),
                created_at: switchboard_kit::time::now_ms(),
            })
            .await;
        Ok(assistant)
    }

    /// Stores the answer's outcome and gives the turn's lease back, in one commit.
    async fn close(
        &self,
        assistant: &Message,
        outcome: MessageOutcome,
        lease: &mut TurnLease,
    ) -> Result<(), sqlx::Error> {
        self.store.close_turn(&assistant.conversation_id, &assistant.id, outcome, lease.holder()).await?;
        lease.released();
        Ok(())
    }

    /// Records an upstream failure on the answer: `partial` when some text was delivered.
    async fn fail(
        &self,
        assistant: &Message,
        model: &str,
        reason: &str,
        delivered: String,
        lease: &mut TurnLease,
    ) -> Result<(), sqlx::Error> {
        let status = if delivered.is_empty() { MessageStatus::Failed } else { MessageStatus::Partial };
        let outcome = MessageOutcome {
            status,
            content: delivered,
            model: model.to_owned(),
            prompt_tokens: 0,
            completion_tokens: 0,
            error: reason.to_owned(),
        };
        self.close(assistant, outcome, lease).await
    }

    async fn finish_quietly(
        &self,
        assistant: &Message,
        model: &str,
        reason: &str,
        delivered: String,
        lease: &mut TurnLease,
    ) {
        if let Err(e) = self.fail(assistant, model, reason, delivered, lease).await {
            tracing::error!(error = %e, message_id = %assistant.id, "cannot record a failed answer");
        }
    }
}

/// Why a turn failed, as stored on the answer and shown to its user: what happened (the
/// upstream's HTTP status, a timeout), never the upstream's own words, which can hold masked
/// keys or internals. Those go to the log.
fn public_reason(status: &tonic::Status) -> String {
    let upstream = status.metadata().get(switchboard_kit::grpc::UPSTREAM_METADATA).is_some();
    if !upstream {
        // Switchboard's own refusal (an unknown model, a bad field): its words are safe.
        return status.message().to_owned();
    }
    tracing::warn!(code = ?status.code(), detail = status.message(), "model upstream failed");
    if status.code() == tonic::Code::DeadlineExceeded {
        return "the model upstream did not answer in time".to_owned();
    }
    let http = status
        .metadata()
        .get(switchboard_kit::grpc::UPSTREAM_STATUS_METADATA)
        .and_then(|v| v.to_str().ok())
        .and_then(|code| code.parse::<u16>().ok());
    match http {
        Some(code) => format!("the model upstream failed (HTTP {code})"),
        None => "the model upstream failed".to_owned(),
    }
}

fn llm_role(role: Role) -> llm::Role {
    match role {
        Role::System => llm::Role::System,
        Role::User => llm::Role::User,
        Role::Assistant => llm::Role::Assistant,
    }
}

/// Most bytes of text a prompt carries upstream: well inside a gRPC message (4 MiB), whatever
/// the model's window (which, when unknown, trims nothing).
const MAX_PROMPT_BYTES: usize = 2 * 1024 * 1024;

/// The newest messages of `context` (oldest first) whose text fits in `max` bytes; the last
/// (the new user message) always stays.
fn within_bytes(mut context: Vec<Message>, max: usize) -> Vec<Message> {
    let mut total = 0;
    let mut keep = 0;
    for m in context.iter().rev() {
        total += m.content.len();
        if keep > 0 && total > max {
            break;
        }
        keep += 1;
    }
    context.drain(..context.len() - keep);
    context
}

#[cfg(test)]
mod bytes_tests {
    use super::*;

    fn message(content: &str) -> Message {
        Message {
            id: String::new(),
            conversation_id: String::new(),
            role: Role::User,
            content: content.to_owned(),
            status: MessageStatus::Complete,
            model: String::new(),
            prompt_tokens: 0,
            completion_tokens: 0,
            error: String::new(),
            created_at: 0,
            number: 0,
        }
    }

    #[test]
    fn a_prompt_keeps_the_newest_messages_that_fit_and_always_the_last() {
        let context: Vec<Message> = ["aaaa", "bbbb", "cccc", "dd"].iter().map(|c| message(c)).collect();
        let kept: Vec<String> = within_bytes(context.clone(), 6).into_iter().map(|m| m.content).collect();
        assert_eq!(kept, ["cccc", "dd"]);
        let huge = vec![message(&"x".repeat(100))];
        assert_eq!(within_bytes(huge, 10).len(), 1, "the new message always goes");
        assert_eq!(within_bytes(context, 1000).len(), 4);
    }
}
