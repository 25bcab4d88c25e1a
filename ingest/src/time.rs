//! Event-time parsing: RFC 3339 strings with a zone, or epoch integers.

use weir_storage::config::TimeFormat;

/// The earliest and latest event times accepted: years 1970 to 9999.
pub const MIN_TS_MS: i64 = 0;
pub const MAX_TS_MS: i64 = 253_402_300_799_999;

/// Parses an RFC 3339 timestamp (`2026-11-21T10:00:00Z`, `...00.123+01:00`) to
/// epoch milliseconds. A zone is required; fractional seconds beyond milliseconds
/// are truncated.
pub fn parse_rfc3339_ms(s: &str) -> Result<i64, String> {
    let dt = chrono::DateTime::parse_from_rfc3339(s)
        .map_err(|e| format!("`{s}` is not an RFC 3339 time with a zone ({e})"))?;
    Ok(dt.timestamp_millis())
}

/// Checks an epoch-milliseconds value is in the accepted range.
pub fn check_range(ms: i64, raw: &dyn std::fmt::Display) -> Result<i64, String> {
    if (MIN_TS_MS..=MAX_TS_MS).contains(&ms) {
        Ok(ms)
    } else {
        Err(format!("event time {raw} is outside 1970-01-01..9999-12-31"))
    }
}

/// Interprets an integer event time according to the accepted formats.
pub fn from_integer(v: i64, formats: &[TimeFormat]) -> Result<i64, String> {
    if formats.contains(&TimeFormat::EpochMillis) {
        check_range(v, &v)
    } else if formats.contains(&TimeFormat::EpochSeconds) {
        let ms = v.checked_mul(1000).ok_or_else(|| format!("event time {v} is out of range"))?;
        check_range(ms, &v)
    } else {
        Err(format!("event time {v} is a number, but this table accepts only RFC 3339 strings"))
    }
}

/// Interprets a string event time.
pub fn from_string(s: &str, formats: &[TimeFormat]) -> Result<i64, String> {
    if !formats.contains(&TimeFormat::Rfc3339) {
        return Err(format!("event time `{s}` is a string, but this table accepts only epoch numbers"));
    }
    let ms = parse_rfc3339_ms(s)?;
    check_range(ms, &s)
}

/// Start of the bucket of `granularity_ms` holding `ts_ms` (UTC, aligned to the epoch).
#[inline]
pub fn bucket_start(ts_ms: i64, granularity_ms: i64) -> i64 {
    ts_ms.div_euclid(granularity_ms) * granularity_ms
}

/// Formats epoch milliseconds as RFC 3339 in UTC, for messages and JSON.
pub fn format_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_with_zones() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:01Z").unwrap(), 1000);
        assert_eq!(parse_rfc3339_ms("1970-01-01T01:00:01.5+01:00").unwrap(), 1500);
        assert!(parse_rfc3339_ms("1970-01-01T00:00:01").is_err(), "a zone is required");
        assert!(parse_rfc3339_ms("yesterday").is_err());
    }

    #[test]
    fn integers_follow_the_formats() {
        let both = [TimeFormat::Rfc3339, TimeFormat::EpochMillis];
        assert_eq!(from_integer(1500, &both).unwrap(), 1500);
        assert_eq!(from_integer(2, &[TimeFormat::EpochSeconds]).unwrap(), 2000);
        assert!(from_integer(5, &[TimeFormat::Rfc3339]).is_err());
        assert!(from_integer(-5, &both).is_err());
        assert!(from_string("2026-01-01T00:00:00Z", &[TimeFormat::EpochMillis]).is_err());
    }

    #[test]
    fn buckets_align_to_the_epoch() {
        assert_eq!(bucket_start(3_599_999, 3_600_000), 0);
        assert_eq!(bucket_start(3_600_000, 3_600_000), 3_600_000);
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000Z");
    }
}
