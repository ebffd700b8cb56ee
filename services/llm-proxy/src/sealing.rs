//! Provider keys at rest: AES-256-GCM with `SWITCHBOARD_ENCRYPTION_KEY`, a fresh nonce per
//! key, and the key's id and owner as associated data, so a sealed key moved to another row
//! does not open.

use aes_gcm::aead::{Aead, Generate, KeyInit, Nonce, Payload};
use aes_gcm::{Aes256Gcm, Key};

/// Seals and opens provider keys.
#[derive(Clone)]
pub struct Sealer {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(…)")
    }
}

/// The sealed text could not be opened (wrong key, wrong row, or tampered).
#[derive(Debug, thiserror::Error)]
#[error("a stored provider key cannot be decrypted (was SWITCHBOARD_ENCRYPTION_KEY changed?)")]
pub struct OpenError;

impl Sealer {
    /// A sealer for a 32-byte key.
    pub fn new(key: &[u8; 32]) -> Self {
        Self { cipher: Aes256Gcm::new(&Key::<Aes256Gcm>::from(*key)) }
    }

    /// `hex(nonce || ciphertext)` of `secret`, bound to `context`.
    pub fn seal(&self, secret: &str, context: &str) -> String {
        let nonce = Nonce::<Aes256Gcm>::generate();
        let sealed = self
            .cipher
            .encrypt(&nonce, Payload { msg: secret.as_bytes(), aad: context.as_bytes() })
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend(sealed);
        hex::encode(out)
    }

    /// The secret sealed in `sealed` with `context`.
    pub fn open(&self, sealed: &str, context: &str) -> Result<String, OpenError> {
        let bytes = hex::decode(sealed).map_err(|_| OpenError)?;
        if bytes.len() < 12 {
            return Err(OpenError);
        }
        let (nonce, ciphertext) = bytes.split_at(12);
        let nonce = Nonce::<Aes256Gcm>::try_from(nonce).map_err(|_| OpenError)?;
        let plain =
            self.cipher.decrypt(&nonce, Payload { msg: ciphertext, aad: context.as_bytes() }).map_err(|_| OpenError)?;
        String::from_utf8(plain).map_err(|_| OpenError)
    }
}

/// The last four characters of a secret, all that is ever shown of it.
pub fn last_four(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    chars[chars.len().saturating_sub(4)..].iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_keys_open_only_with_the_same_key_and_context() {
        let sealer = Sealer::new(&[7u8; 32]);
        let sealed = sealer.seal("sk-user-secret-1234", "pk1:default:alice");
        assert!(!sealed.contains("sk-user"));
        assert_ne!(sealed, sealer.seal("sk-user-secret-1234", "pk1:default:alice"), "fresh nonce each time");
        assert_eq!(sealer.open(&sealed, "pk1:default:alice").unwrap(), "sk-user-secret-1234");
        assert!(sealer.open(&sealed, "pk2:default:alice").is_err(), "bound to its row");
        assert!(Sealer::new(&[8u8; 32]).open(&sealed, "pk1:default:alice").is_err());
        let mut tampered = sealed.clone();
        tampered.replace_range(30..32, if &sealed[30..32] == "00" { "11" } else { "00" });
        assert!(sealer.open(&tampered, "pk1:default:alice").is_err());
        assert_eq!(last_four("sk-abcd1234"), "1234");
        assert_eq!(last_four("ab"), "ab");
    }
}
