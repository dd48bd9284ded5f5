//! TTL on cached rows (a mapping's `"ttl"`, and `"ttl_on_write"`): set on every
//! row the module writes from Postgres or applies after a write-through commit,
//! refreshed on writers' writes when asked; expiry never deletes a row, and a
//! write after expiry changes only its fields.

mod common;

use common::items::*;
use common::*;

/// Write-behind items that expire after `ttl` seconds, listening to Postgres.
fn items_with_ttl(ttl: u64, on_write: bool) -> String {
    format!(
        r#"{{"mappings": [{{"name": "items", "table": "items", "key_prefix": "items:", "primary_key": "id",
        "mode": "write-behind", "listen": true, "ttl": {ttl}, "ttl_on_write": {on_write},
        "fields": {{"name": "name", "score": "score", "tag": "tag"}}}}]}}"#
    )
}

/// Write-through users that expire after an hour.
const USERS_WITH_TTL: &str = r#"{"mappings": [{"name": "users", "table": "users", "key_prefix": "users:",
  "primary_key": "id", "mode": "write-through", "ttl": 3600,
  "fields": {"username": "username", "email": "email", "pwhash": "password_hash"}}]}"#;

/// Seconds left before `key` expires (`-1`: none, `-2`: no key).
fn ttl(c: &mut redis::Connection, key: &str) -> i64 {
    redis::cmd("TTL").arg(key).query(c).expect("TTL")
}

fn listening(c: &mut redis::Connection) {
    eventually("listener up", || status(c, "items")["listener"] == "listening");
}

#[test]
fn rows_from_reload_and_listener_get_the_ttl_and_writers_writes_do_not_unless_asked() {
    let db = test_db(ITEMS_SQL);
    db.client().execute("INSERT INTO items VALUES (1, 'one', 1, NULL)", &[]).unwrap();
    let server = Server::with_mapping(&db, &items_with_ttl(100, false), &[], &[]);
    let mut c = server.conn();
    listening(&mut c);
    let _: i64 = redis::cmd("SYNC.RELOAD").query(&mut c).unwrap();
    assert!((1..=100).contains(&ttl(&mut c, "items:1")), "reload: {}", ttl(&mut c, "items:1"));
    db.client().execute("INSERT INTO items VALUES (2, 'two', 2, NULL)", &[]).unwrap();
    eventually("the listener wrote the row", || exists(&mut c, "items:2"));
    assert!((1..=100).contains(&ttl(&mut c, "items:2")), "listener: {}", ttl(&mut c, "items:2"));
    // Without ttl_on_write a writer's new key lives until evicted or expired by hand.
    hset(&mut c, "items:3", &[("name", "three")]);
    assert_eq!(ttl(&mut c, "items:3"), -1);
    sync_wait(&mut c);
}

#[test]
fn ttl_on_write_refreshes_the_expiry_on_writers_writes() {
    let db = test_db(ITEMS_SQL);
    let server = Server::with_mapping(&db, &items_with_ttl(100, true), &[], &[]);
    let mut c = server.conn();
    hset(&mut c, "items:3", &[("name", "three")]);
    assert!((1..=100).contains(&ttl(&mut c, "items:3")));
    let _: () = redis::cmd("PERSIST").arg("items:3").query(&mut c).unwrap();
    let _: i64 = redis::cmd("HINCRBY").arg("items:3").arg("score").arg(2).query(&mut c).unwrap();
    assert!((1..=100).contains(&ttl(&mut c, "items:3")), "an increment refreshes it too");
    sync_wait(&mut c);
    assert_eq!(pg_items(&db)[&3], [Some("three".into()), Some("2".into()), None]);
    let _: () = redis::cmd("PERSIST").arg("items:3").query(&mut c).unwrap();
    hset(&mut c, "items:3", &[("#", "+"), ("tag", "local")]);
    assert!((1..=100).contains(&ttl(&mut c, "items:3")), "a Redis-only `#` `+` write refreshes it too");
}

#[test]
fn a_write_through_commit_gives_the_cached_row_the_ttl() {
    let db = test_db(USERS_SQL);
    let server = Server::with_mapping(&db, USERS_WITH_TTL, &[], &[]);
    let mut c = server.conn();
    let _: i64 = redis::cmd("SYNC.HSET")
        .arg(&["users:7", "username", "seven", "email", "s@x", "pwhash", "h"])
        .query(&mut c)
        .unwrap();
    assert!((3500..=3600).contains(&ttl(&mut c, "users:7")), "{}", ttl(&mut c, "users:7"));
    hset(&mut c, "__{users:8}", &[("username", "eight"), ("email", "e@x"), ("pwhash", "h")]);
    sync_wait(&mut c);
    assert!((3500..=3600).contains(&ttl(&mut c, "users:8")));
    assert_eq!(ttl(&mut c, "__{users:8}"), -2, "the staged fields were synced and cleared");
}

#[test]
fn expiry_never_deletes_a_row_and_a_later_write_changes_only_its_fields() {
    let db = test_db(ITEMS_SQL);
    db.client().execute("INSERT INTO items VALUES (1, 'one', 10, 'red')", &[]).unwrap();
    let server = Server::with_mapping(&db, &items_with_ttl(1, false), &[], &[]);
    let mut c = server.conn();
    listening(&mut c);
    let _: i64 = redis::cmd("SYNC.RELOAD").query(&mut c).unwrap();
    assert!(exists(&mut c, "items:1"));
    eventually("the cached row expired", || !exists(&mut c, "items:1"));
    sync_wait(&mut c);
    assert_eq!(pg_items(&db)[&1], [Some("one".into()), Some("10".into()), Some("red".into())]);
    hset(&mut c, "items:1", &[("tag", "blue")]);
    sync_wait(&mut c);
    assert_eq!(pg_items(&db)[&1], [Some("one".into()), Some("10".into()), Some("blue".into())]);
}
