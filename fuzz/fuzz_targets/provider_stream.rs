//! The providers' streaming paths end to end: `OpenAi::stream`, `OpenAi::stream_raw` and
//! `Dify::stream` against a loopback upstream that answers `200 text/event-stream` with the
//! fuzz input as its body (sent in chunks cut where the input says). This reaches the byte
//! guards, the SSE adaptor, the chunk JSON structs and the stream loops as they run in
//! production. Never panics; a finished stream ends with exactly one `Done`.
#![no_main]

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use libfuzzer_sys::fuzz_target;
use secrecy::SecretString;
use switchboard_llm_proxy::providers::dify::{Dify, DifyApp, DifyApps};
use switchboard_llm_proxy::providers::openai::OpenAi;
use switchboard_llm_proxy::providers::{ChatMessage, CompletionRequest, Role, StreamEvent};
use switchboard_llm_proxy::resilience::RetryPolicy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Harness {
    runtime: tokio::runtime::Runtime,
    /// The body the upstream answers with next, in chunks.
    body: Arc<Mutex<Vec<Vec<u8>>>>,
    openai: OpenAi,
    dify: Dify,
}

/// Serves one connection: every request (head, then a `content-length` body) gets the
/// current chunks, chunk-encoded.
async fn serve(mut socket: tokio::net::TcpStream, body: Arc<Mutex<Vec<Vec<u8>>>>) -> std::io::Result<()> {
    // Each chunk its own segment, with no wait for an ACK (Nagle).
    socket.set_nodelay(true)?;
    let mut buffer = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut block = [0u8; 4096];
            let n = socket.read(&mut block).await?;
            if n == 0 {
                return Ok(());
            }
            buffer.extend_from_slice(&block[..n]);
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        while buffer.len() < head_end + length {
            let mut block = [0u8; 4096];
            let n = socket.read(&mut block).await?;
            if n == 0 {
                return Ok(());
            }
            buffer.extend_from_slice(&block[..n]);
        }
        buffer.drain(..head_end + length);
        let chunks = body.lock().map(|b| b.clone()).unwrap_or_default();
        socket
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            .await?;
        for chunk in chunks.iter().filter(|c| !c.is_empty()) {
            let mut frame = format!("{:x}\r\n", chunk.len()).into_bytes();
            frame.extend_from_slice(chunk);
            frame.extend_from_slice(b"\r\n");
            socket.write_all(&frame).await?;
            socket.flush().await?;
        }
        socket.write_all(b"0\r\n\r\n").await?;
    }
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(e) => panic!("no runtime: {e}"),
        };
        let body = Arc::new(Mutex::new(Vec::new()));
        let listener = match runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")) {
            Ok(listener) => listener,
            Err(e) => panic!("cannot bind: {e}"),
        };
        let addr = match listener.local_addr() {
            Ok(addr) => addr,
            Err(e) => panic!("no address: {e}"),
        };
        let served = body.clone();
        runtime.spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve(socket, served.clone()));
            }
        });
        let retry = RetryPolicy { max_retries: 0, ..RetryPolicy::default() };
        let timeout = Duration::from_secs(10);
        let openai = match OpenAi::new(format!("http://{addr}/v1"), None, timeout, retry.clone()) {
            Ok(openai) => openai,
            Err(e) => panic!("no OpenAI provider: {e}"),
        };
        let app = DifyApp { base_url: format!("http://{addr}/v1"), api_key: SecretString::from("app-fuzz") };
        let dify = match Dify::new(DifyApps { common: Some(app), ..DifyApps::default() }, timeout, retry) {
            Ok(dify) => dify,
            Err(e) => panic!("no Dify provider: {e}"),
        };
        Harness { runtime, body, openai, dify }
    })
}

/// Drains a provider stream: deltas, then at most one `Done`, last.
async fn drain(mut stream: switchboard_llm_proxy::providers::EventStream) {
    let mut done = false;
    while let Some(item) = stream.next().await {
        match item {
            Ok(StreamEvent::Delta(_)) => assert!(!done, "a delta after Done"),
            Ok(StreamEvent::Done { .. }) => {
                assert!(!done, "two Done events");
                done = true;
            }
            Err(_) => break,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let harness = harness();
    // The first byte seeds where the rest is cut.
    let Some((&seed, body)) = data.split_first() else { return };
    let mut state = u32::from(seed) | 0x100;
    let mut chunks = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (state as usize % 23).min(rest.len()).max(1);
        chunks.push(rest[..n].to_vec());
        rest = &rest[n..];
    }
    if let Ok(mut next) = harness.body.lock() {
        *next = chunks;
    }
    let request = CompletionRequest {
        model: "m".into(),
        messages: vec![ChatMessage { role: Role::User, content: "hi".into() }],
        temperature: None,
        max_tokens: None,
        system_id: "default".into(),
        user_id: "u".into(),
        lang: String::new(),
        upstream_conversation_id: String::new(),
    };
    harness.runtime.block_on(async {
        if let Ok(stream) = harness.openai.stream(&request).await {
            drain(stream).await;
        }
        if let Ok(mut stream) = harness.openai.stream_raw(&bytes::Bytes::from_static(b"{}")).await {
            while let Some(Ok(_)) = stream.next().await {}
        }
        if let Ok(stream) = harness.dify.stream(&request).await {
            drain(stream).await;
        }
    });
});
