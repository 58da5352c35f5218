//! Times as SigV4 writes them, and the calendar arithmetic to read them
//! without a date crate.

use std::fmt;
use std::ops::Range;
use std::time::{SystemTime, UNIX_EPOCH};

/// A time as SigV4 writes it: `20130524T000000Z`, UTC.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Timestamp {
    pub(super) unix: i64,
    pub(super) basic: [u8; 16],
}

impl Timestamp {
    /// Parse the ISO 8601 basic form `YYYYMMDDTHHMMSSZ`.
    pub fn parse_basic(text: &[u8]) -> Option<Timestamp> {
        let text: &[u8; 16] = text.try_into().ok()?;
        if text[8] != b'T' || text[15] != b'Z' {
            return None;
        }
        let number = |range: Range<usize>| -> Option<u32> {
            text[range].iter().try_fold(0u32, |total, &byte| {
                byte.is_ascii_digit().then(|| total * 10 + u32::from(byte - b'0'))
            })
        };
        let (year, month, day) = (number(0..4)?, number(4..6)?, number(6..8)?);
        let (hour, minute, second) = (number(9..11)?, number(11..13)?, number(13..15)?);
        if !(1970..=9999).contains(&year)
            || !(1..=12).contains(&month)
            || day == 0
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 59
        {
            return None;
        }
        let days = days_from_civil(i64::from(year), month, day);
        Some(Timestamp {
            unix: days * 86_400 + i64::from(hour * 3600 + minute * 60 + second),
            basic: *text,
        })
    }

    /// Parse an HTTP `Date` header (RFC 7231's three forms).
    pub fn parse_http_date(text: &[u8]) -> Option<Timestamp> {
        let text = std::str::from_utf8(text).ok()?.trim();
        // RFC 2822's numeric zero offsets (`-0000`, as botocore and
        // Python's email.utils write a UTC date) name GMT too.
        let text = match text.strip_suffix(" -0000").or_else(|| text.strip_suffix(" +0000")) {
            Some(stamp) => std::borrow::Cow::Owned(format!("{stamp} GMT")),
            None => std::borrow::Cow::Borrowed(text),
        };
        let time = httpdate::parse_http_date(&text).ok()?;
        let unix = time.duration_since(UNIX_EPOCH).ok()?.as_secs();
        Timestamp::from_unix(i64::try_from(unix).ok()?)
    }

    /// The time `unix` seconds after the epoch, if between 1970 and 9999.
    pub fn from_unix(unix: i64) -> Option<Timestamp> {
        if !(0..253_402_300_800).contains(&unix) {
            return None;
        }
        let (year, month, day) = civil_from_days(unix.div_euclid(86_400));
        let seconds = unix.rem_euclid(86_400);
        let mut basic = [0u8; 16];
        let mut put = |at: usize, width: usize, value: i64| {
            let mut value = value;
            for slot in basic[at..at + width].iter_mut().rev() {
                *slot = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, 4, year);
        put(4, 2, i64::from(month));
        put(6, 2, i64::from(day));
        put(9, 2, seconds / 3600);
        put(11, 2, seconds / 60 % 60);
        put(13, 2, seconds % 60);
        basic[8] = b'T';
        basic[15] = b'Z';
        Some(Timestamp { unix, basic })
    }

    /// The current time, for callers that have no clock of their own.
    pub fn now_unix() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX))
    }

    pub fn unix(&self) -> i64 {
        self.unix
    }

    /// `20130524T000000Z`.
    pub fn as_str(&self) -> &str {
        // Built only from ASCII digits, `T` and `Z`.
        std::str::from_utf8(&self.basic).unwrap_or_default()
    }

    /// The day, `20130524`: what a credential scope names.
    pub fn day(&self) -> &str {
        &self.as_str()[..8]
    }

    /// `2013-05-24T00:00:00Z`, as S3 writes times in error bodies.
    pub fn iso8601(&self) -> String {
        let text = self.as_str();
        format!(
            "{}-{}-{}T{}:{}:{}Z",
            &text[0..4],
            &text[4..6],
            &text[6..8],
            &text[9..11],
            &text[11..13],
            &text[13..15]
        )
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * i64::from((month + 9) % 12) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day count since 1970-01-01 (`civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}
