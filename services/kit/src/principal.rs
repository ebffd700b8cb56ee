//! The namespaces of `user_id`. A backend names its users as it likes (with a service key or
//! a chat token it had issued); two kinds of identity Switchboard makes itself live in
//! namespaces of their own, so no backend's user id, and no username, can ever equal them:
//!
//! | who | `user_id` |
//! |---|---|
//! | a self-registered user (password) | `user:<username>` (usernames have no `:`) |
//! | a client API key | `key_<key id>` (12 hex characters) |
//!
//! A service key may not act for an id in either namespace: those identities act only for
//! themselves.

/// Prefix of a self-registered user's `user_id`.
pub const USER_PREFIX: &str = "user:";
/// Prefix of a client key's `user_id`.
pub const KEY_PREFIX: &str = "key_";
/// Length of an issued key's public id.
const KEY_ID_LEN: usize = 12;

/// The `user_id` of the self-registered user `username`.
pub fn password_user(username: &str) -> String {
    format!("{USER_PREFIX}{username}")
}

/// The `user_id` of the client key with public id `key_id`.
pub fn client_key(key_id: &str) -> String {
    format!("{KEY_PREFIX}{key_id}")
}

/// The username of a self-registered user's `user_id`.
pub fn username(user_id: &str) -> Option<&str> {
    user_id.strip_prefix(USER_PREFIX)
}

/// Whether `user_id` belongs to an identity Switchboard made (a password user or a client
/// key), which no service credential may assert.
pub fn is_reserved(user_id: &str) -> bool {
    let is_key = user_id
        .strip_prefix(KEY_PREFIX)
        .is_some_and(|id| id.len() == KEY_ID_LEN && id.chars().all(|c| c.is_ascii_hexdigit()));
    is_key || user_id.starts_with(USER_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switchboards_own_identities_are_reserved_and_a_backends_ids_are_not() {
        assert!(is_reserved(&password_user("alice")));
        assert!(is_reserved(&client_key("0123456789ab")));
        assert_eq!(username(&password_user("alice")), Some("alice"));
        for free in ["12345", "alice", "key_lime", "key_0123456789abc", "users:x", "key_", ""] {
            assert!(!is_reserved(free), "{free}");
        }
    }
}
