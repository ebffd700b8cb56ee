//! The `switchboard.llm.v1.LlmService` implementation: translates protobuf to the catalogue
//! and providers, and errors to statuses.

mod chat_completions;
mod keys;
mod usage;

pub(crate) use usage::{UsageGrpc, reload as reload_budgets};

pub(crate) use chat_completions::Accounting;
use chat_completions::{Bill, StreamBill};

use std::sync::Arc;

use futures::StreamExt;
use switchboard_proto::llm::v1 as pb;
use switchboard_proto::llm::v1::llm_service_server::LlmService;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use crate::catalogue::{Catalogue, ModelEntry};
use crate::error::LlmError;

use crate::providers::{ChatMessage, CompletionRequest, ProviderError, Role, StreamEvent, TokenUsage};

use crate::key_usage::KeyUsageTally;
use crate::sealing::Sealer;
use crate::store::{ModelChoiceStore, ProviderKeyStore};
use crate::telemetry::UpstreamCall;

/// The gRPC face of the LLM proxy.
pub(crate) struct LlmGrpc {
    catalogue: Arc<Catalogue>,
    choices: Arc<dyn ModelChoiceStore>,
    keys: Arc<dyn ProviderKeyStore>,
    sealer: Option<Sealer>,
    accounting: Accounting,
    upstream_timeout: std::time::Duration,
    budgets: crate::budgets::Budgets,
}

/// What the gRPC face needs besides the catalogue.
pub(crate) struct Deps {
    pub choices: Arc<dyn ModelChoiceStore>,
    pub keys: Arc<dyn ProviderKeyStore>,
    pub sealer: Option<Sealer>,
    pub tally: KeyUsageTally,
    pub usage: crate::usage::UsageRollups,
    pub upstream_timeout: std::time::Duration,
    pub budgets: crate::budgets::Budgets,
    pub metrics: crate::telemetry::UpstreamMetrics,
}

impl LlmGrpc {
    pub(crate) fn new(catalogue: Arc<Catalogue>, deps: Deps) -> Self {
        Self {
            catalogue,
            choices: deps.choices,
            keys: deps.keys,
            sealer: deps.sealer,
            accounting: Accounting { tally: deps.tally, usage: deps.usage, metrics: deps.metrics },
            upstream_timeout: deps.upstream_timeout,
            budgets: deps.budgets,
        }
    }

    /// Reserves a completion's worst case against the budgets that apply to it.
    async fn reserve(
        &self,
        who: &(String, String),
        key_id: &str,
        chain: &[ModelEntry],
        req: &pb::CompleteRequest,
    ) -> Result<Option<crate::budgets::ledger::Reservation>, Status> {
        let prompt = req.messages.iter().map(|m| crate::providers::estimate_tokens(&m.content)).sum();
        self.budgets.reserve(who, key_id, chain, prompt, req.max_tokens).await
    }

    pub(crate) fn catalogue(&self) -> Arc<Catalogue> {
        self.catalogue.clone()
    }

    /// The Dify provider serving `system_id`, or FAILED_PRECONDITION.
    fn upstream_app(&self, system_id: &str) -> Result<&crate::providers::dify::Dify, Status> {
        self.catalogue
            .dify()
            .filter(|d| d.serves(system_id))
            .ok_or_else(|| Status::failed_precondition(format!("no upstream chat app serves system_id {system_id:?}")))
    }

    /// The model to use: the one asked for, else the principal's choice, else the default.
    async fn pick(&self, principal: &(String, String), requested: &str) -> Result<ModelEntry, LlmError> {
        let tenant = &principal.0;
        if !requested.trim().is_empty() {
            return self.catalogue.resolve_for(tenant, requested);
        }
        match self.choices.get(&principal.0, &principal.1).await? {
            // A choice whose model has since left the catalogue (or the tenant's allowed
            // models) falls back to the tenant's default.
            Some(chosen) => {
                self.catalogue.resolve_for(tenant, &chosen).or_else(|_| self.catalogue.resolve_for(tenant, ""))
            }
            None => self.catalogue.resolve_for(tenant, ""),
        }
    }
}

/// The principal a request is for: exactly the one the caller's check returns (a principal
/// named in part is completed from the credential, never from a default).
fn principal<T>(request: &Request<T>, p: Option<&pb::Principal>) -> Result<(String, String), Status> {
    let caller = switchboard_kit::auth::caller(request)?;
    let (system_id, user_id) = p.map_or(("", ""), |p| (p.system_id.trim(), p.user_id.trim()));
    caller.check(system_id, user_id)
}

fn to_message(m: pb::ChatMessage) -> ChatMessage {
    let role = match pb::Role::try_from(m.role).unwrap_or(pb::Role::User) {
        pb::Role::System => Role::System,
        pb::Role::Assistant => Role::Assistant,
        pb::Role::User | pb::Role::Unspecified => Role::User,
    };
    ChatMessage { role, content: m.content }
}

/// Whether another model may answer instead: the upstream is down, throttled or ejected.
fn falls_back(error: &ProviderError) -> bool {
    crate::resilience::retryable(error) || matches!(error, ProviderError::Ejected { .. })
}

fn seconds(unix: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: unix, nanos: 0 }
}

fn completion_request(entry: &ModelEntry, who: &(String, String), req: pb::CompleteRequest) -> CompletionRequest {
    let mut messages: Vec<ChatMessage> = req.messages.into_iter().map(to_message).collect();
    // Prior messages beyond the model's window are dropped, oldest first.
    crate::providers::trim_to_window(&mut messages, entry.context_window, req.max_tokens.unwrap_or(1024));
    CompletionRequest {
        model: entry.upstream_name().to_owned(),
        messages,
        temperature: req.temperature,
        max_tokens: req.max_tokens,
        system_id: who.0.clone(),
        user_id: who.1.clone(),
        lang: req.lang,
        upstream_conversation_id: req.upstream_conversation_id,
    }
}

fn usage_pb(usage: TokenUsage) -> pb::Usage {
    pb::Usage {
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: usage.completion_tokens,
        total_tokens: usage.prompt_tokens.saturating_add(usage.completion_tokens),
    }
}

fn validate(req: &pb::CompleteRequest) -> Result<(), LlmError> {
    if req.messages.is_empty() {
        return Err(LlmError::InvalidArgument { field: "messages", reason: "at least one message is required".into() });
    }
    if let Some(t) = req.temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(LlmError::InvalidArgument { field: "temperature", reason: "must be between 0 and 2".into() });
    }
    if req.max_tokens == Some(0) {
        return Err(LlmError::InvalidArgument { field: "max_tokens", reason: "must be at least 1".into() });
    }
    Ok(())
}

#[tonic::async_trait]
impl LlmService for LlmGrpc {
    async fn list_models(
        &self,
        request: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        // Without a principal, the whole catalogue; with one (which must be the caller's), the
        // models its tenant may use and its default.
        let tenant = match request.get_ref().principal.as_ref() {
            Some(named) => Some(principal(&request, Some(named))?.0),
            None => None,
        };
        let default = tenant.as_deref().map_or(self.catalogue.default_model(), |t| self.catalogue.default_for(t));
        let models = self
            .catalogue
            .models()
            .into_iter()
            .filter(|m| tenant.as_deref().is_none_or(|t| self.catalogue.allows(t, &m.id)))
            .map(|m| pb::Model {
                id: m.id.clone(),
                provider: m.provider.name().into(),
                aliases: m.aliases.clone(),
                context_window: m.context_window,
                is_default: m.id == default,
            })
            .collect();
        Ok(Response::new(pb::ListModelsResponse { models, default_model: default.to_owned() }))
    }

    async fn get_model_choice(
        &self,
        request: Request<pb::GetModelChoiceRequest>,
    ) -> Result<Response<pb::GetModelChoiceResponse>, Status> {
        let who = principal(&request, request.get_ref().principal.as_ref())?;
        let chosen = self.choices.get(&who.0, &who.1).await.map_err(LlmError::from)?;
        let answer = match chosen.and_then(|c| self.catalogue.resolve_for(&who.0, &c).ok().map(|m| m.id.clone())) {
            Some(model) => pb::GetModelChoiceResponse { model, chosen: true },
            None => pb::GetModelChoiceResponse { model: self.catalogue.default_for(&who.0).to_owned(), chosen: false },
        };
        Ok(Response::new(answer))
    }

    async fn set_model_choice(
        &self,
        request: Request<pb::SetModelChoiceRequest>,
    ) -> Result<Response<pb::SetModelChoiceResponse>, Status> {
        let who = principal(&request, request.get_ref().principal.as_ref())?;
        let req = request.into_inner();
        if req.model.trim().is_empty() {
            return Err(LlmError::InvalidArgument { field: "model", reason: "must not be empty".into() }.into());
        }
        let model = self.catalogue.resolve_for(&who.0, &req.model)?.id.clone();
        self.choices.set(&who.0, &who.1, &model).await.map_err(LlmError::from)?;
        Ok(Response::new(pb::SetModelChoiceResponse { model }))
    }

    async fn complete(&self, request: Request<pb::CompleteRequest>) -> Result<Response<pb::CompleteResponse>, Status> {
        let who = principal(&request, request.get_ref().principal.as_ref())?;
        let caller_key = switchboard_kit::auth::caller(&request)?.key_id.clone();
        let req = request.into_inner();
        validate(&req)?;
        let first = self.pick(&who, &req.model).await?;
        let chain = self.catalogue.chain(&who.0, first);
        let mut reservation = self.reserve(&who, &caller_key, &chain, &req).await?;
        let mut failure = None;
        for entry in chain {
            let (entry, key_id) = self.with_user_key(&who, entry).await?;
            let call = completion_request(&entry, &who, req.clone());
            let upstream = UpstreamCall::start(&entry, false);
            match entry.provider.complete(&call).instrument(upstream.span.clone()).await {
                Ok(output) => {
                    let bill = Bill { who: &who, key_id: &caller_key, provider_key: key_id.as_deref() };
                    let account = self.accounting.account(&bill, &entry, output.usage, &upstream, reservation.take());
                    upstream.finished(&output.finish_reason);
                    tracing::debug!(model = %entry.id, provider = entry.provider.name(), latency_ms = account.latency_ms, "completion done");
                    return Ok(Response::new(pb::CompleteResponse {
                        content: output.content,
                        model: account.model,
                        provider: account.provider,
                        usage: account.usage,
                        finish_reason: output.finish_reason,
                        upstream_conversation_id: output.upstream_conversation_id,
                        upstream_message_id: output.upstream_message_id,
                        latency_ms: account.latency_ms,
                        cost_micros: account.cost_micros,
                        provider_key_id: key_id.unwrap_or_default(),
                    }));
                }
                Err(e) if falls_back(&e) => {
                    self.accounting.metrics.failed(&entry, &upstream, &e);
                    tracing::warn!(model = %entry.id, error = %e, "model failed; trying the next fallback");
                    failure = Some(e);
                }
                Err(e) => {
                    self.accounting.metrics.failed(&entry, &upstream, &e);
                    return Err(LlmError::from(e).into());
                }
            }
        }
        Err(LlmError::from(failure.unwrap_or(ProviderError::Setup("no model to try".into()))).into())
    }

    type StreamCompleteStream = chat_completions::Chunks<pb::StreamCompleteResponse>;

    async fn stream_complete(
        &self,
        request: Request<pb::CompleteRequest>,
    ) -> Result<Response<Self::StreamCompleteStream>, Status> {
        let who = principal(&request, request.get_ref().principal.as_ref())?;
        let caller_key = switchboard_kit::auth::caller(&request)?.key_id.clone();
        let req = request.into_inner();
        validate(&req)?;
        let first = self.pick(&who, &req.model).await?;
        let chain = self.catalogue.chain(&who.0, first);
        let mut reservation = self.reserve(&who, &caller_key, &chain, &req).await?;
        // Opening the stream (with its retries and fallbacks) happens before the answer, so an
        // upstream that refuses outright is a status, not a broken stream.
        let mut opened = None;
        let mut failure = None;
        for candidate in chain {
            let (candidate, key_id) = self.with_user_key(&who, candidate).await?;
            let upstream = UpstreamCall::start(&candidate, true);
            let call = completion_request(&candidate, &who, req.clone());
            match candidate.provider.stream(&call).instrument(upstream.span.clone()).await {
                Ok(events) => {
                    opened = Some((candidate, key_id, events, upstream));
                    break;
                }
                Err(e) if falls_back(&e) => {
                    self.accounting.metrics.failed(&candidate, &upstream, &e);
                    tracing::warn!(model = %candidate.id, error = %e, "model failed; trying the next fallback");
                    failure = Some(e);
                }
                Err(e) => {
                    self.accounting.metrics.failed(&candidate, &upstream, &e);
                    return Err(LlmError::from(e).into());
                }
            }
        }
        let Some((entry, key_id, mut events, upstream)) = opened else {
            return Err(LlmError::from(failure.unwrap_or(ProviderError::Setup("no model to try".into()))).into());
        };
        let prompt_tokens: u32 = req.messages.iter().map(|m| crate::providers::estimate_tokens(&m.content)).sum();
        let so_far = TokenUsage { prompt_tokens, completion_tokens: 0 };
        let mut bill = StreamBill::new(
            self.accounting.clone(),
            who,
            caller_key,
            key_id,
            entry,
            upstream,
            reservation.take(),
            so_far,
        );
        // Polled by the response itself; dropped early (the caller left, the upstream broke),
        // the bill settles for what was produced.
        let answer = async_stream::stream! {
            let mut content = String::new();
            let mut chars = 0usize;
            while let Some(event) = events.next().await {
                match event {
                    Ok(StreamEvent::Delta(delta)) => {
                        bill.token();
                        content.push_str(&delta);
                        chars += delta.chars().count();
                        bill.so_far.completion_tokens = crate::providers::tokens_in_chars(chars);
                        yield Ok(pb::StreamCompleteResponse { event: Some(pb::stream_complete_response::Event::Delta(delta)) });
                    }
                    Ok(StreamEvent::Done { usage, finish_reason, upstream_conversation_id, upstream_message_id }) => {
                        let provider_key_id = bill.provider_key().unwrap_or_default().to_owned();
                        let account = bill.settle(usage, &finish_reason);
                        let done = pb::CompleteResponse {
                            content: std::mem::take(&mut content),
                            model: account.model,
                            provider: account.provider,
                            usage: account.usage,
                            finish_reason,
                            upstream_conversation_id,
                            upstream_message_id,
                            latency_ms: account.latency_ms,
                            cost_micros: account.cost_micros,
                            provider_key_id,
                        };
                        yield Ok(pb::StreamCompleteResponse { event: Some(pb::stream_complete_response::Event::Done(done)) });
                        break;
                    }
                    Err(e) => {
                        bill.failed(&e);
                        yield Err(Status::from(LlmError::from(e)));
                        break;
                    }
                }
            }
        };
        Ok(Response::new(Box::pin(answer)))
    }

    async fn chat_completion(
        &self,
        request: Request<pb::ChatCompletionRequest>,
    ) -> Result<Response<pb::ChatCompletionResponse>, Status> {
        Ok(Response::new(self.do_chat_completion(request).await?))
    }

    type StreamChatCompletionStream = chat_completions::Chunks<pb::ChatCompletionChunk>;

    async fn stream_chat_completion(
        &self,
        request: Request<pb::ChatCompletionRequest>,
    ) -> Result<Response<Self::StreamChatCompletionStream>, Status> {
        Ok(Response::new(self.do_stream_chat_completion(request).await?))
    }

    async fn list_upstream_conversations(
        &self,
        request: Request<pb::ListUpstreamConversationsRequest>,
    ) -> Result<Response<pb::ListUpstreamConversationsResponse>, Status> {
        let who = principal(&request, request.get_ref().principal.as_ref())?;
        let dify = self.upstream_app(&who.0)?;
        let conversations = dify.conversations(&who.0, &who.1).await.map_err(LlmError::from)?;
        Ok(Response::new(pb::ListUpstreamConversationsResponse {
            conversations: conversations
                .into_iter()
                .map(|c| pb::UpstreamConversation {
                    id: c.id,
                    name: c.name,
                    created_at: Some(seconds(c.created_at)),
                    updated_at: Some(seconds(c.updated_at.unwrap_or(c.created_at))),
                })
                .collect(),
        }))
    }

    async fn list_upstream_messages(
        &self,
        request: Request<pb::ListUpstreamMessagesRequest>,
    ) -> Result<Response<pb::ListUpstreamMessagesResponse>, Status> {
        let who = principal(&request, request.get_ref().principal.as_ref())?;
        let dify = self.upstream_app(&who.0)?;
        let conversation_id = request.get_ref().conversation_id.trim().to_owned();
        if conversation_id.is_empty() {
            return Err(LlmError::InvalidArgument { field: "conversation_id", reason: "is required".into() }.into());
        }
        let messages = dify.messages(&who.0, &who.1, &conversation_id).await.map_err(LlmError::from)?;
        Ok(Response::new(pb::ListUpstreamMessagesResponse {
            messages: messages
                .into_iter()
                .map(|m| pb::UpstreamMessage {
                    id: m.id,
                    query: m.query,
                    answer: m.answer,
                    created_at: Some(seconds(m.created_at)),
                })
                .collect(),
        }))
    }

    async fn add_provider_key(
        &self,
        request: Request<pb::AddProviderKeyRequest>,
    ) -> Result<Response<pb::AddProviderKeyResponse>, Status> {
        self.add_key(request).await
    }

    async fn list_provider_keys(
        &self,
        request: Request<pb::ListProviderKeysRequest>,
    ) -> Result<Response<pb::ListProviderKeysResponse>, Status> {
        self.list_keys(request).await
    }

    async fn delete_provider_key(
        &self,
        request: Request<pb::DeleteProviderKeyRequest>,
    ) -> Result<Response<pb::DeleteProviderKeyResponse>, Status> {
        self.delete_key(request).await
    }

    async fn get_provider_key_stats(
        &self,
        request: Request<pb::GetProviderKeyStatsRequest>,
    ) -> Result<Response<pb::GetProviderKeyStatsResponse>, Status> {
        self.key_stats(request).await
    }
}
