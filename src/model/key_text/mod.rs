//! One row, one key: the id part of a key must spell each key column exactly as
//! Postgres prints its value (`column::text`) in the module's sessions, which fix
//! `DateStyle` to ISO and `TimeZone` to UTC so the printing never changes. The
//! checks are pure Rust, since they run on the Redis main thread for every
//! write: a key that is not the canonical text is refused with the form it
//! should have, so `users:007`, `rd:1@2024-01-01T08:00:00` and `prices:1.50`
//! cannot alias `users:7`, `rd:1@2024-01-01 08:00:00` and `prices:1.5`.

mod datetime;
mod numbers;

use std::fmt;

/// What the canonical text of a key column's values is, from its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyType {
    /// The type as `format_type` names it, for messages.
    name: String,
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// `smallint`, `integer`, `bigint`, `oid`: the bounds.
    Integer(i128, i128),
    /// `numeric`, with its `(precision, scale)` when declared.
    Numeric(Option<(i32, i32)>),
    /// `text`, `character varying` and `name` (any text within the length), or
    /// `character(n)` (`padded`: `::text` drops trailing spaces, so a value
    /// spelled with them names the same row).
    Text {
        max_chars: Option<usize>,
        max_bytes: Option<usize>,
        padded: bool,
    },
    Uuid,
    Boolean,
    Date,
    /// Timestamps; `zone`: `with time zone`.
    Timestamp {
        zone: bool,
        precision: u8,
    },
    /// `time without time zone`.
    Time {
        precision: u8,
    },
    /// An enum: its labels.
    Enum(Vec<String>),
}

/// The key column types with a canonical text, for the error about others.
pub const SUPPORTED: &str = "smallint, integer, bigint, oid, numeric, text, character varying, character, name, \
     uuid, boolean, date, timestamp, timestamp with time zone, time, enums, and domains over these";

impl KeyType {
    /// The key type of a column: `sql_type` as `format_type` prints it with its
    /// type modifier (`numeric(10,2)`, `timestamp(3) without time zone`), and
    /// the labels when it is an enum. A type whose values have no single text
    /// the module can check (`real`, `inet`, `citext`...) is an error.
    pub fn from_catalog(sql_type: &str, enum_labels: Option<Vec<String>>) -> Result<KeyType, UnsupportedKeyType> {
        let kind = match enum_labels {
            Some(labels) => Kind::Enum(labels),
            None => kind_of(sql_type).ok_or_else(|| UnsupportedKeyType(sql_type.to_string()))?,
        };
        Ok(KeyType { name: sql_type.to_string(), kind })
    }

    /// The type's name, as `format_type` prints it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The type for checking values Postgres printed itself (rows read, ids a
    /// trigger announced): an enum's values are labels Postgres has, even ones
    /// added since its labels were read, so any label passes; the rest as is.
    pub fn printed_by_postgres(&self) -> KeyType {
        match &self.kind {
            Kind::Enum(_) => KeyType {
                name: self.name.clone(),
                kind: Kind::Text { max_chars: None, max_bytes: None, padded: false },
            },
            _ => self.clone(),
        }
    }

    /// Whether this is an enum, whose labels may grow after the schema was read.
    pub fn is_enum(&self) -> bool {
        matches!(self.kind, Kind::Enum(_))
    }

    /// Whether `to_jsonb` spells a value of this type as its text, so the
    /// NOTIFY trigger may read it the cheap way: not for timestamps (`T`, and
    /// the writer's time zone) nor `character(n)` (padded).
    pub fn json_spells_text(&self) -> bool {
        !matches!(self.kind, Kind::Timestamp { .. } | Kind::Text { padded: true, .. })
    }

    /// Whether `text` is the canonical text of a value of this type. `Err`
    /// describes the canonical form, for the refusal's message.
    pub fn check(&self, text: &str) -> Result<(), Form> {
        match &self.kind {
            Kind::Integer(min, max) => numbers::integer(text, *min, *max),
            Kind::Numeric(typmod) => numbers::numeric(text, *typmod),
            Kind::Text { max_chars, max_bytes, padded } => {
                if *padded && text.ends_with(' ') {
                    return Err(Form::NoTrailingSpaces);
                }
                if let Some(n) = max_chars.filter(|n| text.chars().count() > *n) {
                    return Err(Form::MaxChars(n));
                }
                if let Some(n) = max_bytes.filter(|n| text.len() > *n) {
                    return Err(Form::MaxBytes(n));
                }
                Ok(())
            }
            Kind::Uuid => uuid(text),
            Kind::Boolean if text == "true" || text == "false" => Ok(()),
            Kind::Boolean => Err(Form::Boolean),
            Kind::Date => datetime::date(text),
            Kind::Timestamp { zone, precision } => datetime::timestamp(text, *zone, *precision),
            Kind::Time { precision } => datetime::time(text, *precision),
            Kind::Enum(labels) if labels.iter().any(|l| l == text) => Ok(()),
            Kind::Enum(labels) => Err(Form::Label(labels.clone())),
        }
    }
}

/// A key column type with no single text per value ([`SUPPORTED`] lists those
/// that have one): its name as `format_type` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsupportedKeyType(pub String);

impl fmt::Display for UnsupportedKeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "type {} has no single text per value that redis-pgsync can check at write time, so it \
             cannot be a key column (supported: {SUPPORTED})",
            self.0
        )
    }
}

impl std::error::Error for UnsupportedKeyType {}

/// The canonical form a key column's text must have, when a text does not: the
/// kind of check it failed, shown in the refusal's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Form {
    /// An integer type within these bounds.
    Integer {
        /// The least value.
        min: i128,
        /// The greatest value.
        max: i128,
    },
    /// `numeric`, with its `(precision, scale)` when declared.
    Numeric(Option<(i32, i32)>),
    /// `character(n)`: `::text` drops trailing spaces.
    NoTrailingSpaces,
    /// A length in characters.
    MaxChars(usize),
    /// A length in bytes (`name`).
    MaxBytes(usize),
    /// A uuid as Postgres prints it.
    Uuid,
    /// `true` or `false`.
    Boolean,
    /// An ISO date.
    Date,
    /// A timestamp at UTC (`zone`: `with time zone`).
    Timestamp {
        /// Whether the type has a time zone.
        zone: bool,
        /// Its fractional digits.
        precision: u8,
    },
    /// A time of day.
    Time {
        /// Its fractional digits.
        precision: u8,
    },
    /// An enum: one of its labels.
    Label(Vec<String>),
}

impl fmt::Display for Form {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fraction = |precision: u8| if precision > 0 { "[.ffffff]" } else { "" };
        match self {
            Form::Integer { min, max } => {
                write!(f, "digits only, an optional -, no leading zeros, from {min} to {max}")
            }
            Form::Numeric(None) => f.write_str(
                "digits with an optional - and . (no leading zeros, no trailing fractional zeros, \
                 no exponent, no -0), NaN, Infinity or -Infinity, as 1.5 rather than 1.50",
            ),
            Form::Numeric(Some((p, s))) if *s > 0 => write!(
                f,
                "an optional -, digits, then exactly {s} decimals (as 12.{}), at most {p} digits in all, or NaN",
                "0".repeat(*s as usize)
            ),
            Form::Numeric(Some((p, 0))) => {
                write!(f, "digits only, an optional -, no leading zeros, at most {p} digits, or NaN")
            }
            Form::Numeric(Some((p, s))) => {
                write!(f, "digits only, an optional -, ending in {} zeros, at most {} digits, or NaN", -s, p - s)
            }
            Form::NoTrailingSpaces => f.write_str("no trailing spaces: Postgres drops them"),
            Form::MaxChars(n) => write!(f, "at most {n} characters"),
            Form::MaxBytes(n) => write!(f, "at most {n} bytes"),
            Form::Uuid => f.write_str("lowercase xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"),
            Form::Boolean => f.write_str("true or false"),
            Form::Date => f.write_str(
                "YYYY-MM-DD (a real day, 4-digit year zero-padded, ' BC' after years before 1), \
                   infinity or -infinity, as 2024-01-31",
            ),
            Form::Timestamp { zone, precision } => write!(
                f,
                "YYYY-MM-DD HH:MM:SS{} (a space, not T; fractional seconds only when not zero, at most {precision} \
             digits, no trailing zeros{}; ' BC' last for years before 1), infinity or -infinity, as 2024-01-31 08:00:00{}",
                fraction(*precision),
                if *zone { "; in UTC, written +00" } else { "; no time zone" },
                if *zone { "+00" } else { "" },
            ),
            Form::Time { precision } => write!(
                f,
                "HH:MM:SS{} (00:00:00 to 24:00:00; fractional seconds only when not zero, at most {precision} digits, \
             no trailing zeros), as 08:30:00",
                fraction(*precision)
            ),
            Form::Label(labels) => write!(f, "one of the labels {}", labels.join(", ")),
        }
    }
}

impl std::error::Error for Form {}

/// The kind of a type named by `format_type` (with its modifier), if supported.
fn kind_of(sql_type: &str) -> Option<Kind> {
    let text = |max_chars, padded| Kind::Text { max_chars, max_bytes: None, padded };
    Some(match sql_type {
        "smallint" => Kind::Integer(i16::MIN.into(), i16::MAX.into()),
        "integer" => Kind::Integer(i32::MIN.into(), i32::MAX.into()),
        "bigint" => Kind::Integer(i64::MIN.into(), i64::MAX.into()),
        "oid" => Kind::Integer(0, u32::MAX.into()),
        "numeric" => Kind::Numeric(None),
        "text" | "character varying" => text(None, false),
        // Postgres cuts a name to 63 bytes, so longer ones alias.
        "name" => Kind::Text { max_chars: None, max_bytes: Some(63), padded: false },
        "bpchar" => text(None, true),
        "uuid" => Kind::Uuid,
        "boolean" => Kind::Boolean,
        "date" => Kind::Date,
        "timestamp without time zone" => Kind::Timestamp { zone: false, precision: 6 },
        "timestamp with time zone" => Kind::Timestamp { zone: true, precision: 6 },
        "time without time zone" => Kind::Time { precision: 6 },
        _ => return with_modifier(sql_type),
    })
}

/// The kinds whose name carries a modifier: `numeric(10,2)`,
/// `character varying(20)`, `character(5)`, `timestamp(3) with time zone`.
fn with_modifier(sql_type: &str) -> Option<Kind> {
    let (base, rest) = sql_type.split_once('(')?;
    let (args, tail) = rest.split_once(')')?;
    let numbers: Vec<i32> = args.split(',').map(|a| a.trim().parse().ok()).collect::<Option<_>>()?;
    let length = || usize::try_from(*numbers.first()?).ok();
    let precision = || u8::try_from(*numbers.first()?).ok().filter(|p| *p <= 6);
    Some(match (base, tail, numbers.as_slice()) {
        ("numeric", "", [p, s]) => Kind::Numeric(Some((*p, *s))),
        ("numeric", "", [p]) => Kind::Numeric(Some((*p, 0))),
        ("character varying", "", [_]) => Kind::Text { max_chars: Some(length()?), max_bytes: None, padded: false },
        ("character", "", [_]) => Kind::Text { max_chars: Some(length()?), max_bytes: None, padded: true },
        ("timestamp", " without time zone", [_]) => Kind::Timestamp { zone: false, precision: precision()? },
        ("timestamp", " with time zone", [_]) => Kind::Timestamp { zone: true, precision: precision()? },
        ("time", " without time zone", [_]) => Kind::Time { precision: precision()? },
        _ => return None,
    })
}

/// A uuid as Postgres prints it: lowercase, hyphenated.
fn uuid(text: &str) -> Result<(), Form> {
    let lower_hex = |s: &str| s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let groups: Vec<&str> = text.split('-').collect();
    let lengths: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    if lengths == [8, 4, 4, 4, 12] && groups.iter().all(|g| lower_hex(g)) {
        Ok(())
    } else {
        Err(Form::Uuid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_type(sql_type: &str) -> KeyType {
        KeyType::from_catalog(sql_type, None).unwrap()
    }

    #[test]
    fn types_are_read_from_format_type_with_their_modifier() {
        assert_eq!(key_type("numeric(10,2)").kind, Kind::Numeric(Some((10, 2))));
        assert_eq!(key_type("timestamp(3) with time zone").kind, Kind::Timestamp { zone: true, precision: 3 });
        assert_eq!(
            key_type("character varying(20)").kind,
            Kind::Text { max_chars: Some(20), max_bytes: None, padded: false }
        );
        assert_eq!(key_type("character(5)").kind, Kind::Text { max_chars: Some(5), max_bytes: None, padded: true });
        for unsupported in
            ["real", "double precision", "inet", "citext", "bytea", "interval", "integer[]", "time with time zone"]
        {
            let err = KeyType::from_catalog(unsupported, None).unwrap_err().to_string();
            assert!(err.contains(unsupported) && err.contains("supported:"), "{err}");
        }
    }

    #[test]
    fn each_type_has_one_spelling() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            ("integer", &["12", "-5"], &["012", "+12", "12.0"]),
            ("oid", &["0", "4294967295"], &["-1", "4294967296"]),
            (
                "uuid",
                &["6ce0ab12-0000-4000-8000-00000000000a"],
                &["6CE0AB12-0000-4000-8000-00000000000A", "6ce0ab1200004000800000000000000a"],
            ),
            ("text", &[" padded ", "a b", ""], &[]),
            ("character varying(3)", &["abc", "äöü"], &["abcd", "ab  "]),
            ("character(5)", &["ab", " ab"], &["ab ", "abcdef"]),
            ("name", &["users"], &[&"x".repeat(64)]),
            ("boolean", &["true", "false"], &["t", "TRUE", "1", "yes", "on"]),
            ("date", &["2024-01-31"], &["2024-1-31", " 2024-01-31"]),
            (
                "timestamp without time zone",
                &["2024-01-01 08:00:00"],
                &["2024-01-01T08:00:00", "2024-01-01 08:00:00.000"],
            ),
            ("timestamp with time zone", &["2024-01-01 08:00:00+00"], &["2024-01-01 09:00:00+01"]),
            ("time without time zone", &["08:00:00"], &["8:00"]),
            ("numeric", &["1.5"], &["1.50"]),
        ];
        for (sql_type, good, bad) in cases {
            let t = key_type(sql_type);
            for text in *good {
                assert!(t.check(text).is_ok(), "{sql_type}: {text:?}");
            }
            for text in *bad {
                assert!(t.check(text).is_err(), "{sql_type}: {text:?}");
            }
        }
    }

    #[test]
    fn the_forms_read_as_before_they_were_kinds() {
        let form = |sql_type: &str, text: &str| key_type(sql_type).check(text).unwrap_err().to_string();
        assert_eq!(form("smallint", "x"), "digits only, an optional -, no leading zeros, from -32768 to 32767");
        assert_eq!(
            form("numeric(10,2)", "x"),
            "an optional -, digits, then exactly 2 decimals (as 12.00), at most 10 digits in all, or NaN"
        );
        assert_eq!(
            form("numeric(5,-2)", "x"),
            "digits only, an optional -, ending in 2 zeros, at most 7 digits, or NaN"
        );
        assert_eq!(
            form("numeric", "x"),
            "digits with an optional - and . (no leading zeros, no trailing fractional zeros, no exponent, no -0), \
             NaN, Infinity or -Infinity, as 1.5 rather than 1.50"
        );
        assert_eq!(
            form("date", "x"),
            "YYYY-MM-DD (a real day, 4-digit year zero-padded, ' BC' after years before 1), infinity or -infinity, \
             as 2024-01-31"
        );
        assert_eq!(
            form("timestamp(3) with time zone", "x"),
            "YYYY-MM-DD HH:MM:SS[.ffffff] (a space, not T; fractional seconds only when not zero, at most 3 digits, \
             no trailing zeros; in UTC, written +00; ' BC' last for years before 1), infinity or -infinity, \
             as 2024-01-31 08:00:00+00"
        );
        assert_eq!(
            form("time(0) without time zone", "x"),
            "HH:MM:SS (00:00:00 to 24:00:00; fractional seconds only when not zero, at most 0 digits, \
             no trailing zeros), as 08:30:00"
        );
        assert_eq!(form("character(2)", "a "), "no trailing spaces: Postgres drops them");
        assert_eq!(form("character varying(2)", "abc"), "at most 2 characters");
        assert_eq!(form("name", &"x".repeat(64)), "at most 63 bytes");
        assert_eq!(form("uuid", "x"), "lowercase xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx");
    }

    #[test]
    fn enums_are_their_labels() {
        let mood = KeyType::from_catalog("mood", Some(vec!["happy".into(), "sad".into()])).unwrap();
        assert!(mood.check("sad").is_ok());
        assert_eq!(mood.check("Sad").unwrap_err().to_string(), "one of the labels happy, sad");
        assert_eq!(mood.name(), "mood");
        assert!(mood.printed_by_postgres().check("calm").is_ok(), "a label added since is Postgres's own");
    }
}
