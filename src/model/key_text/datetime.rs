//! Canonical text of the date and time types a key column may have: what `::text`
//! prints under the module's session settings (`DateStyle` ISO, `TimeZone` UTC),
//! so that `2024-01-01 08:00:00`, `2024-01-01T08:00:00` and
//! `2024-01-01 08:00:00.000` cannot all name one row.

use super::Form;

/// Latest year of a `date` (5874897-12-31).
const DATE_MAX_YEAR: u32 = 5_874_897;
/// Latest year of a timestamp (294276-12-31 23:59:59.999999).
const TIMESTAMP_MAX_YEAR: u32 = 294_276;

/// Checks a `date` text: `YYYY-MM-DD`, ` BC` after years before 1, or
/// `infinity`/`-infinity`. `Err` is the canonical form.
pub fn date(text: &str) -> Result<(), Form> {
    let form = || Form::Date;
    if is_infinity(text) {
        return Ok(());
    }
    let (body, bc) = era(text);
    calendar_day(body, bc, DATE_MAX_YEAR).ok_or_else(form)
}

/// Checks a timestamp text (`zone`: `with time zone`, printed at UTC as `+00`),
/// with at most `precision` fractional digits and no trailing zero among them.
/// `Err` is the canonical form.
pub fn timestamp(text: &str, zone: bool, precision: u8) -> Result<(), Form> {
    let offset = if zone { "+00" } else { "" };
    let form = || Form::Timestamp { zone, precision };
    if is_infinity(text) {
        return Ok(());
    }
    let (body, bc) = era(text);
    let body = body.strip_suffix(offset).ok_or_else(form)?;
    let (day, time) = body.split_once(' ').ok_or_else(form)?;
    calendar_day(day, bc, TIMESTAMP_MAX_YEAR).ok_or_else(form)?;
    clock(time, precision, false).ok_or_else(form)
}

/// Checks a `time` text: `HH:MM:SS[.ffffff]` (`24:00:00` included, as Postgres
/// has it). `Err` is the canonical form.
pub fn time(text: &str, precision: u8) -> Result<(), Form> {
    clock(text, precision, true).ok_or(Form::Time { precision })
}

fn is_infinity(text: &str) -> bool {
    text == "infinity" || text == "-infinity"
}

/// Splits off the ` BC` Postgres prints last for years before 1.
fn era(text: &str) -> (&str, bool) {
    match text.strip_suffix(" BC") {
        Some(body) => (body, true),
        None => (text, false),
    }
}

/// `n` ASCII digits exactly, as a number.
fn fixed_digits(text: &str, n: usize) -> Option<u32> {
    (text.len() == n && text.bytes().all(|b| b.is_ascii_digit())).then(|| text.parse().ok()).flatten()
}

/// `YYYY-MM-DD` naming a day that exists, within Postgres's range (from
/// 4714-11-24 BC to 31 December of `max_year`).
fn calendar_day(text: &str, bc: bool, max_year: u32) -> Option<()> {
    let mut parts = text.split('-');
    let (year, month, day) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    // Four digits at least, zero-padded; longer years have no leading zero.
    if year.len() < 4 || (year.len() > 4 && year.starts_with('0')) {
        return None;
    }
    let year = fixed_digits(year, year.len())?;
    let (month, day) = (fixed_digits(month, 2)?, fixed_digits(day, 2)?);
    // Postgres's calendar is the proleptic Gregorian one, where 1 BC is year 0.
    let astronomical = if bc { 1 - year as i64 } else { year as i64 };
    let leap = astronomical % 4 == 0 && (astronomical % 100 != 0 || astronomical % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    let in_range = match bc {
        true => year < 4714 || (year == 4714 && (month, day) >= (11, 24)),
        false => year <= max_year,
    };
    (year >= 1 && (1..=days).contains(&day) && in_range).then_some(())
}

/// `HH:MM:SS` with an optional fraction of 1 to `precision` digits not ending
/// in 0; `24:00:00` only when `end_of_day` (the `time` type has it).
fn clock(text: &str, precision: u8, end_of_day: bool) -> Option<()> {
    let (hms, fraction) = match text.split_once('.') {
        Some((hms, fraction)) => (hms, Some(fraction)),
        None => (text, None),
    };
    let mut parts = hms.split(':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let (h, m, s) = (fixed_digits(h, 2)?, fixed_digits(m, 2)?, fixed_digits(s, 2)?);
    if let Some(f) = fraction {
        let digits_ok = !f.is_empty() && f.len() <= precision as usize && f.bytes().all(|b| b.is_ascii_digit());
        if !digits_ok || f.ends_with('0') || h == 24 {
            return None;
        }
    }
    let midnight_end = end_of_day && (h, m, s) == (24, 0, 0);
    ((h < 24 && m < 60 && s < 60) || midnight_end).then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_as_iso_prints_them() {
        for ok in [
            "2024-01-31",
            "2024-02-29",
            "0044-03-15 BC",
            "0005-02-29 BC",
            "10000-01-01",
            "infinity",
            "-infinity",
            "4714-11-24 BC",
            "5874897-12-31",
        ] {
            assert!(date(ok).is_ok(), "{ok}");
        }
        for bad in [
            "2024-1-31",
            "2023-02-29",
            "2024-13-01",
            "2024-00-10",
            "2024-01-00",
            "24-01-31",
            "02024-01-31",
            "0000-01-01",
            "2024/01/31",
            "2024-01-31 ",
            "2024-01-31 00:00:00",
            "Infinity",
            "0044-03-15BC",
            "4714-11-23 BC",
            "5874898-01-01",
            "2024-01-31 AD",
            "",
        ] {
            assert!(date(bad).is_err(), "{bad:?}");
        }
        assert!(date("2024-01-31T00:00").unwrap_err().to_string().contains("YYYY-MM-DD"));
    }

    #[test]
    fn timestamps_without_a_zone() {
        for ok in [
            "2024-01-01 08:00:00",
            "2024-01-01 08:00:00.5",
            "2024-01-01 23:59:59.999999",
            "0044-03-15 08:00:00 BC",
            "infinity",
        ] {
            assert!(timestamp(ok, false, 6).is_ok(), "{ok}");
        }
        for bad in [
            "2024-01-01T08:00:00",
            "2024-01-01 08:00:00.000",
            "2024-01-01 08:00:00.50",
            "2024-01-01 08:00",
            "2024-01-01 8:00:00",
            "2024-01-01 24:00:00",
            "2024-01-01 23:59:60",
            "2024-01-01 08:00:00+00",
            "2024-01-01  08:00:00",
            "2024-01-01 08:00:00.",
            "2024-01-01 08:00:00.1234567",
            "294277-01-01 00:00:00",
            "2024-01-01",
        ] {
            assert!(timestamp(bad, false, 6).is_err(), "{bad:?}");
        }
        assert!(timestamp("2024-01-01 08:00:00.123", false, 3).is_ok());
        assert!(timestamp("2024-01-01 08:00:00.1234", false, 3).is_err(), "Postgres rounds it to 3 digits");
        assert!(timestamp("2024-01-01 08:00:00.1", false, 0).is_err());
        let err = timestamp("2024-01-01T08:00:00", false, 6).unwrap_err().to_string();
        assert!(err.contains("YYYY-MM-DD HH:MM:SS") && err.contains("not T"), "{err}");
    }

    #[test]
    fn timestamps_with_a_zone_are_printed_in_utc() {
        for ok in ["2024-01-01 08:00:00+00", "2024-01-01 08:00:00.25+00", "0044-03-15 08:00:00+00 BC", "-infinity"] {
            assert!(timestamp(ok, true, 6).is_ok(), "{ok}");
        }
        for bad in [
            "2024-01-01 08:00:00",
            "2024-01-01 08:00:00+01",
            "2024-01-01 08:00:00Z",
            "2024-01-01 08:00:00+00:00",
            "2024-01-01 08:00:00 UTC",
        ] {
            assert!(timestamp(bad, true, 6).is_err(), "{bad:?}");
        }
        assert!(timestamp("x", true, 6).unwrap_err().to_string().contains("+00"));
    }

    #[test]
    fn times_of_day() {
        for ok in ["00:00:00", "08:30:00", "23:59:59.5", "24:00:00"] {
            assert!(time(ok, 6).is_ok(), "{ok}");
        }
        for bad in ["8:30:00", "08:30", "24:00:00.5", "24:00:01", "08:30:00.10", "08:60:00", "08:30:00 "] {
            assert!(time(bad, 6).is_err(), "{bad:?}");
        }
    }
}
