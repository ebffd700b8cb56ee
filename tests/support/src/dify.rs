//! A mock Dify server: chat apps' `POST /v1/chat-messages` (blocking and streaming),
//! `GET /v1/conversations` and `GET /v1/messages`, keeping conversations per user as Dify does.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::oneshot;

#[derive(Clone)]
struct Exchange {
    id: String,
    query: String,
    answer: String,
    created_at: i64,
}

#[derive(Clone)]
struct Conversation {
    id: String,
    user: String,
    name: String,
    created_at: i64,
    exchanges: Vec<Exchange>,
}

struct Shared {
    api_key: String,
    next: AtomicUsize,
    conversations: Mutex<Vec<Conversation>>,
    requests: Mutex<Vec<Value>>,
}

impl Shared {
    fn id(&self, kind: &str) -> String {
        format!("dify-{kind}-{}", self.next.fetch_add(1, Ordering::SeqCst))
    }

    /// A clock that only moves forward, one second per event, so orders are unambiguous.
    fn tick(&self) -> i64 {
        1_700_000_000 + self.next.fetch_add(1, Ordering::SeqCst) as i64
    }

    fn conversations(&self) -> std::sync::MutexGuard<'_, Vec<Conversation>> {
        self.conversations.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running mock Dify app; stops when dropped.
pub struct MockDify {
    addr: std::net::SocketAddr,
    shared: Arc<Shared>,
    _stop: oneshot::Sender<()>,
}

impl MockDify {
    /// Starts an app answering to `api_key`.
    pub async fn start(api_key: &str) -> Self {
        let shared = Arc::new(Shared {
            api_key: api_key.to_owned(),
            next: AtomicUsize::new(1),
            conversations: Mutex::new(Vec::new()),
            requests: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/v1/chat-messages", post(chat))
            .route("/v1/conversations", get(conversations))
            .route("/v1/messages", get(messages))
            .with_state(shared.clone());
        let (addr, stop) = crate::serve(app, "mock Dify").await;
        Self { addr, shared, _stop: stop }
    }

    /// Dify's address as an operator would configure it (`DIFY_BASE_URL`), without `/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Bodies of the chat-message calls received, in order.
    pub fn requests(&self) -> Vec<Value> {
        self.shared.requests.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// A conversation made outside Switchboard (in Dify's own UI), with its exchanges.
    pub fn seed(&self, user: &str, name: &str, exchanges: &[(&str, &str)]) -> String {
        let id = self.shared.id("conv");
        let created_at = self.shared.tick();
        let exchanges = exchanges
            .iter()
            .map(|(q, a)| Exchange {
                id: self.shared.id("msg"),
                query: (*q).to_owned(),
                answer: (*a).to_owned(),
                created_at: self.shared.tick(),
            })
            .collect();
        self.shared.conversations().push(Conversation {
            id: id.clone(),
            user: user.to_owned(),
            name: name.to_owned(),
            created_at,
            exchanges,
        });
        id
    }

    /// Adds an exchange to an existing conversation (as if the user chatted in Dify).
    pub fn add_exchange(&self, conversation_id: &str, query: &str, answer: &str) {
        let exchange = Exchange {
            id: self.shared.id("msg"),
            query: query.to_owned(),
            answer: answer.to_owned(),
            created_at: self.shared.tick(),
        };
        if let Some(c) = self.shared.conversations().iter_mut().find(|c| c.id == conversation_id) {
            c.exchanges.push(exchange);
        }
    }
}

fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {}", shared.api_key))
}

fn dify_error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"code": code, "message": message, "status": status.as_u16()}))).into_response()
}

async fn chat(State(shared): State<Arc<Shared>>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if !authorized(&shared, &headers) {
        return dify_error(StatusCode::UNAUTHORIZED, "unauthorized", "Access token is invalid");
    }
    shared.requests.lock().unwrap_or_else(PoisonError::into_inner).push(body.clone());
    let user = body["user"].as_str().unwrap_or_default().to_owned();
    let query = body["query"].as_str().unwrap_or_default().to_owned();
    if user.is_empty() || query.is_empty() {
        return dify_error(StatusCode::BAD_REQUEST, "invalid_param", "user and query are required");
    }
    let mut answer = format!("dify reply to: {query}");
    if let Some(lang) = body["inputs"]["language"].as_str() {
        answer.push_str(&format!(" [{lang}]"));
    }
    let requested = body["conversation_id"].as_str().unwrap_or_default().to_owned();
    let exchange =
        Exchange { id: shared.id("msg"), query: query.clone(), answer: answer.clone(), created_at: shared.tick() };
    let conversation_id = {
        let mut conversations = shared.conversations();
        if requested.is_empty() {
            let id = shared.id("conv");
            conversations.push(Conversation {
                id: id.clone(),
                user: user.clone(),
                name: query.chars().take(20).collect(),
                created_at: exchange.created_at,
                exchanges: vec![exchange.clone()],
            });
            id
        } else {
            match conversations.iter_mut().find(|c| c.id == requested && c.user == user) {
                Some(c) => {
                    c.exchanges.push(exchange.clone());
                    c.id.clone()
                }
                None => return dify_error(StatusCode::NOT_FOUND, "not_found", "Conversation Not Exists."),
            }
        }
    };
    let usage = json!({"prompt_tokens": query.split_whitespace().count(), "completion_tokens": answer.split_whitespace().count(),
                       "total_tokens": query.split_whitespace().count() + answer.split_whitespace().count()});
    if body["response_mode"] == "streaming" {
        let mut frames: Vec<Result<String, std::io::Error>> = answer
            .split_inclusive(' ')
            .map(|w| {
                let e = json!({"event": "message", "conversation_id": conversation_id, "message_id": exchange.id, "answer": w});
                Ok(format!("data: {e}\n\n"))
            })
            .collect();
        frames.insert(0, Ok("event: ping\n\n".to_owned()));
        let end = json!({"event": "message_end", "conversation_id": conversation_id, "message_id": exchange.id,
                         "metadata": {"usage": usage}});
        frames.push(Ok(format!("data: {end}\n\n")));
        return Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .body(Body::from_stream(futures::stream::iter(frames)))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
    }
    Json(json!({
        "event": "message", "message_id": exchange.id, "conversation_id": conversation_id, "mode": "chat",
        "answer": answer, "metadata": {"usage": usage}, "created_at": exchange.created_at
    }))
    .into_response()
}

#[derive(Deserialize)]
struct ListQuery {
    user: String,
    limit: Option<usize>,
    last_id: Option<String>,
    first_id: Option<String>,
    conversation_id: Option<String>,
}

async fn conversations(State(shared): State<Arc<Shared>>, headers: HeaderMap, Query(q): Query<ListQuery>) -> Response {
    if !authorized(&shared, &headers) {
        return dify_error(StatusCode::UNAUTHORIZED, "unauthorized", "Access token is invalid");
    }
    let limit = q.limit.unwrap_or(20).clamp(1, 100);
    let mut mine: Vec<Conversation> = shared.conversations().iter().filter(|c| c.user == q.user).cloned().collect();
    mine.sort_by_key(|c| std::cmp::Reverse(c.created_at));
    let start = q.last_id.and_then(|last| mine.iter().position(|c| c.id == last).map(|i| i + 1)).unwrap_or(0);
    let page: Vec<Value> = mine
        .iter()
        .skip(start)
        .take(limit)
        .map(|c| {
            let updated = c.exchanges.last().map_or(c.created_at, |e| e.created_at);
            json!({"id": c.id, "name": c.name, "inputs": {}, "status": "normal", "introduction": "",
                   "created_at": c.created_at, "updated_at": updated})
        })
        .collect();
    let has_more = start + page.len() < mine.len();
    Json(json!({"limit": limit, "has_more": has_more, "data": page})).into_response()
}

async fn messages(State(shared): State<Arc<Shared>>, headers: HeaderMap, Query(q): Query<ListQuery>) -> Response {
    if !authorized(&shared, &headers) {
        return dify_error(StatusCode::UNAUTHORIZED, "unauthorized", "Access token is invalid");
    }
    let limit = q.limit.unwrap_or(20).clamp(1, 100);
    let conversations = shared.conversations();
    let Some(c) = conversations.iter().find(|c| Some(&c.id) == q.conversation_id.as_ref() && c.user == q.user) else {
        return dify_error(StatusCode::NOT_FOUND, "not_found", "Conversation Not Exists.");
    };
    // Newest page first; `first_id` asks for the page before that message.
    let end = q.first_id.and_then(|first| c.exchanges.iter().position(|e| e.id == first)).unwrap_or(c.exchanges.len());
    let start = end.saturating_sub(limit);
    let page: Vec<Value> = c.exchanges[start..end]
        .iter()
        .map(|e| {
            json!({"id": e.id, "conversation_id": c.id, "inputs": {}, "query": e.query, "answer": e.answer,
                        "message_files": [], "feedback": null, "retriever_resources": [], "created_at": e.created_at})
        })
        .collect();
    Json(json!({"limit": limit, "has_more": start > 0, "data": page})).into_response()
}
