//! Event time: milliseconds since the Unix epoch, UTC.
//!
//! Every timestamp in prescale is event time taken from the data; nothing
//! here reads the wall clock. This module parses the timestamp formats the
//! decoders meet, durations as the job config writes them (`30s`, `5m`,
//! `24h`, `7d`), and the calendar fields of a time.

/// Event time in milliseconds since 1970-01-01T00:00:00Z.
pub type Millis = u64;

/// Milliseconds in one second.
pub const SECOND: Millis = 1_000;
/// Milliseconds in one minute.
pub const MINUTE: Millis = 60 * SECOND;
/// Milliseconds in one hour.
pub const HOUR: Millis = 60 * MINUTE;
/// Milliseconds in one day.
pub const DAY: Millis = 24 * HOUR;

/// The latest event time prescale places, 9999-12-31T23:59:59.999Z: the
/// last an RFC 3339 timestamp can write. Later times are bad timestamps in
/// every format, so that windows and watermarks never compute near
/// `u64::MAX`.
pub const MAX_TIME: Millis = 253_402_300_799_999;

/// Days since the epoch of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`), valid for every year the decoders accept.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

/// A small cursor over ASCII digits; every accessor returns `None` instead
/// of panicking so that any input is safe.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn digits(&mut self, n: usize) -> Option<u32> {
        let slice = self.bytes.get(self.pos..self.pos + n)?;
        let mut value = 0u32;
        for &b in slice {
            if !b.is_ascii_digit() {
                return None;
            }
            value = value * 10 + u32::from(b - b'0');
        }
        self.pos += n;
        Some(value)
    }

    fn expect(&mut self, allowed: &[u8]) -> Option<u8> {
        let b = *self.bytes.get(self.pos)?;
        if allowed.contains(&b) {
            self.pos += 1;
            Some(b)
        } else {
            None
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }
}

/// Parses `YYYY-MM-DD[T ]HH:MM:SS[.fff…][Z|±HH:MM]` into event time.
///
/// A timestamp without a zone is UTC (the blog pipeline writes them so).
/// Fractions beyond milliseconds are truncated. Returns `None` for anything
/// else, including times before 1970 or (with a negative offset) after
/// [`MAX_TIME`], which prescale cannot place in time.
pub fn parse_datetime(text: &str) -> Option<Millis> {
    let mut c = Cursor { bytes: text.trim().as_bytes(), pos: 0 };
    let year = i64::from(c.digits(4)?);
    c.expect(b"-")?;
    let month = c.digits(2)?;
    c.expect(b"-")?;
    let day = c.digits(2)?;
    c.expect(b"Tt ")?;
    let hour = c.digits(2)?;
    c.expect(b":")?;
    let minute = c.digits(2)?;
    c.expect(b":")?;
    let second = c.digits(2)?;
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut millis = 0u32;
    if c.peek() == Some(b'.') {
        c.pos += 1;
        let mut scale = 100;
        let mut any = false;
        while let Some(b) = c.peek().filter(u8::is_ascii_digit) {
            millis += u32::from(b - b'0') * scale;
            scale /= 10;
            any = true;
            c.pos += 1;
        }
        if !any {
            return None;
        }
    }
    let offset_secs: i64 = match c.peek() {
        None => 0,
        Some(b'Z' | b'z') => {
            c.pos += 1;
            0
        }
        Some(sign @ (b'+' | b'-')) => {
            c.pos += 1;
            let oh = i64::from(c.digits(2)?);
            c.expect(b":")?;
            let om = i64::from(c.digits(2)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let secs = oh * 3600 + om * 60;
            if sign == b'+' { secs } else { -secs }
        }
        Some(_) => return None,
    };
    if c.pos != c.bytes.len() {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second) - offset_secs;
    let ms = secs.checked_mul(1000)?.checked_add(i64::from(millis))?;
    Millis::try_from(ms).ok().filter(|&t| t <= MAX_TIME)
}

/// Formats event time as RFC 3339 UTC with milliseconds, for people.
pub fn format_datetime(t: Millis) -> String {
    let days = (t / DAY) as i64;
    let rem = t % DAY;
    // civil_from_days, the inverse of days_from_civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / HOUR,
        (rem % HOUR) / MINUTE,
        (rem % MINUTE) / SECOND,
        rem % SECOND
    )
}

/// Hour of day, 0–23, UTC.
pub fn hour_of_day(t: Millis) -> u8 {
    ((t % DAY) / HOUR) as u8
}

/// ISO day of week, 1 (Monday) to 7 (Sunday), UTC.
pub fn day_of_week(t: Millis) -> u8 {
    // 1970-01-01 was a Thursday (ISO 4).
    (((t / DAY) + 3) % 7 + 1) as u8
}

/// Parses a duration as the job config and the CLI write it: an integer
/// followed by `ms`, `s`, `m`, `h`, `d` or `w` (`30s`, `5m`, `24h`, `7d`).
pub fn parse_duration(text: &str) -> Option<Millis> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let n: Millis = number.parse().ok()?;
    let unit_ms = match unit {
        "ms" => 1,
        "s" => SECOND,
        "m" | "min" => MINUTE,
        "h" => HOUR,
        "d" => DAY,
        "w" => 7 * DAY,
        _ => return None,
    };
    n.checked_mul(unit_ms)
}

/// Formats a duration in the largest unit that divides it (`1h`, `90s`).
pub fn format_duration(ms: Millis) -> String {
    for (unit, size) in [("w", 7 * DAY), ("d", DAY), ("h", HOUR), ("m", MINUTE), ("s", SECOND)] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc3339_and_blog_formats() {
        assert_eq!(parse_datetime("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_datetime("2026-01-01T00:00:00Z"), Some(1_767_225_600_000));
        assert_eq!(parse_datetime("2026-01-01 00:00:00.000"), Some(1_767_225_600_000));
        assert_eq!(parse_datetime("2026-01-01T01:00:00.25+01:00"), Some(1_767_225_600_250));
        assert_eq!(parse_datetime("2024-02-29T12:00:00Z"), Some(1_709_208_000_000));
    }

    #[test]
    fn rejects_malformed_datetimes() {
        for bad in [
            "",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:00:00Zjunk",
            "2026-01-01T00:00:00.",
            "1969-12-31T23:59:59Z",
            "2026-01-01",
            "２０２６-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_datetime(bad), None, "{bad}");
        }
    }

    #[test]
    fn format_inverts_parse() {
        for t in [0, 1_767_225_600_250, 951_782_400_000, 4_102_444_799_999] {
            assert_eq!(parse_datetime(&format_datetime(t)), Some(t));
        }
    }

    #[test]
    fn calendar_fields() {
        // 2026-01-05 is a Monday.
        let monday = parse_datetime("2026-01-05T13:30:00Z").unwrap_or_default();
        assert_eq!(day_of_week(monday), 1);
        assert_eq!(hour_of_day(monday), 13);
        assert_eq!(day_of_week(monday + 6 * DAY), 7);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Some(30 * SECOND));
        assert_eq!(parse_duration("7d"), Some(7 * DAY));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("m"), None);
        assert_eq!(format_duration(HOUR), "1h");
        assert_eq!(format_duration(90 * SECOND), "90s");
        assert_eq!(format_duration(7 * DAY), "1w");
    }
}
