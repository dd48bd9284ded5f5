//! The listener under failures: a mapping whose table is missing, Redis down while
//! Postgres changes. Real servers; Redis is killed with -9 and restarted on its AOF.

mod common;

use common::items::*;
use common::*;

const AOF: &[&str] = &["--appendonly", "yes", "--appendfsync", "always"];

/// `items` listening, and `later`, whose table does not exist yet.
const TWO_MAPPINGS: &str = r#"{"mappings": [
  {"name": "items", "table": "items", "key_prefix": "items:", "primary_key": "id", "mode": "write-behind",
   "listen": true, "fields": {"name": "name", "score": "score", "tag": "tag"}},
  {"name": "later", "table": "later", "key_prefix": "later:", "primary_key": "id", "mode": "read-only"}]}"#;

const LISTENING_ITEMS: &str = r#"{"mappings": [{"name": "items", "table": "items", "key_prefix": "items:",
  "primary_key": "id", "mode": "write-behind", "listen": true, "fields": {"name": "name", "score": "score", "tag": "tag"}}]}"#;

fn listener(c: &mut redis::Connection, mapping: &str) -> String {
    status(c, mapping)["listener"].clone()
}

#[test]
fn a_mapping_whose_table_is_missing_keeps_no_other_from_listening_and_joins_once_it_exists() {
    let db = test_db(ITEMS_SQL);
    let server = Server::with_mapping(&db, TWO_MAPPINGS, &[], &[]);
    let mut c = server.conn();
    eventually("items listening", || listener(&mut c, "items") == "listening");
    eventually("later shows why it waits", || listener(&mut c, "later").starts_with("waiting for the schema: "));
    let state = listener(&mut c, "later");
    assert!(state.contains("later"), "the state names the problem: {state}");
    db.client().batch_execute("INSERT INTO items (id, name) VALUES (1, 'from pg')").unwrap();
    eventually("items applied", || hgetall(&mut c, "items:1").get("name").map(String::as_str) == Some("from pg"));

    db.client()
        .batch_execute("CREATE TABLE later (id integer PRIMARY KEY, name text); INSERT INTO later VALUES (1, 'before')")
        .unwrap();
    eventually("later listening", || listener(&mut c, "later") == "listening");
    assert_eq!(hgetall(&mut c, "later:1")["name"], "before", "joining caught up with the rows already there");
    db.client().batch_execute("INSERT INTO later VALUES (2, 'after')").unwrap();
    eventually("later applied", || hgetall(&mut c, "later:2").get("name").map(String::as_str) == Some("after"));
    assert_eq!(listener(&mut c, "items"), "listening");
}

#[test]
fn postgres_changes_made_while_redis_was_down_reach_redis_without_overwriting_its_own() {
    let pg = PrivatePg::start();
    let db = TestDb::on(&pg.admin_url(), ITEMS_SQL);
    let mut server = Server::with_mapping(&db, LISTENING_ITEMS, &[("retry-max-delay-ms", "300")], AOF);
    let mut c = server.conn();
    eventually("listening", || listener(&mut c, "items") == "listening");
    db.client()
        .batch_execute("INSERT INTO items (id, name, score) SELECT i, 'n' || i, i FROM generate_series(1, 5) i")
        .unwrap();
    eventually("rows applied", || exists(&mut c, "items:5"));
    // A Redis change still on its way to Postgres when Redis dies.
    pg.down();
    hset(&mut c, "items:3", &[("name", "from redis")]);
    server.kill9();
    pg.up();
    db.client()
        .batch_execute(
            "UPDATE items SET name = 'from pg' WHERE id IN (1, 3); DELETE FROM items WHERE id = 2; \
             INSERT INTO items (id, name, score) VALUES (6, 'new', 6)",
        )
        .unwrap();
    server.restart();
    let mut c = server.conn();
    eventually("listening again", || listener(&mut c, "items") == "listening");
    sync_wait(&mut c);
    assert_eq!(hgetall(&mut c, "items:1")["name"], "from pg", "an update made while Redis was down");
    assert!(!exists(&mut c, "items:2"), "a delete made while Redis was down");
    assert_eq!(hgetall(&mut c, "items:6")["name"], "new", "an insert made while Redis was down");
    assert_eq!(hgetall(&mut c, "items:3")["name"], "from redis", "the journaled Redis change is newer");
    assert_eq!(pg_items(&db)[&3][0].as_deref(), Some("from redis"));
    assert_converged(&db, &mut c, 6);
}
