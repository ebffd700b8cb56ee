//! `Credential::from_headers` on arbitrary header bytes: never panics, and what it accepts
//! is a non-empty, trimmed secret that can be written to gRPC metadata.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_kit::auth::Credential;

/// Names the parser looks at, so the fuzzer need not guess them.
const NAMES: [&str; 4] = ["x-api-key", "authorization", "X-Api-Key", "Authorization"];

fuzz_target!(|data: &[u8]| {
    // One header per line: a first byte picking a known name (or, past the table, a name
    // read up to `:`), then the value's raw bytes.
    let mut headers = http::HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let Some((&pick, rest)) = line.split_first() else { continue };
        let (name, value) = match NAMES.get(usize::from(pick) % 8) {
            Some(name) => (name.as_bytes(), rest),
            None => match rest.iter().position(|&b| b == b':') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => continue,
            },
        };
        let (Ok(name), Ok(value)) = (http::HeaderName::from_bytes(name), http::HeaderValue::from_bytes(value)) else {
            continue;
        };
        headers.append(name, value);
    }
    if let Ok(credential) = Credential::from_headers(&headers) {
        let secret = credential.secret();
        assert!(!secret.is_empty(), "an empty secret was accepted");
        assert_eq!(secret, secret.trim(), "an untrimmed secret was accepted");
        let _ = credential.kind();
        let mut metadata = tonic::metadata::MetadataMap::new();
        credential.write_to(&mut metadata);
    }
});
