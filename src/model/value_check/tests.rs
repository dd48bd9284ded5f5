use super::*;

fn of(sql_type: &str, value: &str) -> Result<(), BadValue> {
    check(&ColumnType { sql_type, max_chars: None, labels: None }, value.as_bytes())
}

fn accepts(sql_type: &str, values: &[&str]) {
    for v in values {
        assert_eq!(of(sql_type, v), Ok(()), "{sql_type} should accept {v:?}");
    }
}

fn refuses(sql_type: &str, values: &[&str]) {
    for v in values {
        assert!(of(sql_type, v).is_err(), "{sql_type} should refuse {v:?}");
    }
}

#[test]
fn integers_as_postgres_reads_them_within_their_range() {
    accepts("integer", &["0", "-2147483648", "2147483647", " 42 ", "+7", "0x1F", "0o17", "0b101", "1_000"]);
    refuses("integer", &["", "abc", "1.5", "1e3", "12a", "--1", "1__0", "_1", "0x", "2147483648"]);
    assert_eq!(of("integer", "2147483648").unwrap_err().to_string(), "out of range for integer");
    assert_eq!(of("integer", "x").unwrap_err().to_string(), "not an integer (integer)");
    accepts("smallint", &["32767", "-32768"]);
    refuses("smallint", &["32768", "-32769"]);
    accepts("bigint", &["9223372036854775807", "-9223372036854775808"]);
    refuses("bigint", &["9223372036854775808", "99999999999999999999999999999999999999999999"]);
}

#[test]
fn numbers_in_every_form_numeric_or_float_input_takes() {
    let good = ["1", "-1.5", ".5", "5.", "1e10", "1.5E-3", " 2 ", "NaN", "-Infinity", "inf", "1_000.5", "0x1f"];
    accepts("numeric", &good);
    accepts("double precision", &good);
    refuses("numeric", &["", ".", "abc", "1.2.3", "1e", "e5", "1,5", "--1"]);
    refuses("real", &["twelve"]);
}

#[test]
fn booleans_are_the_words_and_prefixes_boolin_accepts() {
    accepts("boolean", &["t", "TRUE", "tru", "yes", "y", "on", "off", "of", "f", "no", "n", "1", "0", " true "]);
    refuses("boolean", &["", "o", "2", "truee", "yess", "nope", "10", "maybe"]);
}

#[test]
fn dates_and_times_refuse_only_what_no_form_can_be() {
    let good = ["2024-02-29", "2024-01-01 10:00:00+02", "2024-01-01T24:00", "today", "epoch", "Jan 8 1999", "J2451187"];
    accepts("date", &good);
    accepts("timestamp with time zone", &good);
    accepts("timestamp without time zone", &["now", "1999-01-08 04:05:06.789", "infinity"]);
    refuses("date", &["", "hello", "2023-02-29", "2024-13-01", "2024-04-31", "2024-00-10"]);
    refuses("timestamp without time zone", &["2024-01-01 25:00", "2024-01-01 10:60", "soon"]);
    accepts("time without time zone", &["04:05", "allballs", "24:00:00", "4:05 PM"]);
    refuses("time with time zone", &["25:00", "noon-ish"]);
}

#[test]
fn uuids_as_uuid_in_reads_them() {
    accepts(
        "uuid",
        &[
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "A0EEBC999C0B4EF8BB6D6BB9BD380A11",
            "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
            "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11",
        ],
    );
    refuses(
        "uuid",
        &[
            "",
            "a0eebc99",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11-",
            "a0eebc9-99c0b-4ef8-bb6d-6bb9bd380a11",
            "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "g0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            " a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        ],
    );
}

#[test]
fn json_by_its_grammar_at_any_depth() {
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    accepts(
        "json",
        &["1", "-0.5e+3", "\"a\\u00e9\\n\"", "null", " {\"a\": [1, {\"b\": true}], \"c\": {}} ", "[]", &deep],
    );
    refuses(
        "jsonb",
        &["", "{", "[1,]", "{\"a\"}", "{\"a\":1,}", "01", "1.", "'a'", "tru", "\"\\x\"", "\"a\nb\"", "[1] 2", "{a:1}"],
    );
    refuses("json", &[&format!("{}]", "[".repeat(10_000))]);
}

#[test]
fn enum_labels_match_exactly() {
    let labels = vec!["sad".to_string(), "happy".to_string()];
    let mood = ColumnType { sql_type: "mood", max_chars: None, labels: Some(&labels) };
    assert_eq!(check(&mood, b"happy"), Ok(()));
    assert_eq!(check(&mood, b"Happy").unwrap_err().to_string(), "not a label of enum mood (sad, happy)");
    assert!(check(&mood, b" sad").is_err());
}

#[test]
fn varchar_length_counts_characters_and_forgives_trailing_spaces() {
    let column = ColumnType { sql_type: "character varying", max_chars: Some(3), labels: None };
    assert_eq!(check(&column, "abc".as_bytes()), Ok(()));
    assert_eq!(check(&column, "été".as_bytes()), Ok(()), "characters, not bytes");
    assert_eq!(check(&column, "ab   ".as_bytes()), Ok(()), "excess spaces are cut off");
    assert_eq!(check(&column, b"abcd"), Err(BadValue::TooLong(3)));
    assert_eq!(check(&column, b"abcd").unwrap_err().to_string(), "longer than 3 characters");
    assert_eq!(check(&ColumnType { max_chars: None, ..column }, b"abcd"), Ok(()), "varchar without a limit");
    let fixed = ColumnType { sql_type: "character", ..column };
    assert!(check(&fixed, b"abcd ").is_err());
}

#[test]
fn other_types_and_non_utf8_bytes_are_left_to_postgres() {
    accepts("text", &["anything"]);
    accepts("interval", &["whatever"]);
    assert_eq!(check(&ColumnType { sql_type: "integer", max_chars: None, labels: None }, b"\xff"), Ok(()));
}
