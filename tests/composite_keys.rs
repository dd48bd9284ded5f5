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
