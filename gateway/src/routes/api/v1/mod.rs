//! `/api/v1/*`: seed 004's API, every answer in the `{success, message, data, errors}` envelope.

pub mod keys;
pub mod users;

use serde_json::{Value, json};

/// A successful seed-004 envelope.
pub fn envelope(message: impl Into<String>, data: Value) -> Value {
    json!({"success": true, "message": message.into(), "data": data, "errors": null})
}
