//! The chat turn: store the user message, send the history upstream, store the answer.
//!
//! Durability: the user message is committed before the upstream call; the answer row is
//! created `in_progress` and ends `complete` with its usage, or `failed` with the reason.

use std::sync::Arc;

use switchboard_kit::auth::Credential;
use switchboard_proto::llm::v1 as llm;
use switchboard_proto::llm::v1::llm_service_client::LlmServiceClient;
use tonic::transport::Channel;

use crate::domain::{
    Conversation, MAX_MESSAGE_CHARS, Message, MessageOutcome, MessageStatus, Principal, Role, UsageRecord, title_from,
};
use crate::error::ConversationError;
use crate::store::{ConversationStore, NewMessage};
use crate::usage::UsageWriter;

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

/// Runs chat turns.
#[derive(Clone)]
pub struct Turns {
    store: Arc<dyn ConversationStore>,
    llm: LlmServiceClient<Channel>,
    usage: UsageWriter,
    history: u32,
}

impl Turns {
    /// A turn runner over `store`, calling the LLM proxy through `llm`.
    pub fn new(
        store: Arc<dyn ConversationStore>,
        llm: LlmServiceClient<Channel>,
        usage: UsageWriter,
        history: u32,
    ) -> Self {
        Self { store, llm, usage, history }
    }

    /// Runs one turn to completion.
    pub async fn run(&self, request: TurnRequest) -> Result<TurnResult, ConversationError> {
        let message = request.message.trim();
        if message.is_empty() {
            return Err(ConversationError::invalid("message", "must not be empty"));
        }
        if message.chars().count() > MAX_MESSAGE_CHARS {
            return Err(ConversationError::invalid(
                "message",
                format!("is longer than {MAX_MESSAGE_CHARS} characters"),
            ));
        }
        let conversation = match request.conversation_id.as_deref() {
            Some(id) => self.store.get_conversation(&request.owner, id).await?.ok_or(ConversationError::NotFound)?,
            None => self.store.create_conversation(&request.owner, &title_from(message)).await?,
        };
        let user_message = self
            .store
            .append_message(NewMessage {
                conversation_id: conversation.id.clone(),
                role: Role::User,
                content: message.to_owned(),
                status: MessageStatus::Complete,
                model: String::new(),
            })
            .await?;
        let context = self.store.recent_messages(&conversation.id, self.history).await?;
        let mut assistant = self
            .store
            .append_message(NewMessage {
                conversation_id: conversation.id.clone(),
                role: Role::Assistant,
                content: String::new(),
                status: MessageStatus::InProgress,
                model: request.model.clone(),
            })
            .await?;

        let call = llm::CompleteRequest {
            principal: Some(llm::Principal {
                system_id: request.owner.system_id.clone(),
                user_id: request.owner.user_id.clone(),
            }),
            model: request.model.clone(),
            messages: context
                .iter()
                .map(|m| llm::ChatMessage { role: llm_role(m.role) as i32, content: m.content.clone() })
                .collect(),
            temperature: request.temperature,
            max_tokens: request.max_tokens,
            lang: request.lang.clone(),
            upstream_conversation_id: conversation.upstream_id.clone().unwrap_or_default(),
        };
        let mut call = tonic::Request::new(call);
        request.credential.write_to(call.metadata_mut());
        let answer = match self.llm.clone().complete(call).await {
            Ok(answer) => answer.into_inner(),
            Err(status) => {
                let outcome = MessageOutcome {
                    status: MessageStatus::Failed,
                    content: String::new(),
                    model: request.model.clone(),
                    prompt_tokens: 0,
                    completion_tokens: 0,
                    error: status.message().to_owned(),
                };
                self.store.finish_message(&assistant.id, outcome).await?;
                return Err(ConversationError::Llm(status));
            }
        };

        let usage = answer.usage.unwrap_or_default();
        let outcome = MessageOutcome {
            status: MessageStatus::Complete,
            content: answer.content.clone(),
            model: answer.model.clone(),
            prompt_tokens: i64::from(usage.prompt_tokens),
            completion_tokens: i64::from(usage.completion_tokens),
            error: String::new(),
        };
        self.store.finish_message(&assistant.id, outcome.clone()).await?;
        assistant.content = outcome.content;
        assistant.status = outcome.status;
        assistant.model = outcome.model;
        assistant.prompt_tokens = outcome.prompt_tokens;
        assistant.completion_tokens = outcome.completion_tokens;

        self.usage
            .record(UsageRecord {
                owner: request.owner,
                conversation_id: conversation.id.clone(),
                message_id: assistant.id.clone(),
                key_id: request.key_id,
                model: answer.model,
                provider: answer.provider,
                prompt_tokens: assistant.prompt_tokens,
                completion_tokens: assistant.completion_tokens,
                latency_ms: i64::from(answer.latency_ms),
                cost_micros: i64::try_from(answer.cost_micros).unwrap_or(i64::MAX),
                created_at: switchboard_kit::time::now_ms(),
            })
            .await;
        Ok(TurnResult { conversation, user_message, assistant_message: assistant })
    }
}

fn llm_role(role: Role) -> llm::Role {
    match role {
        Role::System => llm::Role::System,
        Role::User => llm::Role::User,
        Role::Assistant => llm::Role::Assistant,
    }
}
