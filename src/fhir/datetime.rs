//! FHIR date, dateTime and instant values: real-calendar validation and the instant range a
//! value of any precision stands for. <https://hl7.org/fhir/R4/datatypes.html#dateTime>
//!
//! `2013` means all of 2013: the range [2013-01-01T00:00Z, 2014-01-01T00:00Z). Values without a
//! time zone (dates) are taken in UTC.

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};

/// A half-open interval of instants [start, end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// Which FHIR primitive a value must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `YYYY`, `YYYY-MM` or `YYYY-MM-DD`: no time, no zone.
    Date,
    /// A date, or a date with a time (seconds required) and a zone.
    DateTime,
    /// A full date and time with seconds and a zone.
    Instant,
}

/// Parses `value` as `kind`, returning the range it covers, or `None` if it is not a real
/// value of that kind (wrong shape, 2021-02-30, 25:00, a time without a zone ...).
pub fn parse(value: &str, kind: Kind) -> Option<Range> {
    let b = value.as_bytes();
    let num = |from: usize, len: usize| -> Option<u32> {
        let s = b.get(from..from + len)?;
        if s.iter().all(u8::is_ascii_digit) {
            std::str::from_utf8(s).ok()?.parse().ok()
        } else {
            None
        }
    };
    let year = num(0, 4)? as i32;
    if year == 0 {
        return None;
    }
    let mut pos = 4;
    let (mut month, mut day) = (None, None);
    if b.get(pos) == Some(&b'-') {
        month = Some(num(pos + 1, 2)?);
        pos += 3;
        if b.get(pos) == Some(&b'-') {
            day = Some(num(pos + 1, 2)?);
            pos += 3;
        }
    }
    let date = NaiveDate::from_ymd_opt(year, month.unwrap_or(1), day.unwrap_or(1))?;
    if pos == b.len() {
        if kind == Kind::Instant {
            return None;
        }
        let start = Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0)?);
        let end_date = match (month, day) {
            (None, _) => NaiveDate::from_ymd_opt(year + 1, 1, 1)?,
            (Some(_), None) => date.checked_add_months(chrono::Months::new(1))?,
            (Some(_), Some(_)) => date.succ_opt()?,
        };
        let end = Utc.from_utc_datetime(&end_date.and_hms_opt(0, 0, 0)?);
        return Some(Range { start, end });
    }
    // A time part: only after a full date, and never in a plain date.
    if kind == Kind::Date || day.is_none() || b.get(pos) != Some(&b'T') {
        return None;
    }
    let hour = num(pos + 1, 2)?;
    if b.get(pos + 3) != Some(&b':') || b.get(pos + 6) != Some(&b':') {
        return None;
    }
    let minute = num(pos + 4, 2)?;
    let second = num(pos + 7, 2)?;
    pos += 9;
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut nanos: i64 = 0;
    let mut precision = Duration::seconds(1);
    if b.get(pos) == Some(&b'.') {
        let digits = b[pos + 1..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if digits == 0 {
            return None;
        }
        let frac = &value[pos + 1..pos + 1 + digits];
        let significant = &frac[..digits.min(9)];
        nanos = significant.parse::<i64>().ok()? * 10i64.pow(9 - significant.len() as u32);
        precision = Duration::nanoseconds(10i64.pow(9 - significant.len() as u32));
        pos += 1 + digits;
    }
    let offset_secs: i32 = match b.get(pos) {
        Some(b'Z') if pos + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if pos + 6 == b.len() && b[pos + 3] == b':' => {
            let (h, m) = (num(pos + 1, 2)?, num(pos + 4, 2)?);
            if h > 14 || m > 59 || (h == 14 && m > 0) {
                return None;
            }
            let secs = (h * 3600 + m * 60) as i32;
            if *sign == b'-' {
                -secs
            } else {
                secs
            }
        }
        _ => return None,
    };
    // A leap second (:60) is legal in FHIR; count it as the last instant of its minute.
    let naive = date.and_hms_opt(hour, minute, second.min(59))?;
    let start = Utc.from_utc_datetime(&naive) - Duration::seconds(offset_secs as i64)
        + Duration::nanoseconds(nanos);
    Some(Range {
        start,
        end: start + precision,
    })
}

/// Whether `value` is a real calendar value of `kind`.
pub fn is_valid(value: &str, kind: Kind) -> bool {
    parse(value, kind).is_some()
}

/// The FHIR `instant` text of a timestamp, as Hearth writes `meta.lastUpdated`: UTC with
/// microseconds, the precision both databases keep.
pub fn format_instant(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// The RFC 9110 HTTP-date of a timestamp, for `Last-Modified`.
pub fn http_date(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// Parses an HTTP-date as sent in `If-Modified-Since`.
pub fn parse_http_date(value: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc2822(value.trim())
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(v: &str, k: Kind) -> (String, String) {
        let r = parse(v, k).unwrap_or_else(|| panic!("{v} should parse"));
        (format_instant(r.start), format_instant(r.end))
    }

    #[test]
    fn partial_dates_cover_their_whole_period() {
        assert_eq!(
            range("2013", Kind::Date),
            (
                "2013-01-01T00:00:00.000000Z".into(),
                "2014-01-01T00:00:00.000000Z".into()
            )
        );
        assert_eq!(
            range("2012-02", Kind::Date).1,
            "2012-03-01T00:00:00.000000Z"
        );
        assert_eq!(
            range("2012-12", Kind::DateTime).1,
            "2013-01-01T00:00:00.000000Z"
        );
        assert_eq!(
            range("2012-02-29", Kind::Date).1,
            "2012-03-01T00:00:00.000000Z"
        );
    }

    #[test]
    fn times_carry_their_zone_and_precision() {
        assert_eq!(
            range("2015-02-07T13:28:17-05:00", Kind::DateTime),
            (
                "2015-02-07T18:28:17.000000Z".into(),
                "2015-02-07T18:28:18.000000Z".into()
            )
        );
        assert_eq!(
            range("2015-02-07T13:28:17.239+02:00", Kind::Instant),
            (
                "2015-02-07T11:28:17.239000Z".into(),
                "2015-02-07T11:28:17.240000Z".into()
            )
        );
    }

    #[test]
    fn rejects_what_is_not_a_real_value() {
        for bad in [
            "2020-13-01",
            "2020-02-30",
            "2021-02-29",
            "2020-1-01",
            "20",
            "0000",
            "2020-01-01T",
            "2020-01-01T10:00:00",
            "2020-01-01T24:00:00Z",
            "2020-01-01T10:61:00Z",
            "2020-01-01T10:00Z",
            "2020-01-01T10:00:00+15:00",
            "2020-01-01T10:00:00.Z",
            "2020-01T10:00:00Z",
            "2020-01-01 10:00:00Z",
            "",
            "banana",
        ] {
            assert!(parse(bad, Kind::DateTime).is_none(), "{bad}");
        }
        assert!(parse("2020-01-01T10:00:00Z", Kind::Date).is_none());
        assert!(parse("2020-01-01", Kind::Instant).is_none());
        assert!(
            parse("2016-12-31T23:59:60Z", Kind::Instant).is_some(),
            "leap second"
        );
    }

    #[test]
    fn http_dates() {
        let t = parse("2024-03-05T07:08:09Z", Kind::Instant).unwrap().start;
        assert_eq!(http_date(t), "Tue, 05 Mar 2024 07:08:09 GMT");
        assert_eq!(parse_http_date("Tue, 05 Mar 2024 07:08:09 GMT"), Some(t));
        assert_eq!(parse_http_date("yesterday"), None);
    }
}
