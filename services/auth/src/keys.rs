//! API key format: `sb_<id>_<secret>`. The id (12 hex characters) is public and indexes the
//! key; the secret (64 hex characters, 256 bits) is shown once and only its SHA-256 digest is
//! stored and compared in constant time.

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Prefix every issued key starts with.
pub const KEY_PREFIX: &str = "sb_";

/// A freshly generated key.
#[derive(Debug)]
pub struct GeneratedKey {
    /// Public id.
    pub id: String,
    /// The whole plaintext key (shown once).
    pub plaintext: String,
    /// Digest of the secret part, to store.
    pub digest: String,
    /// Recognisable start of the key, to show in listings.
    pub prefix: String,
}

/// Generates a new key.
pub fn generate() -> GeneratedKey {
    let mut id = [0u8; 6];
    let mut secret = [0u8; 32];
    let mut rng = rand::rng();
    rng.fill_bytes(&mut id);
    rng.fill_bytes(&mut secret);
    let id = hex::encode(id);
    let secret = hex::encode(secret);
    GeneratedKey {
        plaintext: format!("{KEY_PREFIX}{id}_{secret}"),
        digest: digest(&secret),
        prefix: format!("{KEY_PREFIX}{id}"),
        id,
    }
}

/// Splits a presented key into its public id and secret, if it has the issued-key shape.
pub fn parse(presented: &str) -> Option<(&str, &str)> {
    let rest = presented.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let ok = id.len() == 12 && secret.len() == 64 && (id.chars().chain(secret.chars())).all(|c| c.is_ascii_hexdigit());
    ok.then_some((id, secret))
}

/// SHA-256 of a secret, hex.
pub fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Constant-time equality of two byte strings.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_back_and_match_their_digest() {
        let key = generate();
        let (id, secret) = parse(&key.plaintext).unwrap();
        assert_eq!(id, key.id);
        assert!(same(digest(secret).as_bytes(), key.digest.as_bytes()));
        assert!(!key.digest.contains(secret));
        assert_ne!(generate().plaintext, key.plaintext);
    }

    #[test]
    fn malformed_keys_do_not_parse() {
        assert!(parse("sb_short_abc").is_none());
        assert!(parse("key_drillquiz_abc123").is_none());
        assert!(parse(&format!("sb_{}_{}", "z".repeat(12), "a".repeat(64))).is_none());
    }
}
