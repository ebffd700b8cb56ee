//! Usernames and passwords: the rules (seeds 002, 004) and argon2id hashing.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::error::AuthError;

/// Username: 3-20 of `[A-Za-z0-9_]`.
pub fn check_username(username: &str) -> Result<(), AuthError> {
    let ok = (3..=20).contains(&username.len()) && username.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok { Ok(()) } else { Err(AuthError::invalid("username", "must be 3-20 characters of letters, digits and '_'")) }
}

/// Password: 8-100 characters with a digit and an upper-case letter (seed 002's review).
pub fn check_password(password: &str) -> Result<(), AuthError> {
    let len = password.chars().count();
    if len < 8 {
        return Err(AuthError::invalid("password", "must be at least 8 characters"));
    }
    if len > 100 {
        return Err(AuthError::invalid("password", "must be at most 100 characters"));
    }
    if !password.chars().any(|c| c.is_ascii_digit()) {
        return Err(AuthError::invalid("password", "must contain a digit"));
    }
    if !password.chars().any(|c| c.is_uppercase()) {
        return Err(AuthError::invalid("password", "must contain an upper-case letter"));
    }
    Ok(())
}

fn hasher() -> Argon2<'static> {
    // OWASP's argon2id baseline: 19 MiB, 2 passes, 1 lane.
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// An argon2id PHC string for `password`. CPU-heavy: call from a blocking thread.
pub fn hash(password: &str) -> Result<String, AuthError> {
    let salt = SaltString::generate(&mut OsRng);
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Unexpected(format!("hashing a password: {e}")))
}

/// Whether `password` matches the stored PHC string. CPU-heavy: call from a blocking thread.
pub fn verify(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|parsed| hasher().verify_password(password.as_bytes(), &parsed).is_ok())
}

/// A hash of a password nobody has, verified against when the user does not exist so that
/// a login takes as long for unknown users as for known ones.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash("Decoy-password-0").unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn username_and_password_rules() {
        assert!(check_username("alice_01").is_ok());
        for bad in ["al", "a".repeat(21).as_str(), "alice!", "엘리스"] {
            assert!(check_username(bad).is_err(), "{bad}");
        }
        assert!(check_password("Passw0rdX").is_ok());
        for bad in ["Short1", "alllowercase1", "NoDigitsHere", &"A1".repeat(51)] {
            let err = check_password(bad).unwrap_err();
            assert!(err.to_string().starts_with("password"), "{bad}: {err}");
        }
    }

    #[test]
    fn hashes_are_argon2id_salted_and_verify() {
        let a = hash("Passw0rdX").unwrap();
        let b = hash("Passw0rdX").unwrap();
        assert!(a.starts_with("$argon2id$"));
        assert_ne!(a, b, "salted");
        assert!(verify("Passw0rdX", &a));
        assert!(!verify("passw0rdX", &a));
        assert!(!verify("Passw0rdX", "garbage"));
    }
}
