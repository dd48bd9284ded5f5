//! One row, one key: the id part of a key must be the primary key's canonical text,
//! so that `users:12`, `users:012` and `users:+12` cannot all write row 12.

/// Checks that a key suffix can be a primary-key value at all: non-empty UTF-8,
/// no NUL byte (Postgres text cannot hold one) and no braces (which would break the
/// `__{...}` and ack-stream key shapes).
pub fn check_id(id: &[u8]) -> Result<&str, String> {
    let text = std::str::from_utf8(id).map_err(|_| "the key's id is not valid UTF-8".to_string())?;
    if text.is_empty() {
        return Err("the key has no id after its prefix".into());
    }
    if text.contains('\0') {
        return Err("the key's id contains a NUL byte, which Postgres cannot store".into());
    }
    if text.contains(['{', '}']) {
        return Err(format!("the key's id \"{}\" contains a brace", text.as_bytes().escape_ascii()));
    }
    Ok(text)
}

/// Checks that `id` is written exactly as Postgres prints a value of the key
/// column's type (`sql_type` as `format_type` names it), so no two keys alias one
/// row. Integers: optional `-`, no `+`, no leading zeros, no spaces, in range.
/// UUIDs: lowercase, hyphenated. Text types: any text. Other types: no leading or
/// trailing whitespace (Postgres then decides).
pub fn check_canonical(id: &str, sql_type: &str) -> Result<(), String> {
    let range = match sql_type {
        "smallint" => Some((i16::MIN as i128, i16::MAX as i128)),
        "integer" => Some((i32::MIN as i128, i32::MAX as i128)),
        "bigint" => Some((i64::MIN as i128, i64::MAX as i128)),
        _ => None,
    };
    let refuse = |form: &str| {
        Err(format!(
            "the key's id \"{}\" is not a canonical {sql_type} ({form}); one row has exactly one key",
            id.as_bytes().escape_ascii()
        ))
    };
    if let Some((min, max)) = range {
        let digits = id.strip_prefix('-').unwrap_or(id);
        let well_formed = !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && (digits == "0" || !digits.starts_with('0'))
            && id != "-0";
        return match id.parse::<i128>() {
            Ok(n) if well_formed && (min..=max).contains(&n) => Ok(()),
            Ok(_) if well_formed => refuse("out of range"),
            _ => refuse("digits only, an optional -, no leading zeros"),
        };
    }
    if sql_type == "uuid" {
        let lower_hex = |s: &str| s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let groups: Vec<&str> = id.split('-').collect();
        let lengths: Vec<usize> = groups.iter().map(|g| g.len()).collect();
        return if lengths == [8, 4, 4, 4, 12] && groups.iter().all(|g| lower_hex(g)) {
            Ok(())
        } else {
            refuse("lowercase xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx")
        };
    }
    let texty = matches!(sql_type, "text" | "name" | "citext") || sql_type.starts_with("character");
    if !texty && id.trim() != id {
        return refuse("no surrounding whitespace");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_ids_are_reported() {
        assert!(check_id(b"").is_err());
        assert!(check_id(b"\xff").is_err());
        assert!(check_id(b"a}b").is_err());
        assert!(check_id(b"1\x002").is_err());
        assert_eq!(check_id(b"42"), Ok("42"));
    }

    #[test]
    fn integer_ids_have_one_spelling() {
        for ok in ["0", "12", "-5", "2147483647"] {
            assert!(check_canonical(ok, "integer").is_ok(), "{ok}");
        }
        for bad in ["00012", "+12", " 12", "12 ", "12\n", "-0", "", "1e3", "2147483648", "0x1"] {
            assert!(check_canonical(bad, "integer").is_err(), "{bad:?}");
        }
        assert!(check_canonical("2147483648", "bigint").is_ok());
        assert!(check_canonical("40000", "smallint").is_err());
    }

    #[test]
    fn uuid_and_text_ids() {
        assert!(check_canonical("6ce0ab12-0000-4000-8000-00000000000a", "uuid").is_ok());
        assert!(check_canonical("6CE0AB12-0000-4000-8000-00000000000A", "uuid").is_err());
        assert!(check_canonical("6ce0ab1200004000800000000000000a", "uuid").is_err());
        assert!(check_canonical(" padded ", "text").is_ok(), "text keys are any text");
        assert!(check_canonical("a b", "character varying").is_ok());
        assert!(check_canonical(" 2024-01-01", "date").is_err());
    }
}
