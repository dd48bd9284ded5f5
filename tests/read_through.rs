//! Read-through (`"read_through": true`): a read of a row Redis does not hold
//! loads it from Postgres and answers as if it had been there; loads are batched
//! and single-flight, absent rows are remembered briefly, a write racing a load
//! wins, clients that cannot block get a miss and warm the key, a replica answers
//! without writing, and Postgres being slow or down gives the configured reply.
//! Also `"fill_on_write"`: a write to a key Redis did not hold leaves the whole
//! row behind once it has landed.

mod common;

use common::items::*;
use common::*;
use std::collections::BTreeMap;

/// Write-behind items that read through, with `extra` mapping options.
fn items_cache(extra: &str) -> String {
    format!(
        r#"{{"mappings": [{{"name": "items", "table": "items", "key_prefix": "items:", "primary_key": "id",
        "mode": "write-behind", "read_through": true{extra},
        "fields": {{"name": "name", "score": "score", "tag": "tag"}}}}]}}"#
    )
}

fn insert_items(db: &TestDb, from: i32, to: i32) {
    db.client()
        .execute(
            "INSERT INTO items SELECT i, 'name ' || i, i, NULL FROM generate_series($1::int, $2::int) i",
            &[&from, &to],
        )
        .unwrap();
}

fn figure(c: &mut redis::Connection, name: &str) -> u64 {
    status(c, "items")[name].parse().unwrap()
}

fn dbsize(c: &mut redis::Connection) -> i64 {
    redis::cmd("DBSIZE").query(c).unwrap()
}

/// Keys matching `pattern`, read with a command read-through does not route.
fn keys(c: &mut redis::Connection, pattern: &str) -> Vec<String> {
    redis::cmd("KEYS").arg(pattern).query(c).unwrap()
}

fn pairs(v: &[(&str, &str)]) -> BTreeMap<String, String> {
    v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Holds an ACCESS EXCLUSIVE lock on `items` until dropped (rolled back), so
/// that every load of the table waits: a load in progress, made visible.
struct TableLock(postgres::Client);

fn lock_items(db: &TestDb) -> TableLock {
    let mut client = db.client();
    client.batch_execute("BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE").unwrap();
    TableLock(client)
}

impl Drop for TableLock {
    fn drop(&mut self) {
        let _ = self.0.batch_execute("ROLLBACK");
    }
}

/// Waits until `n` loads wait on the table lock in Postgres.
fn loads_waiting(db: &TestDb, n: i64) {
    eventually("the load waits for the lock", || {
        let row = db
            .client()
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%items%'",
                &[],
            )
            .unwrap();
        row.get::<_, i64>(0) >= n
    });
}

#[test]
fn a_read_of_a_missing_row_loads_it_and_answers_as_if_it_were_there() {
    let db = test_db(ITEMS_SQL);
    insert_items(&db, 1, 20);
    db.client().execute("UPDATE items SET tag = 'red' WHERE id = 7", &[]).unwrap();
    let server = Server::with_mapping(&db, &items_cache(r#", "ttl": 100"#), &[], &[]);
    let mut c = server.conn();
    assert_eq!(dbsize(&mut c), 0);
    assert_eq!(hgetall(&mut c, "items:7"), pairs(&[("name", "name 7"), ("score", "7"), ("tag", "red")]));
    assert!(exists(&mut c, "items:7"), "the loaded row stays cached");
    let ttl: i64 = redis::cmd("TTL").arg("items:7").query(&mut c).unwrap();
    assert!((1..=100).contains(&ttl), "a loaded row gets the mapping's ttl: {ttl}");
    let get: Option<String> = redis::cmd("HGET").arg("items:1").arg("name").query(&mut c).unwrap();
    assert_eq!(get.as_deref(), Some("name 1"));
    let many: Vec<Option<String>> =
        redis::cmd("HMGET").arg(&["items:2", "score", "tag", "name"]).query(&mut c).unwrap();
    assert_eq!(many, vec![Some("2".into()), None, Some("name 2".into())]);
    let yes: i64 = redis::cmd("HEXISTS").arg("items:3").arg("name").query(&mut c).unwrap();
    let len: i64 = redis::cmd("HLEN").arg("items:4").query(&mut c).unwrap();
    let strlen: i64 = redis::cmd("HSTRLEN").arg("items:5").arg("name").query(&mut c).unwrap();
    let kind: String = redis::cmd("TYPE").arg("items:6").query(&mut c).unwrap();
    let count: i64 = redis::cmd("EXISTS").arg(&["items:8", "items:9", "items:404", "other:1"]).query(&mut c).unwrap();
    let fields: Vec<String> = redis::cmd("HKEYS").arg("items:10").query(&mut c).unwrap();
    let values: Vec<String> = redis::cmd("HVALS").arg("items:11").query(&mut c).unwrap();
    assert_eq!((yes, len, strlen, kind.as_str(), count), (1, 2, 6, "hash", 2));
    assert_eq!((fields.len(), values.len()), (2, 2));
    let st = status(&mut c, "items");
    assert_eq!(st["read_through"], "on");
    assert!(figure(&mut c, "read_rows_loaded") >= 11, "{st:?}");
    let hits = figure(&mut c, "read_hits");
    let _ = hgetall(&mut c, "items:7");
    assert_eq!(figure(&mut c, "read_hits"), hits + 1, "a read of a cached row is a hit");
    // Nothing was written to Postgres by reading.
    assert_eq!(figure(&mut c, "synced"), 0);
    // Only database 0 is synced: elsewhere a missing key stays missing.
    let _: () = redis::cmd("SELECT").arg(1).query(&mut c).unwrap();
    assert!(hgetall(&mut c, "items:12").is_empty());
    assert_eq!(dbsize(&mut c), 0);
    let _: () = redis::cmd("SELECT").arg(0).query(&mut c).unwrap();
    assert!(!keys(&mut c, "items:12").is_empty() || hgetall(&mut c, "items:12").len() == 2);
}

#[test]
fn a_missing_row_is_remembered_briefly_and_found_once_it_exists() {
    let db = test_db(ITEMS_SQL);
    let server = Server::with_mapping(&db, &items_cache(""), &[("read-through-negative-ttl-ms", "300")], &[]);
    let mut c = server.conn();
    assert!(hgetall(&mut c, "items:99").is_empty());
    let loads = figure(&mut c, "read_loads");
    assert_eq!(loads, 1);
    for _ in 0..20 {
        assert!(!exists(&mut c, "items:99"));
    }
    // The 20 reads came within the 300 ms only if the machine is quick; each one
    // is either a negative hit or a new load, and never a stale answer.
    let negative = figure(&mut c, "read_negative_hits");
    assert!(negative >= 1, "the second read was a negative hit");
    assert_eq!(figure(&mut c, "read_loads") + negative, 21);
    insert_items(&db, 99, 99);
    eventually("the new row is read once the memory expires", || hgetall(&mut c, "items:99").len() == 2);

    // A write forgets the memory at once.
    let _: () =
        redis::cmd("CONFIG").arg(&["SET", "pgsync.read-through-negative-ttl-ms", "600000"]).query(&mut c).unwrap();
    assert!(hgetall(&mut c, "items:97").is_empty());
    insert_items(&db, 97, 97);
    assert!(!exists(&mut c, "items:97"), "remembered as absent");
    hset(&mut c, "items:97", &[("tag", "t")]);
    sync_wait(&mut c);
    let _: i64 = redis::cmd("PEXPIRE").arg("items:97").arg(1).query(&mut c).unwrap();
    eventually("the key expired", || keys(&mut c, "items:97").is_empty());
    assert_eq!(hgetall(&mut c, "items:97"), pairs(&[("name", "name 97"), ("score", "97"), ("tag", "t")]));
}

#[test]
fn many_clients_missing_many_keys_make_batched_single_flight_queries() {
    let db = test_db(ITEMS_SQL);
    insert_items(&db, 1, 10_000);
    let batch = 500u64;
    // The test counts queries, not time: a loaded machine may take longer than
    // the default second to answer 10,000 misses, and that is not what it checks.
    let server = Server::with_mapping(
        &db,
        &items_cache(""),
        &[("batch-size", &batch.to_string()), ("read-through-timeout-ms", "60000")],
        &[],
    );
    let port = server.port;
    // 50 clients, each asking for 200 missing rows at once, all 10,000 in all.
    let threads: Vec<_> = (0..50)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = connect(port);
                let keys: Vec<String> = (0..200).map(|i| format!("items:{}", 1 + t * 200 + i)).collect();
                let found: i64 = redis::cmd("EXISTS").arg(&keys).query(&mut c).unwrap();
                assert_eq!(found, 200);
                let row = hgetall(&mut c, &keys[17]);
                assert_eq!(row["name"], format!("name {}", 1 + t * 200 + 17));
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut c = server.conn();
    assert_eq!(dbsize(&mut c), 10_000);
    let loads = figure(&mut c, "read_loads");
    // Each query reads at most a batch, and a client's 200 rows reach the loader
    // together; so at least 10,000/500 queries, and at most one or two per client.
    assert!((10_000 / batch..=2 * 10_000 / 200).contains(&loads), "{loads} queries");
    assert_eq!(figure(&mut c, "read_rows_loaded"), 10_000);

    // Single flight: 20 clients miss the same row while its load waits.
    let lock = lock_items(&db);
    let readers: Vec<_> =
        (0..20).map(|_| std::thread::spawn(move || hgetall(&mut connect(port), "items:20000"))).collect();
    loads_waiting(&db, 1);
    eventually("all 20 blocked", || {
        let info: String = redis::cmd("INFO").arg("clients").query(&mut c).unwrap();
        info.contains("blocked_clients:20")
    });
    let _: String = redis::cmd("PING").query(&mut c).unwrap();
    drop(lock);
    for r in readers {
        assert!(r.join().unwrap().is_empty());
    }
    assert_eq!(figure(&mut c, "read_loads"), loads + 1, "one query for 20 readers");
}

#[test]
fn a_slow_load_blocks_only_its_reader_and_never_the_server() {
    let db = test_db(ITEMS_SQL);
    insert_items(&db, 1, 3);
    let server = Server::with_mapping(&db, &items_cache(""), &[("read-through-timeout-ms", "60000")], &[]);
    let mut c = server.conn();
    let _: () = redis::cmd("CONFIG").arg(&["SET", "slowlog-log-slower-than", "100000"]).query(&mut c).unwrap();
    let _: () = redis::cmd("SLOWLOG").arg("RESET").query(&mut c).unwrap();
    let lock = lock_items(&db);
    let port = server.port;
    let reader = std::thread::spawn(move || hgetall(&mut connect(port), "items:1"));
    loads_waiting(&db, 1);
    // The main thread serves others while the load waits on Postgres.
    for i in 0..100 {
        let _: String = redis::cmd("PING").query(&mut c).unwrap();
        let _: () = redis::cmd("SET").arg(format!("other:{i}")).arg(i).query(&mut c).unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    drop(lock);
    assert_eq!(reader.join().unwrap()["name"], "name 1");
    // Waiting on Postgres is blocked time, not time the server spent: no command
    // took 100 ms of the main thread.
    let slow: Vec<redis::Value> = redis::cmd("SLOWLOG").arg("GET").query(&mut c).unwrap();
    let slow = format!("{slow:?}");
    assert!(!slow.contains("items:1"), "{slow}");
}

#[test]
fn a_write_racing_a_load_wins() {
    let db = test_db(ITEMS_SQL);
    insert_items(&db, 1, 3);
    let server = Server::with_mapping(&db, &items_cache(""), &[("read-through-timeout-ms", "60000")], &[]);
    let mut c = server.conn();
    let port = server.port;

    // A writer writes the key while the load reads the row: the load leaves it.
    let lock = lock_items(&db);
    let reader = std::thread::spawn(move || hgetall(&mut connect(port), "items:1"));
    loads_waiting(&db, 1);
    hset(&mut c, "items:1", &[("tag", "written")]);
    drop(lock);
    assert_eq!(reader.join().unwrap(), pairs(&[("tag", "written")]), "answered from what Redis holds");
    assert_eq!(hgetall(&mut c, "items:1"), pairs(&[("tag", "written")]));
    sync_wait(&mut c);
    assert_eq!(pg_items(&db)[&1], [Some("name 1".into()), Some("1".into()), Some("written".into())]);

    // A writer deletes the row while it loads: the load does not bring it back.
    let lock = lock_items(&db);
    let reader = std::thread::spawn(move || hgetall(&mut connect(port), "items:2"));
    loads_waiting(&db, 1);
    let _: i64 = redis::cmd("DEL").arg("items:2").query(&mut c).unwrap();
    drop(lock);
    assert!(reader.join().unwrap().is_empty(), "the delete won");
    sync_wait(&mut c);
    assert!(!pg_items(&db).contains_key(&2));
    assert!(!exists(&mut c, "items:2"));
}

/// `HGET key name` from a Lua script, where a client cannot block.
fn script_hget_name(c: &mut redis::Connection, key: &str) -> Option<String> {
    redis::cmd("EVAL").arg("return redis.call('HGET', KEYS[1], 'name')").arg(1).arg(key).query(c).unwrap()
}

#[test]
fn multi_and_scripts_get_a_miss_and_warm_the_key() {
    let db = test_db(ITEMS_SQL);
    insert_items(&db, 1, 3);
    let server = Server::with_mapping(&db, &items_cache(""), &[], &[]);
    let mut c = server.conn();
    let (all, len): (BTreeMap<String, String>, i64) =
        redis::pipe().atomic().cmd("HGETALL").arg("items:1").cmd("HLEN").arg("items:1").query(&mut c).unwrap();
    assert!(all.is_empty() && len == 0, "inside MULTI a missing row reads as missing");
    eventually("MULTI warmed the key", || keys(&mut c, "items:1").len() == 1);
    let name = script_hget_name(&mut c, "items:2");
    assert_eq!(name, None, "a script gets the miss");
    eventually("the script warmed the key", || keys(&mut c, "items:2").len() == 1);
    let name = script_hget_name(&mut c, "items:2");
    assert_eq!(name.as_deref(), Some("name 2"), "and then finds it");
}

#[test]
fn postgres_down_or_slow_gives_the_configured_reply_within_the_timeout() {
    let pg = PrivatePg::start();
    let db = TestDb::on(&pg.admin_url(), ITEMS_SQL);
    insert_items(&db, 1, 3);
    let server = Server::with_mapping(&db, &items_cache(""), &[("read-through-timeout-ms", "500")], &[]);
    let mut c = server.conn();
    eventually("schema loaded", || status(&mut c, "items")["schema"] == "ok");

    // Slow: the load waits on a lock past the deadline.
    let lock = lock_items(&db);
    let err = redis::cmd("HGETALL").arg("items:1").query::<BTreeMap<String, String>>(&mut c).unwrap_err();
    assert!(err.to_string().contains("did not answer within 500 ms"), "{err}");
    drop(lock);

    pg.down();
    let err = redis::cmd("HGET").arg("items:2").arg("name").query::<Option<String>>(&mut c).unwrap_err();
    assert!(err.to_string().contains("pgsync read-through"), "{err}");
    let _: String = redis::cmd("PING").query(&mut c).unwrap();
    let _: () = redis::cmd("CONFIG").arg(&["SET", "pgsync.read-through-on-error", "nil"]).query(&mut c).unwrap();
    let name: Option<String> = redis::cmd("HGET").arg("items:3").arg("name").query(&mut c).unwrap();
    assert_eq!(name, None, "with on-error nil, a failed load reads as a miss");
    assert!(figure(&mut c, "read_errors") >= 1);

    pg.up();
    eventually("loads again once Postgres is back", || {
        redis::cmd("HGET").arg("items:3").arg("name").query::<Option<String>>(&mut c).ok().flatten().is_some()
    });
}

#[test]
fn a_replica_answers_from_postgres_without_writing() {
    let db = test_db(ITEMS_SQL);
    insert_items(&db, 1, 3);
    let primary = Server::with_mapping(&db, &items_cache(""), &[], &[]);
    let replicaof = primary.port.to_string();
    let replica = Server::with_mapping(&db, &items_cache(""), &[], &["--replicaof", "127.0.0.1", &replicaof]);
    let mut r = replica.conn();
    eventually("replica in sync", || {
        let info: String = redis::cmd("INFO").arg("replication").query(&mut r).unwrap();
        info.contains("master_link_status:up")
    });
    assert_eq!(hgetall(&mut r, "items:1"), pairs(&[("name", "name 1"), ("score", "1")]));
    let name: Option<String> = redis::cmd("HGET").arg("items:2").arg("name").query(&mut r).unwrap();
    let count: i64 = redis::cmd("EXISTS").arg(&["items:1", "items:3", "items:9"]).query(&mut r).unwrap();
    assert_eq!((name.as_deref(), count), (Some("name 2"), 2));
    assert_eq!(dbsize(&mut r), 0, "the replica wrote nothing");
    assert_eq!(dbsize(&mut primary.conn()), 0, "nor did the primary");
}

#[test]
fn fill_on_write_leaves_the_whole_row_behind_without_overwriting_writes() {
    let db = test_db(ITEMS_SQL);
    insert_items(&db, 1, 3);
    let server = Server::with_mapping(&db, &items_cache(r#", "fill_on_write": true"#), &[], &[]);
    let mut c = server.conn();
    hset(&mut c, "items:1", &[("tag", "blue")]);
    let _: i64 = redis::cmd("HINCRBY").arg("items:1").arg("score").arg(10).query(&mut c).unwrap();
    sync_wait(&mut c);
    eventually("the row was filled in", || hgetall(&mut c, "items:1").len() == 3);
    assert_eq!(hgetall(&mut c, "items:1"), pairs(&[("name", "name 1"), ("score", "11"), ("tag", "blue")]));
    // A key Redis holds is not filled: its missing fields are the writer's business.
    hset(&mut c, "items:2", &[("name", "two")]);
    let _: i64 = redis::cmd("HDEL").arg("items:2").arg("score").query(&mut c).unwrap();
    sync_wait(&mut c);
    hset(&mut c, "items:2", &[("tag", "x")]);
    sync_wait(&mut c);
    let two = hgetall(&mut c, "items:2");
    assert_eq!(two.get("name").map(String::as_str), Some("two"), "{two:?}");
    assert_eq!(pg_items(&db)[&2], [Some("two".into()), None, Some("x".into())]);
}

#[test]
fn fill_on_write_fills_a_write_through_row_after_its_commit() {
    let db = test_db(USERS_SQL);
    db.client()
        .execute("INSERT INTO users (id, username, email, password_hash) VALUES (5, 'five', 'f@x', 'h')", &[])
        .unwrap();
    let mapping = r#"{"mappings": [{"name": "users", "table": "users", "key_prefix": "users:",
      "primary_key": "id", "mode": "write-through", "fill_on_write": true,
      "fields": {"username": "username", "email": "email", "pwhash": "password_hash"}}]}"#;
    let server = Server::with_mapping(&db, mapping, &[], &[]);
    let mut c = server.conn();
    let _: i64 = redis::cmd("SYNC.HSET").arg(&["users:5", "email", "new@x"]).query(&mut c).unwrap();
    eventually("the row was filled in", || hgetall(&mut c, "users:5").len() == 3);
    assert_eq!(hgetall(&mut c, "users:5"), pairs(&[("email", "new@x"), ("pwhash", "h"), ("username", "five")]));
}
