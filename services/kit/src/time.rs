//! Clock and timestamp conversions. Stores keep times as Unix milliseconds (`BIGINT`), which
//! reads the same on SQLite and PostgreSQL.

pub use prost_types::Timestamp;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Unix milliseconds to a protobuf timestamp.
pub fn to_timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: ms.div_euclid(1000), nanos: (ms.rem_euclid(1000) * 1_000_000) as i32 }
}

/// A protobuf timestamp to Unix milliseconds.
pub fn from_timestamp(ts: &prost_types::Timestamp) -> i64 {
    ts.seconds.saturating_mul(1000).saturating_add(i64::from(ts.nanos) / 1_000_000)
}

/// Unix milliseconds as RFC 3339 (UTC), e.g. `2026-11-22T10:00:00.123Z`.
pub fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// A protobuf timestamp as RFC 3339, empty when absent.
pub fn timestamp_rfc3339(ts: Option<&prost_types::Timestamp>) -> Option<String> {
    ts.map(|t| rfc3339(from_timestamp(t)))
}

/// Parses an RFC 3339 date-time or a plain `YYYY-MM-DD` date (start of day, UTC) to Unix ms.
pub fn parse_date_ms(raw: &str) -> Option<i64> {
    if let Ok(t) = OffsetDateTime::parse(raw, &Rfc3339) {
        return Some((t.unix_timestamp_nanos() / 1_000_000) as i64);
    }
    let date = time::Date::parse(raw, time::macros::format_description!("[year]-[month]-[day]")).ok()?;
    Some(date.midnight().assume_utc().unix_timestamp() * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_through_protobuf_and_rfc3339() {
        let ms = 1_763_805_600_123;
        assert_eq!(from_timestamp(&to_timestamp(ms)), ms);
        assert_eq!(rfc3339(ms), "2025-11-22T10:00:00.123Z");
        assert_eq!(parse_date_ms("2025-11-22T10:00:00.123Z"), Some(ms));
        assert_eq!(parse_date_ms("2025-11-22"), Some(1_763_769_600_000));
        assert_eq!(parse_date_ms("yesterday"), None);
    }
}
