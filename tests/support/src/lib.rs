//! Test support shared by the services' and the end-to-end tests.
//!
//! [`MockUpstream`] is a real HTTP server on loopback speaking the OpenAI chat-completions
//! wire format (JSON and SSE), with knobs for delay, failures and cut streams; [`MockDify`]
//! speaks Dify's chat-app API and keeps conversations as Dify does; [`db`] makes
//! fresh SQLite and PostgreSQL databases.

pub mod db;
mod dify;
mod openai;

pub use dify::MockDify;
pub use openai::MockUpstream;
