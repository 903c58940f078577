//! When a schedule fires: the interval grid (0.7's formula), cron expressions in a time zone
//! (ours), and the catch-up rule for slots missed while no gateway ran.
//!
//! Cron: 5 fields (`min hour dom mon dow`) or 6 with seconds first, read by `croner` and
//! evaluated in an IANA zone (`chrono-tz`). Daylight saving time follows croner's OCPS /
//! Vixie-cron rules: a fixed time of day that falls in a spring-forward gap fires once, at
//! the first instant after the gap (a daily `30 2 * * *` in America/New_York fires at 03:00
//! EDT that day); a fixed time that occurs twice in a fall-back overlap fires once, at its
//! first (daylight-time) occurrence. Wildcard/step fields fire on every real matching instant.

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::{
    parser::{CronParser, Seconds},
    Cron,
};

/// Longest `cron` expression accepted (bytes).
pub(crate) const MAX_CRON_BYTES: usize = 256;
/// Longest `timezone` accepted (bytes; IANA names are far shorter).
pub(crate) const MAX_TIMEZONE_BYTES: usize = 64;

/// 0.7's `compute_interval_next_run_at`: `anchor` if it is after `now`, else the first grid
/// slot `anchor + k × interval` strictly after `now`.
pub(crate) fn interval_next(anchor: f64, interval: f64, now: f64) -> f64 {
    if anchor > now {
        return anchor;
    }
    let steps = ((now - anchor) / interval).floor() + 1.0;
    let next = anchor + steps * interval;
    // Float rounding can land on `now` itself; the slot must be strictly after it.
    if next <= now {
        next + interval
    } else {
        next
    }
}

/// What to do with the slots missed while no gateway ran (ours).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CatchUp {
    /// Skip them: the next run is the next slot after now.
    None,
    /// Run once now for all of them, then continue on the grid (what 0.7 does).
    One,
}

impl CatchUp {
    pub(crate) fn parse(text: &str) -> Option<CatchUp> {
        match text.trim().to_ascii_lowercase().as_str() {
            "none" => Some(CatchUp::None),
            "one" => Some(CatchUp::One),
            _ => None,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CatchUp::None => "none",
            CatchUp::One => "one",
        }
    }
}

/// A parsed cron expression and its time zone.
#[derive(Debug, Clone)]
pub(crate) struct CronSpec {
    cron: Cron,
    tz: Tz,
}

impl CronSpec {
    /// Parse `expr` (5 or 6 fields) and `timezone` (an IANA name); `Err` with what is wrong.
    pub(crate) fn parse(expr: &str, timezone: &str) -> Result<CronSpec, String> {
        let tz = parse_timezone(timezone)?;
        let expr = expr.trim();
        if expr.len() > MAX_CRON_BYTES {
            return Err(format!("cron is longer than {MAX_CRON_BYTES} bytes"));
        }
        let fields = expr.split_whitespace().count();
        if !(fields == 5 || fields == 6) {
            return Err(format!(
                "cron must have 5 fields, or 6 with seconds first (it has {fields})"
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(expr)
            .map_err(|err| format!("invalid cron: {err}"))?;
        Ok(CronSpec { cron, tz })
    }

    /// The first matching instant strictly after `after` (epoch seconds); `None` when there is
    /// none (croner searches up to the year 5000).
    pub(crate) fn next_after(&self, after: f64) -> Option<f64> {
        let start = to_zoned(after, self.tz)?;
        let next = self.cron.find_next_occurrence(&start, false).ok()?;
        let secs = next.timestamp() as f64 + f64::from(next.timestamp_subsec_nanos()) / 1e9;
        // croner drops sub-second parts; the slot must still be strictly after `after`.
        if secs > after {
            Some(secs)
        } else {
            self.next_after(after.floor() + 1.0 - 1e-9)
                .filter(|s| *s > after)
        }
    }
}

/// An IANA zone name (`UTC` included), else why not.
pub(crate) fn parse_timezone(name: &str) -> Result<Tz, String> {
    let name = name.trim();
    if name.len() > MAX_TIMEZONE_BYTES {
        return Err(format!(
            "timezone is longer than {MAX_TIMEZONE_BYTES} bytes"
        ));
    }
    name.parse::<Tz>()
        .map_err(|_| format!("unknown timezone {name:?}: use an IANA name such as Europe/Berlin"))
}

fn to_zoned(epoch: f64, tz: Tz) -> Option<DateTime<Tz>> {
    if !epoch.is_finite() {
        return None;
    }
    let secs = epoch.floor();
    let nanos = ((epoch - secs) * 1e9).round().min(999_999_999.0) as u32;
    let utc: DateTime<Utc> = Utc.timestamp_opt(secs as i64, nanos).single()?;
    Some(utc.with_timezone(&tz))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(tz: &str, s: &str) -> f64 {
        let tz: Tz = tz.parse().unwrap();
        let naive = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap();
        tz.from_local_datetime(&naive)
            .earliest()
            .unwrap()
            .timestamp() as f64
    }

    fn utc(s: &str) -> f64 {
        at("UTC", s)
    }

    #[test]
    fn interval_grid_is_0_7s() {
        assert_eq!(interval_next(100.0, 10.0, 50.0), 100.0);
        assert_eq!(interval_next(100.0, 10.0, 100.0), 110.0);
        assert_eq!(interval_next(100.0, 10.0, 109.99), 110.0);
        assert_eq!(interval_next(100.0, 10.0, 135.0), 140.0);
        // Creation: anchor `created_at + interval`, computed at `created_at - 1e-6`.
        assert_eq!(interval_next(1010.0, 10.0, 1000.0 - 1e-6), 1010.0);
        for now in [0.1, 0.3, 0.7, 1e9 + 0.3] {
            assert!(interval_next(0.0, 0.1, now) > now);
        }
    }

    #[test]
    fn cron_5_and_6_fields() {
        let five = CronSpec::parse("*/15 * * * *", "UTC").unwrap();
        assert_eq!(
            five.next_after(utc("2026-01-01 10:07:00")),
            Some(utc("2026-01-01 10:15:00"))
        );
        let six = CronSpec::parse("*/2 * * * * *", "UTC").unwrap();
        assert_eq!(
            six.next_after(utc("2026-01-01 10:00:00")),
            Some(utc("2026-01-01 10:00:02"))
        );
        assert_eq!(
            six.next_after(utc("2026-01-01 10:00:01") + 0.5),
            Some(utc("2026-01-01 10:00:02"))
        );
        // Strictly after.
        assert_eq!(
            six.next_after(utc("2026-01-01 10:00:02")),
            Some(utc("2026-01-01 10:00:04"))
        );
        let berlin = CronSpec::parse("0 9 * * *", "Europe/Berlin").unwrap();
        assert_eq!(
            berlin.next_after(utc("2026-01-01 00:00:00")),
            Some(utc("2026-01-01 08:00:00"))
        );
    }

    #[test]
    fn bad_cron_and_timezones_say_why() {
        assert!(CronSpec::parse("* * * *", "UTC")
            .unwrap_err()
            .contains("5 fields"));
        assert!(CronSpec::parse("* * * * * * *", "UTC")
            .unwrap_err()
            .contains("5 fields"));
        assert!(CronSpec::parse("61 * * * *", "UTC")
            .unwrap_err()
            .contains("invalid cron"));
        assert!(CronSpec::parse("* * * * *", "Mars/Olympus")
            .unwrap_err()
            .contains("unknown timezone"));
        assert!(CronSpec::parse(&"1,".repeat(200), "UTC")
            .unwrap_err()
            .contains("longer"));
        // Feb 30 never comes.
        let never = CronSpec::parse("0 0 30 2 *", "UTC").unwrap();
        assert_eq!(never.next_after(utc("2026-01-01 00:00:00")), None);
    }

    #[test]
    fn dst_gap_fires_once_right_after_the_gap() {
        // 2026-03-08: America/New_York springs forward 02:00 EST -> 03:00 EDT; 02:30 never
        // happens that day. The daily 02:30 fires once, at 03:00 EDT (07:00 UTC).
        let daily = CronSpec::parse("30 2 * * *", "America/New_York").unwrap();
        let before = utc("2026-03-07 12:00:00");
        let first = daily.next_after(before).unwrap();
        assert_eq!(first, utc("2026-03-08 07:00:00"));
        let second = daily.next_after(first).unwrap();
        // The next day at 02:30 EDT (06:30 UTC): exactly one run in the gap day.
        assert_eq!(second, utc("2026-03-09 06:30:00"));
        // The day before: 02:30 EST (07:30 UTC).
        assert_eq!(
            daily.next_after(utc("2026-03-06 12:00:00")),
            Some(utc("2026-03-07 07:30:00"))
        );
    }

    #[test]
    fn dst_overlap_fires_once_at_the_first_occurrence() {
        // 2026-11-01: America/New_York falls back 02:00 EDT -> 01:00 EST; 01:00–02:00 happens
        // twice. A daily 01:30 fires once, at 01:30 EDT (05:30 UTC), not again at 01:30 EST.
        let daily = CronSpec::parse("30 1 * * *", "America/New_York").unwrap();
        let first = daily.next_after(utc("2026-10-31 12:00:00")).unwrap();
        assert_eq!(first, utc("2026-11-01 05:30:00"));
        let second = daily.next_after(first).unwrap();
        assert_eq!(second, utc("2026-11-02 06:30:00"), "01:30 EST the next day");
        // The daily 02:30 is not in the overlap: once, at 02:30 EST (07:30 UTC).
        let daily = CronSpec::parse("30 2 * * *", "America/New_York").unwrap();
        let first = daily.next_after(utc("2026-10-31 12:00:00")).unwrap();
        assert_eq!(first, utc("2026-11-01 07:30:00"));
        assert_eq!(daily.next_after(first).unwrap(), utc("2026-11-02 07:30:00"));
    }

    #[test]
    fn catch_up_values() {
        assert_eq!(CatchUp::parse("none"), Some(CatchUp::None));
        assert_eq!(CatchUp::parse(" One "), Some(CatchUp::One));
        assert_eq!(CatchUp::parse("all"), None);
    }
}
