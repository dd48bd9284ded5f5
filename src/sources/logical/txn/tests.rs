use super::*;
use crate::model::mapping::Mappings;

fn relations() -> Relations {
    let mappings = Mappings::parse(
        r#"{"mappings": [{"name": "users", "table": "users", "key_prefix": "users:", "primary_key": "id",
        "mode": "read-only", "listen": true, "fields": {"name": "username", "score": "score"}}]}"#,
    )
    .unwrap();
    let m = &mappings.all()[0];
    let target = Target {
        mapping: 0,
        key: m.key.clone(),
        key_types: vec![KeyType::from_catalog("integer", None).unwrap()],
        fields: vec![column("name", "username", MemberKind::Text), column("score", "score", MemberKind::Number)],
        json: false,
    };
    // Mapping 1 is a document mapping whose roots are users, watching orders.user_id.
    let watcher = Watcher { mapping: 1, column: "user_id".into() };
    let mut r = Relations::new(
        [(("public".to_string(), "users".to_string()), vec![target])].into_iter().collect(),
        [(("public".to_string(), "orders".to_string()), vec![watcher])].into_iter().collect(),
    );
    let orders = ["id", "user_id", "total"].map(String::from).to_vec();
    Txn::default().add(
        &mut r,
        Message::Relation(Relation { id: 9, namespace: "public".into(), name: "orders".into(), columns: orders }),
    );
    let columns = ["id", "username", "secret", "score"].map(String::from).to_vec();
    Txn::default()
        .add(&mut r, Message::Relation(Relation { id: 7, namespace: "public".into(), name: "users".into(), columns }));
    let other = vec!["id".to_string()];
    Txn::default().add(
        &mut r,
        Message::Relation(Relation { id: 8, namespace: "public".into(), name: "other".into(), columns: other }),
    );
    r
}

fn column(field: &str, column: &str, kind: MemberKind) -> MappedColumn {
    MappedColumn { field: field.into(), column: column.into(), kind }
}

fn t(s: &str) -> Value {
    Value::Text(s.into())
}

fn row(fields: &[(&str, Option<&str>)]) -> Option<Fields> {
    Some(fields.iter().map(|(f, v)| (f.to_string(), v.map(String::from))).collect())
}

#[test]
fn only_mapped_columns_of_listened_tables_are_kept() {
    let mut r = relations();
    let mut txn = Txn::default();
    txn.add(&mut r, Message::Insert { relation: 7, new: vec![t("1"), t("ann"), t("hidden"), Value::Null] });
    txn.add(&mut r, Message::Insert { relation: 8, new: vec![t("1")] });
    let users = &txn.changes[&0];
    assert_eq!(users.rows["1"], row(&[("name", Some("ann")), ("score", None)]));
    assert_eq!(txn.changes.len(), 1, "a table no mapping listens to is ignored");
}

#[test]
fn rows_merge_in_commit_order_and_unchanged_values_are_left_alone() {
    let mut r = relations();
    let mut txn = Txn::default();
    txn.add(&mut r, Message::Insert { relation: 7, new: vec![t("1"), t("ann"), t("x"), t("5")] });
    txn.add(&mut r, Message::Update { relation: 7, old: None, new: vec![t("1"), Value::Unchanged, t("x"), t("6")] });
    txn.add(&mut r, Message::Update { relation: 7, old: None, new: vec![t("2"), Value::Unchanged, t("x"), t("1")] });
    txn.add(&mut r, Message::Delete { relation: 7, old: vec![t("3"), Value::Null, Value::Null, Value::Null] });
    let rows = &txn.changes[&0].rows;
    assert_eq!(rows["1"], row(&[("name", Some("ann")), ("score", Some("6"))]));
    assert_eq!(rows["2"], row(&[("score", Some("1"))]));
    assert_eq!(rows["3"], None);
}

#[test]
fn transactions_gathered_into_one_step_merge_as_if_one_had_made_them() {
    let mut r = relations();
    let mut one = |messages: Vec<Message>, own: bool| {
        let mut txn = Txn { own, ..Txn::default() };
        messages.into_iter().for_each(|m| txn.add(&mut r, m));
        txn
    };
    let gone = |id: &str| Message::Delete { relation: 7, old: vec![t(id), Value::Null, Value::Null, Value::Null] };
    let mut group =
        one(vec![Message::Insert { relation: 7, new: vec![t("1"), t("ann"), t("x"), t("5")] }, gone("3")], false);
    group.then(one(
        vec![
            Message::Update { relation: 7, old: None, new: vec![t("1"), Value::Unchanged, t("x"), t("6")] },
            Message::Insert { relation: 7, new: vec![t("3"), t("cy"), t("x"), t("1")] },
        ],
        false,
    ));
    group.then(one(vec![gone("1")], true));
    let rows = &group.changes[&0].rows;
    assert_eq!(rows["1"], row(&[("name", Some("ann")), ("score", Some("6"))]), "a later update merges its fields");
    assert_eq!(rows["3"], row(&[("name", Some("cy")), ("score", Some("1"))]), "an insert after a delete wins");
    assert_eq!(group.row_count(), 2, "the module's own transaction adds nothing");
    group.then(one(
        vec![
            Message::Truncate { relations: vec![7] },
            Message::Insert { relation: 7, new: vec![t("2"), t("bo"), t("x"), t("2")] },
        ],
        false,
    ));
    let users = &group.changes[&0];
    assert!(users.truncated);
    assert_eq!(users.rows.keys().collect::<Vec<_>>(), vec!["2"], "a truncate drops the earlier transactions' rows");
}

#[test]
fn a_changed_key_removes_the_old_row() {
    let mut r = relations();
    let mut txn = Txn::default();
    let old = Some(vec![t("1"), Value::Null, Value::Null, Value::Null]);
    txn.add(&mut r, Message::Update { relation: 7, old, new: vec![t("9"), t("ann"), t("x"), t("5")] });
    let rows = &txn.changes[&0].rows;
    assert_eq!(rows["1"], None);
    assert_eq!(rows["9"], row(&[("name", Some("ann")), ("score", Some("5"))]));
}

#[test]
fn truncate_supersedes_earlier_rows_not_later_ones() {
    let mut r = relations();
    let mut txn = Txn::default();
    txn.add(&mut r, Message::Insert { relation: 7, new: vec![t("1"), t("a"), t("x"), t("1")] });
    txn.add(&mut r, Message::Truncate { relations: vec![7, 8] });
    txn.add(&mut r, Message::Insert { relation: 7, new: vec![t("2"), t("b"), t("x"), t("2")] });
    let users = &txn.changes[&0];
    assert!(users.truncated);
    assert_eq!(users.rows.keys().collect::<Vec<_>>(), vec!["2"]);
}

#[test]
fn a_key_that_cannot_be_spelled_is_counted_not_applied() {
    let mut r = relations();
    let mut txn = Txn::default();
    txn.add(&mut r, Message::Insert { relation: 7, new: vec![Value::Null, t("a"), t("x"), t("1")] });
    let users = &txn.changes[&0];
    assert!(users.rows.is_empty());
    assert_eq!(users.unkeyed.0, 1);
}

#[test]
fn values_are_spelled_as_a_read_from_postgres_spells_them() {
    // pgoutput sends a boolean as its output function prints it (`t`); the
    // module's SELECTs read `::text` (`true`): a row must not change spelling
    // with the change source.
    let flag = column("flag", "flag", MemberKind::Boolean);
    assert_eq!(flag.value("t", false), "true");
    assert_eq!(flag.value("f", false), "false");
    assert_eq!(flag.value("t", true), "true", "a JSON boolean");
    assert_eq!(column("n", "n", MemberKind::Number).value("12.50", true), "12.50", "a JSON number");
    assert_eq!(column("s", "s", MemberKind::Text).value("t", true), "\"t\"", "a JSON string");
    assert_eq!(column("s", "s", MemberKind::Text).value("t", false), "t", "text stays as it is");
    assert_eq!(column("j", "j", MemberKind::Json).value("{\"a\": 1}", true), "{\"a\":1}");
}

fn roots(txn: &Txn) -> Vec<&str> {
    txn.roots.get(&1).map(|r| r.ids.iter().map(String::as_str).collect()).unwrap_or_default()
}

#[test]
fn a_change_to_a_watched_table_names_the_roots_of_its_old_and_new_rows() {
    let mut r = relations();
    let mut txn = Txn::default();
    txn.add(&mut r, Message::Insert { relation: 9, new: vec![t("1"), t("7"), t("10")] });
    assert_eq!(roots(&txn), ["7"]);
    // An order moving to another user rebuilds both users' documents.
    txn.add(
        &mut r,
        Message::Update { relation: 9, old: Some(vec![t("1"), t("7"), t("10")]), new: vec![t("1"), t("8"), t("10")] },
    );
    txn.add(&mut r, Message::Delete { relation: 9, old: vec![t("2"), t("9"), Value::Null] });
    // A NULL watched column names no root.
    txn.add(&mut r, Message::Insert { relation: 9, new: vec![t("3"), Value::Null, t("1")] });
    assert_eq!(roots(&txn), ["7", "8", "9"]);
    assert!(txn.changes.is_empty(), "no table mapping reads orders");
    assert!(!txn.roots[&1].truncated);
}

#[test]
fn a_truncated_watched_table_rebuilds_every_document() {
    let mut r = relations();
    let mut txn = Txn::default();
    txn.add(&mut r, Message::Insert { relation: 9, new: vec![t("1"), t("7"), t("10")] });
    txn.add(&mut r, Message::Truncate { relations: vec![9] });
    assert!(txn.roots[&1].truncated);
    assert!(roots(&txn).is_empty(), "the rebuild of all covers them");
    txn.add(&mut r, Message::Insert { relation: 7, new: vec![t("1"), t("ann"), t("x"), t("5")] });
    assert!(txn.roots[&1].truncated, "a change to another table leaves it so");
}
