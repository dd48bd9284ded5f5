//! Canonical text of the number types a key column may have: what `::text`
//! prints for integers and `numeric`, so that `007`, `+7` and `7.0` cannot all
//! name row 7.

use super::Form;

/// Checks an integer type's text: optional `-`, digits without leading zeros,
/// no `-0`, within `min..=max`. `Err` is the canonical form.
pub fn integer(text: &str, min: i128, max: i128) -> Result<(), Form> {
    let form = || Form::Integer { min, max };
    let digits = text.strip_prefix('-').unwrap_or(text);
    if !plain_digits(digits) || text == "-0" {
        return Err(form());
    }
    match text.parse::<i128>() {
        Ok(n) if (min..=max).contains(&n) => Ok(()),
        _ => Err(form()),
    }
}

/// Digits without a leading zero (but `0` itself), at least one.
fn plain_digits(digits: &str) -> bool {
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && (digits == "0" || !digits.starts_with('0'))
}

/// Checks a `numeric` text. `typmod` is `(precision, scale)` when the column
/// declares them: then every value has exactly `scale` decimals (Postgres rounds
/// others, so `1.5` and `1.50` would both write `1.50`). A bare `numeric` keeps
/// the scale it was given, and `1.5 = 1.50`: its one spelling has no trailing
/// fractional zero. `Err` is the canonical form.
pub fn numeric(text: &str, typmod: Option<(i32, i32)>) -> Result<(), Form> {
    let form = || Form::Numeric(typmod);
    if text == "NaN" || (typmod.is_none() && (text == "Infinity" || text == "-Infinity")) {
        return Ok(());
    }
    let (negative, body) = match text.strip_prefix('-') {
        Some(body) => (true, body),
        None => (false, text),
    };
    let (whole, fraction) = match body.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (body, None),
    };
    let fraction_ok = |f: &str| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit());
    if !plain_digits(whole) || !fraction.is_none_or(fraction_ok) {
        return Err(form());
    }
    // Postgres prints zero unsigned, whatever sign it was given.
    if negative && body.bytes().all(|b| b == b'0' || b == b'.') {
        return Err(form());
    }
    let whole_digits = if whole == "0" { 0 } else { whole.len() as i32 };
    let well_formed = match (typmod, fraction) {
        (None, Some(f)) => !f.ends_with('0'),
        (None, None) => true,
        (Some((_, s)), Some(f)) => s > 0 && f.len() == s as usize,
        (Some((_, s)), None) if s > 0 => false,
        // A negative scale rounds to tens, hundreds...: the last -s digits are zeros.
        (Some((_, s)), None) => whole == "0" || whole.len() as i32 > -s && whole.ends_with(&"0".repeat(-s as usize)),
    };
    let fits = match typmod {
        Some((p, s)) if p >= s => whole_digits <= p - s,
        _ => true,
    };
    if well_formed && fits {
        Ok(())
    } else {
        Err(form())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_have_one_spelling() {
        let int = |t: &str| integer(t, i32::MIN as i128, i32::MAX as i128);
        for ok in ["0", "12", "-5", "2147483647", "-2147483648"] {
            assert!(int(ok).is_ok(), "{ok}");
        }
        for bad in ["00012", "+12", " 12", "12 ", "12\n", "-0", "", "-", "1e3", "2147483648", "0x1", "1.0"] {
            assert!(int(bad).is_err(), "{bad:?}");
        }
        assert!(integer("40000", i16::MIN as i128, i16::MAX as i128).unwrap_err().to_string().contains("32767"));
    }

    #[test]
    fn bare_numeric_has_no_trailing_zeros() {
        for ok in ["0", "1.5", "-1.5", "0.001", "12", "NaN", "Infinity", "-Infinity", "123456789012345678901234567890"]
        {
            assert!(numeric(ok, None).is_ok(), "{ok}");
        }
        for bad in ["1.50", "1.", ".5", "01.5", "+1.5", "-0", "-0.0", "1e3", "1.0", "0.0", " 1", "nan", "inf", "1,5"] {
            assert!(numeric(bad, None).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn numeric_with_a_scale_has_exactly_that_many_decimals() {
        let money = Some((10, 2));
        for ok in ["1.50", "-1.50", "0.00", "12345678.99", "NaN"] {
            assert!(numeric(ok, money).is_ok(), "{ok}");
        }
        for bad in ["1.5", "1.500", "1", "-0.00", "123456789.00", "Infinity", "00.50"] {
            assert!(numeric(bad, money).is_err(), "{bad:?}");
        }
        assert!(numeric("1.5", money).unwrap_err().to_string().contains("exactly 2 decimals"));
        assert!(numeric("12345", Some((5, 0))).is_ok());
        assert!(numeric("12345.0", Some((5, 0))).is_err());
        assert!(numeric("123456", Some((5, 0))).is_err(), "overflows numeric(5,0)");
        assert!(numeric("12300", Some((5, -2))).is_ok());
        assert!(numeric("12345", Some((5, -2))).is_err(), "Postgres rounds it to 12300");
        assert!(numeric("0", Some((5, -2))).is_ok());
    }
}
