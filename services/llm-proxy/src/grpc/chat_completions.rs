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
            tokio::spawn(reservation.settle(used));
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
    ) -> Result<tokio_stream::wrappers::ReceiverStream<Result<pb::ChatCompletionChunk, Status>>, Status> {
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
        let Some((entry, provider_key, events, mut upstream)) = opened else {
            return Err(LlmError::from(failure.unwrap_or(ProviderError::Setup("no model to try".into()))).into());
        };
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let this = self.accounting.clone();
        let mut tally = StreamTally::new(&req);
        tokio::spawn(async move {
            let send = |data: String| pb::ChatCompletionChunk {
                event: Some(pb::chat_completion_chunk::Event::Data(Bytes::from(data))),
            };
            // A stream that ends early (the caller went away, the upstream broke) is still
            // counted, by what it produced so far: leaving before the end must not make a
            // completion free, nor let it slip past a budget.
            let usage = match events {
                Opened::Raw(mut chunks) => loop {
                    match chunks.next().await {
                        Some(Ok(data)) => {
                            upstream.token(&this.metrics, &entry);
                            if tally.observe(&data) && tx.send(Ok(send(data))).await.is_err() {
                                // The caller went away: dropping the stream closes the upstream call.
                                break tally.usage();
                            }
                        }
                        Some(Err(e)) => {
                            this.metrics.failed(&entry, &upstream, &e);
                            let _ = tx.send(Err(Status::from(LlmError::from(e)))).await;
                            break tally.usage();
                        }
                        None => break tally.usage(),
                    }
                },
                Opened::Made(mut events) => {
                    let made = Made::new(&entry.id);
                    let mut first = true;
                    let mut so_far = tally.usage();
                    loop {
                        match events.next().await {
                            Some(Ok(StreamEvent::Delta(text))) => {
                                upstream.token(&this.metrics, &entry);
                                so_far.completion_tokens =
                                    so_far.completion_tokens.saturating_add(crate::providers::estimate_tokens(&text));
                                if tx.send(Ok(send(made.chunk(Some(&text), first, None)))).await.is_err() {
                                    break so_far;
                                }
                                first = false;
                            }
                            Some(Ok(StreamEvent::Done { usage, finish_reason, .. })) => {
                                let _ = tx.send(Ok(send(made.chunk(None, first, Some(&finish_reason))))).await;
                                if tally.wants_usage() {
                                    let _ = tx.send(Ok(send(made.usage_chunk(usage)))).await;
                                }
                                break usage;
                            }
                            Some(Err(e)) => {
                                this.metrics.failed(&entry, &upstream, &e);
                                let _ = tx.send(Err(Status::from(LlmError::from(e)))).await;
                                break so_far;
                            }
                            None => break so_far,
                        }
                    }
                }
            };
            let bill = Bill { who: &who, key_id: &key_id, provider_key: provider_key.as_deref() };
            let account = this.account(&bill, &entry, usage, &upstream, reservation);
            let _ = tx
                .send(Ok(pb::ChatCompletionChunk { event: Some(pb::chat_completion_chunk::Event::Done(account)) }))
                .await;
        });
        Ok(tokio_stream::wrappers::ReceiverStream::new(rx))
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
