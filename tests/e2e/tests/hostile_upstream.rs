//! A hostile OpenAI-compatible upstream: a huge body, an endless stream, malformed JSON and
//! SSE, a stall after the headers. Switchboard must keep its memory bounded, answer a clean
//! 502/504 (or end a stream with an error event and a partial answer) and never panic or hang,
//! on both the durable turn (`POST /v1/chat`) and the pass-through (`POST /v1/chat/completions`).
//!
//! The upstream is a raw TCP server of this file's own, so it can misbehave at the byte level.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard_e2e::{SERVICE_KEY, TestApp, openai_env, spawn_app};
use switchboard_test_support::db;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789";
/// Size of the huge body: far above any cap, far below what could be allocated by accident
/// without showing in the memory figure.
const HUGE: u64 = 200 * 1024 * 1024;

/// How the upstream misbehaves on `POST /v1/chat/completions`.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// 200 with a ~200 MB JSON body (unary) or a ~200 MB SSE event (stream).
    Huge,
    /// Valid chunks for ever (stream); unary answers normally.
    Endless,
    /// `{"choices": [` and the connection closed (unary); garbage lines, a valid chunk and a
    /// `data:` that is not JSON (stream).
    Malformed,
    /// Valid chunks, then the connection closes without `[DONE]` or a finish reason.
    NoDone,
    /// The headers, then silence.
    Stall,
}

struct Hostile {
    base_url: String,
    /// Body bytes written to the wire for chat requests.
    sent: Arc<AtomicU64>,
}

async fn hostile(mode: Mode) -> Hostile {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let _ = serve(socket, mode, counter).await;
            });
        }
    });
    Hostile { base_url, sent }
}

/// Reads one request: (request line, body).
async fn read_request(socket: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok((head.lines().next().unwrap_or_default().to_owned(), body))
}

async fn write_counted(socket: &mut TcpStream, bytes: &[u8], counter: &AtomicU64) -> std::io::Result<()> {
    socket.write_all(bytes).await?;
    counter.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    Ok(())
}

fn chunk(text: &str) -> String {
    format!("data: {}\n\n", json!({"choices": [{"index": 0, "delta": {"content": text}}]}))
}

const JSON_HEAD: &str = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n";
const SSE_HEAD: &str = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";

async fn serve(mut socket: TcpStream, mode: Mode, sent: Arc<AtomicU64>) -> std::io::Result<()> {
    let (line, body) = read_request(&mut socket).await?;
    if line.starts_with("GET") && line.contains("/models") {
        let list = json!({"object": "list", "data": [{"id": "gpt-test", "object": "model", "owned_by": "hostile"}]});
        let list = list.to_string();
        let answer = format!("{JSON_HEAD}content-length: {}\r\n\r\n{list}", list.len());
        return socket.write_all(answer.as_bytes()).await;
    }
    let stream = serde_json::from_slice::<Value>(&body).ok().and_then(|b| b["stream"].as_bool()).unwrap_or(false);
    match (mode, stream) {
        (Mode::Huge, false) => {
            // A body delimited by the connection's end (no length to refuse up front).
            socket.write_all(format!("{JSON_HEAD}\r\n").as_bytes()).await?;
            write_counted(&mut socket, br#"{"choices":[{"index":0,"message":{"role":"assistant","content":""#, &sent)
                .await?;
            let filler = vec![b'a'; 64 * 1024];
            let mut written = 0;
            while written < HUGE {
                write_counted(&mut socket, &filler, &sent).await?;
                written += filler.len() as u64;
            }
            write_counted(&mut socket, br#""},"finish_reason":"stop"}]}"#, &sent).await
        }
        (Mode::Huge, true) => {
            // One event that never ends: a `data:` line of 200 MB.
            socket.write_all(SSE_HEAD.as_bytes()).await?;
            write_counted(&mut socket, br#"data: {"choices":[{"index":0,"delta":{"content":""#, &sent).await?;
            let filler = vec![b'a'; 64 * 1024];
            let mut written = 0;
            while written < HUGE {
                write_counted(&mut socket, &filler, &sent).await?;
                written += filler.len() as u64;
            }
            write_counted(&mut socket, b"\"}}]}\n\ndata: [DONE]\n\n", &sent).await
        }
        (Mode::Endless, true) => {
            socket.write_all(SSE_HEAD.as_bytes()).await?;
            let piece = chunk(&"x".repeat(16 * 1024));
            loop {
                write_counted(&mut socket, piece.as_bytes(), &sent).await?;
            }
        }
        (Mode::Malformed, false) => {
            let broken = r#"{"choices": ["#;
            let answer = format!("{JSON_HEAD}content-length: {}\r\n\r\n{broken}", broken.len());
            socket.write_all(answer.as_bytes()).await
        }
        (Mode::Malformed, true) => {
            socket.write_all(SSE_HEAD.as_bytes()).await?;
            let garbage = format!(
                "garbage line\n\u{0}\u{1}binary?\n: a comment\nevent: weird\n\n{}data: {{not json\n\n",
                chunk("ok ")
            );
            socket.write_all(garbage.as_bytes()).await?;
            // Then silence until the client goes: the bad event alone must end the stream.
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(())
        }
        (Mode::NoDone, true) => {
            socket.write_all(SSE_HEAD.as_bytes()).await?;
            socket.write_all(format!("{}{}", chunk("half an "), chunk("answer")).as_bytes()).await?;
            socket.shutdown().await
        }
        (Mode::Stall, _) => {
            let head = if stream { SSE_HEAD.to_owned() } else { format!("{JSON_HEAD}content-length: 100\r\n\r\n") };
            socket.write_all(head.as_bytes()).await?;
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(())
        }
        _ => {
            let ok = json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "gpt-test",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
            .to_string();
            let answer = format!("{JSON_HEAD}content-length: {}\r\n\r\n{ok}", ok.len());
            socket.write_all(answer.as_bytes()).await
        }
    }
}

async fn app_for(upstream: &Hostile, test_db: &db::TestDb) -> TestApp {
    let env = openai_env(&test_db.url, &upstream.base_url)
        .with("SWITCHBOARD_UPSTREAM_TIMEOUT_SECS", "2")
        .with("SWITCHBOARD_ADMIN_TOKEN", ADMIN_TOKEN);
    spawn_app(env).await
}

async fn client_key(app: &TestApp) -> String {
    let key: Value = app
        .client
        .post(format!("{}/api-keys", app.http))
        .header("X-Admin-Token", ADMIN_TOKEN)
        .json(&json!({"client_name": "hostile"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    key["api_key"].as_str().unwrap().to_owned()
}

/// `(status, body)` of a request, with the time it took; a hang fails the test.
async fn timed(call: reqwest::RequestBuilder) -> (u16, String, Duration) {
    let started = Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(12), async {
        let response = call.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_else(|e| format!("<body broke: {e}>")))
    })
    .await;
    let Ok((status, body)) = outcome else { panic!("no complete answer within 12 s") };
    (status, body, started.elapsed())
}

async fn turn(app: &TestApp, user: &str, stream: bool) -> (u16, String, Duration) {
    let body = json!({"system_id": "drillquiz", "user_id": user, "message": "hello", "stream": stream});
    timed(app.client.post(format!("{}/v1/chat", app.http)).header("X-API-Key", SERVICE_KEY).json(&body)).await
}

async fn completion(app: &TestApp, key: &str, stream: bool) -> (u16, String, Duration) {
    let body = json!({"model": "gpt-test", "messages": [{"role": "user", "content": "hello"}], "stream": stream});
    timed(app.client.post(format!("{}/v1/chat/completions", app.http)).bearer_auth(key).json(&body)).await
}

/// `(event, data)` pairs of an SSE body (data kept as text: it may not be JSON).
fn sse(body: &str) -> Vec<(String, String)> {
    body.split("\n\n")
        .filter_map(|block| {
            let mut event = String::from("message");
            let mut data = String::new();
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event:") {
                    event = e.trim().to_owned();
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim_start());
                }
            }
            (!data.is_empty()).then_some((event, data))
        })
        .collect()
}

fn short(body: &str) -> String {
    body.chars().take(400).collect()
}

/// The durable stream ended with an `error` event of `status` and the answer is stored
/// `partial` (or `failed` when nothing came) with a reason; returns the stored answer's text.
async fn assert_turn_stream_failed(app: &TestApp, user: &str, body: &str, status: u64) -> String {
    let events = sse(body);
    let (last, data) = events.last().unwrap_or_else(|| panic!("no events: {}", short(body)));
    assert_eq!(last, "error", "the stream must end with an error event: {}", short(data));
    let error: Value = serde_json::from_str(data).unwrap();
    assert_eq!(error["status"], status, "{error}");
    let start: Value = serde_json::from_str(&events[0].1).unwrap();
    let conversation = start["conversation_id"].as_str().unwrap();
    let page: Value = app
        .get(&format!("/v1/conversations/{conversation}/messages?system_id=drillquiz&user_id={user}"))
        .await
        .json()
        .await
        .unwrap();
    let answer = &page["data"][1];
    let expected = if answer["content"].as_str().unwrap_or_default().is_empty() { "failed" } else { "partial" };
    assert_eq!(answer["status"], expected, "{}", short(&answer.to_string()));
    assert!(!answer["error"].as_str().unwrap_or_default().is_empty(), "a partial answer says why");
    answer["content"].as_str().unwrap().to_owned()
}

/// The pass-through stream carried an OpenAI error object and ended with `[DONE]`.
fn assert_completion_stream_failed(body: &str) -> Value {
    let events = sse(body);
    assert_eq!(events.last().map(|e| e.1.as_str()), Some("[DONE]"), "{}", short(body));
    let error = events.iter().rev().nth(1).map(|e| e.1.clone()).unwrap_or_default();
    let error: Value =
        serde_json::from_str(&error).unwrap_or_else(|_| panic!("the last event is not an error: {}", short(&error)));
    assert!(error["error"]["message"].is_string(), "the stream must end with an error object: {error}");
    for (_, data) in &events[..events.len() - 1] {
        assert!(serde_json::from_str::<Value>(data).is_ok(), "only JSON reaches the client: {}", short(data));
    }
    error
}

/// Peak resident memory of this process (which hosts Switchboard), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// Resets the peak to the current size (Linux `clear_refs` 5), when allowed.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

const MIB: u64 = 1024 * 1024;

#[tokio::test]
async fn a_huge_body_is_cut_off_with_a_502_in_bounded_memory() {
    let upstream = hostile(Mode::Huge).await;
    let test_db = db::sqlite();
    let app = app_for(&upstream, &test_db).await;
    let key = client_key(&app).await;
    let mut figures = Vec::new();
    for path in ["/v1/chat", "/v1/chat/completions", "/v1/chat stream", "/v1/chat/completions stream"] {
        let stream = path.ends_with("stream");
        upstream.sent.store(0, Ordering::Relaxed);
        reset_peak();
        let before = peak_rss();
        let (status, body, took) = if path.starts_with("/v1/chat/completions") {
            completion(&app, &key, stream).await
        } else {
            turn(&app, &format!("huge{}", figures.len()), stream).await
        };
        let growth = peak_rss().saturating_sub(before);
        let sent = upstream.sent.load(Ordering::Relaxed);
        figures.push(format!(
            "{path}: {status} after {} ms, peak RSS +{} MiB, upstream wrote {} MiB",
            took.as_millis(),
            growth / MIB,
            sent / MIB
        ));
        println!("{}", figures.last().unwrap());
        match (path, stream) {
            (_, false) => {
                assert_eq!(status, 502, "{path}: {}", short(&body));
                assert!(!body.contains("aaaa"), "no upstream bytes in the error: {}", short(&body));
            }
            ("/v1/chat stream", true) => {
                assert_eq!(status, 200);
                assert_turn_stream_failed(&app, &format!("huge{}", figures.len() - 1), &body, 502).await;
            }
            (_, true) => {
                assert_eq!(status, 200);
                assert_completion_stream_failed(&body);
            }
        }
        assert!(growth < 64 * MIB, "{path}: peak memory grew by {} MiB for a {} MiB body", growth / MIB, HUGE / MIB);
        assert!(took < Duration::from_secs(5), "{path}: took {took:?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn an_endless_stream_is_cut_off_at_a_bound() {
    let upstream = hostile(Mode::Endless).await;
    let test_db = db::sqlite();
    let app = app_for(&upstream, &test_db).await;
    let key = client_key(&app).await;

    reset_peak();
    let before = peak_rss();
    let (status, body, took) = turn(&app, "endless", true).await;
    assert_eq!(status, 200);
    let stored = assert_turn_stream_failed(&app, "endless", &body, 502).await;
    let growth = peak_rss().saturating_sub(before);
    println!(
        "/v1/chat stream: ended after {} ms with {} KiB stored, upstream wrote {} MiB, peak RSS +{} MiB",
        took.as_millis(),
        stored.len() / 1024,
        upstream.sent.load(Ordering::Relaxed) / MIB,
        growth / MIB
    );
    assert!(!stored.is_empty() && stored.len() as u64 <= 2 * MIB, "stored {} bytes", stored.len());

    upstream.sent.store(0, Ordering::Relaxed);
    let (status, body, took) = completion(&app, &key, true).await;
    assert_eq!(status, 200);
    let error = assert_completion_stream_failed(&body);
    println!(
        "/v1/chat/completions stream: ended after {} ms, {} MiB relayed, upstream wrote {} MiB: {}",
        took.as_millis(),
        body.len() as u64 / MIB,
        upstream.sent.load(Ordering::Relaxed) / MIB,
        error["error"]["message"]
    );
    assert!((body.len() as u64) < 40 * MIB, "relayed {} bytes", body.len());
    app.stop().await;
}

#[tokio::test]
async fn malformed_json_is_an_opaque_502() {
    let upstream = hostile(Mode::Malformed).await;
    let test_db = db::sqlite();
    let app = app_for(&upstream, &test_db).await;
    let key = client_key(&app).await;
    let (status, body, took) = turn(&app, "malformed", false).await;
    println!("/v1/chat: {status} after {} ms: {}", took.as_millis(), short(&body));
    assert_eq!(status, 502, "{}", short(&body));
    let (status, body, took) = completion(&app, &key, false).await;
    println!("/v1/chat/completions: {status} after {} ms: {}", took.as_millis(), short(&body));
    assert_eq!(status, 502, "{}", short(&body));
    let error: Value = serde_json::from_str(&body).unwrap();
    assert!(error["error"]["message"].is_string(), "{error}");
    assert!(!body.contains("choices"), "the upstream's bytes are not echoed: {body}");
    app.stop().await;
}

#[tokio::test]
async fn malformed_sse_ends_the_stream_with_an_error_and_a_partial_answer() {
    let upstream = hostile(Mode::Malformed).await;
    let test_db = db::sqlite();
    let app = app_for(&upstream, &test_db).await;
    let key = client_key(&app).await;
    let (status, body, took) = turn(&app, "garbage", true).await;
    assert_eq!(status, 200);
    let stored = assert_turn_stream_failed(&app, "garbage", &body, 502).await;
    println!("/v1/chat stream: error event after {} ms, partial {stored:?}", took.as_millis());
    assert_eq!(stored, "ok ");
    let (status, body, took) = completion(&app, &key, true).await;
    assert_eq!(status, 200);
    let error = assert_completion_stream_failed(&body);
    println!("/v1/chat/completions stream: error after {} ms: {}", took.as_millis(), error["error"]["message"]);
    assert!(took < Duration::from_secs(2), "the bad event ends the stream at once, not the idle timeout: {took:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_stream_that_ends_without_done_is_an_error_not_a_hang() {
    let upstream = hostile(Mode::NoDone).await;
    let test_db = db::sqlite();
    let app = app_for(&upstream, &test_db).await;
    let key = client_key(&app).await;
    let (status, body, took) = turn(&app, "nodone", true).await;
    assert_eq!(status, 200);
    let stored = assert_turn_stream_failed(&app, "nodone", &body, 502).await;
    println!("/v1/chat stream: error event after {} ms, partial {stored:?}", took.as_millis());
    assert_eq!(stored, "half an answer");
    let (status, body, took) = completion(&app, &key, true).await;
    assert_eq!(status, 200);
    let error = assert_completion_stream_failed(&body);
    println!("/v1/chat/completions stream: error after {} ms: {}", took.as_millis(), error["error"]["message"]);
    app.stop().await;
}

#[tokio::test]
async fn a_stall_after_the_headers_is_a_504_within_the_upstream_timeout() {
    let upstream = hostile(Mode::Stall).await;
    let test_db = db::sqlite();
    let app = app_for(&upstream, &test_db).await;
    let key = client_key(&app).await;
    // The upstream timeout is 2 s; the rest is room for a loaded CI machine.
    let limit = Duration::from_millis(3500);
    let (status, body, took) = turn(&app, "stall", false).await;
    println!("/v1/chat: {status} after {} ms", took.as_millis());
    assert_eq!(status, 504, "{}", short(&body));
    assert!(took < limit, "{took:?}");
    let (status, body, took) = completion(&app, &key, false).await;
    println!("/v1/chat/completions: {status} after {} ms", took.as_millis());
    assert_eq!(status, 504, "{}", short(&body));
    assert!(took < limit, "{took:?}");
    let (status, body, took) = turn(&app, "stall-stream", true).await;
    println!("/v1/chat stream: {status}, error event after {} ms", took.as_millis());
    assert_eq!(status, 200);
    assert_turn_stream_failed(&app, "stall-stream", &body, 504).await;
    assert!(took < limit, "{took:?}");
    let (status, body, took) = completion(&app, &key, true).await;
    println!("/v1/chat/completions stream: {status}, error after {} ms", took.as_millis());
    assert_eq!(status, 200);
    let error = assert_completion_stream_failed(&body);
    assert!(took < limit, "{took:?}: {error}");
    app.stop().await;
}
