//! Event-time parsing: RFC 3339 strings with a zone, or epoch integers.

use weir_storage::config::TimeFormat;

/// The earliest and latest event times accepted: years 1970 to 9999.
pub const MIN_TS_MS: i64 = 0;
pub const MAX_TS_MS: i64 = 253_402_300_799_999;

/// Parses an RFC 3339 timestamp (`2026-11-21T10:00:00Z`, `...00.123+01:00`) to
/// epoch milliseconds. A zone is required; fractional seconds beyond milliseconds
/// are truncated.
pub fn parse_rfc3339_ms(s: &str) -> Result<i64, String> {
    if let Some(ms) = fast_rfc3339_ms(s.as_bytes()) {
        return Ok(ms);
    }
    let dt = chrono::DateTime::parse_from_rfc3339(s)
        .map_err(|e| format!("`{s}` is not an RFC 3339 time with a zone ({e})"))?;
    Ok(dt.timestamp_millis())
}

/// The common shapes `YYYY-MM-DDTHH:MM:SS[.fff…](Z|±HH:MM)`, parsed without
/// allocation. `None` for anything else (leap seconds, lowercase or space
/// separators, out-of-range fields), which then takes chrono's full parser, so the
/// set of accepted strings and their values are chrono's.
fn fast_rfc3339_ms(b: &[u8]) -> Option<i64> {
    fn num(b: &[u8]) -> Option<i64> {
        let mut v = 0i64;
        for &c in b {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + (c - b'0') as i64;
        }
        Some(v)
    }
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (num(&b[0..4])?, num(&b[5..7])?, num(&b[8..10])?);
    let (h, mi, sec) = (num(&b[11..13])?, num(&b[14..16])?, num(&b[17..19])?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let mut i = 19;
    let mut ms = 0i64;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 3 {
                ms = ms * 10 + (b[i] - b'0') as i64;
            }
            i += 1;
        }
        let digits = i - start;
        if digits == 0 {
            return None;
        }
        for _ in digits..3 {
            ms *= 10;
        }
    }
    let offset_s = match b.get(i..)? {
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (oh, om) = (num(&[*h1, *h2])?, num(&[*m1, *m2])?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if *sign == b'-' { -o } else { o }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    Some((days * 86_400 + h * 3600 + mi * 60 + sec - offset_s) * 1000 + ms)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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
    fn the_fast_path_agrees_with_chrono() {
        let cases = [
            "2026-11-21T10:00:00Z",
            "2026-11-21T10:00:00.1Z",
            "2026-11-21T10:00:00.123456789Z",
            "2024-02-29T23:59:59.999+05:30",
            "1999-12-31T00:00:00-08:00",
            "2023-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-11-21T24:00:00Z",
            "2026-11-21T10:00:00.Z",
            "2026-11-21T10:00:00",
            "2026-11-21t10:00:00z",
            "2016-12-31T23:59:60Z",
            "2026-11-21T10:00:00+0100",
        ];
        for c in cases {
            let chrono = chrono::DateTime::parse_from_rfc3339(c).ok().map(|d| d.timestamp_millis());
            assert_eq!(parse_rfc3339_ms(c).ok(), chrono, "{c}");
        }
    }

    proptest::proptest! {
        #[test]
        fn fast_path_matches_chrono_on_generated_times(
            y in 1970i64..2400, mo in 1i64..13, d in 1i64..32, h in 0i64..24, mi in 0i64..60, s in 0i64..60,
            frac in proptest::option::of(0u32..1_000_000), off in proptest::option::of(-1439i64..1440),
        ) {
            let frac = frac.map(|f| format!(".{f:06}")).unwrap_or_default();
            let zone = match off {
                None => "Z".to_string(),
                Some(o) => format!("{}{:02}:{:02}", if o < 0 { '-' } else { '+' }, o.abs() / 60, o.abs() % 60),
            };
            let text = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}{zone}");
            let chrono = chrono::DateTime::parse_from_rfc3339(&text).ok().map(|d| d.timestamp_millis());
            proptest::prop_assert_eq!(fast_rfc3339_ms(text.as_bytes()).or(chrono), chrono);
            proptest::prop_assert_eq!(parse_rfc3339_ms(&text).ok(), chrono);
        }
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
