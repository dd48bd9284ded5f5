//! Values Postgres will certainly refuse for a column, found before the write
//! runs: text that cannot be the column's type (an integer out of range, a word
//! where a boolean goes, a malformed uuid or JSON, a label the enum lacks, text
//! longer than `varchar(n)`). Each check accepts at least everything Postgres's
//! own input function accepts (also the forms newer versions added, such as
//! `0x1F` or `1_000`), so a value it refuses is one Postgres refuses too; what
//! only Postgres can decide (constraints, triggers, other rows) is left to it.
//! Pure and O(length of the value): it runs on the main thread, in the command.

/// What a column's values must be, as far as the checks here need to know.
#[derive(Debug, Clone, Copy)]
pub struct ColumnType<'a> {
    /// The type as `format_type(oid, NULL)` names it (`integer`, `character varying`, an enum's name).
    pub sql_type: &'a str,
    /// For `varchar(n)` and `char(n)`: `n`.
    pub max_chars: Option<usize>,
    /// For an enum: its labels.
    pub labels: Option<&'a [String]>,
}

/// Why Postgres would refuse a value for a column; the text follows the field
/// and column in the refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadValue {
    /// Not one of the enum's labels.
    NotALabel {
        /// The enum type.
        sql_type: String,
        /// Its labels.
        labels: Vec<String>,
    },
    /// Not an integer at all (the integer type).
    NotAnInteger(&'static str),
    /// An integer outside the type's range (the type).
    OutOfRange(&'static str),
    /// Not a value of the type (the type).
    Invalid(String),
    /// More characters than `varchar(n)`/`char(n)` holds (`n`).
    TooLong(usize),
}

impl std::fmt::Display for BadValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadValue::NotALabel { sql_type, labels } => {
                write!(f, "not a label of enum {sql_type} ({})", labels.join(", "))
            }
            BadValue::NotAnInteger(name) => write!(f, "not an integer ({name})"),
            BadValue::OutOfRange(name) => write!(f, "out of range for {name}"),
            BadValue::Invalid(sql_type) => write!(f, "not a valid {sql_type}"),
            BadValue::TooLong(max) => write!(f, "longer than {max} characters"),
        }
    }
}

impl std::error::Error for BadValue {}

/// Why Postgres would refuse `value` for a column of this type, or `Ok` when it
/// may accept it. Types without a check here (text, domains, arrays, ...) pass.
pub fn check(column: &ColumnType, value: &[u8]) -> Result<(), BadValue> {
    // Postgres refuses bytes that are not text in the database's encoding; that
    // is the writer's concern (it names the field), not a type's.
    let Ok(text) = std::str::from_utf8(value) else { return Ok(()) };
    if let Some(labels) = column.labels {
        return match labels.iter().any(|l| l == text) {
            true => Ok(()),
            false => Err(BadValue::NotALabel { sql_type: column.sql_type.to_string(), labels: labels.to_vec() }),
        };
    }
    let ok = match column.sql_type {
        "smallint" => return integer(text, i16::MIN.into(), i16::MAX.into(), "smallint"),
        "integer" => return integer(text, i32::MIN.into(), i32::MAX.into(), "integer"),
        "bigint" => return integer(text, i64::MIN.into(), i64::MAX.into(), "bigint"),
        "numeric" | "real" | "double precision" => number(text),
        "boolean" => boolean(text),
        "date" | "timestamp without time zone" | "timestamp with time zone" => datetime(text, true),
        "time without time zone" | "time with time zone" => datetime(text, false),
        "uuid" => uuid(text.as_bytes()),
        "json" | "jsonb" => json(text.as_bytes()),
        "character varying" | "character" => return chars(text, column.max_chars),
        _ => true,
    };
    match ok {
        true => Ok(()),
        false => Err(BadValue::Invalid(column.sql_type.to_string())),
    }
}

/// Postgres's `isspace`: what its input functions skip around a value.
fn trim(text: &str) -> &str {
    text.trim_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c'])
}

/// Digits of `radix`, single underscores allowed between them; the value, or
/// `None` when malformed (`Some(None)`: too large for an i128).
fn digits(text: &str, radix: u32) -> Option<Option<i128>> {
    if text.is_empty() || text.starts_with('_') || text.ends_with('_') || text.contains("__") {
        return None;
    }
    let mut value: Option<i128> = Some(0);
    for c in text.chars().filter(|c| *c != '_') {
        let d = c.to_digit(radix)?;
        value = value.and_then(|v| v.checked_mul(radix.into())).and_then(|v| v.checked_add(d.into()));
    }
    Some(value)
}

/// An integer as `int2in`/`int4in`/`int8in` read it: sign, decimal or
/// `0x`/`0o`/`0b` digits, underscores between digits, surrounding spaces.
fn integer(text: &str, min: i128, max: i128, name: &'static str) -> Result<(), BadValue> {
    let text = trim(text);
    let (negative, unsigned) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let lower = unsigned.get(..2).map(str::to_ascii_lowercase);
    let (radix, body) = match lower.as_deref() {
        Some("0x") => (16, &unsigned[2..]),
        Some("0o") => (8, &unsigned[2..]),
        Some("0b") => (2, &unsigned[2..]),
        _ => (10, unsigned),
    };
    let magnitude = digits(body, radix).ok_or(BadValue::NotAnInteger(name))?;
    let value = magnitude.map(|m| if negative { -m } else { m });
    match value {
        Some(v) if (min..=max).contains(&v) => Ok(()),
        _ => Err(BadValue::OutOfRange(name)),
    }
}

/// A number as `numeric_in` or `float8in` read it (the union of both).
fn number(text: &str) -> bool {
    let text = trim(text);
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let word = unsigned.to_ascii_lowercase();
    if matches!(word.as_str(), "nan" | "inf" | "infinity") {
        return true;
    }
    if let Some(radix) = match word.get(..2) {
        Some("0x") => Some(16),
        Some("0o") => Some(8),
        Some("0b") => Some(2),
        _ => None,
    } {
        return digits(&unsigned[2..], radix).is_some();
    }
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (&unsigned[..at], Some(&unsigned[at + 1..])),
        None => (unsigned, None),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let part = |p: &str| p.is_empty() || digits(p, 10).is_some();
    let mantissa_ok = (!whole.is_empty() || !fraction.is_empty()) && part(whole) && part(fraction);
    let exponent_ok = exponent.is_none_or(|e| digits(e.strip_prefix(['+', '-']).unwrap_or(e), 10).is_some());
    mantissa_ok && exponent_ok
}

/// A boolean as `boolin` reads it: a prefix of true/false/yes/no (at least
/// two letters of on/off), 1 or 0, any case, surrounding spaces.
fn boolean(text: &str) -> bool {
    let word = trim(text).to_ascii_lowercase();
    let prefix_of = |full: &str, least: usize| word.len() >= least && full.starts_with(word.as_str());
    prefix_of("true", 1)
        || prefix_of("false", 1)
        || prefix_of("yes", 1)
        || prefix_of("no", 1)
        || prefix_of("on", 2)
        || prefix_of("off", 2)
        || word == "1"
        || word == "0"
}

/// Words that stand for a date or time on their own.
const SPECIAL_TIMES: &[&str] =
    &["epoch", "infinity", "-infinity", "+infinity", "now", "today", "tomorrow", "yesterday", "allballs"];

/// A date, timestamp or time. Postgres reads many forms (`Jan 8 1999`,
/// `J2451187`, `1999.008`), so only what none of them can be is refused: text
/// without a digit that is no special word, and an ISO date (`YYYY-MM-DD`,
/// with a date) or time of day whose fields are out of range.
fn datetime(text: &str, with_date: bool) -> bool {
    let text = trim(text).to_ascii_lowercase();
    if !text.bytes().any(|b| b.is_ascii_digit()) {
        return text.split_ascii_whitespace().next().is_some_and(|first| SPECIAL_TIMES.contains(&first));
    }
    let mut rest = text.as_str();
    if with_date {
        if let Some((date, after)) = iso_date(rest) {
            if !date_in_range(date, text.contains("bc")) {
                return false;
            }
            rest = after.trim_start_matches([' ', 't']);
        }
    }
    time_in_range(rest)
}

/// `YYYY-MM-DD` (four or more year digits) at the start, ended by the text's
/// end, a space or `t`: the numbers and what follows.
fn iso_date(text: &str) -> Option<((u32, u32, u32), &str)> {
    let mut parts = text.splitn(3, '-');
    let year = parts.next()?;
    let month = parts.next()?;
    let tail = parts.next()?;
    let day_len = tail.bytes().take_while(u8::is_ascii_digit).count();
    let (day, after) = tail.split_at(day_len);
    let numeric = |s: &str, lens: std::ops::RangeInclusive<usize>| {
        lens.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
    };
    let ended = after.is_empty() || after.starts_with([' ', 't']);
    if !(numeric(year, 4..=4) && numeric(month, 1..=2) && numeric(day, 1..=2) && ended) {
        return None;
    }
    Some(((year.parse().ok()?, month.parse().ok()?, day.parse().ok()?), after))
}

fn date_in_range((year, month, day): (u32, u32, u32), bc: bool) -> bool {
    // A BC year's leap years are shifted by one: let Postgres decide Feb 29.
    let leap = bc || (year % 4 == 0 && (year % 100 != 0 || year % 400 == 0));
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&day)
}

/// A leading `HH:MM` must be a time of day (24:00 is one to Postgres).
fn time_in_range(text: &str) -> bool {
    let Some((hour, rest)) = text.split_once(':') else { return true };
    let minute = &rest[..rest.bytes().take_while(u8::is_ascii_digit).count()];
    let numeric = |s: &str| (1..=2).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    if !(numeric(hour) && numeric(minute)) {
        return true;
    }
    hour.parse::<u32>().is_ok_and(|h| h <= 24) && minute.parse::<u32>().is_ok_and(|m| m <= 59)
}

/// A uuid as `uuid_in` reads it: 32 hex digits, a hyphen allowed after any
/// group of four, optionally in braces; nothing around it.
fn uuid(text: &[u8]) -> bool {
    let (braces, mut rest) = match text.strip_prefix(b"{") {
        Some(inner) => (true, inner),
        None => (false, text),
    };
    for i in 0..16 {
        match rest {
            [a, b, tail @ ..] if a.is_ascii_hexdigit() && b.is_ascii_hexdigit() => rest = tail,
            _ => return false,
        }
        if i % 2 == 1 && i < 15 {
            rest = rest.strip_prefix(b"-").unwrap_or(rest);
        }
    }
    if braces {
        rest = match rest.strip_prefix(b"}") {
            Some(r) => r,
            None => return false,
        };
    }
    rest.is_empty()
}

/// JSON text by its grammar (RFC 8259, as Postgres's `json` reads it). No
/// recursion: nesting depth costs a byte of stack each, on the heap.
fn json(text: &[u8]) -> bool {
    let mut p = Json { text, at: 0 };
    let mut open: Vec<u8> = Vec::new();
    loop {
        // A value.
        p.space();
        match p.peek() {
            Some(b'[') | Some(b'{') => {
                let bracket = p.bump();
                p.space();
                let close = if bracket == b'[' { b']' } else { b'}' };
                if p.peek() == Some(close) {
                    p.bump();
                } else {
                    open.push(close);
                    if close == b'}' && !p.key() {
                        return false;
                    }
                    continue;
                }
            }
            Some(b'"') if p.string() => {}
            Some(b'-' | b'0'..=b'9') if p.number() => {}
            _ if p.word(b"true") || p.word(b"false") || p.word(b"null") => {}
            _ => return false,
        }
        // What follows a value: the end, a comma, or closing brackets.
        loop {
            p.space();
            let Some(&close) = open.last() else { return p.at == text.len() };
            match p.peek() {
                Some(b',') => {
                    p.bump();
                    if close == b'}' && !p.key() {
                        return false;
                    }
                    break;
                }
                Some(c) if c == close => {
                    p.bump();
                    open.pop();
                }
                _ => return false,
            }
        }
    }
}

struct Json<'a> {
    text: &'a [u8],
    at: usize,
}

impl Json<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn bump(&mut self) -> u8 {
        let c = self.peek().unwrap_or(0);
        self.at += 1;
        c
    }

    fn space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn word(&mut self, word: &[u8]) -> bool {
        let found = self.text[self.at..].starts_with(word);
        if found {
            self.at += word.len();
        }
        found
    }

    /// An object's key and its colon.
    fn key(&mut self) -> bool {
        self.space();
        if self.peek() != Some(b'"') || !self.string() {
            return false;
        }
        self.space();
        self.peek() == Some(b':') && self.bump() == b':'
    }

    fn string(&mut self) -> bool {
        self.at += 1;
        while let Some(c) = self.peek() {
            self.at += 1;
            match c {
                b'"' => return true,
                b'\\' => match self.peek() {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.at += 1,
                    Some(b'u') => {
                        let hex = self.text.get(self.at + 1..self.at + 5);
                        if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                            return false;
                        }
                        self.at += 5;
                    }
                    _ => return false,
                },
                c if c < 0x20 => return false,
                _ => {}
            }
        }
        false
    }

    fn number(&mut self) -> bool {
        let run = |p: &mut Self| {
            let start = p.at;
            while p.peek().is_some_and(|c| c.is_ascii_digit()) {
                p.at += 1;
            }
            p.at - start
        };
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        if self.peek() == Some(b'0') {
            self.at += 1;
        } else if run(self) == 0 {
            return false;
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if run(self) == 0 {
                return false;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if run(self) == 0 {
                return false;
            }
        }
        true
    }
}

/// `varchar(n)`/`char(n)`: at most `n` characters, or more when the excess is
/// only spaces (Postgres cuts those off).
fn chars(text: &str, max: Option<usize>) -> Result<(), BadValue> {
    let Some(max) = max else { return Ok(()) };
    match text.char_indices().nth(max) {
        Some((at, _)) if text[at..].bytes().any(|b| b != b' ') => Err(BadValue::TooLong(max)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
