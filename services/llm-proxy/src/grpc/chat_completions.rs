//! `ChatCompletion` and `StreamChatCompletion`: the OpenAI-compatible API passed through
//! (see [`crate::openai_compat`]), with the catalogue's aliases and fallbacks, a user's own
//! provider key, and usage counted off the request path.

use bytes::Bytes;
use futures::StreamExt;
use switchboard_proto::llm::v1 as pb;
use tonic::{Request, Status};
use tracing::Instrument as _;

use super::{LlmGrpc, falls_back, principal, usage_pb};
use crate::catalogue::ModelEntry;
use crate::error::LlmError;
use crate::openai_compat::{ChatRequest, Made, StreamTally, usage_of};
use crate::providers::{CompletionRequest, Provider, ProviderError, StreamEvent, TokenUsage};
use crate::telemetry::UpstreamCall;
use crate::usage::Completion;

/// What one answered completion cost, and who pays.
pub(super) struct Bill<'a> {
    pub(super) who: &'a (String, String),
    pub(super) key_id: &'a str,
    pub(super) provider_key: Option<&'a str>,
}

/// Where completions are counted: provider keys' usage and the usage rollups.
#[derive(Clone)]
pub(crate) struct Accounting {
    pub(crate) tally: crate::key_usage::KeyUsageTally,
    pub(crate) usage: crate::usage::UsageRollups,
    pub(crate) metrics: crate::telemetry::UpstreamMetrics,
}

impl Accounting {
    pub(super) fn account(
        &self,
        bill: &Bill<'_>,
        entry: &ModelEntry,
        usage: TokenUsage,
        call: &UpstreamCall,
        reservation: Option<crate::budgets::ledger::Reservation>,
    ) -> pb::CompletionAccount {
        let cost = entry.cost_micros(usage.prompt_tokens, usage.completion_tokens);
        self.metrics.answered(entry, call, usage, cost);
        call.answered(entry.upstream_name(), usage);
        let at = switchboard_kit::time::now_ms();
        if let Some(id) = bill.provider_key {
            self.tally.add(id, usage.prompt_tokens, usage.completion_tokens, cost, at);
        }
        self.usage.add(Completion {
            system_id: &bill.who.0,
            user_id: &bill.who.1,
            key_id: bill.key_id,
            model: &entry.id,
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            cost_micros: cost,
            priced: entry.pricing.is_some(),
            at,
        });
        let budget_warnings = reservation.as_ref().map(|r| r.warnings.clone()).unwrap_or_default();
        if let Some(reservation) = reservation {
            let used = crate::budgets::Spent {
                cost_micros: i64::try_from(cost).unwrap_or(i64::MAX),
                tokens: i64::from(usage.prompt_tokens) + i64::from(usage.completion_tokens),
            };
            // A stream dropped as the process ends is settled without a runtime left to run on:
            // its reservation then lapses with its lease.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(reservation.settle(used));
            }
        }
        pb::CompletionAccount {
            model: entry.id.clone(),
            provider: entry.provider.name().into(),
            usage: Some(usage_pb(usage)),
            cost_micros: cost,
            latency_ms: u32::try_from(call.started.elapsed().as_millis()).unwrap_or(u32::MAX),
            budget_warnings,
        }
    }
}

/// A streamed completion's bill, settled once: by the stream's last event or, when the stream
/// is dropped first (the caller went away, the upstream broke), by what it produced so far.
/// Leaving before the end must not make a completion free, nor let it slip past a budget.
pub(super) struct StreamBill {
    accounting: Accounting,
    who: (String, String),
    key_id: String,
    provider_key: Option<String>,
    entry: ModelEntry,
    upstream: UpstreamCall,
    reservation: Option<crate::budgets::ledger::Reservation>,
    /// What the stream has produced so far.
    pub(super) so_far: TokenUsage,
    settled: bool,
}

impl StreamBill {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        accounting: Accounting,
        who: (String, String),
        key_id: String,
        provider_key: Option<String>,
        entry: ModelEntry,
        upstream: UpstreamCall,
        reservation: Option<crate::budgets::ledger::Reservation>,
        so_far: TokenUsage,
    ) -> Self {
        Self { accounting, who, key_id, provider_key, entry, upstream, reservation, so_far, settled: false }
    }

    /// Notes a token (the first one is timed).
    pub(super) fn token(&mut self) {
        self.upstream.token(&self.accounting.metrics, &self.entry);
    }

    /// Counts the upstream's failure.
    pub(super) fn failed(&self, error: &ProviderError) {
        self.accounting.metrics.failed(&self.entry, &self.upstream, error);
    }

    /// The answer's end: its usage counted and its reservation settled.
    pub(super) fn settle(&mut self, usage: TokenUsage, finish_reason: &str) -> pb::CompletionAccount {
        self.settled = true;
        self.upstream.finished(finish_reason);
        let bill = Bill { who: &self.who, key_id: &self.key_id, provider_key: self.provider_key.as_deref() };
        self.accounting.account(&bill, &self.entry, usage, &self.upstream, self.reservation.take())
    }

    /// The key that paid, if the user's own.
    pub(super) fn provider_key(&self) -> Option<&str> {
        self.provider_key.as_deref()
    }
}

impl Drop for StreamBill {
    fn drop(&mut self) {
        if !self.settled {
            self.settle(self.so_far, "");
        }
    }
}

/// A streamed answer as the gRPC response polls it: no task or channel between the upstream
/// and the caller.
pub(super) type Chunks<T> = std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send>>;

impl LlmGrpc {
    fn plain_call(
        entry: &ModelEntry,
        who: &(String, String),
        req: &ChatRequest,
    ) -> Result<CompletionRequest, LlmError> {
        let mut messages = req.plain_messages(&entry.id)?;
        crate::providers::trim_to_window(&mut messages, entry.context_window, req.max_tokens.unwrap_or(1024));
        Ok(CompletionRequest {
            model: entry.upstream_name().to_owned(),
            messages,
            temperature: req.temperature(),
            max_tokens: req.max_tokens,
            system_id: who.0.clone(),
            user_id: who.1.clone(),
            lang: String::new(),
            upstream_conversation_id: String::new(),
        })
    }

    pub(super) async fn do_chat_completion(
        &self,
        request: Request<pb::ChatCompletionRequest>,
    ) -> Result<pb::ChatCompletionResponse, Status> {
        let who = principal(&request, request.get_ref().principal.as_ref())?;
        let key_id = switchboard_kit::auth::caller(&request)?.key_id.clone();
        let mut req = ChatRequest::parse(&request.get_ref().body)?;
        let first = self.pick(&who, &req.model).await?;
        let chain = self.catalogue.chain(&who.0, first);
        let mut reservation =
            self.budgets.reserve(&who, &key_id, &chain, req.prompt_estimate(), req.max_tokens).await?;
        let mut failure = None;
        for entry in chain {
            let (entry, provider_key) = self.with_user_key(&who, entry).await?;
            let upstream = UpstreamCall::start(&entry, false);
            let answered: Result<(Bytes, TokenUsage), ProviderError> = match &entry.provider {
                Provider::OpenAi(openai) => {
                    let body = req.upstream_body(entry.upstream_name(), false)?;
                    openai.complete_raw(&body).instrument(upstream.span.clone()).await.map(|answer| {
                        let usage = usage_of(&answer)
                            .unwrap_or(TokenUsage { prompt_tokens: req.prompt_estimate(), completion_tokens: 0 });
                        (answer, usage)
                    })
                }
                other => {
                    let call = Self::plain_call(&entry, &who, &req)?;
                    other.complete(&call).instrument(upstream.span.clone()).await.map(|out| {
                        (Made::new(&entry.id).completion(&out.content, &out.finish_reason, out.usage), out.usage)
                    })
                }
            };
            match answered {
                Ok((body, usage)) => {
                    let bill = Bill { who: &who, key_id: &key_id, provider_key: provider_key.as_deref() };
                    let account = self.accounting.account(&bill, &entry, usage, &upstream, reservation.take());
                    return Ok(pb::ChatCompletionResponse { body, account: Some(account) });
                }
                Err(e) if falls_back(&e) => {
                    self.accounting.metrics.failed(&entry, &upstream, &e);
                    tracing::warn!(model = %entry.id, error = %e, "model failed; trying the next fallback");
                    failure = Some(e);
                }
                Err(e) => {
                    self.accounting.metrics.failed(&entry, &upstream, &e);
                    return Err(refusal(e));
                }
            }
        }
        Err(LlmError::from(failure.unwrap_or(ProviderError::Setup("no model to try".into()))).into())
    }

    pub(super) async fn do_stream_chat_completion(
        &self,
        request: Request<pb::ChatCompletionRequest>,
    ) -> Result<Chunks<pb::ChatCompletionChunk>, Status> {
        let who = principal(&request, request.get_ref().principal.as_ref())?;
        let key_id = switchboard_kit::auth::caller(&request)?.key_id.clone();
        let mut req = ChatRequest::parse(&request.get_ref().body)?;
        let first = self.pick(&who, &req.model).await?;
        let chain = self.catalogue.chain(&who.0, first);
        let reservation = self.budgets.reserve(&who, &key_id, &chain, req.prompt_estimate(), req.max_tokens).await?;
        // Opening (with retries and fallbacks) comes before the first chunk, so an upstream
        // that refuses outright is a status, not a broken stream.
        let mut opened = None;
        let mut failure = None;
        for entry in chain {
            let (entry, provider_key) = self.with_user_key(&who, entry).await?;
            let upstream = UpstreamCall::start(&entry, true);
            let outcome = match &entry.provider {
                Provider::OpenAi(openai) => {
                    let body = req.upstream_body(entry.upstream_name(), true)?;
                    openai.stream_raw(&body).instrument(upstream.span.clone()).await.map(Opened::Raw)
                }
                other => {
                    let call = Self::plain_call(&entry, &who, &req)?;
                    other.stream(&call).instrument(upstream.span.clone()).await.map(Opened::Made)
                }
            };
            match outcome {
                Ok(events) => {
                    opened = Some((entry, provider_key, events, upstream));
                    break;
                }
                Err(e) if falls_back(&e) => {
                    self.accounting.metrics.failed(&entry, &upstream, &e);
                    tracing::warn!(model = %entry.id, error = %e, "model failed; trying the next fallback");
                    failure = Some(e);
                }
                Err(e) => {
                    self.accounting.metrics.failed(&entry, &upstream, &e);
                    return Err(refusal(e));
                }
            }
        }
        let Some((entry, provider_key, events, upstream)) = opened else {
            return Err(LlmError::from(failure.unwrap_or(ProviderError::Setup("no model to try".into()))).into());
        };
        let tally = StreamTally::new(&req);
        let so_far = tally.usage();
        let bill =
            StreamBill::new(self.accounting.clone(), who, key_id, provider_key, entry, upstream, reservation, so_far);
        Ok(Box::pin(passed_on(events, tally, bill)))
    }
}

/// The caller's chunks from an opened stream, ending with the completion's account. Dropped
/// early, the bill settles for what was produced.
fn passed_on(
    events: Opened,
    mut tally: StreamTally,
    mut bill: StreamBill,
) -> impl futures::Stream<Item = Result<pb::ChatCompletionChunk, Status>> + Send {
    let data = |data: String| pb::ChatCompletionChunk {
        event: Some(pb::chat_completion_chunk::Event::Data(Bytes::from(data))),
    };
    async_stream::stream! {
        let (usage, finish_reason) = match events {
            Opened::Raw(mut chunks) => loop {
                match chunks.next().await {
                    Some(Ok(chunk)) => {
                        bill.token();
                        let passed = tally.observe(&chunk);
                        bill.so_far = tally.usage();
                        if passed {
                            yield Ok(data(chunk));
                        }
                    }
                    Some(Err(e)) => {
                        bill.failed(&e);
                        yield Err(Status::from(LlmError::from(e)));
                        break (tally.usage(), String::new());
                    }
                    None => break (tally.usage(), String::new()),
                }
            },
            Opened::Made(mut events) => {
                let made = Made::new(&bill.entry.id);
                let mut first = true;
                loop {
                    match events.next().await {
                        Some(Ok(StreamEvent::Delta(text))) => {
                            bill.token();
                            bill.so_far.completion_tokens = bill
                                .so_far
                                .completion_tokens
                                .saturating_add(crate::providers::estimate_tokens(&text));
                            yield Ok(data(made.chunk(Some(&text), first, None)));
                            first = false;
                        }
                        Some(Ok(StreamEvent::Done { usage, finish_reason, .. })) => {
                            bill.so_far = usage;
                            yield Ok(data(made.chunk(None, first, Some(&finish_reason))));
                            if tally.wants_usage() {
                                yield Ok(data(made.usage_chunk(usage)));
                            }
                            break (usage, finish_reason);
                        }
                        Some(Err(e)) => {
                            bill.failed(&e);
                            yield Err(Status::from(LlmError::from(e)));
                            break (bill.so_far, String::new());
                        }
                        None => break (bill.so_far, String::new()),
                    }
                }
            }
        };
        let account = bill.settle(usage, &finish_reason);
        yield Ok(pb::ChatCompletionChunk { event: Some(pb::chat_completion_chunk::Event::Done(account)) });
    }
}

/// A stream as opened: passed through, or made here from another provider's events.
enum Opened {
    Raw(crate::providers::RawStream),
    Made(crate::providers::EventStream),
}

/// An upstream's refusal of the request itself (400, 404, 422: a bad tool schema, an unknown
/// parameter) is the client's error and says so; anything else is the upstream's failure.
fn refusal(error: ProviderError) -> Status {
    match &error {
        ProviderError::Status { status: 400 | 404 | 413 | 422, message, .. } => {
            Status::invalid_argument(format!("the model upstream refused the request: {message}"))
        }
        _ => LlmError::from(error).into(),
    }
}
