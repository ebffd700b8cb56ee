//! SSE framing: the `.eventsource()` adaptor the providers put over an upstream's body, fed
//! arbitrary bytes cut into arbitrary chunks. Never panics, and the events do not depend on
//! where the bytes were cut (TCP may cut them anywhere); each `data:` payload then goes
//! through what the providers do with it (`[DONE]`, keep-alives, JSON).
#![no_main]

use std::convert::Infallible;

use eventsource_stream::{Event, Eventsource};
use futures::StreamExt;
use libfuzzer_sys::fuzz_target;

/// The events up to the first error, and whether there was one.
fn events(chunks: Vec<bytes::Bytes>) -> (Vec<Event>, bool) {
    let stream = futures::stream::iter(chunks.into_iter().map(Ok::<_, Infallible>)).eventsource();
    futures::executor::block_on(async {
        let mut stream = std::pin::pin!(stream);
        let mut seen = Vec::new();
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => seen.push(event),
                Err(_) => return (seen, true),
            }
        }
        (seen, false)
    })
}

fuzz_target!(|data: &[u8]| {
    // The first byte seeds where the rest is cut.
    let Some((&seed, body)) = data.split_first() else { return };
    let mut state = u32::from(seed) | 0x100;
    let mut chunks = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (state as usize % 17).min(rest.len()).max(1);
        chunks.push(bytes::Bytes::copy_from_slice(&rest[..n]));
        rest = &rest[n..];
    }
    let (cut, cut_failed) = events(chunks);
    let (whole, whole_failed) = events(vec![bytes::Bytes::copy_from_slice(body)]);
    assert_eq!(cut_failed, whole_failed, "an error depends on where the stream was cut");
    assert_eq!(cut.len(), whole.len(), "the events depend on where the stream was cut");
    for (a, b) in cut.iter().zip(&whole) {
        assert_eq!((&a.event, &a.data, &a.id), (&b.event, &b.data, &b.id));
    }
    for event in whole {
        let data = event.data.trim();
        if data == "[DONE]" || data.is_empty() {
            continue;
        }
        let _ = serde_json::from_str::<serde::de::IgnoredAny>(&event.data);
        let _ = serde_json::from_str::<serde_json::Value>(&event.data);
    }
});
