//! The built-in `mock` model: deterministic and offline, for trying Switchboard out and for
//! tests. It answers `mock reply #N: <last user message>`, where N counts the user messages
//! in the prompt, so a caller can see that the conversation's history went upstream.

use super::{CompletionOutput, CompletionRequest, Role, TokenUsage, estimate_tokens};

/// The mock provider.
#[derive(Debug, Clone, Default)]
pub struct Mock;

impl Mock {
    /// Answers deterministically.
    pub fn complete(&self, request: &CompletionRequest) -> CompletionOutput {
        let turns = request.messages.iter().filter(|m| m.role == Role::User).count();
        let last = request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| m.content.as_str())
            .unwrap_or_default();
        let mut content = format!("mock reply #{turns}: {last}");
        let mut finish_reason = "stop";
        if let Some(cap) = request.max_tokens {
            let words: Vec<&str> = content.split_whitespace().collect();
            if words.len() > cap as usize {
                content = words[..cap as usize].join(" ");
                finish_reason = "length";
            }
        }
        let prompt_tokens = request.messages.iter().map(|m| estimate_tokens(&m.content)).sum();
        CompletionOutput {
            usage: TokenUsage { prompt_tokens, completion_tokens: estimate_tokens(&content) },
            content,
            finish_reason: finish_reason.to_owned(),
            upstream_conversation_id: String::new(),
            upstream_message_id: String::new(),
        }
    }
}

impl Mock {
    /// The same answer, word by word.
    pub fn stream(&self, request: &CompletionRequest) -> super::EventStream {
        let out = self.complete(request);
        let mut events: Vec<Result<super::StreamEvent, super::ProviderError>> =
            out.content.split_inclusive(' ').map(|w| Ok(super::StreamEvent::Delta(w.to_owned()))).collect();
        events.push(Ok(super::StreamEvent::Done {
            usage: out.usage,
            finish_reason: out.finish_reason,
            upstream_conversation_id: String::new(),
            upstream_message_id: String::new(),
        }));
        Box::pin(futures::stream::iter(events))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::ChatMessage;

    fn request(messages: &[(Role, &str)], max_tokens: Option<u32>) -> CompletionRequest {
        CompletionRequest {
            model: "mock".into(),
            messages: messages.iter().map(|(role, c)| ChatMessage { role: *role, content: (*c).into() }).collect(),
            temperature: None,
            max_tokens,
            system_id: "default".into(),
            user_id: "u".into(),
            lang: String::new(),
            upstream_conversation_id: String::new(),
        }
    }

    #[test]
    fn mock_counts_user_turns_and_echoes_the_last_message() {
        let out = Mock.complete(&request(
            &[(Role::User, "hi"), (Role::Assistant, "mock reply #1: hi"), (Role::User, "again please")],
            None,
        ));
        assert_eq!(out.content, "mock reply #2: again please");
        assert_eq!(out.finish_reason, "stop");
        assert!(out.usage.prompt_tokens > 0 && out.usage.completion_tokens > 0);
    }

    #[test]
    fn mock_honours_max_tokens() {
        let out = Mock.complete(&request(&[(Role::User, "one two three four five")], Some(3)));
        assert_eq!(out.content, "mock reply #1:");
        assert_eq!(out.finish_reason, "length");
    }
}
