use super::*;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;

fn key_type(sql_type: &str) -> KeyType {
    KeyType::from_catalog(sql_type, None).unwrap()
}

fn shape(template: &str) -> Result<KeyShape, ShapeError> {
    let t = crate::model::template::Template::parse(template).unwrap();
    KeyShape::from_parts(t.parts())
}

#[test]
fn bad_ids_are_reported() {
    assert!(check_id(b"").is_err());
    assert!(check_id(b"\xff").is_err());
    assert!(check_id(b"a}b").is_err());
    assert!(check_id(b"1\x002").is_err());
    assert_eq!(check_id(b"42"), Ok("42"));
}

#[test]
fn composite_ids_split_and_join() {
    let shape = shape("{brand_id}_{category_id}").unwrap();
    let ints = [key_type("integer"), key_type("integer")];
    assert_eq!(shape.split("7_12"), Ok(vec!["7", "12"]));
    assert_eq!(shape.join(&["7", "12"]).unwrap(), "7_12");
    assert_eq!(shape.check("7_12", &ints), Ok(vec!["7", "12"]));
    let err = shape.check("7_012", &ints).unwrap_err().to_string();
    assert!(err.contains("\"012\" of key column \"category_id\" is not a canonical integer"), "{err}");
    let single = KeyShape::single("id");
    assert_eq!(single.split("a_b"), Ok(vec!["a_b"]), "one column has no separator to hold");
    assert_eq!(single.join(&["a_b"]).unwrap(), "a_b");
    let err = single.check("007", &ints[..1]).unwrap_err().to_string();
    assert!(err.starts_with("the key's id \"007\" is not a canonical integer"), "{err}");
}

#[test]
fn ambiguous_values_are_refused_both_ways() {
    let shape = shape("{brand_id}_{category_id}").unwrap();
    let err = shape.join(&["ben_jerry", "icecream"]).unwrap_err().to_string();
    assert!(err.contains("ambiguous") && err.contains("brand_id"), "{err}");
    assert!(shape.split("ben_jerry_icecream").unwrap_err().to_string().contains("ambiguous"));
    assert!(shape.split("7").unwrap_err().to_string().contains("does not spell 2 columns"));
    assert!(shape.split("_7").is_err(), "an empty value");
}

#[test]
fn a_value_may_not_run_into_a_longer_separator() {
    // ('a:', 'b') and ('a', ':b') would both spell a:::b.
    let shape = shape("{lft}::{rgt}").unwrap();
    let err = shape.join(&["a:", "b"]).unwrap_err().to_string();
    assert!(err.contains("ends with the start of the separator \"::\""), "{err}");
    let err = shape.join(&["a", ":b"]).unwrap_err().to_string();
    assert!(err.contains("begins with the end of the separator \"::\""), "{err}");
    assert!(shape.split("a:::b").unwrap_err().to_string().contains("ambiguous"));
    assert_eq!(shape.split("a::b"), Ok(vec!["a", "b"]));
    assert_eq!(shape.split("a:b::c:d"), Ok(vec!["a:b", "c:d"]), "a single : is no separator");
    // A separator that cannot overlap itself only refuses values holding it.
    let shape = super::tests::shape("{lft}_-{rgt}").unwrap();
    assert_eq!(shape.join(&["a_", "-b"]).unwrap(), "a__--b");
    assert_eq!(shape.split("a__--b"), Ok(vec!["a_", "-b"]));
}

#[test]
fn rows_read_from_postgres_get_the_key_a_write_would_accept() {
    let shape = shape("{sensor}@{ts}").unwrap();
    let types = [key_type("integer"), key_type("timestamp without time zone")];
    assert_eq!(shape.spell(&["1", "2024-01-01 08:00:00"], &types).unwrap(), "1@2024-01-01 08:00:00");
    let brace = KeyShape::single("id").spell(&["x}{y"], &[key_type("text")]).unwrap_err().to_string();
    assert!(brace.contains("brace"), "{brace}");
    let numeric = KeyShape::single("id").spell(&["1.50"], &[key_type("numeric")]).unwrap_err().to_string();
    assert!(numeric.contains("not a canonical numeric"), "{numeric}");
}

#[test]
fn the_refusals_read_as_before_they_were_kinds() {
    assert_eq!(check_id(b"").unwrap_err().to_string(), "the key has no id after its prefix");
    assert_eq!(check_id(b"\xff").unwrap_err().to_string(), "the key's id is not valid UTF-8");
    assert_eq!(
        check_id(b"a\x00").unwrap_err().to_string(),
        "the key's id contains a NUL byte, which Postgres cannot store"
    );
    assert_eq!(check_id(b"a}\n").unwrap_err().to_string(), "the key's id \"a}\\n\" contains a brace");
    let shape = shape("{a}::{b}").unwrap();
    assert_eq!(shape.split("x").unwrap_err().to_string(), "the key's id \"x\" does not spell 2 columns");
    assert_eq!(shape.join(&["", "b"]).unwrap_err().to_string(), "key column \"a\" is empty");
    assert_eq!(
        shape.join(&["a::", "b"]).unwrap_err().to_string(),
        "the value \"a::\" of key column \"a\" holds the separator \"::\", so its key would be ambiguous"
    );
    assert_eq!(
        shape.join(&["a", ":b"]).unwrap_err().to_string(),
        "the value \":b\" of key column \"b\" begins with the end of the separator \"::\" before it, so its key would be ambiguous"
    );
    let err = shape.check("a::01", &[key_type("text"), key_type("integer")]).unwrap_err();
    assert!(matches!(&err, IdError::NotCanonical { column: Some(c), .. } if c == "b"), "{err}");
    assert_eq!(
        err.to_string(),
        "the value \"01\" of key column \"b\" is not a canonical integer (digits only, an optional -, no leading zeros, \
         from -2147483648 to 2147483647); one row has exactly one key"
    );
}

#[test]
fn key_templates_need_separators_and_a_final_column() {
    assert!(shape("{a}{b}").unwrap_err().to_string().contains("separator"));
    assert!(shape("{a}_{b}:x").unwrap_err().to_string().contains("end with a column"));
    assert!(shape("{a}_{a}").unwrap_err().to_string().contains("twice"));
    assert_eq!(shape("{a}:{b}:{c}").unwrap().columns(), ["a", "b", "c"]);
}

/// Characters the separators and the random values are made of: the
/// separators' own, and those of the typed values.
const ALPHABET: &[char] = &[':', '_', '-', ' ', '@', '0', '1', 'a'];

fn random_text(rng: &mut StdRng, max_len: usize) -> String {
    let len = rng.gen_range(0..=max_len);
    (0..len).map(|_| *ALPHABET.choose(rng).unwrap_or(&'a')).collect()
}

/// A value for a column of `sql_type`: half the time a canonical one (which
/// holds `-`, `:`, `.` and spaces), else random text over [`ALPHABET`].
fn random_value(rng: &mut StdRng, sql_type: &str) -> String {
    let canonical: &[&str] = match sql_type {
        "integer" => &["0", "1", "-1", "10", "-10", "11"],
        "timestamp without time zone" => {
            &["2024-01-01 08:00:00", "2024-01-01 08:00:00.5", "0044-03-15 08:00:00 BC", "2024-01-01 00:00:01"]
        }
        "uuid" => &["00000000-0000-0000-0000-000000000000", "0a000000-0000-4000-8000-0000000000a1"],
        _ => &[],
    };
    match canonical.choose(rng) {
        Some(value) if rng.gen_bool(0.5) => value.to_string(),
        _ => random_text(rng, 4),
    }
}

/// parse(spell(row)) == row for every accepted row, and no two accepted rows
/// spell one key, over text, integer, timestamp and uuid key columns and one-
/// and two-character separators; and an id that parses spells itself again.
#[test]
fn every_accepted_row_has_one_key_and_reads_back_from_it() {
    let mut rng = StdRng::seed_from_u64(25);
    let sql_types = ["text", "integer", "timestamp without time zone", "uuid"];
    let mut accepted_rows = 0;
    for _ in 0..200 {
        let columns = rng.gen_range(2..=3);
        let separators: Vec<String> = (1..columns)
            .map(|_| {
                let len = rng.gen_range(1..=2);
                (0..len).map(|_| *ALPHABET[..5].choose(&mut rng).unwrap_or(&':')).collect()
            })
            .collect();
        let names: Vec<String> = (0..columns).map(|i| format!("c{i}")).collect();
        let template: String = names
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{}{{{n}}}", if i == 0 { "" } else { &separators[i - 1] }))
            .collect();
        let shape = shape(&template).unwrap();
        let type_names: Vec<&str> = (0..columns).map(|_| *sql_types.choose(&mut rng).unwrap_or(&"text")).collect();
        let types: Vec<KeyType> = type_names.iter().map(|t| key_type(t)).collect();
        let mut spelled: HashMap<String, Vec<String>> = HashMap::new();
        for _ in 0..150 {
            let row: Vec<String> = type_names.iter().map(|t| random_value(&mut rng, t)).collect();
            let values: Vec<&str> = row.iter().map(String::as_str).collect();
            let Ok(id) = shape.spell(&values, &types) else {
                // A refused row's plain spelling never names another row either.
                let plain: String = values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| format!("{}{v}", if i == 0 { "" } else { &separators[i - 1] }))
                    .collect();
                if let Ok(read) = shape.check(&plain, &types) {
                    assert_eq!(read, values, "{template}: refused {row:?} spells another row's {plain:?}");
                }
                continue;
            };
            accepted_rows += 1;
            assert_eq!(shape.check(&id, &types), Ok(values.clone()), "{template}: {row:?} reads back from {id:?}");
            if let Some(other) = spelled.insert(id.clone(), row.clone()) {
                assert_eq!(other, row, "{template}: two rows spell {id:?}");
            }
        }
        for _ in 0..150 {
            let id = random_text(&mut rng, 10);
            if let Ok(values) = shape.check(&id, &types) {
                assert_eq!(shape.spell(&values, &types).as_ref(), Ok(&id), "{template}: {id:?} read as {values:?}");
            }
        }
    }
    assert!(accepted_rows > 3_000, "the test saw enough accepted rows: {accepted_rows}");
}
