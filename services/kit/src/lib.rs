//! What every Switchboard component shares: settings sources, telemetry, gRPC serving with
//! health and reflection, database pools for SQLite and PostgreSQL, clocks and shutdown.

pub mod auth;
pub mod chat_ui;
pub mod db;
pub mod env;
pub mod expiring;
pub mod grpc;
pub mod metrics;
pub mod net;
pub mod periodic;
pub mod principal;
pub mod redis;
pub mod revocation;
pub mod shutdown;
pub mod tally;
pub mod telemetry;
pub mod time;

pub use env::{ConfigError, Env};
