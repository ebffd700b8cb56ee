//! OpenAI-compatible chat completions (`POST {base}/chat/completions`): OpenAI itself,
//! Ollama, vLLM, llama.cpp and anything else speaking that wire format.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::{CompletionOutput, CompletionRequest, ProviderError, TokenUsage, estimate_tokens};

/// An OpenAI-compatible upstream.
#[derive(Debug, Clone)]
pub struct OpenAi {
    http: reqwest::Client,
    base_url: String,
    api_key: Option<SecretString>,
}

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    stream: bool,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'a str,
    content: &'a str,
}

#[derive(Deserialize)]
struct WireResponse {
    choices: Vec<WireChoice>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChoice {
    message: WireAnswer,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireAnswer {
    content: Option<String>,
}

#[derive(Deserialize)]
struct WireUsage {
    prompt_tokens: u32,
    completion_tokens: u32,
}

impl OpenAi {
    /// A client for `base_url` (e.g. `https://api.openai.com/v1`).
    pub fn new(base_url: String, api_key: Option<SecretString>, timeout: Duration) -> Result<Self, ProviderError> {
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| ProviderError::Setup(e.to_string()))?;
        Ok(Self { http, base_url, api_key })
    }

    /// One non-streaming completion.
    pub async fn complete(&self, request: &CompletionRequest) -> Result<CompletionOutput, ProviderError> {
        let body = WireRequest {
            model: &request.model,
            messages: request
                .messages
                .iter()
                .map(|m| WireMessage { role: m.role.as_str(), content: &m.content })
                .collect(),
            temperature: request.temperature,
            max_tokens: request.max_tokens,
            stream: false,
        };
        let mut call = self.http.post(format!("{}/chat/completions", self.base_url)).json(&body);
        if let Some(key) = &self.api_key {
            call = call.bearer_auth(key.expose_secret());
        }
        let response = call.send().await.map_err(classify)?;
        let status = response.status();
        if !status.is_success() {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_secs);
            let text = response.text().await.unwrap_or_default();
            return Err(ProviderError::Status { status: status.as_u16(), message: excerpt(&text), retry_after });
        }
        let parsed: WireResponse = response.json().await.map_err(|e| {
            if e.is_timeout() { ProviderError::Timeout } else { ProviderError::InvalidResponse(e.to_string()) }
        })?;
        let choice = parsed
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| ProviderError::InvalidResponse("no choices in the answer".into()))?;
        let content = choice.message.content.unwrap_or_default();
        let usage = parsed
            .usage
            .map(|u| TokenUsage { prompt_tokens: u.prompt_tokens, completion_tokens: u.completion_tokens })
            .unwrap_or_else(|| TokenUsage {
                prompt_tokens: request.messages.iter().map(|m| estimate_tokens(&m.content)).sum(),
                completion_tokens: estimate_tokens(&content),
            });
        Ok(CompletionOutput { content, usage, finish_reason: choice.finish_reason.unwrap_or_else(|| "stop".into()) })
    }
}

fn classify(err: reqwest::Error) -> ProviderError {
    if err.is_timeout() {
        ProviderError::Timeout
    } else if err.is_connect() {
        ProviderError::Connect(err.without_url().to_string())
    } else {
        ProviderError::InvalidResponse(err.without_url().to_string())
    }
}

/// The upstream's error, shortened to one line of at most 200 characters.
fn excerpt(text: &str) -> String {
    let message = serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| v.pointer("/error/message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_else(|| text.to_owned());
    message.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(200).collect()
}
