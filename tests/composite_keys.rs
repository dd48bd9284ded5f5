//! Keys over several columns, as the food-data cache seed stores them: the row of
//! `brands_categories` keyed by (brand_id, category_id) lives in
//! `brands_categories_<brand_id>_<category_id>`. Both directions, write-behind and
//! write-through, dead letters and acks; values that would make a key ambiguous
//! are refused. Real servers.

mod common;

use common::*;

const SQL: &str = "CREATE TABLE brands_categories (brand_id text, category_id integer, rank integer, note text, \
     PRIMARY KEY (brand_id, category_id))";

fn mapping(mode: &str) -> String {
    format!(
        r#"{{"mappings": [{{"name": "brands_categories", "table": "brands_categories",
  "key": "brands_categories_{{brand_id}}_{{category_id}}", "mode": "{mode}", "listen": true,
  "notify": ["bc:{{brand_id}}:{{category_id}}"], "notify_payload": "id"}}]}}"#
    )
}

type PgRow = (Option<i32>, Option<String>);

fn pg_row(db: &TestDb, brand: &str, category: i32) -> Option<PgRow> {
    db.client()
        .query_opt(
            "SELECT rank, note FROM brands_categories WHERE brand_id = $1 AND category_id = $2",
            &[&brand, &category],
        )
        .unwrap()
        .map(|r| (r.get(0), r.get(1)))
}

fn listening(c: &mut redis::Connection) {
    eventually("listening", || status(c, "brands_categories")["listener"] == "listening");
}

#[test]
fn composite_keys_sync_both_ways_in_write_behind_mode() {
    let db = test_db(SQL);
    let server = Server::with_mapping(&db, &mapping("write-behind"), &[], &[]);
    let mut c = server.conn();
    listening(&mut c);
    let mut sub_conn = server.conn();
    let mut sub = sub_conn.as_pubsub();
    sub.subscribe("bc:acme:7").unwrap();

    // Redis -> Postgres: a write, an increment (its sum comes back by both key
    // columns), a removed field, then a delete.
    hset(&mut c, "brands_categories_acme_7", &[("rank", "1"), ("note", "first")]);
    hset(&mut c, "brands_categories_acme_8", &[("rank", "5")]);
    let _: i64 = redis::cmd("HINCRBY").arg("brands_categories_acme_7").arg("rank").arg(2).query(&mut c).unwrap();
    sync_wait(&mut c);
    assert_eq!(pg_row(&db, "acme", 7), Some((Some(3), Some("first".into()))));
    assert_eq!(pg_row(&db, "acme", 8), Some((Some(5), None)));
    let _: i64 = redis::cmd("HDEL").arg("brands_categories_acme_7").arg("note").query(&mut c).unwrap();
    let _: i64 = redis::cmd("DEL").arg("brands_categories_acme_8").query(&mut c).unwrap();
    sync_wait(&mut c);
    assert_eq!(pg_row(&db, "acme", 7), Some((Some(3), None)));
    assert_eq!(pg_row(&db, "acme", 8), None, "the DEL deleted only (acme, 8)");
    let msg = sub.get_message().unwrap();
    assert_eq!((msg.get_channel_name(), msg.get_payload::<String>().unwrap()), ("bc:acme:7", "acme_7".to_string()));

    // Postgres -> Redis through the trigger and the listener.
    db.client().batch_execute("INSERT INTO brands_categories VALUES ('globex', 3, 9, 'from pg')").unwrap();
    eventually("insert applied", || {
        hgetall(&mut c, "brands_categories_globex_3").get("rank").map(String::as_str) == Some("9")
    });
    assert!(!hgetall(&mut c, "brands_categories_globex_3").contains_key("brand_id"), "key columns stay in the key");
    db.client().batch_execute("UPDATE brands_categories SET rank = 10 WHERE brand_id = 'globex'").unwrap();
    eventually("update applied", || hgetall(&mut c, "brands_categories_globex_3")["rank"] == "10");
    db.client().batch_execute("UPDATE brands_categories SET category_id = 4 WHERE brand_id = 'globex'").unwrap();
    eventually("key change applied", || {
        !exists(&mut c, "brands_categories_globex_3") && exists(&mut c, "brands_categories_globex_4")
    });
    db.client().batch_execute("DELETE FROM brands_categories WHERE brand_id = 'globex'").unwrap();
    eventually("delete applied", || !exists(&mut c, "brands_categories_globex_4"));

    // A reload with FLUSH spells every key from both columns.
    let _: i64 = redis::cmd("DEL").arg("brands_categories_acme_7").query(&mut c).unwrap();
    sync_wait(&mut c);
    db.client()
        .batch_execute("INSERT INTO brands_categories VALUES ('initech', 1, 1, NULL), ('initech', 2, 2, NULL)")
        .unwrap();
    let loaded: i64 = redis::cmd("SYNC.RELOAD").arg("FLUSH").query(&mut c).unwrap();
    assert_eq!(loaded, 2);
    assert_eq!(hgetall(&mut c, "brands_categories_initech_2")["rank"], "2");
}

#[test]
fn values_that_would_make_a_key_ambiguous_are_refused_both_ways() {
    let db = test_db(SQL);
    let server = Server::with_mapping(&db, &mapping("write-behind"), &[], &[]);
    let mut c = server.conn();
    listening(&mut c);

    // In Redis: `ben_jerry_1` could be (ben, jerry_1) or (ben_jerry, 1).
    let err =
        redis::cmd("HSET").arg("brands_categories_ben_jerry_1").arg("rank").arg(1).query::<i64>(&mut c).unwrap_err();
    assert!(err.to_string().contains("ambiguous"), "{err}");
    let err = redis::cmd("HSET").arg("brands_categories_acme").arg("rank").arg(1).query::<i64>(&mut c).unwrap_err();
    assert!(err.to_string().contains("does not spell 2 columns"), "{err}");
    let err = redis::cmd("HSET").arg("brands_categories_acme_07").arg("rank").arg(1).query::<i64>(&mut c).unwrap_err();
    assert!(err.to_string().contains("canonical integer"), "{err}");
    assert!(!exists(&mut c, "brands_categories_ben_jerry_1"), "nothing written");

    // From Postgres: the row is left out, logged and counted, by the listener and by a reload.
    db.client()
        .batch_execute("INSERT INTO brands_categories VALUES ('ben_jerry', 1, 1, NULL), ('acme', 1, 1, NULL)")
        .unwrap();
    eventually("the good row applied", || exists(&mut c, "brands_categories_acme_1"));
    eventually("the listener refused the other", || status(&mut c, "brands_categories")["refused"] == "4");
    let loaded: i64 = redis::cmd("SYNC.RELOAD").query(&mut c).unwrap();
    assert_eq!(loaded, 2, "rows read");
    assert_eq!(status(&mut c, "brands_categories")["refused"], "5");
    let keys: Vec<String> = redis::cmd("KEYS").arg("brands_categories_*").query(&mut c).unwrap();
    assert_eq!(keys, ["brands_categories_acme_1"]);
    assert!(server.log().contains("holds the separator \"_\", so its key would be ambiguous"), "{}", server.log());
}

#[test]
fn composite_keys_work_write_through_with_acks_and_dead_letters() {
    let db = test_db(SQL);
    db.client().batch_execute("ALTER TABLE brands_categories ADD CHECK (rank >= 0)").unwrap();
    let server = Server::with_mapping(&db, &mapping("write-through"), &[], &[]);
    let mut c = server.conn();
    listening(&mut c);

    hset(&mut c, "__{brands_categories_acme_7}", &[("rank", "4"), ("#", "=ok1")]);
    let n: i64 = redis::cmd("SYNC.HSET").arg("brands_categories_acme_8").arg("rank").arg(6).query(&mut c).unwrap();
    assert_eq!(n, 1);
    sync_wait(&mut c);
    assert_eq!(pg_row(&db, "acme", 7), Some((Some(4), None)));
    assert_eq!(hgetall(&mut c, "brands_categories_acme_7")["rank"], "4", "merged into the row's key after the commit");
    assert!(!exists(&mut c, "__{brands_categories_acme_7}"), "the staging key is gone");
    let ack: Vec<(String, Vec<String>)> =
        redis::cmd("XRANGE").arg("{brands_categories_acme_7}ok1").arg("-").arg("+").query(&mut c).unwrap();
    assert_eq!(ack[0].1, ["status", "done"]);

    // A rejected row is dead-lettered under its composite id and can be retried.
    hset(&mut c, "__{brands_categories_acme_9}", &[("rank", "-1")]);
    sync_wait(&mut c);
    let entries: Vec<redis::Value> = redis::cmd("SYNC.FAILED").query(&mut c).unwrap();
    assert_eq!(entries.len(), 1);
    assert!(format!("{entries:?}").contains("brands_categories:acme_9"), "{entries:?}");
    db.client().batch_execute("ALTER TABLE brands_categories DROP CONSTRAINT brands_categories_rank_check").unwrap();
    assert_eq!(redis::cmd("SYNC.RETRY").arg("brands_categories:acme_9").query::<i64>(&mut c).unwrap(), 1);
    sync_wait(&mut c);
    assert_eq!(pg_row(&db, "acme", 9), Some((Some(-1), None)));
    // A `~` deletes the row by both columns.
    hset(&mut c, "__{brands_categories_acme_9}", &[("#", "~")]);
    sync_wait(&mut c);
    assert_eq!(pg_row(&db, "acme", 9), None);
    assert_eq!(pg_row(&db, "acme", 7), Some((Some(4), None)));
}

const MC_SQL: &str = "CREATE TABLE mc (lft text, rgt text, rank integer, PRIMARY KEY (lft, rgt))";

const MC_MAPPING: &str = r#"{"mappings": [{"name": "mc", "table": "mc", "key": "mc:{lft}::{rgt}",
  "mode": "write-behind", "listen": true}]}"#;

fn refused(c: &mut redis::Connection, mapping: &str) -> u64 {
    status(c, mapping)["refused"].parse().unwrap()
}

fn hset_err(c: &mut redis::Connection, key: &str) -> String {
    redis::cmd("HSET").arg(key).arg("rank").arg(7).query::<i64>(c).unwrap_err().to_string()
}

/// A two-character separator: `('a:', 'b')` and `('a', ':b')` would both spell
/// `mc:a:::b`. Both rows are refused from Postgres (listener and reload), the key
/// is refused from Redis, and nothing is written under another row's name. A
/// brace in a value is refused both ways too.
#[test]
fn a_two_character_separator_is_never_mis_mapped() {
    let db = test_db(MC_SQL);
    let server = Server::with_mapping(&db, MC_MAPPING, &[], &[]);
    let mut c = server.conn();
    eventually("listening", || status(&mut c, "mc")["listener"] == "listening");

    let err = hset_err(&mut c, "mc:a:::b");
    assert!(err.contains("begins with the end of the separator \"::\"") && err.contains("ambiguous"), "{err}");
    let err = hset_err(&mut c, "mc:b}{c::d");
    assert!(err.contains("brace"), "{err}");
    hset(&mut c, "mc:a:b::c:d", &[("rank", "1")]);
    sync_wait(&mut c);
    let rows = |db: &TestDb| -> Vec<(String, String, Option<i32>)> {
        let rows = db.client().query("SELECT lft, rgt, rank FROM mc ORDER BY lft, rgt", &[]).unwrap();
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect()
    };
    assert_eq!(rows(&db), [("a:b".into(), "c:d".into(), Some(1))], "a single ':' is no separator");
    assert_eq!(refused(&mut c, "mc"), 2);

    db.client()
        .batch_execute("INSERT INTO mc VALUES ('x:', 'y', 1), ('x', ':y', 2), ('b}{c', 'd', 3), ('p', 'q', 4)")
        .unwrap();
    eventually("the good row applied", || exists(&mut c, "mc:p::q"));
    // The two x rows announce one id; at least it and the brace's are refused.
    eventually("the listener refused the others", || refused(&mut c, "mc") >= 4);
    let before = refused(&mut c, "mc");
    let loaded: i64 = redis::cmd("SYNC.RELOAD").query(&mut c).unwrap();
    assert_eq!(loaded, 5, "rows read");
    assert_eq!(refused(&mut c, "mc"), before + 3, "the reload refused the three rows again");
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("mc:*").query(&mut c).unwrap();
    keys.sort();
    assert_eq!(keys, ["mc:a:b::c:d", "mc:p::q"]);
    let log = server.log();
    assert_eq!(log.matches("read from Postgres not written to Redis").count(), 1, "logged once: {log}");

    // Neither row can be written through the key they would share.
    assert!(hset_err(&mut c, "mc:x:::y").contains("ambiguous"));
    sync_wait(&mut c);
    assert!(rows(&db).contains(&("x".into(), ":y".into(), Some(2))), "('x', ':y') untouched");
}

/// The database's own time zone is not UTC: the module's sessions and the
/// trigger print timestamps with time zone in UTC all the same. `rd` already
/// has a row trigger calling `pgsync_notify` (as a module from before this
/// check would have left it), which the module swaps for `pgsync_notify_text`.
const RD_SQL: &str = "CREATE TABLE rd (sensor integer, ts timestamp, rank integer, PRIMARY KEY (sensor, ts)); \
     CREATE FUNCTION pgsync_notify() RETURNS trigger LANGUAGE plpgsql AS $f$ BEGIN RETURN NULL; END $f$; \
     CREATE TRIGGER pgsync_notify AFTER INSERT OR UPDATE OR DELETE ON rd \
         FOR EACH ROW EXECUTE FUNCTION pgsync_notify('sensor', 'pgsync_rd', '@', 'ts'); \
     CREATE TABLE tz (at timestamptz PRIMARY KEY, rank integer); \
     CREATE TABLE fl (id real PRIMARY KEY, rank integer); \
     CREATE TYPE mood AS ENUM ('happy', 'sad'); CREATE TABLE md (m mood PRIMARY KEY, rank integer); \
     DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET TimeZone = %L', current_database(), 'Asia/Tokyo'); END $$";

const RD_MAPPING: &str = r#"{"mappings": [
  {"name": "rd", "table": "rd", "key": "rd:{sensor}@{ts}", "mode": "write-behind", "listen": true},
  {"name": "tz", "table": "tz", "key_prefix": "tz:", "primary_key": "at", "mode": "write-behind", "listen": true},
  {"name": "fl", "table": "fl", "key_prefix": "fl:", "primary_key": "id", "mode": "write-behind"},
  {"name": "md", "table": "md", "key_prefix": "md:", "primary_key": "m", "mode": "write-behind"}]}"#;

/// A timestamp key column has one spelling, Postgres's text (`2024-01-01
/// 08:00:00`): others are refused at write time, and a row deleted in Postgres
/// loses the key it was written under; with time zone, in UTC whatever the
/// database's time zone. A key column type without one spelling (`real`) is a
/// schema error; an enum key is one of its labels, new ones included.
#[test]
fn a_timestamp_key_has_one_spelling_both_ways() {
    let db = test_db(RD_SQL);
    let server = Server::with_mapping(&db, RD_MAPPING, &[], &[]);
    let mut c = server.conn();
    eventually("listening", || status(&mut c, "rd")["listener"] == "listening");

    hset(&mut c, "rd:1@2024-01-01 08:00:00", &[("rank", "1")]);
    for other in ["rd:1@2024-01-01T08:00:00", "rd:1@2024-01-01 08:00:00.000"] {
        let err = hset_err(&mut c, other);
        assert!(err.contains("not a canonical timestamp without time zone (YYYY-MM-DD HH:MM:SS"), "{err}");
    }
    sync_wait(&mut c);
    let ranks: Vec<i32> = db.client().query("SELECT rank FROM rd", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(ranks, [1], "one row, written once");

    db.client().batch_execute("INSERT INTO rd VALUES (2, '2024-01-01T10:00:00', 5)").unwrap();
    eventually("insert applied", || exists(&mut c, "rd:2@2024-01-01 10:00:00"));
    db.client().batch_execute("DELETE FROM rd WHERE sensor = 2").unwrap();
    eventually("delete applied", || !exists(&mut c, "rd:2@2024-01-01 10:00:00"));
    assert_eq!(refused(&mut c, "rd"), 2);

    // With time zone: UTC, written +00, whatever the database's TimeZone.
    eventually("listening", || status(&mut c, "tz")["listener"] == "listening");
    hset(&mut c, "tz:2024-01-01 08:00:00+00", &[("rank", "1")]);
    let err = hset_err(&mut c, "tz:2024-01-01 17:00:00+09");
    assert!(err.contains("not a canonical timestamp with time zone") && err.contains("+00"), "{err}");
    sync_wait(&mut c);
    let utc = "SELECT count(*) FROM tz WHERE at = '2024-01-01 08:00:00+00' AND rank = 1";
    assert_eq!(db.client().query_one(utc, &[]).unwrap().get::<_, i64>(0), 1);
    db.client().batch_execute("INSERT INTO tz VALUES ('2024-01-01 19:00:00', 2)").unwrap();
    eventually("insert applied in UTC", || exists(&mut c, "tz:2024-01-01 10:00:00+00"));
    db.client().batch_execute("DELETE FROM tz WHERE rank = 2").unwrap();
    eventually("delete applied", || !exists(&mut c, "tz:2024-01-01 10:00:00+00"));

    let schema = status(&mut c, "fl")["schema"].clone();
    assert!(schema.contains("key column \"id\": type real has no single text"), "{schema}");

    // An enum key is one of its labels; a label added later is accepted once
    // the refused write has had the schema read again.
    eventually("md's schema read", || status(&mut c, "md")["schema"] == "ok");
    assert!(hset_err(&mut c, "md:Happy").contains("not a canonical mood (one of the labels happy, sad)"));
    hset(&mut c, "md:happy", &[("rank", "1")]);
    db.client().batch_execute("ALTER TYPE mood ADD VALUE 'calm'").unwrap();
    eventually("the new label accepted", || {
        redis::cmd("HSET").arg("md:calm").arg("rank").arg(2).query::<i64>(&mut c).is_ok()
    });
    sync_wait(&mut c);
    let moods = db.client().query_one("SELECT string_agg(m::text, ',' ORDER BY m) FROM md", &[]).unwrap();
    assert_eq!(moods.get::<_, String>(0), "happy,calm");
}
