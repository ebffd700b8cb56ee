//! The OpenAI pass-through: `ChatRequest::parse` on an arbitrary body, then everything done
//! with a parsed one (`upstream_body`, `plain_messages`, estimates), and `StreamTally::observe`
//! on arbitrary `data:` payloads. Never panics; an upstream body is a JSON object naming the
//! upstream's model.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use switchboard_llm_proxy::openai_compat::{ChatRequest, StreamTally};

fuzz_target!(|data: &[u8]| {
    // `body \0 chunk \n chunk …`
    let (body, chunks) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let request = match ChatRequest::parse(body) {
        Ok(request) => request,
        Err(_) => match ChatRequest::parse(br#"{"messages":[{"role":"user","content":"hi"}]}"#) {
            Ok(request) => request,
            Err(e) => panic!("the fallback request is refused: {e:?}"),
        },
    };
    let _ = request.plain_messages("fuzz-model");
    let _ = request.temperature();
    let _ = request.prompt_estimate();
    for stream in [false, true] {
        let mut request = request.clone();
        if let Ok(sent) = request.upstream_body("upstream-model", stream) {
            let sent: Value = match serde_json::from_slice(&sent) {
                Ok(sent) => sent,
                Err(e) => panic!("an upstream body is not JSON: {e}"),
            };
            assert_eq!(sent["model"], "upstream-model");
            assert_eq!(sent["stream"].as_bool().unwrap_or(false), stream);
            if stream {
                assert_eq!(sent["stream_options"]["include_usage"], true);
            }
        }
    }
    let mut tally = StreamTally::new(&request);
    for chunk in chunks.split(|&b| b == b'\n') {
        let _ = tally.observe(&String::from_utf8_lossy(chunk));
    }
    let _ = tally.wants_usage();
    let _ = tally.usage();
});
