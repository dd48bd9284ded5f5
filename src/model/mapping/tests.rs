use super::*;

const USERS: &str = r#"{"mappings": [{"name": "users", "table": "users", "key_prefix": "users:",
    "primary_key": "id", "mode": "write-through",
    "fields": {"pwhash": "password_hash", "score": "score"}}]}"#;

#[test]
fn resolves_main_and_temp_keys() {
    let m = Mappings::parse(USERS).unwrap();
    let t = m.resolve(b"__{users:42}").unwrap();
    assert_eq!((t.mapping, t.role, t.id), (0, KeyRole::Temp, &b"42"[..]));
    let k = m.resolve(b"users:7").unwrap();
    assert_eq!((k.role, k.id), (KeyRole::Main, &b"7"[..]));
    assert!(m.resolve(b"orders:1").is_none());
    assert!(m.resolve(b"__{orders:1}").is_none());
}

#[test]
fn unmapped_fields_have_no_column() {
    let m = Mappings::parse(USERS).unwrap();
    let users = &m.all()[0];
    assert_eq!(users.column_for("pwhash"), Some("password_hash"));
    assert_eq!(users.column_for("nickname"), None);
    assert_eq!(users.temp_key("1"), "__{users:1}");
    assert_eq!(users.ack_stream("1", "ab"), "{users:1}ab");
}

#[test]
fn malformed_files_name_the_problem() {
    let err = Mappings::parse("{").unwrap_err().to_string();
    assert!(err.contains("invalid mapping file"), "{err}");
    let err = Mappings::parse(
        r#"{"mappings": [{"name": "u", "table": "u", "key_prefix": "u:", "primary_key": "id", "mode": "sideways"}]}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("sideways"), "{err}");
    let err = Mappings::parse(r#"{"mappings": [{"name": "u", "table": "u", "key_prefix": "u:", "primary_key": "id", "mode": "write-behind", "colour": 1}]}"#).unwrap_err().to_string();
    assert!(err.contains("colour"), "{err}");
    let two = r#"{"mappings": [
        {"name": "a", "table": "a", "key_prefix": "a:", "primary_key": "id", "mode": "write-behind"},
        {"name": "b", "table": "b", "key_prefix": "a:b", "primary_key": "id", "mode": "write-behind"}]}"#;
    assert!(Mappings::parse(two).unwrap_err().to_string().contains("overlapping"));
}

/// A file of one mapping `u` in `mode`, with `extra` options.
fn one_mapping(extra: &str, mode: &str) -> Result<Mappings, MappingError> {
    Mappings::parse(&format!(
        r#"{{"mappings": [{{"name": "u", "table": "u", "key_prefix": "u:", "primary_key": "id", "mode": "{mode}"{extra}}}]}}"#
    ))
}

#[test]
fn ttl_options_are_checked_at_load() {
    let one = one_mapping;
    let m = one(r#", "ttl": 60, "ttl_on_write": true"#, "write-behind").unwrap();
    assert_eq!((m.all()[0].ttl, m.all()[0].ttl_on_write), (Some(Duration::from_secs(60)), true));
    assert!(one(r#", "ttl": 0"#, "write-behind").unwrap_err().to_string().contains("above 0"));
    assert!(one(r#", "ttl": -1"#, "write-behind").is_err());
    assert!(one(r#", "ttl_on_write": true"#, "write-behind").unwrap_err().to_string().contains("needs a \"ttl\""));
    assert!(one(r#", "ttl": 5, "ttl_on_write": true"#, "write-through")
        .unwrap_err()
        .to_string()
        .contains("write-behind"));
    assert_eq!(one("", "write-through").unwrap().all()[0].ttl, None);
}

#[test]
fn notify_is_a_prefix_or_a_list_of_channel_templates() {
    let one = |extra: &str| {
        Mappings::parse(&format!(
            r#"{{"mappings": [{{"name": "o", "table": "o", "key_prefix": "o:", "primary_key": "id", "mode": "write-behind"{extra}}}]}}"#
        ))
    };
    let m = one(r#", "notify": "sync:o""#).unwrap();
    assert_eq!(m.all()[0].notify, Some(Notify::Prefix("sync:o".into())));
    assert_eq!(m.all()[0].notify_payload, NotifyPayload::Json);
    let m = one(r#", "notify": ["orders", "orders:{event}"], "notify_payload": "id""#).unwrap();
    let Some(Notify::Channels(channels)) = &m.all()[0].notify else { panic!("channels") };
    assert_eq!(channels[1].names().collect::<Vec<_>>(), ["event"]);
    assert_eq!(m.all()[0].notify_payload, NotifyPayload::Id);
    assert!(one(r#", "notify": ["orders:{event"]"#).unwrap_err().to_string().contains("\"notify\""));
    assert!(one(r#", "notify": []"#).unwrap_err().to_string().contains("must not be empty"));
    assert!(one(r#", "notify": """#).unwrap_err().to_string().contains("must not be empty"));
    assert!(one(r#", "notify_payload": "xml""#).is_err());
}

#[test]
fn a_key_template_names_the_prefix_and_the_key_columns() {
    let one = |key: &str| {
        Mappings::parse(&format!(r#"{{"mappings": [{{"name": "bc", "table": "bc", {key}, "mode": "write-behind"}}]}}"#))
    };
    let m = one(r#""key": "brands_categories_{brand_id}_{category_id}""#).unwrap();
    let bc = &m.all()[0];
    assert_eq!(bc.key_prefix, "brands_categories_");
    assert_eq!(bc.key.columns(), ["brand_id", "category_id"]);
    assert_eq!(bc.key_value("acme_7", "category_id"), Some("7"));
    assert_eq!(bc.temp_key("acme_7"), "__{brands_categories_acme_7}");
    let r = m.resolve(b"brands_categories_acme_7").unwrap();
    assert_eq!(r.id, b"acme_7");
    assert!(one(r#""key": "{a}_{b}""#).unwrap_err().to_string().contains("literal prefix"));
    assert!(one(r#""key": "bc:{a}""#).is_ok());
    assert!(one(r#""key": "bc:{a}", "primary_key": "a""#).unwrap_err().to_string().contains("either"));
    assert!(one(r#""key_prefix": "bc:""#).unwrap_err().to_string().contains("either"));
    let fields = r#""key": "bc:{a}_{b}", "fields": {"x": "b"}"#;
    assert!(one(fields).unwrap_err().to_string().contains("key column \"b\""));
}

#[test]
fn document_mappings_need_their_queries_and_nothing_of_a_table() {
    let one = |extra: &str| {
        Mappings::parse(&format!(
            r#"{{"mappings": [{{"name": "customers", "mode": "document", "key_prefix": "customer:"{extra}}}]}}"#
        ))
    };
    let full = r#", "query": "SELECT id, doc FROM docs($1::int[])", "ids_query": "SELECT id FROM customer",
        "watch": [{"table": "customer", "column": "id"}], "store": "hash""#;
    let m = one(full).unwrap();
    let customers = &m.all()[0];
    assert_eq!((customers.mode, customers.listen, customers.table.as_str()), (Mode::Document, true, "customer"));
    assert_eq!(customers.redis_type(), "hash");
    assert_eq!(customers.document.as_ref().unwrap().store, Store::Hash);
    assert!(one(&full.replace("\"store\": \"hash\"", "\"store\": \"xml\"")).is_err());
    assert!(one(&full.replace(", \"store\": \"hash\"", "")).unwrap_err().to_string().contains("\"store\""));
    assert!(one(&full.replace("FROM customer\"", "FROM customer; DROP TABLE x\""))
        .unwrap_err()
        .to_string()
        .contains("\"ids_query\""));
    assert!(one(&full.replace("[{\"table\": \"customer\", \"column\": \"id\"}]", "[]"))
        .unwrap_err()
        .to_string()
        .contains("\"watch\""));
    assert!(one(&format!("{full}, \"table\": \"customer\"")).unwrap_err().to_string().contains("give no \"table\""));
    assert!(one(&format!("{full}, \"fields\": {{}}")).unwrap_err().to_string().contains("\"fields\" does not apply"));
    assert!(one(&format!("{full}, \"read_through\": true"))
        .unwrap_err()
        .to_string()
        .contains("\"read_through\" does not apply"));
    assert!(one(&format!("{full}, \"type\": \"json\"")).unwrap_err().to_string().contains("not \"type\""));
    let table = r#"{"mappings": [{"name": "u", "table": "u", "key_prefix": "u:", "primary_key": "id",
        "mode": "read-only", "query": "SELECT 1"}]}"#;
    assert!(Mappings::parse(table).unwrap_err().to_string().contains("\"query\" is for \"mode\": \"document\""));
}

#[test]
fn cache_options_are_checked_at_load() {
    let one = one_mapping;
    let m = one(r#", "read_through": true, "fill_on_write": true"#, "write-behind").unwrap();
    assert!(m.any_read_through() && m.all()[0].read_through && m.all()[0].fill_on_write);
    assert!(one(r#", "read_through": true"#, "read-only").unwrap().any_read_through());
    assert!(!one("", "read-only").unwrap().any_read_through());
    assert!(one(r#", "fill_on_write": true"#, "read-only").unwrap_err().to_string().contains("fill_on_write"));
    assert!(one(r#", "read_through": "yes""#, "write-behind").is_err());
}

#[test]
fn json_keys_are_for_table_mappings() {
    let m = one_mapping(r#", "type": "json""#, "read-only").unwrap();
    let products = &m.all()[0];
    assert_eq!((products.value_type, products.redis_type()), (ValueType::Json, "ReJSON-RL"));
    assert!(products.needs_json_module());
    let hashes = one_mapping("", "read-only").unwrap();
    assert_eq!((hashes.all()[0].value_type, hashes.all()[0].redis_type()), (ValueType::Hash, "hash"));
    assert!(!hashes.all()[0].needs_json_module());
    assert!(one_mapping(r#", "type": "hash""#, "write-behind").is_ok());
    assert!(one_mapping(r#", "type": "json""#, "write-behind").is_ok());
    assert!(one_mapping(r#", "type": "json""#, "write-through").is_ok(), "staging keys are JSON documents too");
    let err = one_mapping(r#", "type": "json", "fill_on_write": true"#, "write-behind").unwrap_err().to_string();
    assert!(err.contains("do not apply to \"type\": \"json\""), "{err}");
    assert!(one_mapping(r#", "type": "xml""#, "read-only").is_err());
    let fields = r#", "fields": {"a": "a"}"#;
    let replace = one_mapping(&format!(r#", "type": "json", "on_set": "replace"{fields}"#), "write-behind").unwrap();
    assert_eq!(replace.all()[0].on_set, OnSet::Replace);
    assert_eq!(one_mapping(r#", "type": "json""#, "write-behind").unwrap().all()[0].on_set, OnSet::Merge);
    let err = one_mapping(r#", "type": "json", "on_set": "replace""#, "write-behind").unwrap_err().to_string();
    assert!(err.contains("needs \"fields\""), "{err}");
    let err = one_mapping(&format!(r#", "on_set": "merge"{fields}"#), "write-behind").unwrap_err().to_string();
    assert!(err.contains("\"on_set\" is for \"type\": \"json\" write-behind and write-through"), "{err}");
    assert!(one_mapping(&format!(r#", "type": "json", "on_set": "replace"{fields}"#), "write-through").is_ok());
    assert!(one_mapping(r#", "type": "json", "on_set": "merge""#, "read-only").is_err());
}
