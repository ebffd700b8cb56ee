//! `/api/*`: seed 001 (`/api/users`, ...) and, under `/api/v1/*`, seed 004.

pub mod users;
pub mod v1;
