use super::pgoutput::*;

fn tuple(values: &[Option<&str>]) -> Vec<u8> {
    let mut out = (values.len() as u16).to_be_bytes().to_vec();
    for v in values {
        match v {
            None => out.push(b'n'),
            Some("\u{1}") => out.push(b'u'),
            Some(text) => {
                out.push(b't');
                out.extend((text.len() as u32).to_be_bytes());
                out.extend(text.as_bytes());
            }
        }
    }
    out
}

#[test]
fn a_relation_names_its_columns() {
    let mut m = vec![b'R'];
    m.extend(16384u32.to_be_bytes());
    m.extend(b"public\0users\0d");
    m.extend(2u16.to_be_bytes());
    for name in ["id", "name"] {
        m.push(1);
        m.extend(name.as_bytes());
        m.push(0);
        m.extend(23u32.to_be_bytes());
        m.extend((-1i32).to_be_bytes());
    }
    let expected = Relation {
        id: 16384,
        namespace: "public".into(),
        name: "users".into(),
        columns: vec!["id".into(), "name".into()],
    };
    assert_eq!(decode(&m), Ok(Message::Relation(expected)));
}

#[test]
fn insert_update_and_delete_carry_their_values() {
    let mut insert = vec![b'I'];
    insert.extend(7u32.to_be_bytes());
    insert.push(b'N');
    insert.extend(tuple(&[Some("1"), None]));
    assert_eq!(decode(&insert), Ok(Message::Insert { relation: 7, new: vec![Value::Text("1".into()), Value::Null] }));

    let mut update = vec![b'U'];
    update.extend(7u32.to_be_bytes());
    update.push(b'K');
    update.extend(tuple(&[Some("1"), None]));
    update.push(b'N');
    update.extend(tuple(&[Some("2"), Some("\u{1}")]));
    let old = Some(vec![Value::Text("1".into()), Value::Null]);
    let new = vec![Value::Text("2".into()), Value::Unchanged];
    assert_eq!(decode(&update), Ok(Message::Update { relation: 7, old, new }));

    let mut plain = vec![b'U'];
    plain.extend(7u32.to_be_bytes());
    plain.push(b'N');
    plain.extend(tuple(&[Some("é")]));
    assert_eq!(decode(&plain), Ok(Message::Update { relation: 7, old: None, new: vec![Value::Text("é".into())] }));

    let mut delete = vec![b'D'];
    delete.extend(7u32.to_be_bytes());
    delete.push(b'K');
    delete.extend(tuple(&[Some("3"), None]));
    assert_eq!(decode(&delete), Ok(Message::Delete { relation: 7, old: vec![Value::Text("3".into()), Value::Null] }));
}

#[test]
fn truncate_lists_its_relations() {
    let mut m = vec![b'T'];
    m.extend(2u32.to_be_bytes());
    m.push(0);
    m.extend(7u32.to_be_bytes());
    m.extend(9u32.to_be_bytes());
    assert_eq!(decode(&m), Ok(Message::Truncate { relations: vec![7, 9] }));
}

#[test]
fn malformed_messages_are_errors_not_panics() {
    assert!(decode(&[]).is_err());
    assert!(decode(&[b'I', 0, 0]).is_err());
    let mut cut = vec![b'I'];
    cut.extend(7u32.to_be_bytes());
    cut.push(b'N');
    cut.extend(1u16.to_be_bytes());
    cut.push(b't');
    cut.extend(100u32.to_be_bytes());
    cut.extend(b"short");
    assert_eq!(decode(&cut), Err(DecodeError::CutShort { wanted: 100, left: 5 }));
    assert_eq!(decode(&cut).unwrap_err().to_string(), "message cut short: 100 bytes wanted, 5 left");
    let mut untagged = vec![b'I'];
    untagged.extend(7u32.to_be_bytes());
    untagged.push(b'X');
    assert_eq!(decode(&untagged), Err(DecodeError::Expected { wanted: b'N', found: b'X' }));
    let mut binary = vec![b'D'];
    binary.extend(7u32.to_be_bytes());
    binary.push(b'K');
    binary.extend(1u16.to_be_bytes());
    binary.push(b'b');
    assert_eq!(decode(&binary), Err(DecodeError::ValueKind(b'b')));
    assert_eq!(decode(&[b'Y', 1, 2]), Ok(Message::Other(b'Y')));
}

#[test]
fn positions_read_and_print_as_postgres_spells_them() {
    use super::catalog::{format_lsn, parse_lsn};
    assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374_D848));
    assert_eq!(format_lsn((0x16 << 32) | 0xB374_D848), "16/B374D848");
    assert_eq!(parse_lsn("0/0"), Some(0));
    assert_eq!(parse_lsn("nonsense"), None);
    assert_eq!(parse_lsn("1/zz"), None);
}
