//! The listener under failures: a mapping whose table is missing, Redis down while
//! Postgres changes. Real servers; Redis is killed with -9 and restarted on its AOF.

mod common;

use common::items::*;
use common::*;
use std::time::Duration;

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

/// `items` listening (write-behind), publishing its changes on `sync:items:<id>`.
const NOTIFYING_ITEMS: &str = r#"{"mappings": [{"name": "items", "table": "items", "key_prefix": "items:",
  "primary_key": "id", "mode": "write-behind", "listen": true, "notify": "sync:items",
  "fields": {"name": "name", "score": "score", "tag": "tag"}}]}"#;

fn rows_read(c: &mut redis::Connection) -> u64 {
    status(c, "items")["reload_rows_read"].parse().expect("reload_rows_read")
}

#[test]
fn a_catch_up_publishes_only_real_changes_and_a_reload_it_waited_for_is_not_read_again() {
    const ROWS: u64 = 40;
    let pg = PrivatePg::start();
    let db = TestDb::on(&pg.admin_url(), ITEMS_SQL);
    db.client()
        .batch_execute(
            "INSERT INTO items (id, name, score, tag) SELECT i, 'n' || i, i, NULL FROM generate_series(1, 40) i",
        )
        .unwrap();
    let mut server = Server::with_mapping(&db, NOTIFYING_ITEMS, &[("retry-max-delay-ms", "300")], AOF);
    let mut c = server.conn();
    eventually("listening", || listener(&mut c, "items") == "listening");
    assert_eq!(hgetall(&mut c, "items:40")["name"], "n40", "the first catch-up cached the table");

    // Redis restarts on its AOF, every row cached; 3 rows change meanwhile. The
    // catch-up waits for Postgres, so the subscriber is there before it runs.
    server.kill9();
    db.client().batch_execute("UPDATE items SET score = score + 100 WHERE id IN (2, 20, 33)").unwrap();
    pg.down();
    server.restart();
    let mut c = server.conn();
    let mut sub_conn = server.conn();
    let mut sub = sub_conn.as_pubsub();
    sub.psubscribe("sync:items:*").unwrap();
    pg.up();
    eventually("listening again", || listener(&mut c, "items") == "listening");
    assert_eq!(rows_read(&mut c), ROWS, "the catch-up read the table once");
    sub.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut heard = Vec::new();
    for _ in 0..3 {
        let msg = sub.get_message().expect("a notification for each changed row");
        heard.push(msg.get_channel_name().to_string());
    }
    heard.sort();
    assert_eq!(heard, ["sync:items:2", "sync:items:20", "sync:items:33"]);
    // Everything the catch-up published was sent before it showed `listening`.
    sub.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    assert!(sub.get_message().is_err(), "no notification for an unchanged row");
    assert_eq!(hgetall(&mut c, "items:20")["score"], "120");

    // A SYNC.RELOAD FLUSH held up by a lock; the listener's connection drops and
    // it joins again meanwhile, so its catch-up waits for the reload: that reload
    // read the table after the listener left and wrote it before the listener
    // was back, so the catch-up needs no second read.
    let mut locker = db.client();
    let mut lock = locker.transaction().unwrap();
    lock.batch_execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE").unwrap();
    let port = server.port;
    let reload = std::thread::spawn(move || {
        redis::cmd("SYNC.RELOAD").arg("items").arg("FLUSH").query::<u64>(&mut connect(port)).expect("SYNC.RELOAD")
    });
    eventually("reload running", || status(&mut c, "items")["reload"].starts_with("running"));
    let mut killer = db.client();
    let mut kill = killer.transaction().unwrap();
    kill_listener_in(&mut kill);
    kill.commit().unwrap();
    eventually("the catch-up waits for the reload", || {
        listener(&mut c, "items") == "catching up: waiting for the running reload"
    });
    lock.rollback().unwrap();
    assert_eq!(reload.join().unwrap(), ROWS);
    eventually("listening after the reload", || listener(&mut c, "items") == "listening");
    assert_eq!(rows_read(&mut c), 2 * ROWS, "the reload read the table; the catch-up did not read it again");
    db.client().batch_execute("UPDATE items SET name = 'after' WHERE id = 5").unwrap();
    eventually("changes still applied", || hgetall(&mut c, "items:5")["name"] == "after");
    assert_converged(&db, &mut c, ROWS as i32);
}
