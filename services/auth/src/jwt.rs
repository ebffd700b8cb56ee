//! JWTs: HS256 only (the algorithm is pinned), `exp` required, claims `system_id` and
//! `user_id`, and a `jti` on the tokens Switchboard issues so they can be revoked.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// Seconds of clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 30;

/// The claims Switchboard reads and writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// Tenant.
    pub system_id: String,
    /// User.
    pub user_id: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Issued at, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Token id, for revocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

/// Issues and verifies HS256 tokens with one secret.
#[derive(Clone)]
pub struct Jwt {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

/// A freshly issued token.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The compact JWT.
    pub token: String,
    /// Its `jti`.
    pub jti: String,
    /// Expiry, Unix ms.
    pub expires_at_ms: i64,
}

impl Jwt {
    /// Tokens signed with `secret`.
    pub fn new(secret: &SecretString) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_required_spec_claims(&["exp"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        let bytes = secret.expose_secret().as_bytes();
        Self { encoding: EncodingKey::from_secret(bytes), decoding: DecodingKey::from_secret(bytes), validation }
    }

    /// The token's claims, or why it is refused.
    pub fn verify(&self, token: &str) -> Result<Claims, jsonwebtoken::errors::Error> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map(|data| data.claims)
    }

    /// A token for `(system_id, user_id)` valid for `ttl_secs`.
    pub fn issue(&self, system_id: &str, user_id: &str, ttl_secs: i64) -> Result<Issued, jsonwebtoken::errors::Error> {
        let now_ms = switchboard_kit::time::now_ms();
        let exp = now_ms / 1000 + ttl_secs;
        let jti = uuid_v4();
        let claims = Claims {
            system_id: system_id.to_owned(),
            user_id: user_id.to_owned(),
            exp,
            iat: Some(now_ms / 1000),
            jti: Some(jti.clone()),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?;
        Ok(Issued { token, jti, expires_at_ms: exp * 1000 })
    }
}

fn uuid_v4() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}
