//! `Jwt::verify` on arbitrary tokens: never panics. Half the inputs are raw token text; the
//! other half are a header and a payload (arbitrary bytes, base64url-encoded) signed with the
//! real secret, so the claims and their validation (`exp`, `nbf`, types) are reached too.
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use secrecy::SecretString;
use switchboard_auth::jwt::Jwt;

const SECRET: &str = "fuzz-secret-fuzz-secret-fuzz-secret";

fuzz_target!(|data: &[u8]| {
    let jwt = Jwt::new(&SecretString::from(SECRET));
    let Some((&mode, rest)) = data.split_first() else { return };
    let token = if mode & 1 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        // `header \0 payload`; a missing header is the usual one.
        let (header, payload) = match rest.iter().position(|&b| b == 0) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (&br#"{"alg":"HS256","typ":"JWT"}"#[..], rest),
        };
        let message = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload));
        let Ok(signature) = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &EncodingKey::from_secret(SECRET.as_bytes()),
            Algorithm::HS256,
        ) else {
            return;
        };
        format!("{message}.{signature}")
    };
    if let Ok(claims) = jwt.verify(&token) {
        // Accepted claims were validated: an expiry within reach of now.
        let now = switchboard_kit::time::now_ms() / 1000;
        assert!(
            claims.exp.saturating_add(switchboard_auth::jwt::LEEWAY_SECS as i64) >= now,
            "an expired token was accepted: exp {}",
            claims.exp
        );
    }
});
