//! Dify chat apps (seed 003): `POST /v1/chat-messages` blocking and streaming, with
//! `user = {system_id}_{user_id}` and `inputs.language` from the turn's language. Dify keeps
//! each conversation's history itself, so a turn sends only the new message and the Dify
//! conversation id. A tenant with an app of its own (`DIFY_<SYSTEM>_BASE_URL` /
//! `DIFY_<SYSTEM>_API_KEY`) is routed there; the others use `DIFY_BASE_URL` / `DIFY_API_KEY`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;

use super::openai::{
    IDLE_TIMEOUT, MAX_BODY_BYTES, MAX_STREAM_TEXT, broken, guarded, http_client, read_capped, send_checked,
};
use super::{
    CompletionOutput, CompletionRequest, EventStream, ProviderError, Role, StreamEvent, TokenUsage, estimate_tokens,
};
use crate::resilience::{Breaker, EJECT_AFTER, EJECT_FOR, RetryBudget, RetryPolicy};

/// One Dify app.
#[derive(Debug, Clone)]
pub struct DifyApp {
    /// API base, ending in `/v1`.
    pub base_url: String,
    /// The app's API key (`app-…`).
    pub api_key: SecretString,
}

/// Dify apps by tenant.
#[derive(Debug, Clone, Default)]
pub struct DifyApps {
    /// The app of tenants without one of their own.
    pub common: Option<DifyApp>,
    /// Apps of particular tenants, by lower-case `system_id`.
    pub by_system: HashMap<String, DifyApp>,
}

impl DifyApps {
    /// Whether any app is configured.
    pub fn is_empty(&self) -> bool {
        self.common.is_none() && self.by_system.is_empty()
    }

    /// The app serving `system_id`.
    pub fn for_system(&self, system_id: &str) -> Option<&DifyApp> {
        self.by_system.get(&system_id.to_ascii_lowercase()).or(self.common.as_ref())
    }
}

/// A conversation as Dify lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct DifyConversation {
    /// Dify's id.
    pub id: String,
    /// Its name.
    #[serde(default)]
    pub name: String,
    /// Unix seconds.
    #[serde(default)]
    pub created_at: i64,
    /// Unix seconds.
    #[serde(default)]
    pub updated_at: Option<i64>,
}

/// One exchange as Dify lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct DifyMessage {
    /// Dify's id.
    pub id: String,
    /// The user's query.
    #[serde(default)]
    pub query: String,
    /// The app's answer.
    #[serde(default)]
    pub answer: String,
    /// Unix seconds.
    #[serde(default)]
    pub created_at: i64,
}

#[derive(Deserialize)]
struct Page<T> {
    data: Vec<T>,
    #[serde(default)]
    has_more: bool,
}

#[derive(Deserialize)]
struct BlockingAnswer {
    answer: String,
    conversation_id: String,
    #[serde(default)]
    message_id: String,
    #[serde(default)]
    metadata: Option<Metadata>,
}

#[derive(Deserialize, Default)]
struct Metadata {
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Usage {
    prompt_tokens: u32,
    completion_tokens: u32,
}

#[derive(Deserialize)]
struct StreamChunk {
    event: String,
    #[serde(default)]
    answer: Option<String>,
    #[serde(default)]
    conversation_id: Option<String>,
    #[serde(default)]
    message_id: Option<String>,
    #[serde(default)]
    metadata: Option<Metadata>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    status: Option<u16>,
}

/// Most pages read from a listing, so that one user cannot make a sync endless.
const MAX_PAGES: usize = 50;

/// The Dify provider.
#[derive(Debug, Clone)]
pub struct Dify {
    http: reqwest::Client,
    apps: Arc<DifyApps>,
    retry: RetryPolicy,
    budget: Arc<RetryBudget>,
    /// One breaker per app (by base URL): one tenant's failing app ejects only itself.
    breakers: Arc<HashMap<String, Breaker>>,
    timeout: Duration,
}

impl Dify {
    /// The breaker of the app serving `system_id`.
    pub fn breaker(&self, system_id: &str) -> Option<&Breaker> {
        self.apps.for_system(system_id).and_then(|app| self.breakers.get(&app.base_url))
    }

    /// A provider for `apps`.
    pub fn new(apps: DifyApps, timeout: Duration, retry: RetryPolicy) -> Result<Self, ProviderError> {
        let breakers = apps
            .common
            .iter()
            .chain(apps.by_system.values())
            .map(|app| (app.base_url.clone(), Breaker::new("dify", EJECT_AFTER, EJECT_FOR)))
            .collect();
        Ok(Self {
            http: http_client()?,
            apps: Arc::new(apps),
            retry,
            budget: Arc::new(RetryBudget::default()),
            breakers: Arc::new(breakers),
            timeout,
        })
    }

    fn app(&self, system_id: &str) -> Result<&DifyApp, ProviderError> {
        self.apps
            .for_system(system_id)
            .ok_or_else(|| ProviderError::Setup(format!("no Dify app serves system_id {system_id:?}")))
    }

    /// Whether a tenant has a Dify app.
    pub fn serves(&self, system_id: &str) -> bool {
        self.apps.for_system(system_id).is_some()
    }

    fn body(request: &CompletionRequest, streaming: bool) -> serde_json::Value {
        let query = request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| m.content.as_str())
            .unwrap_or_default();
        let mut inputs = serde_json::Map::new();
        if !request.lang.is_empty() {
            inputs.insert("language".into(), request.lang.clone().into());
        }
        json!({
            "inputs": inputs,
            "query": query,
            "response_mode": if streaming { "streaming" } else { "blocking" },
            "conversation_id": request.upstream_conversation_id,
            "user": dify_user(&request.system_id, &request.user_id),
        })
    }

    async fn send(&self, request: &CompletionRequest, streaming: bool) -> Result<reqwest::Response, ProviderError> {
        let app = self.app(&request.system_id)?;
        let mut call = self
            .http
            .post(format!("{}/chat-messages", app.base_url))
            .bearer_auth(app.api_key.expose_secret())
            .json(&Self::body(request, streaming));
        if !streaming {
            call = call.timeout(self.timeout);
        }
        send_checked(call, self.timeout).await
    }

    /// A blocking turn.
    pub async fn complete(&self, request: &CompletionRequest) -> Result<CompletionOutput, ProviderError> {
        let response = self.retry.run(&self.budget, "dify", || self.send(request, false)).await?;
        let body = read_capped(response, MAX_BODY_BYTES).await?;
        let answer: BlockingAnswer =
            serde_json::from_slice(&body).map_err(|e| ProviderError::InvalidResponse(format!("Dify answer: {e}")))?;
        let usage = answer.metadata.and_then(|m| m.usage).map_or_else(
            || TokenUsage {
                prompt_tokens: prompt_estimate(request),
                completion_tokens: estimate_tokens(&answer.answer),
            },
            |u| TokenUsage { prompt_tokens: u.prompt_tokens, completion_tokens: u.completion_tokens },
        );
        Ok(CompletionOutput {
            content: answer.answer,
            usage,
            finish_reason: "stop".into(),
            upstream_conversation_id: answer.conversation_id,
            upstream_message_id: answer.message_id,
        })
    }

    /// A streaming turn: Dify's `message`/`agent_message` events become deltas,
    /// `message_end` the end, `error` a failure.
    pub async fn stream(&self, request: &CompletionRequest) -> Result<EventStream, ProviderError> {
        use eventsource_stream::Eventsource;
        use futures::StreamExt;

        let response = self.retry.run(&self.budget, "dify", || self.send(request, true)).await?;
        let prompt = prompt_estimate(request);
        let idle = IDLE_TIMEOUT.min(self.timeout);
        let mut events = guarded(response).eventsource();
        Ok(Box::pin(async_stream::try_stream! {
            let mut conversation_id = String::new();
            let mut message_id = String::new();
            let mut completion = 0u32;
            let mut text_len = 0usize;
            loop {
                let event = match tokio::time::timeout(idle, events.next()).await {
                    Err(_) => Err(ProviderError::Timeout)?,
                    Ok(None) => Err(ProviderError::InvalidResponse("the Dify stream ended before message_end".into()))?,
                    Ok(Some(Err(e))) => Err(broken(e))?,
                    Ok(Some(Ok(event))) => event,
                };
                if event.data.trim().is_empty() {
                    continue;
                }
                let chunk: StreamChunk = serde_json::from_str(&event.data)
                    .map_err(|e| ProviderError::InvalidResponse(format!("unreadable Dify event: {e}")))?;
                if let Some(id) = chunk.conversation_id.filter(|id| !id.is_empty()) {
                    conversation_id = id;
                }
                if let Some(id) = chunk.message_id.filter(|id| !id.is_empty()) {
                    message_id = id;
                }
                match chunk.event.as_str() {
                    "message" | "agent_message" => {
                        if let Some(delta) = chunk.answer.filter(|a| !a.is_empty()) {
                            text_len += delta.len();
                            if text_len > MAX_STREAM_TEXT {
                                Err(ProviderError::InvalidResponse(format!(
                                    "the answer passed {} KiB of text; cut off",
                                    MAX_STREAM_TEXT / 1024
                                )))?;
                            }
                            completion += estimate_tokens(&delta);
                            yield StreamEvent::Delta(delta);
                        }
                    }
                    "message_end" => {
                        let usage = chunk.metadata.and_then(|m| m.usage).map_or(
                            TokenUsage { prompt_tokens: prompt, completion_tokens: completion },
                            |u| TokenUsage { prompt_tokens: u.prompt_tokens, completion_tokens: u.completion_tokens },
                        );
                        yield StreamEvent::Done {
                            usage,
                            finish_reason: "stop".into(),
                            upstream_conversation_id: conversation_id.clone(),
                            upstream_message_id: message_id.clone(),
                        };
                        break;
                    }
                    "error" => Err(ProviderError::Status {
                        status: chunk.status.unwrap_or(502),
                        message: chunk.message.unwrap_or_else(|| "Dify reported an error".into()),
                        retry_after: None,
                    })?,
                    _ => {}
                }
            }
        }))
    }

    async fn get_pages<T: for<'de> Deserialize<'de>>(
        &self,
        system_id: &str,
        path: &str,
        query: &[(&str, String)],
        cursor_param: &str,
        cursor_at_start: bool,
        cursor_of: impl Fn(&T) -> String,
    ) -> Result<Vec<T>, ProviderError> {
        let app = self.app(system_id)?;
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut params: Vec<(&str, String)> = query.to_vec();
            params.push(("limit", "100".into()));
            if let Some(c) = &cursor {
                params.push((cursor_param, c.clone()));
            }
            let call = self
                .http
                .get(format!("{}/{path}", app.base_url))
                .bearer_auth(app.api_key.expose_secret())
                .query(&params)
                .timeout(self.timeout);
            let body = read_capped(send_checked(call, self.timeout).await?, MAX_BODY_BYTES).await?;
            let page: Page<T> = serde_json::from_slice(&body)
                .map_err(|e| ProviderError::InvalidResponse(format!("Dify {path}: {e}")))?;
            let more = page.has_more && !page.data.is_empty();
            let edge = if cursor_at_start { page.data.first() } else { page.data.last() };
            cursor = edge.map(&cursor_of);
            items.extend(page.data);
            if !more {
                break;
            }
        }
        Ok(items)
    }

    /// Every conversation of a user, newest first.
    pub async fn conversations(&self, system_id: &str, user_id: &str) -> Result<Vec<DifyConversation>, ProviderError> {
        let user = dify_user(system_id, user_id);
        self.get_pages(system_id, "conversations", &[("user", user)], "last_id", false, |c: &DifyConversation| {
            c.id.clone()
        })
        .await
    }

    /// Every exchange of one conversation, oldest first.
    pub async fn messages(
        &self,
        system_id: &str,
        user_id: &str,
        conversation_id: &str,
    ) -> Result<Vec<DifyMessage>, ProviderError> {
        let user = dify_user(system_id, user_id);
        let query = [("user", user), ("conversation_id", conversation_id.to_owned())];
        // Dify pages backwards from the newest, each page oldest first: `first_id` (the oldest
        // of a page) asks for the ones before it.
        let mut messages =
            self.get_pages(system_id, "messages", &query, "first_id", true, |m: &DifyMessage| m.id.clone()).await?;
        messages.sort_by_key(|m| m.created_at);
        messages.dedup_by(|a, b| a.id == b.id);
        Ok(messages)
    }
}

/// The Dify `user` of a principal: `{system_id}_{user_id}` as seed 003 documents it, with any
/// `_` inside the tenant written `%5F` (and `%` as `%25`), so the first `_` always ends the
/// tenant and no two principals share a Dify user. Tenants without `_` or `%` (all of seed
/// 003's) keep exactly the documented form, and with it their Dify history.
pub fn dify_user(system_id: &str, user_id: &str) -> String {
    let tenant = system_id.replace('%', "%25").replace('_', "%5F");
    format!("{tenant}_{user_id}")
}

fn prompt_estimate(request: &CompletionRequest) -> u32 {
    request.messages.iter().rev().find(|m| m.role == Role::User).map_or(0, |m| estimate_tokens(&m.content))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dify_users_of_two_principals_never_collide() {
        assert_eq!(dify_user("drillquiz", "12345"), "drillquiz_12345", "seed 003's documented form is kept");
        // Before, both of these were "a_b_c": two users shared one Dify history.
        assert_ne!(dify_user("a_b", "c"), dify_user("a", "b_c"));
        assert_ne!(dify_user("a%5Fb", "c"), dify_user("a_b", "c"));
        assert_ne!(dify_user("x", "y:z"), dify_user("x_y", "z"));
    }

    #[test]
    fn each_app_has_a_breaker_of_its_own() {
        let app = |url: &str| DifyApp { base_url: url.into(), api_key: SecretString::from("app-x") };
        let mut apps = DifyApps { common: Some(app("http://common/v1")), by_system: HashMap::new() };
        apps.by_system.insert("cointutor".into(), app("http://coin/v1"));
        let dify = Dify::new(apps, Duration::from_secs(1), RetryPolicy::default()).unwrap();
        let common = dify.breaker("drillquiz").unwrap() as *const Breaker;
        let coin = dify.breaker("CoinTutor").unwrap() as *const Breaker;
        assert_ne!(common, coin);
        assert_eq!(common, dify.breaker("other").unwrap() as *const Breaker);
    }
}
