//! The hot context of conversations: the recent messages a turn sends upstream, cached so a
//! turn needs no history query. With Redis every replica shares it; without, it lives in
//! this process. An entry is trusted only while the conversation's message count matches
//! the count it was cached at, so a write elsewhere can never serve a stale context.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchboard_kit::redis::Redis;

use crate::domain::{Message, MessageStatus, Role};

/// Most conversations kept in process.
const LOCAL_CAPACITY: usize = 10_000;
/// How long a Redis entry lives unused.
const REDIS_TTL: Duration = Duration::from_secs(3600);

/// A cached context.
#[derive(Clone, Serialize, Deserialize)]
pub struct Entry {
    message_count: i64,
    messages: Vec<CachedMessage>,
}

#[derive(Clone, Serialize, Deserialize)]
struct CachedMessage {
    id: String,
    role: String,
    content: String,
    created_at: i64,
}

/// Where contexts are cached.
pub enum ContextCache {
    /// This process only.
    Local(Mutex<HashMap<String, Entry>>),
    /// Shared through Redis.
    Redis(Redis),
}

impl ContextCache {
    /// A cache in Redis when given, else in process.
    pub fn new(redis: Option<Redis>) -> Self {
        match redis {
            Some(r) => Self::Redis(r),
            None => Self::Local(Mutex::new(HashMap::new())),
        }
    }

    /// The cached context of a conversation that has `message_count` messages, if current.
    pub async fn get(&self, conversation_id: &str, message_count: i64) -> Option<Vec<Message>> {
        let entry = match self {
            Self::Local(map) => map.lock().unwrap_or_else(PoisonError::into_inner).get(conversation_id).cloned(),
            Self::Redis(redis) => {
                let raw: Option<String> = async {
                    let mut conn = redis.conn().await?;
                    redis::cmd("GET").arg(redis.key(&format!("ctx:{conversation_id}"))).query_async(&mut conn).await
                }
                .await
                .inspect_err(|e: &redis::RedisError| tracing::debug!(error = %e, "context cache unavailable"))
                .ok()
                .flatten();
                raw.and_then(|r| serde_json::from_str(&r).ok())
            }
        }?;
        (entry.message_count == message_count).then(|| {
            entry
                .messages
                .into_iter()
                .map(|m| Message {
                    id: m.id,
                    conversation_id: conversation_id.to_owned(),
                    role: Role::parse(&m.role),
                    content: m.content,
                    status: MessageStatus::Complete,
                    model: String::new(),
                    prompt_tokens: 0,
                    completion_tokens: 0,
                    error: String::new(),
                    created_at: m.created_at,
                    // Context goes upstream as text; its numbers are not needed.
                    number: 0,
                })
                .collect()
        })
    }

    /// Forgets the cached contexts of deleted conversations.
    pub async fn forget(&self, conversation_ids: &[String]) {
        if conversation_ids.is_empty() {
            return;
        }
        match self {
            Self::Local(map) => {
                let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
                for id in conversation_ids {
                    map.remove(id);
                }
            }
            Self::Redis(redis) => {
                let keys: Vec<String> = conversation_ids.iter().map(|id| redis.key(&format!("ctx:{id}"))).collect();
                let deleted = async {
                    let mut conn = redis.conn().await?;
                    redis::cmd("DEL").arg(keys).query_async::<()>(&mut conn).await
                };
                if let Err(e) = deleted.await {
                    tracing::warn!(error = %e, "cannot forget cached contexts; they expire by themselves");
                }
            }
        }
    }

    /// Caches `messages` (oldest first, at most `keep`) as the context at `message_count`.
    pub async fn put(&self, conversation_id: &str, message_count: i64, messages: &[Message], keep: usize) {
        let start = messages.len().saturating_sub(keep);
        let entry = Entry {
            message_count,
            messages: messages[start..]
                .iter()
                .map(|m| CachedMessage {
                    id: m.id.clone(),
                    role: m.role.as_str().to_owned(),
                    content: m.content.clone(),
                    created_at: m.created_at,
                })
                .collect(),
        };
        match self {
            Self::Local(map) => {
                let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
                if map.len() >= LOCAL_CAPACITY && !map.contains_key(conversation_id) {
                    map.clear();
                }
                map.insert(conversation_id.to_owned(), entry);
            }
            Self::Redis(redis) => {
                let Ok(raw) = serde_json::to_string(&entry) else { return };
                let stored = async {
                    let mut conn = redis.conn().await?;
                    redis::cmd("SET")
                        .arg(redis.key(&format!("ctx:{conversation_id}")))
                        .arg(raw)
                        .arg("EX")
                        .arg(REDIS_TTL.as_secs())
                        .query_async::<()>(&mut conn)
                        .await
                };
                if let Err(e) = stored.await {
                    tracing::debug!(error = %e, "cannot cache a context");
                }
            }
        }
    }
}
