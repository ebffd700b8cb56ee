//! JWT verification: HS256 only, `exp` required, claims `system_id` and `user_id`.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// Seconds of clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 30;

/// The claims Switchboard reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Claims {
    /// Tenant.
    pub system_id: String,
    /// User.
    pub user_id: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
}

/// Verifies HS256 tokens with one secret.
#[derive(Clone)]
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl JwtVerifier {
    /// A verifier for `secret`.
    pub fn new(secret: &SecretString) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_required_spec_claims(&["exp"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        Self { key: DecodingKey::from_secret(secret.expose_secret().as_bytes()), validation }
    }

    /// The token's claims, or why it is refused.
    pub fn verify(&self, token: &str) -> Result<Claims, jsonwebtoken::errors::Error> {
        jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map(|data| data.claims)
    }
}
