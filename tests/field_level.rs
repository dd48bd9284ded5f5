//! A write means what it wrote: field-level capture on a cache that holds only
//! some rows and some fields of them. One regression test per bug of the issue.

mod common;

use common::*;
use std::time::Duration;

/// Nullable columns, an untouched column `note`, a counter and a float.
const PREFS_SQL: &str = "CREATE TABLE prefs (id integer PRIMARY KEY, name text NOT NULL, email text, \
     score bigint, ratio double precision, note text); \
     INSERT INTO prefs VALUES (7, 'seven', 'e7', 100, 1.5, 'keep'), (12, 'twelve', 'e12', 12, 0, 'keep')";

const PREFS_MAPPING: &str = r#"{"mappings": [{"name": "prefs", "table": "prefs", "key_prefix": "prefs:",
    "primary_key": "id", "mode": "write-behind"}]}"#;

/// Text keys, to show that any text is one row's key.
const TAGS_SQL: &str = "CREATE TABLE tags (id text PRIMARY KEY, label text)";

fn prefs_server(db: &TestDb, extra: &[(&str, &str)], args: &[&str]) -> Server {
    let server = Server::with_mapping(db, PREFS_MAPPING, extra, args);
    let mut c = server.conn();
    // The canonical-key check needs the key column's type.
    eventually("schema checked", || status(&mut c, "prefs")["schema"] == "ok");
    server
}

/// The row as text, column by column.
fn row(db: &TestDb, table: &str, id: &str) -> Option<Vec<Option<String>>> {
    let sql = format!("SELECT to_jsonb(t)::text FROM {table} t WHERE id::text = $1");
    let found = db.client().query_opt(&sql, &[&id]).expect("read row")?;
    let json: serde_json::Value = serde_json::from_str(found.get(0)).expect("json");
    let obj = json.as_object().expect("object").clone();
    let mut cols: Vec<_> = obj.into_iter().collect();
    cols.sort_by(|a, b| a.0.cmp(&b.0));
    Some(
        cols.into_iter()
            .map(|(_, v)| match v {
                serde_json::Value::Null => None,
                serde_json::Value::String(s) => Some(s),
                other => Some(other.to_string()),
            })
            .collect(),
    )
}

fn text(db: &TestDb, sql: &str) -> Option<String> {
    db.client().query_one(sql, &[]).expect("query").get(0)
}

#[test]
fn a_write_to_a_key_redis_does_not_hold_changes_only_its_fields() {
    let db = test_db(PREFS_SQL);
    let server = prefs_server(&db, &[], &[]);
    let mut c = server.conn();
    // Bug 1: never loaded.
    hset(&mut c, "prefs:7", &[("score", "2")]);
    sync_wait(&mut c);
    assert_eq!(
        row(&db, "prefs", "7").unwrap(),
        vec![
            Some("e7".into()),
            Some("7".into()),
            Some("seven".into()),
            Some("keep".into()),
            Some("1.5".into()),
            Some("2".into())
        ]
    );
    assert_eq!(hgetall(&mut c, "prefs:7").len(), 1, "Redis holds what was written, nothing more");
    // ... and after the cached row expired.
    hset(&mut c, "prefs:12", &[("name", "twelve"), ("email", "e12")]);
    let _: () = redis::cmd("PEXPIRE").arg("prefs:12").arg(20).query(&mut c).unwrap();
    eventually("key expired", || !exists(&mut c, "prefs:12"));
    hset(&mut c, "prefs:12", &[("email", "new")]);
    sync_wait(&mut c);
    assert_eq!(
        text(&db, "SELECT name || '/' || email || '/' || note FROM prefs WHERE id = 12").unwrap(),
        "twelve/new/keep"
    );
    assert_eq!(status(&mut c, "prefs")["failed"], "0");
}

#[test]
fn write_through_to_a_cold_row_keeps_its_not_null_columns() {
    let db = test_db(USERS_SQL);
    db.client()
        .batch_execute(
            "INSERT INTO users (id, username, email, password_hash, score) VALUES (7, 'u7', 'e7', 'h7', 100)",
        )
        .unwrap();
    let server = Server::users(&db, &[]);
    let mut c = server.conn();
    hset(&mut c, "__{users:7}", &[("score", "2")]);
    sync_wait(&mut c);
    assert_eq!(text(&db, "SELECT username || ' ' || score FROM users WHERE id = 7").unwrap(), "u7 2");
    let _: i64 = redis::cmd("HINCRBY").arg("__{users:7}").arg("score").arg(5).query(&mut c).unwrap();
    sync_wait(&mut c);
    assert_eq!(text(&db, "SELECT score::text FROM users WHERE id = 7").unwrap(), "7");
    assert_eq!(hgetall(&mut c, "users:7").get("score").map(String::as_str), Some("7"), "the sum is cached");
    assert!(!exists(&mut c, "__{users:7}"), "the staging key is gone once synced");
    assert_eq!(status(&mut c, "users")["failed"], "0");
}

#[test]
fn increments_on_a_key_redis_does_not_hold_add_to_the_row() {
    let db = test_db(PREFS_SQL);
    let server = prefs_server(&db, &[], &[]);
    let mut c = server.conn();
    // Bug 2.
    let in_redis: i64 = redis::cmd("HINCRBY").arg("prefs:7").arg("score").arg(5).query(&mut c).unwrap();
    assert_eq!(in_redis, 5, "Redis did not hold the row");
    let _: String = redis::cmd("HINCRBYFLOAT").arg("prefs:7").arg("ratio").arg("0.25").query(&mut c).unwrap();
    sync_wait(&mut c);
    assert_eq!(text(&db, "SELECT score || ' ' || ratio FROM prefs WHERE id = 7").unwrap(), "105 1.75");
    let h = hgetall(&mut c, "prefs:7");
    assert_eq!((h["score"].as_str(), h["ratio"].as_str()), ("105", "1.75"), "Redis converges to the sum");
    // A warm key: the increment counts once.
    let _: i64 = redis::cmd("HINCRBY").arg("prefs:7").arg("score").arg(-5).query(&mut c).unwrap();
    sync_wait(&mut c);
    assert_eq!(text(&db, "SELECT score::text FROM prefs WHERE id = 7").unwrap(), "100");
    assert_eq!(hgetall(&mut c, "prefs:7")["score"], "100");
    // Replies reach scripts as the command gave them (a bulk string, not a status).
    let kind: String = redis::cmd("EVAL")
        .arg("return type(redis.call('HINCRBYFLOAT', KEYS[1], 'ratio', '0.25'))")
        .arg(1)
        .arg("prefs:7")
        .query(&mut c)
        .unwrap();
    assert_eq!(kind, "string");
    // A delta Redis reads but Rust's parser does not (hex) still reaches Postgres.
    let after: String = redis::cmd("HINCRBYFLOAT").arg("prefs:7").arg("ratio").arg("0x10").query(&mut c).unwrap();
    sync_wait(&mut c);
    assert_eq!(text(&db, "SELECT ratio::text FROM prefs WHERE id = 7").unwrap(), after);
    // An increment of a text column is a rejection with a clear error.
    let _: i64 = redis::cmd("HINCRBY").arg("prefs:7").arg("note").arg(1).query(&mut c).unwrap();
    sync_wait(&mut c);
    let failed: Vec<Vec<String>> = redis::cmd("SYNC.FAILED").query(&mut c).unwrap();
    assert!(failed[0].iter().any(|f| f.contains("not a number")), "{failed:?}");
}

#[test]
fn hdel_nulls_only_its_column_and_removing_the_last_field_deletes_no_row() {
    let db = test_db(PREFS_SQL);
    let server = prefs_server(&db, &[], &[]);
    let mut c = server.conn();
    hset(&mut c, "prefs:7", &[("email", "x")]);
    let _: i64 = redis::cmd("HDEL").arg("prefs:7").arg("email").query(&mut c).unwrap();
    assert!(!exists(&mut c, "prefs:7"), "the hash lost its last field");
    sync_wait(&mut c);
    assert_eq!(
        text(&db, "SELECT coalesce(email, 'NULL') || ' ' || name FROM prefs WHERE id = 7").unwrap(),
        "NULL seven"
    );
    // HDEL of a NOT NULL column is refused before it runs.
    let err = redis::cmd("HDEL").arg("prefs:7").arg("name").query::<i64>(&mut c).unwrap_err();
    assert!(err.to_string().contains("column \"name\" is NOT NULL"), "{err}");
    sync_wait(&mut c);
    assert_eq!((status(&mut c, "prefs")["failed"].as_str(), status(&mut c, "prefs")["refused"].as_str()), ("0", "1"));
    // HDEL on a key nobody holds never brings a row into being.
    let _: i64 = redis::cmd("HDEL").arg("prefs:99").arg("email").query(&mut c).unwrap();
    sync_wait(&mut c);
    assert!(row(&db, "prefs", "99").is_none());
}

#[test]
fn a_row_has_exactly_one_key() {
    let db = test_db(PREFS_SQL);
    let server = prefs_server(&db, &[], &[]);
    let mut c = server.conn();
    // Bug 4.
    for alias in ["prefs:00012", "prefs:+12", "prefs: 12", "prefs:12 ", "prefs:12\n"] {
        let err = redis::cmd("HSET").arg(alias).arg("name").arg("alias").query::<i64>(&mut c).unwrap_err();
        assert!(err.to_string().contains("not a canonical integer"), "{alias:?}: {err}");
        assert!(!exists(&mut c, alias), "{alias:?} was not written");
    }
    let err = redis::cmd("DEL").arg("prefs:00012").query::<i64>(&mut c).unwrap_err();
    assert!(err.to_string().contains("canonical"), "{err}");
    let err = redis::cmd("HINCRBY").arg("prefs:012").arg("score").arg(1).query::<i64>(&mut c).unwrap_err();
    assert!(err.to_string().contains("canonical"), "{err}");
    sync_wait(&mut c);
    assert_eq!(text(&db, "SELECT name FROM prefs WHERE id = 12").unwrap(), "twelve");
    assert_eq!(status(&mut c, "prefs")["refused"], "7");
    // The canonical key works, in MULTI and in a script too.
    let (n,): (i64,) = redis::pipe().atomic().cmd("HSET").arg("prefs:12").arg("email").arg("m").query(&mut c).unwrap();
    assert_eq!(n, 1);
    let _: i64 = redis::cmd("EVAL")
        .arg("return redis.call('HINCRBY', KEYS[1], 'score', 3)")
        .arg(1)
        .arg("prefs:12")
        .query(&mut c)
        .unwrap();
    let library = "#!lua name=pgsynctest\nredis.register_function('bump', function(keys, args) \
                   return redis.call('HINCRBY', keys[1], 'score', 10) end)";
    let _: String = redis::cmd("FUNCTION").arg("LOAD").arg(library).query(&mut c).unwrap();
    let _: i64 = redis::cmd("FCALL").arg("bump").arg(1).arg("prefs:12").query(&mut c).unwrap();
    sync_wait(&mut c);
    assert_eq!(text(&db, "SELECT email || ' ' || score FROM prefs WHERE id = 12").unwrap(), "m 25");
}

#[test]
fn keys_with_any_bytes_are_synced_or_refused_never_a_panic() {
    let db = test_db(TAGS_SQL);
    db.client().batch_execute(USERS_SQL).unwrap();
    let mapping = r#"{"mappings": [
        {"name": "tags", "table": "tags", "key_prefix": "tags:", "primary_key": "id", "mode": "write-behind"},
        {"name": "users", "table": "users", "key_prefix": "users:", "primary_key": "id", "mode": "write-through"}]}"#;
    let server = Server::with_mapping(&db, mapping, &[], &[]);
    let mut c = server.conn();
    eventually("schema checked", || {
        status(&mut c, "users")["schema"] == "ok" && status(&mut c, "tags")["schema"] == "ok"
    });
    // Bug 5: a NUL byte.
    let err = redis::cmd("HSET").arg(&b"tags:a\0b"[..]).arg("label").arg("x").query::<i64>(&mut c).unwrap_err();
    assert!(err.to_string().contains("NUL"), "{err}");
    let err = redis::cmd("HSET").arg(&b"__{users:1\0}"[..]).arg("score").arg("1").query::<i64>(&mut c).unwrap_err();
    assert!(err.to_string().contains("NUL"), "{err}");
    assert!(!exists(&mut c, "__{users:1\0}"), "no staging key left behind");
    let err = redis::cmd("SYNC.HSET").arg(&b"users:1\0"[..]).arg("score").arg("1").query::<i64>(&mut c).unwrap_err();
    assert!(!err.to_string().contains("internal error"), "{err}");
    let err = redis::cmd("HSET").arg(&b"tags:\xff"[..]).arg("label").arg("x").query::<i64>(&mut c).unwrap_err();
    assert!(err.to_string().contains("UTF-8"), "{err}");
    // Text keys are any text: each of these is its own row.
    for id in ["a\nb", " padded ", "tab\there"] {
        hset(&mut c, &format!("tags:{id}"), &[("label", id)]);
    }
    sync_wait(&mut c);
    let n: i64 = db.client().query_one("SELECT count(*) FROM tags WHERE id = label", &[]).unwrap().get(0);
    assert_eq!(n, 3);
    let _: String = redis::cmd("PING").query(&mut c).unwrap();
    assert!(!server.log().contains("panic"), "{}", server.log());
}

/// Whether the server has hash-field expiry (Redis 7.4+, not Valkey 8).
fn has_field_expiry(c: &mut redis::Connection) -> bool {
    redis::cmd("COMMAND")
        .arg("INFO")
        .arg("HPEXPIRE")
        .query::<Vec<redis::Value>>(c)
        .is_ok_and(|v| v.first().is_some_and(|x| !matches!(x, redis::Value::Nil)))
}

#[test]
fn del_after_a_field_expired_deletes_the_row_and_expiry_deletes_nothing() {
    let db = test_db(PREFS_SQL);
    let server = prefs_server(&db, &[], &[]);
    let mut c = server.conn();
    if !has_field_expiry(&mut c) {
        eprintln!("skipped: this server has no hash-field expiry");
        return;
    }
    // Bug 6.
    hset(&mut c, "prefs:7", &[("name", "seven"), ("note", "tmp")]);
    let _: redis::Value =
        redis::cmd("HPEXPIRE").arg("prefs:7").arg(30).arg("FIELDS").arg(1).arg("note").query(&mut c).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    eventually("field expired", || !hgetall(&mut c, "prefs:7").contains_key("note"));
    let _: i64 = redis::cmd("DEL").arg("prefs:7").query(&mut c).unwrap();
    sync_wait(&mut c);
    assert!(row(&db, "prefs", "7").is_none(), "DEL deleted the row");
    // A key whose only field expires is gone from Redis, not from Postgres.
    hset(&mut c, "prefs:12", &[("email", "e")]);
    let _: redis::Value =
        redis::cmd("HPEXPIRE").arg("prefs:12").arg(30).arg("FIELDS").arg(1).arg("email").query(&mut c).unwrap();
    eventually("key gone", || !exists(&mut c, "prefs:12"));
    sync_wait(&mut c);
    assert_eq!(text(&db, "SELECT email FROM prefs WHERE id = 12").unwrap(), "e");
}

#[test]
fn acknowledged_writes_survive_eviction_and_expiry_while_postgres_is_down() {
    let pg = PrivatePg::start();
    let db = TestDb::on(&pg.admin_url(), PREFS_SQL);
    let server = prefs_server(&db, &[("retry-max-delay-ms", "200")], &["--maxmemory-policy", "allkeys-lru"]);
    let mut c = server.conn();
    let used = info_number(&mut c, "memory", "used_memory");
    let _: () = redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(used + 8_000_000).query(&mut c).unwrap();
    pg.down();
    // Bug 10: a change whose key is gone before its batch is read still lands,
    // and its ack says so only after it did.
    hset(&mut c, "prefs:3", &[("#", "=ack3"), ("name", "three")]);
    let _: i64 = redis::cmd("PEXPIRE").arg("prefs:3").arg(1).query(&mut c).unwrap();
    // Bug 3: many more bytes than maxmemory allows.
    let pad = "x".repeat(1000);
    let mut acknowledged = Vec::new();
    for id in 100..6100 {
        let key = format!("prefs:{id}");
        let ok =
            redis::cmd("HSET").arg(&key).arg("name").arg(format!("n{id}")).arg("note").arg(&pad).query::<i64>(&mut c);
        if ok.is_ok() {
            acknowledged.push(id);
        }
    }
    let evicted = info_number(&mut c, "stats", "evicted_keys");
    assert!(evicted > 0, "the test must evict");
    assert!(acknowledged.len() > 500, "only {} writes acknowledged", acknowledged.len());
    assert!(!exists(&mut c, "prefs:3"));
    // The evictions have happened; from now on nothing may evict the ack stream
    // the test reads below.
    let _: () = redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(0).query(&mut c).unwrap();
    pg.up();
    sync_wait(&mut c);
    let landed: Vec<i32> = db
        .client()
        .query(
            "SELECT id FROM prefs WHERE id >= 100 AND name = 'n' || id AND note = repeat('x', 1000) ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(landed, acknowledged, "every acknowledged write is in Postgres");
    assert_eq!(text(&db, "SELECT name FROM prefs WHERE id = 3").unwrap(), "three");
    let acks: Vec<(String, Vec<(String, String)>)> =
        redis::cmd("XRANGE").arg("{prefs:3}ack3").arg("-").arg("+").query(&mut c).unwrap();
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].1, [("status".to_string(), "done".to_string())]);
}

#[test]
fn a_hot_key_with_many_ack_uuids_costs_the_journal_in_proportion_to_the_writes() {
    let pg = PrivatePg::start();
    let db = TestDb::on(&pg.admin_url(), PREFS_SQL);
    let server = prefs_server(&db, &[("retry-max-delay-ms", "200")], &[]);
    let mut c = server.conn();
    pg.down();
    let writes = 3000;
    for i in 0..writes {
        let mut pipe = redis::pipe();
        pipe.cmd("HSET").arg("prefs:7").arg("#").arg(format!("=u{i}")).arg("score").arg(i).ignore();
        let _: () = pipe.query(&mut c).unwrap();
    }
    // A record per write, rewritten as one now and then: what the journal holds
    // stays in proportion to the writes, not to the writes times the uuids.
    let (rows, total) = journal_size(&mut c);
    assert_eq!(rows, 1, "one row's log");
    assert!(total < 100 * writes as u64, "the log holds {total} bytes");
    pg.up();
    sync_wait(&mut c);
    assert_eq!(text(&db, "SELECT score::text FROM prefs WHERE id = 7").unwrap(), (writes - 1).to_string());
    for i in [0, writes / 2, writes - 1] {
        let acks: Vec<(String, Vec<(String, String)>)> =
            redis::cmd("XRANGE").arg(format!("{{prefs:7}}u{i}")).arg("-").arg("+").query(&mut c).unwrap();
        assert_eq!(acks[0].1, [("status".to_string(), "done".to_string())], "ack u{i}");
    }
    assert_eq!(journal_size(&mut c), (0, 0), "settled acks leave the journal");
}
