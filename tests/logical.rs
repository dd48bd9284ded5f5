//! Postgres → Redis by logical replication (`pgsync.cdc`): chosen when Postgres
//! allows it, with the reason when not; inserts, updates, deletes and TRUNCATE
//! applied with only the mapped columns; a restart resumes with exactly the
//! changes it missed; the initial load hands over to the stream without a gap;
//! the module's own writes do not come back. Each test runs a private Postgres
//! with `wal_level = logical`.

mod common;

use common::json::doc;
use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const SCHEMA: &str = "CREATE TABLE items (id integer PRIMARY KEY, name text, score integer, secret text)";

/// Items, read-only, listening, logging every event to the `changes:items` stream.
const ITEMS: &str = r#"{"mappings": [{"name": "items", "table": "items", "key_prefix": "items:",
  "primary_key": "id", "mode": "read-only", "listen": true, "notify": "sync:items",
  "changelog": {"stream": "changes:items", "maxlen": 100000},
  "fields": {"name": "name", "score": "score"}}]}"#;

/// The same table, written by Redis (write-behind) and listening.
const ITEMS_WRITE_BEHIND: &str = r#"{"mappings": [{"name": "items", "table": "items", "key_prefix": "items:",
  "primary_key": "id", "mode": "write-behind", "listen": true, "notify": "sync:items",
  "changelog": {"stream": "changes:items", "maxlen": 100000},
  "fields": {"name": "name", "score": "score"}}]}"#;

fn logical_pg() -> PrivatePg {
    PrivatePg::start_with(PgSetup::logical())
}

/// Waits for `check`; on giving up, shows the status and the server's log.
fn wait(server: &Server, c: &mut redis::Connection, what: &str, mut check: impl FnMut(&mut redis::Connection) -> bool) {
    let deadline = std::time::Instant::now() + PATIENCE;
    while !check(c) {
        assert!(
            std::time::Instant::now() < deadline,
            "gave up waiting for {what}: {:?}\n{}",
            status(c, "items"),
            server.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn listening(server: &Server, c: &mut redis::Connection) {
    wait(server, c, "the listener", |c| status(c, "items")["listener"] == "listening");
}

/// A private logical Postgres with items 1..=3, and a server streaming them
/// into Redis (listening already).
fn items_streaming() -> (PrivatePg, TestDb, Server, redis::Connection) {
    let pg = logical_pg();
    let db = TestDb::on(&pg.admin_url(), SCHEMA);
    insert(&db, 1, 3);
    let server = Server::with_mapping(&db, ITEMS, &[], &[]);
    let mut c = server.conn();
    listening(&server, &mut c);
    (pg, db, server, c)
}

fn insert(db: &TestDb, from: i32, to: i32) {
    db.client()
        .execute(
            "INSERT INTO items SELECT i, 'item' || i, i, 's' FROM generate_series($1::int, $2::int) i",
            &[&from, &to],
        )
        .unwrap();
}

/// Every event of the changelog stream as `id:source:op`, in order.
fn events(c: &mut redis::Connection) -> Vec<String> {
    let read: redis::streams::StreamRangeReply =
        redis::cmd("XRANGE").arg("changes:items").arg("-").arg("+").query(c).unwrap();
    read.ids
        .iter()
        .map(|e| {
            let event: serde_json::Value = serde_json::from_str(&e.get::<String>("event").unwrap()).unwrap();
            format!(
                "{}:{}:{}",
                event["id"].as_str().unwrap(),
                event["source"].as_str().unwrap(),
                event["op"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn logical_replication_is_chosen_and_follows_every_kind_of_change() {
    let (_pg, db, server, mut c) = items_streaming();
    let s = status(&mut c, "items");
    assert_eq!(s["cdc"], "logical", "{s:?}");
    assert_eq!(s["cdc_slot"], "pgsync");
    assert_eq!(hgetall(&mut c, "items:2")["name"], "item2", "the initial load");
    assert_eq!(s["reload_rows_read"], "3", "the initial load's reads are counted");
    let triggers: i64 = db
        .client()
        .query_one("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'items'::regclass AND NOT tgisinternal", &[])
        .unwrap()
        .get(0);
    assert_eq!(triggers, 0, "no trigger on the user's table");

    let mut pg_client = db.client();
    pg_client.batch_execute("INSERT INTO items VALUES (10, 'ten', NULL, 'hidden')").unwrap();
    wait(&server, &mut c, "insert", |c| exists(c, "items:10"));
    let ten = hgetall(&mut c, "items:10");
    assert_eq!(ten.get("name").map(String::as_str), Some("ten"));
    assert!(!ten.contains_key("score") && !ten.contains_key("secret"), "NULL and unmapped columns: {ten:?}");
    pg_client.batch_execute("UPDATE items SET score = 7 WHERE id = 10; DELETE FROM items WHERE id = 1").unwrap();
    wait(&server, &mut c, "update and delete", |c| {
        hgetall(c, "items:10").get("score").map(String::as_str) == Some("7") && !exists(c, "items:1")
    });
    pg_client.batch_execute("BEGIN; TRUNCATE items; INSERT INTO items VALUES (20, 'after', 1, 's'); COMMIT").unwrap();
    wait(&server, &mut c, "truncate", |c| !exists(c, "items:2") && !exists(c, "items:10") && exists(c, "items:20"));
    assert!(!exists(&mut c, "items:3"));
    // A transaction larger than one lock's worth of rows lands whole.
    insert(&db, 1000, 3499);
    let cached = |c: &mut redis::Connection| -> usize {
        let keys: Vec<String> = redis::cmd("KEYS").arg("items:*").query(c).unwrap();
        keys.len()
    };
    wait(&server, &mut c, "a 2,500-row transaction", |c| cached(c) == 2501);
    assert_eq!(hgetall(&mut c, "items:3499")["name"], "item3499");
    wait(&server, &mut c, "the slot's lag is shown", |c| {
        status(c, "items")["cdc_lag_bytes"].parse::<i64>().unwrap() >= 0
    });
}

#[test]
fn triggers_serve_when_postgres_does_not_allow_logical_replication() {
    // The shared server runs with wal_level replica.
    let db = test_db(SCHEMA);
    let level: String = db.client().query_one("SHOW wal_level", &[]).unwrap().get(0);
    assert_ne!(level, "logical", "this test needs the shared Postgres without logical replication");
    let server = Server::with_mapping(&db, ITEMS, &[], &[]);
    let mut c = server.conn();
    listening(&server, &mut c);
    assert_eq!(status(&mut c, "items")["cdc"], format!("notify: wal_level is {level}, not logical"));
    assert!(server.log().contains("Postgres -> Redis changes: notify: wal_level"));
    db.client().batch_execute("INSERT INTO items VALUES (1, 'one', 1, 's')").unwrap();
    wait(&server, &mut c, "the trigger path works", |c| exists(c, "items:1"));
}

#[test]
fn a_restart_resumes_with_exactly_the_missed_changes() {
    let pg = logical_pg();
    let db = TestDb::on(&pg.admin_url(), SCHEMA);
    insert(&db, 1, 200);
    let mut server = Server::with_mapping(&db, ITEMS, &[], &["--appendonly", "yes", "--appendfsync", "always"]);
    let mut c = server.conn();
    listening(&server, &mut c);
    db.client().batch_execute("UPDATE items SET score = 0 WHERE id = 5").unwrap();
    wait(&server, &mut c, "streamed change", |c| hgetall(c, "items:5")["score"] == "0");
    let before = events(&mut c).len();
    server.kill9();
    db.client()
        .batch_execute(
            "UPDATE items SET score = -1 WHERE id IN (7, 8, 9); DELETE FROM items WHERE id = 10; \
             INSERT INTO items VALUES (500, 'new', 1, 's'); UPDATE items SET secret = 'unmapped' WHERE id = 11",
        )
        .unwrap();
    server.restart();
    let mut c = server.conn();
    listening(&server, &mut c);
    wait(&server, &mut c, "missed changes applied", |c| exists(c, "items:500") && !exists(c, "items:10"));
    // One more change after them: once it is seen, everything before it was applied.
    db.client().batch_execute("UPDATE items SET name = 'last' WHERE id = 1").unwrap();
    wait(&server, &mut c, "later change", |c| hgetall(c, "items:1")["name"] == "last");
    let mut new = events(&mut c)[before..].to_vec();
    new.sort();
    assert_eq!(
        new,
        [
            "10:postgres:delete",
            "1:postgres:upsert",
            "500:postgres:upsert",
            "7:postgres:upsert",
            "8:postgres:upsert",
            "9:postgres:upsert"
        ],
        "exactly the changed rows, none for unchanged ones (11 changed only an unmapped column)"
    );
    assert!(server.log().contains("logical stream resumes at"), "no full reload:\n{}", server.log());
    assert_eq!(status(&mut c, "items")["reload_rows_read"], "0", "no row read again from Postgres");
    assert_eq!(hgetall(&mut c, "items:7")["score"], "-1");
}

#[test]
fn the_initial_load_hands_over_to_the_stream_under_concurrent_writes() {
    let pg = logical_pg();
    let db = TestDb::on(&pg.admin_url(), SCHEMA);
    insert(&db, 1, 3000);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, mut client) = (stop.clone(), db.client());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let id = (n * 7919) % 3000 + 1;
                client.execute("UPDATE items SET score = $1 WHERE id = $2", &[&(n + 10_000), &id]).unwrap();
                if n % 50 == 0 {
                    client.execute("DELETE FROM items WHERE id = $1", &[&id]).unwrap();
                }
            }
            n
        })
    };
    let server = Server::with_mapping(&db, ITEMS, &[], &[]);
    let mut c = server.conn();
    listening(&server, &mut c);
    stop.store(true, Ordering::Relaxed);
    let writes = writer.join().unwrap();
    assert!(writes > 0);
    let rows: Vec<(i32, Option<i32>)> =
        db.client().query("SELECT id, score FROM items", &[]).unwrap().iter().map(|r| (r.get(0), r.get(1))).collect();
    let expected: std::collections::BTreeMap<String, String> =
        rows.iter().map(|(id, score)| (format!("items:{id}"), score.unwrap().to_string())).collect();
    wait(&server, &mut c, "every key equals its row, and no key without a row", |c| {
        let keys: Vec<String> = redis::Commands::scan_match(c, "items:*").unwrap().collect();
        keys.len() == expected.len() && expected.iter().all(|(key, score)| hgetall(c, key).get("score") == Some(score))
    });
}

/// Rows as (key, "name/score").
type Rows = Vec<(String, String)>;

/// Every row of `items` as Postgres has it, and as Redis has it, by key.
fn both_sides(db: &TestDb, c: &mut redis::Connection) -> (Rows, Rows) {
    let in_pg: Rows = db
        .client()
        .query("SELECT id, coalesce(name, '-') || '/' || coalesce(score::text, '-') FROM items ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| (format!("items:{}", r.get::<_, i32>(0)), r.get(1)))
        .collect();
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("items:*").query(c).unwrap();
    keys.sort_by_key(|k| k.trim_start_matches("items:").parse::<i32>().unwrap_or(i32::MAX));
    let in_redis = keys
        .into_iter()
        .map(|k| {
            let h = hgetall(c, &k);
            let field = |f: &str| h.get(f).cloned().unwrap_or_else(|| "-".into());
            let row = format!("{}/{}", field("name"), field("score"));
            (k, row)
        })
        .collect();
    (in_pg, in_redis)
}

#[test]
fn transactions_committed_back_to_back_land_as_each_committed_them() {
    let (_pg, db, server, mut c) = items_streaming();
    // One round trip of many small transactions: the stream delivers them back
    // to back, and the module gathers them into few apply steps.
    let mut burst: String =
        (10..400).map(|i| format!("BEGIN; INSERT INTO items VALUES ({i}, 'n{i}', {i}, 's'); COMMIT; ")).collect();
    burst += "BEGIN; UPDATE items SET score = 50 WHERE id = 10; COMMIT; ";
    burst += "BEGIN; DELETE FROM items WHERE id = 11; COMMIT; BEGIN; INSERT INTO items VALUES (11, 'again', NULL, 's'); COMMIT; ";
    burst += "BEGIN; DELETE FROM items WHERE id = 12; COMMIT; ";
    burst += "BEGIN; UPDATE items SET name = NULL WHERE id = 13; COMMIT; BEGIN; UPDATE items SET score = 1 WHERE id = 13; COMMIT; ";
    burst += "BEGIN; INSERT INTO items VALUES (500, 'last', 5, 's'); COMMIT";
    db.client().batch_execute(&burst).unwrap();
    wait(&server, &mut c, "the burst", |c| exists(c, "items:500"));
    let (in_pg, in_redis) = both_sides(&db, &mut c);
    assert_eq!(in_redis, in_pg, "Redis holds every row as Postgres does");
    assert_eq!(hgetall(&mut c, "items:13").get("name"), None, "a NULL set by an earlier transaction stays NULL");

    // A TRUNCATE among them drops the rows the earlier ones wrote, not the later.
    let mut burst: String =
        (600..700).map(|i| format!("BEGIN; INSERT INTO items VALUES ({i}, 'm{i}', 1, 's'); COMMIT; ")).collect();
    burst += "BEGIN; TRUNCATE items; INSERT INTO items VALUES (700, 'after', 1, 's'); COMMIT; ";
    burst += "BEGIN; INSERT INTO items VALUES (701, 'later', 2, 's'); COMMIT";
    db.client().batch_execute(&burst).unwrap();
    wait(&server, &mut c, "the truncate", |c| exists(c, "items:701") && !exists(c, "items:500"));
    let (in_pg, in_redis) = both_sides(&db, &mut c);
    assert_eq!(in_redis, in_pg);
    assert_eq!(in_pg.len(), 2);
}

#[test]
fn the_modules_own_writes_do_not_come_back() {
    let pg = logical_pg();
    let db = TestDb::on(&pg.admin_url(), SCHEMA);
    let server = Server::with_mapping(&db, ITEMS_WRITE_BEHIND, &[], &[]);
    let mut c = server.conn();
    listening(&server, &mut c);
    hset(&mut c, "items:1", &[("name", "from redis"), ("score", "1")]);
    sync_wait(&mut c);
    let name: String = db.client().query_one("SELECT name FROM items WHERE id = 1", &[]).unwrap().get(0);
    assert_eq!(name, "from redis");
    // A change by someone else after it: once it arrived, the module's own write
    // would have arrived too.
    db.client().batch_execute("INSERT INTO items VALUES (2, 'from postgres', 2, 's')").unwrap();
    wait(&server, &mut c, "the other change", |c| exists(c, "items:2"));
    let seen = events(&mut c);
    assert_eq!(seen, ["1:redis:upsert", "2:postgres:upsert"], "no postgres event for the module's own write");
}

/// The slot's confirmed position, as Postgres prints it.
fn confirmed(db: &TestDb) -> Option<String> {
    db.client()
        .query_opt("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'pgsync'", &[])
        .unwrap()
        .map(|r| r.get(0))
}

#[test]
fn redis_that_lost_data_reloads_in_full_and_says_so() {
    let pg = logical_pg();
    let db = TestDb::on(&pg.admin_url(), SCHEMA);
    insert(&db, 1, 20);
    let mut server = Server::with_mapping(&db, ITEMS, &[], &[]);
    let mut c = server.conn();
    listening(&server, &mut c);
    let _: () = redis::cmd("SAVE").query(&mut c).unwrap();
    let saved = status(&mut c, "items")["cdc_lsn"].clone();
    let rdb = server.dir.0.join("dump.rdb");
    let old = std::fs::read(&rdb).unwrap();
    db.client().batch_execute("UPDATE items SET name = 'newer' WHERE id = 3; DELETE FROM items WHERE id = 4").unwrap();
    // Past the saved position, in Redis and in the slot: else the old file would
    // not be behind.
    wait(&server, &mut c, "the change, acknowledged to Postgres", |c| {
        let lsn = status(c, "items")["cdc_lsn"].clone();
        !exists(c, "items:4") && lsn != saved && confirmed(&db) == Some(lsn)
    });
    server.kill9();
    std::fs::write(&rdb, old).unwrap();
    server.restart();
    let mut c = server.conn();
    listening(&server, &mut c);
    let log = server.log();
    assert!(log.contains("is behind the slot's confirmed"), "{log}");
    assert_eq!(hgetall(&mut c, "items:3").get("name").map(String::as_str), Some("newer"), "{log}");
    assert!(!exists(&mut c, "items:4"), "the reload flushed the row deleted meanwhile:\n{log}");
}

#[test]
fn the_slot_and_publication_are_dropped_when_nothing_listens() {
    let pg = logical_pg();
    let db = TestDb::on(&pg.admin_url(), SCHEMA);
    let server = Server::with_mapping(&db, ITEMS, &[], &[]);
    let mut c = server.conn();
    listening(&server, &mut c);
    assert!(confirmed(&db).is_some());
    drop(server);
    let quiet = ITEMS_WRITE_BEHIND.replace(r#""listen": true"#, r#""listen": false"#);
    assert_ne!(quiet, ITEMS_WRITE_BEHIND);
    let server = Server::with_mapping(&db, &quiet, &[], &[]);
    let slots = || -> i64 {
        db.client()
            .query_one(
                "SELECT (SELECT count(*) FROM pg_replication_slots) + (SELECT count(*) FROM pg_publication)",
                &[],
            )
            .unwrap()
            .get(0)
    };
    let mut c = server.conn();
    wait(&server, &mut c, "the slot and publication dropped", |_| slots() == 0);
    assert!(server.log().contains("dropped replication slot and publication pgsync"));
}

#[test]
fn a_lost_replication_connection_resumes_with_exactly_the_missed_changes() {
    let pg = logical_pg();
    let db = TestDb::on(&pg.admin_url(), SCHEMA);
    insert(&db, 1, 50);
    let server = Server::with_mapping(&db, ITEMS, &[("retry-max-delay-ms", "300")], &[]);
    let mut c = server.conn();
    listening(&server, &mut c);
    let before = events(&mut c).len();
    db.client()
        .batch_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'walsender'; \
             UPDATE items SET score = -1 WHERE id IN (3, 4); DELETE FROM items WHERE id = 5",
        )
        .unwrap();
    wait(&server, &mut c, "the changes after the reconnection", |c| !exists(c, "items:5"));
    db.client().batch_execute("UPDATE items SET name = 'last' WHERE id = 1").unwrap();
    wait(&server, &mut c, "a later change", |c| hgetall(c, "items:1")["name"] == "last");
    let mut new = events(&mut c)[before..].to_vec();
    new.sort();
    assert_eq!(new, ["1:postgres:upsert", "3:postgres:upsert", "4:postgres:upsert", "5:postgres:delete"]);
    assert_eq!(server.log().matches("logical stream: loaded").count(), 1, "one initial load only:\n{}", server.log());
}

#[test]
fn a_promoted_replica_resumes_where_its_primary_stopped() {
    let pg = logical_pg();
    let db = TestDb::on(&pg.admin_url(), SCHEMA);
    insert(&db, 1, 50);
    let mut primary = Server::with_mapping(&db, ITEMS, &[], &[]);
    let mut p = primary.conn();
    listening(&primary, &mut p);
    let replicaof = primary.port.to_string();
    let replica = Server::with_mapping(&db, ITEMS, &[], &["--replicaof", "127.0.0.1", &replicaof]);
    let mut r = replica.conn();
    db.client().batch_execute("UPDATE items SET score = 0 WHERE id = 2").unwrap();
    wait(&primary, &mut p, "the change on the primary", |c| hgetall(c, "items:2")["score"] == "0");
    let at = status(&mut p, "items")["cdc_lsn"].clone();
    wait(&replica, &mut r, "the position on the replica", |c| {
        status(c, "items")["cdc_lsn"] == at && hgetall(c, "items:2").get("score").map(String::as_str) == Some("0")
    });
    assert_eq!(status(&mut r, "items")["listener"], "waiting: this server is a replica");
    let before = events(&mut r).len();
    primary.kill9();
    db.client().batch_execute("UPDATE items SET score = -1 WHERE id = 7; DELETE FROM items WHERE id = 8").unwrap();
    let _: () = redis::cmd("REPLICAOF").arg("NO").arg("ONE").query(&mut r).unwrap();
    wait(&replica, &mut r, "the missed changes on the promoted replica", |c| {
        !exists(c, "items:8") && hgetall(c, "items:7")["score"] == "-1"
    });
    let mut new = events(&mut r)[before..].to_vec();
    new.sort();
    assert_eq!(new, ["7:postgres:upsert", "8:postgres:delete"], "exactly the missed changes");
    assert!(replica.log().contains("logical stream resumes at"), "no full reload:\n{}", replica.log());
}

#[test]
fn the_stream_spells_values_as_a_read_from_postgres_does_in_hashes_and_json_documents() {
    // pgoutput sends a boolean as `t`; the initial load and read-through read
    // `::text` (`true`). A row must not change spelling with where it came from.
    let pg = logical_pg();
    let db = TestDb::on(
        &pg.admin_url(),
        "CREATE TABLE gadgets (id integer PRIMARY KEY, name text, on_sale boolean, price numeric(8,2), attrs jsonb)",
    );
    let row = |id: i32| {
        db.client()
            .execute("INSERT INTO gadgets VALUES ($1, 'g' || $1::int, true, 9.50, '{\"size\": [1, 2]}')", &[&id])
            .unwrap();
    };
    row(1);
    let mapping = |name: &str, prefix: &str, kind: &str| {
        format!(
            r#"{{"name": "{name}", "table": "gadgets", "key_prefix": "{prefix}", "primary_key": "id",
            "mode": "read-only", "listen": true, "type": "{kind}"}}"#
        )
    };
    let mappings =
        format!(r#"{{"mappings": [{}, {}]}}"#, mapping("gadgets", "gadget:", "hash"), mapping("docs", "doc:", "json"));
    let server = Server::with_mapping_and_rejson(&db, &mappings, &[], &[]);
    let mut c = server.conn();
    wait(&server, &mut c, "the listeners", |c| {
        status(c, "gadgets")["listener"] == "listening" && status(c, "docs")["listener"] == "listening"
    });
    assert_eq!(status(&mut c, "docs")["cdc"], "logical");
    row(2);
    wait(&server, &mut c, "the streamed row", |c| exists(c, "gadget:2") && doc(c, "doc:2").is_some());
    for id in [1, 2] {
        let hash = hgetall(&mut c, &format!("gadget:{id}"));
        assert_eq!(hash["on_sale"], "true", "row {id}: {hash:?}");
        assert_eq!(hash["price"], "9.50", "row {id}");
        assert_eq!(
            doc(&mut c, &format!("doc:{id}")),
            Some(
                serde_json::json!({"name": format!("g{id}"), "on_sale": true, "price": 9.5, "attrs": {"size": [1, 2]}})
            ),
            "row {id}: typed members"
        );
    }
}
