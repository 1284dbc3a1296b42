//! Parsing the times users type: RFC 3339, a date, `@UNIX`, or a duration ago.

use chrono::{DateTime, NaiveDate, Utc};

/// Parses `s` into UTC microseconds. `now_us` anchors relative forms like `2h`.
pub fn parse_time(s: &str, now_us: i64) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_micros());
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d
            .and_hms_opt(0, 0, 0)
            .expect("midnight exists")
            .and_utc()
            .timestamp_micros());
    }
    if let Some(rest) = s.strip_prefix('@') {
        if let Ok(secs) = rest.parse::<i64>() {
            return Ok(secs.saturating_mul(1_000_000));
        }
    }
    let rel = s.strip_suffix(" ago").unwrap_or(s);
    if let Some(unit) = rel.chars().last() {
        let mult: i64 = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => 0,
        };
        if mult > 0 {
            if let Ok(n) = rel[..rel.len() - 1].parse::<i64>() {
                return Ok(now_us - n.saturating_mul(mult).saturating_mul(1_000_000));
            }
        }
    }
    Err(format!("cannot read time {s:?}: use RFC 3339 (2026-11-21T14:02:00Z), a date (2026-11-21), @UNIXSECONDS, or a duration ago (30m, 2h, 7d)"))
}

/// Parses an optional `--since`/`--until` pair; relative forms count back from `now`.
pub fn parse_range(
    since: Option<&str>,
    until: Option<&str>,
    now: i64,
) -> Result<(Option<i64>, Option<i64>), String> {
    let since = since.map(|s| parse_time(s, now)).transpose()?;
    let until = until.map(|s| parse_time(s, now)).transpose()?;
    Ok((since, until))
}

/// Formats UTC microseconds as RFC 3339 with microseconds.
pub fn format_time(us: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(us)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
        .unwrap_or_else(|| format!("@{us}us"))
}

pub fn now_us() -> i64 {
    Utc::now().timestamp_micros()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_form() {
        let now = 1_000_000_000_000_000;
        assert_eq!(parse_time("1970-01-01T00:00:01Z", now).unwrap(), 1_000_000);
        assert_eq!(parse_time("1970-01-02", now).unwrap(), 86_400_000_000);
        assert_eq!(parse_time("@5", now).unwrap(), 5_000_000);
        assert_eq!(parse_time("2h", now).unwrap(), now - 7_200_000_000);
        assert_eq!(parse_time("30m ago", now).unwrap(), now - 1_800_000_000);
        let e = parse_time("yesterday-ish", now).unwrap_err();
        assert!(e.contains("yesterday-ish"), "{e}");
    }

    #[test]
    fn formats_microseconds() {
        assert_eq!(format_time(1_500_000), "1970-01-01T00:00:01.500000Z");
    }
}
