//! A TRUNCATE in Postgres of a listened table: the mapping's hashes leave Redis
//! (with a delete event each), rows inserted after it stay, and a Redis change
//! still on its way to Postgres is not lost.

mod common;

use common::*;
use redis::Commands;
use std::collections::BTreeSet;
use std::time::Duration;

const SCHEMA: &str =
    "CREATE TABLE users (id integer PRIMARY KEY, username text NOT NULL, email text NOT NULL, score integer)";

/// Users, write-through, listening and publishing on `sync:users:<id>`.
const LISTENING: &str = r#"{"mappings": [{"name": "users", "table": "users", "key_prefix": "users:",
  "primary_key": "id", "mode": "write-through", "listen": true, "notify": "sync:users"}]}"#;

fn insert_users(db: &TestDb, from: i32, to: i32) {
    db.client()
        .execute(
            "INSERT INTO users SELECT i, 'user' || i, 'u' || i || '@x', i FROM generate_series($1::int, $2::int) i",
            &[&from, &to],
        )
        .unwrap();
}

/// The ids of the `users:<id>` hashes in Redis.
fn cached_ids(c: &mut redis::Connection) -> BTreeSet<i32> {
    let keys: Vec<String> = c.keys("users:*").unwrap();
    let mut ids = BTreeSet::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE").arg(&key).query(c).unwrap();
        if kind == "hash" {
            ids.insert(key["users:".len()..].parse().unwrap());
        }
    }
    ids
}

fn listening(c: &mut redis::Connection) {
    eventually("listener up", || status(c, "users")["listener"] == "listening");
}

/// Inserts a row in its own transaction and waits for the listener to apply it:
/// everything committed before it has then been handled too.
fn barrier(db: &TestDb, c: &mut redis::Connection, id: i32) {
    insert_users(db, id, id);
    eventually("the barrier row arrives", || exists(c, &format!("users:{id}")));
}

#[test]
fn truncate_removes_every_mapped_hash_with_a_delete_event_each() {
    let db = test_db(SCHEMA);
    // More rows than one SCAN step examines.
    insert_users(&db, 1, 2500);
    let server = Server::with_mapping(&db, LISTENING, &[], &[]);
    let mut c = server.conn();
    listening(&mut c);
    let loaded: i64 = redis::cmd("SYNC.RELOAD").query(&mut c).unwrap();
    assert_eq!(loaded, 2500);
    let _: () = c.set("users:notes", "not a row").unwrap();
    hset(&mut c, "other:1", &[("username", "someone else's")]);
    let mut sub_conn = server.conn();
    let mut sub = sub_conn.as_pubsub();
    sub.psubscribe("sync:users:*").unwrap();

    db.client().batch_execute("TRUNCATE users").unwrap();

    sub.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut deleted = BTreeSet::new();
    for _ in 0..2500 {
        let msg = sub.get_message().expect("a delete event per key");
        let event: serde_json::Value = serde_json::from_str(&msg.get_payload::<String>().unwrap()).unwrap();
        assert_eq!((event["op"].as_str(), event["source"].as_str()), (Some("delete"), Some("postgres")), "{event}");
        let id = event["id"].as_str().unwrap().to_string();
        assert_eq!(event["key"].as_str(), Some(format!("users:{id}").as_str()));
        assert_eq!(msg.get_channel_name(), format!("sync:users:{id}"));
        assert!(deleted.insert(id.parse::<i32>().unwrap()), "one event per key ({id} twice)");
    }
    assert_eq!(deleted, (1..=2500).collect());
    sub.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    assert!(sub.get_message().is_err(), "no extra events");
    assert_eq!(cached_ids(&mut c), BTreeSet::new(), "every mapped hash is gone");
    assert!(exists(&mut c, "users:notes"), "a non-hash under the prefix stays");
    assert!(exists(&mut c, "other:1"), "a key of no mapping stays");
    sync_wait(&mut c);
    let rows: i64 = db.client().query_one("SELECT count(*) FROM users", &[]).unwrap().get(0);
    assert_eq!(rows, 0, "the deletes in Redis were not written back to Postgres");
}

#[test]
fn rows_inserted_after_a_truncate_in_its_transaction_are_all_that_remains() {
    // An earlier install: the row trigger is there, the TRUNCATE one is missing.
    let db = test_db(&format!(
        "{SCHEMA}; CREATE FUNCTION pgsync_notify() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$; \
         CREATE TRIGGER pgsync_notify AFTER INSERT OR UPDATE OR DELETE ON users \
         FOR EACH ROW EXECUTE FUNCTION pgsync_notify('id', 'pgsync_users')"
    ));
    insert_users(&db, 1, 5);
    // A read-only mapping listens too.
    let mapping = r#"{"mappings": [{"name": "users", "table": "users", "key_prefix": "users:",
        "primary_key": "id", "mode": "read-only"}]}"#;
    let server = Server::with_mapping(&db, mapping, &[], &[]);
    let mut c = server.conn();
    listening(&mut c);
    let _: i64 = redis::cmd("SYNC.RELOAD").query(&mut c).unwrap();
    assert_eq!(cached_ids(&mut c), (1..=5).collect());
    let triggers: Vec<String> = db
        .client()
        .query("SELECT tgname::text FROM pg_trigger WHERE tgrelid = 'users'::regclass ORDER BY 1", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(triggers, ["pgsync_notify", "pgsync_truncate"], "only the missing trigger was added");

    db.client()
        .batch_execute(
            "BEGIN; TRUNCATE users; \
             INSERT INTO users (id, username, email) VALUES (3, 'new3', 'n3@x'), (10, 'ten', 't@x'), (11, 'eleven', 'e@x'); \
             COMMIT",
        )
        .unwrap();
    barrier(&db, &mut c, 99);

    assert_eq!(cached_ids(&mut c), BTreeSet::from([3, 10, 11, 99]));
    let three = hgetall(&mut c, "users:3");
    assert_eq!((three["username"].as_str(), three["email"].as_str()), ("new3", "n3@x"));
    assert!(!three.contains_key("score"), "the new row 3 has no score: {three:?}");
    assert_eq!(hgetall(&mut c, "users:10")["username"], "ten");
}

#[test]
fn a_redis_change_on_its_way_to_postgres_during_a_truncate_stays() {
    let db = test_db(SCHEMA);
    insert_users(&db, 1, 3);
    let mapping = r#"{"mappings": [{"name": "users", "table": "users", "key_prefix": "users:",
        "primary_key": "id", "mode": "write-behind", "listen": true}]}"#;
    let server = Server::with_mapping(&db, mapping, &[], &[]);
    let mut c = server.conn();
    listening(&mut c);
    let _: i64 = redis::cmd("SYNC.RELOAD").query(&mut c).unwrap();

    // The TRUNCATE holds the table's lock until it commits, so the module's write
    // of users:2 waits in flight and lands after it.
    let mut pg = db.client();
    let mut tx = pg.transaction().unwrap();
    tx.batch_execute("TRUNCATE users").unwrap();
    // A write changes only what it names: to bring back a truncated row it must
    // name every NOT NULL column.
    hset(&mut c, "users:2", &[("username", "mine"), ("email", "m@x")]);
    eventually("the write waits on the TRUNCATE's lock", || status(&mut c, "users")["in_flight"] == "1");
    tx.commit().unwrap();
    barrier(&db, &mut c, 50);

    assert_eq!(cached_ids(&mut c), BTreeSet::from([2, 50]), "users:1 and users:3 are gone, users:2 stays");
    sync_wait(&mut c);
    let name: String = db.client().query_one("SELECT username FROM users WHERE id = 2", &[]).unwrap().get(0);
    assert_eq!(name, "mine", "Redis's change reached Postgres");
    assert_eq!(hgetall(&mut c, "users:2")["username"], "mine");
}
