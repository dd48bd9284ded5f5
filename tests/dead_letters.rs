//! The dead-letter list under load: one entry per rejected row (with its count
//! and first/last time), a cap that drops the stalest entries and counts the
//! drops, `SYNC.FAILED COUNT n` returning n, and a worker panic dead-lettering
//! the row that caused it instead of stalling its mapping. Rejected rows: a
//! later write carries and fixes them, a retry never undoes a newer write, and
//! what Postgres would certainly refuse is refused at write time.

mod common;

use common::items::*;
use common::*;
use std::collections::BTreeMap;

const NO_BAD_NAMES: &str = "ALTER TABLE items ADD CONSTRAINT no_bad CHECK (name <> 'bad')";

/// SYNC.FAILED's entries, each as field → text.
fn failed(c: &mut redis::Connection, args: &[&str]) -> Vec<BTreeMap<String, String>> {
    let reply: Vec<Vec<redis::Value>> = redis::cmd("SYNC.FAILED").arg(args).query(c).expect("SYNC.FAILED");
    reply
        .into_iter()
        .map(|entry| {
            entry
                .chunks(2)
                .map(|p| {
                    let text = |v: &redis::Value| match v {
                        redis::Value::Int(n) => n.to_string(),
                        other => redis::from_redis_value::<String>(other).expect("text"),
                    };
                    (text(&p[0]), text(&p[1]))
                })
                .collect()
        })
        .collect()
}

fn stored(c: &mut redis::Connection) -> (i64, i64) {
    let hash: i64 = redis::cmd("HLEN").arg("pgsync:{deadletter}").query(c).unwrap();
    let order: i64 = redis::cmd("ZCARD").arg("pgsync:{deadletter}:order").query(c).unwrap();
    (hash, order)
}

fn reject(c: &mut redis::Connection, ids: impl IntoIterator<Item = usize>) {
    let mut pipe = redis::pipe();
    for id in ids {
        pipe.cmd("HSET").arg(format!("items:{id}")).arg("name").arg("bad").ignore();
    }
    let _: () = pipe.query(c).unwrap();
}

fn number(entry: &BTreeMap<String, String>, field: &str) -> u64 {
    entry[field].parse().unwrap_or_else(|_| panic!("{field} of {entry:?}"))
}

#[test]
fn many_rejections_of_few_rows_make_one_entry_each_with_their_count() {
    let db = test_db(&format!("{ITEMS_SQL}; {NO_BAD_NAMES}"));
    let server = Server::with_mapping(&db, ITEMS_MAPPING, &[], &[]);
    let mut c = server.conn();
    // Five rounds, each settled before the next: five rejections of each row.
    for _ in 0..5 {
        reject(&mut c, 1..=20);
        sync_wait(&mut c);
    }
    let entries = failed(&mut c, &["COUNT", "1000"]);
    assert_eq!(entries.len(), 20, "one entry per row");
    for e in &entries {
        assert_eq!(e["count"], "5", "{e:?}");
        assert!(number(e, "first_time_ms") <= number(e, "time_ms"), "{e:?}");
        assert_eq!(e["entry"], format!("items:{}", e["id"]));
        assert!(e["error"].contains("no_bad"), "{e:?}");
    }
    let first_times: BTreeMap<String, String> =
        entries.iter().map(|e| (e["id"].clone(), e["first_time_ms"].clone())).collect();

    // A burst: 40,000 rejected writes to the same 20 rows (coalesced as they wait).
    for _ in 0..20 {
        let mut pipe = redis::pipe();
        for round in 0..100 {
            for id in 1..=20 {
                pipe.cmd("HSET").arg(format!("items:{id}")).arg("name").arg("bad").arg("tag").arg(round).ignore();
            }
        }
        let _: () = pipe.query(&mut c).unwrap();
    }
    sync_wait(&mut c);
    let entries = failed(&mut c, &["COUNT", "1000"]);
    assert_eq!(entries.len(), 20, "still one entry per row");
    assert_eq!(stored(&mut c), (20, 20));
    let counted: u64 = entries.iter().map(|e| number(e, "count")).sum();
    let st = status(&mut c, "items");
    assert_eq!(counted.to_string(), st["failed"], "every rejection is counted in its row's entry: {st:?}");
    assert_eq!(st["deadletter_dropped"], "0");
    for e in &entries {
        assert_eq!(first_times[&e["id"]], e["first_time_ms"], "the first failure stays: {e:?}");
        assert!(e["fields"].contains("\"tag\""), "the latest change is kept: {e:?}");
    }
    assert!(pg_items(&db).is_empty());

    // COUNT n returns n, oldest (least recently rejected) first.
    for n in [0, 1, 7, 20] {
        assert_eq!(failed(&mut c, &["COUNT", &n.to_string()]).len(), n);
    }
    let times: Vec<u64> = entries.iter().map(|e| number(e, "time_ms")).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert_eq!(failed(&mut c, &["items", "COUNT", "3"]).len(), 3);
}

#[test]
fn the_list_is_capped_and_drops_the_stalest_entries() {
    let db = test_db(&format!("{ITEMS_SQL}; {NO_BAD_NAMES}"));
    // One worker: rows are rejected in the order they were written, which the
    // expected order of the list below relies on.
    let server = Server::with_mapping(&db, ITEMS_MAPPING, &[("deadletter-max", "5"), ("workers", "1")], &[]);
    let mut c = server.conn();
    for id in 1..=12 {
        reject(&mut c, [id]);
        sync_wait(&mut c);
    }
    let ids = |c: &mut redis::Connection| failed(c, &[]).iter().map(|e| e["id"].clone()).collect::<Vec<_>>();
    assert_eq!(ids(&mut c), ["8", "9", "10", "11", "12"]);
    assert_eq!(status(&mut c, "items")["deadletter_dropped"], "7");
    assert_eq!(stored(&mut c), (5, 5));

    // A row rejected again moves to the end and is not counted twice.
    reject(&mut c, [8]);
    sync_wait(&mut c);
    assert_eq!(ids(&mut c), ["9", "10", "11", "12", "8"]);
    assert_eq!(failed(&mut c, &[])[4]["count"], "2");
    assert_eq!(status(&mut c, "items")["deadletter_dropped"], "7");

    // A burst of 500 new rows: the cap holds.
    reject(&mut c, 100..600);
    sync_wait(&mut c);
    assert_eq!(failed(&mut c, &["COUNT", "1000"]).len(), 5);
    assert_eq!(stored(&mut c), (5, 5));
    assert_eq!(status(&mut c, "items")["deadletter_dropped"], "507");

    // A lower cap applies at the next rejection.
    let _: () = redis::cmd("CONFIG").arg("SET").arg("pgsync.deadletter-max").arg(3).query(&mut c).unwrap();
    reject(&mut c, [7]);
    sync_wait(&mut c);
    assert_eq!(ids(&mut c), ["598", "599", "7"]);
    assert_eq!(status(&mut c, "items")["deadletter_dropped"], "510");

    // RETRY and DISCARD by entry id and ALL.
    db.client().batch_execute("ALTER TABLE items DROP CONSTRAINT no_bad").unwrap();
    assert_eq!(redis::cmd("SYNC.RETRY").arg("items:7").query::<i64>(&mut c).unwrap(), 1);
    assert_eq!(redis::cmd("SYNC.DISCARD").arg("items:598").query::<i64>(&mut c).unwrap(), 1);
    let err = redis::cmd("SYNC.DISCARD").arg("items:598").query::<i64>(&mut c).unwrap_err();
    assert!(err.to_string().contains("no failed entry"), "{err}");
    assert_eq!(redis::cmd("SYNC.RETRY").arg("ALL").query::<i64>(&mut c).unwrap(), 1);
    sync_wait(&mut c);
    assert_eq!(stored(&mut c), (0, 0));
    let landed: Vec<i32> = pg_items(&db).into_keys().collect();
    assert_eq!(landed, [7, 599]);
}

#[test]
fn a_row_that_makes_the_worker_panic_is_dead_lettered_and_the_rest_commit() {
    let db = test_db(ITEMS_SQL);
    let file = std::env::temp_dir().join(format!("{}.json", unique("pgsync_mapping")));
    std::fs::write(&file, ITEMS_MAPPING).unwrap();
    let file = file.display().to_string();
    let server = Server::start_with_env(
        &[("postgres-url", db.url.as_str()), ("mappings", &file), ("batch-size", "1000"), ("batch-delay-ms", "200")],
        &[],
        &[("PGSYNC_TEST_PANIC_ON_ID", "25")],
    );
    let mut c = server.conn();
    // One transaction: the 50 rows are queued together and taken in one batch.
    let mut pipe = redis::pipe();
    pipe.atomic();
    for id in 1..=50 {
        pipe.cmd("HSET").arg(format!("items:{id}")).arg("name").arg(format!("n{id}")).ignore();
    }
    let _: () = pipe.query(&mut c).unwrap();
    sync_wait(&mut c);
    let rows = pg_items(&db);
    assert_eq!(rows.len(), 49, "every other row of the batch committed");
    assert!(!rows.contains_key(&25));
    let entries = failed(&mut c, &[]);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["id"], "25");
    assert!(entries[0]["error"].contains("panicked"), "{entries:?}");
    assert!(entries[0]["error"].contains("PGSYNC_TEST_PANIC_ON_ID"), "{entries:?}");
    let st = status(&mut c, "items");
    assert_eq!((st["failed"].as_str(), st["retries"].as_str(), st["postgres"].as_str()), ("1", "0", "up"), "{st:?}");

    // The mapping goes on, and the row fails again (as a bug would) when retried.
    hset(&mut c, "items:60", &[("name", "later")]);
    assert_eq!(redis::cmd("SYNC.RETRY").arg("items:25").query::<i64>(&mut c).unwrap(), 1);
    sync_wait(&mut c);
    assert_eq!(pg_items(&db)[&60][0].as_deref(), Some("later"));
    assert_eq!(failed(&mut c, &[])[0]["count"], "1", "a retried entry starts anew");
    assert_eq!(status(&mut c, "items")["failed"], "2");
}

const PEOPLE_SQL: &str = "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy'); \
    CREATE TABLE people (id integer PRIMARY KEY, username varchar(8) NOT NULL, email text NOT NULL, \
      pwhash text NOT NULL, visits integer, age smallint, score numeric, active boolean, born date, \
      seen timestamptz, token uuid, doc jsonb, mood mood, bio text CHECK (bio <> 'bad')); \
    CREATE TABLE staged (id integer PRIMARY KEY, a text, b text CONSTRAINT no_bad_b CHECK (b <> 'bad'))";

/// `people` is written behind, `staged` through.
const PEOPLE_MAPPINGS: &str = r#"{"mappings": [
  {"name": "people", "table": "people", "key_prefix": "people:", "primary_key": "id", "mode": "write-behind"},
  {"name": "staged", "table": "staged", "key_prefix": "staged:", "primary_key": "id", "mode": "write-through"}]}"#;

fn person(db: &common::TestDb, id: i32) -> Option<BTreeMap<String, Option<String>>> {
    let columns = ["username", "email", "pwhash", "visits", "score", "bio"];
    let sql = format!("SELECT {} FROM people WHERE id = $1", columns.map(|c| format!("{c}::text")).join(", "));
    let row = db.client().query_opt(&sql, &[&id]).unwrap()?;
    Some(columns.iter().enumerate().map(|(i, c)| (c.to_string(), row.get(i))).collect())
}

fn entry_of(c: &mut redis::Connection, entry: &str) -> Option<BTreeMap<String, String>> {
    failed(c, &["COUNT", "1000"]).into_iter().find(|e| e["entry"] == entry)
}

fn hset_people(c: &mut redis::Connection, id: i32, pairs: &[(&str, &str)]) {
    hset(c, &format!("people:{id}"), pairs);
    sync_wait(c);
}

#[test]
fn a_later_write_carries_a_rejected_row_and_lands_it() {
    let db = test_db(PEOPLE_SQL);
    let server = Server::with_mapping(&db, PEOPLE_MAPPINGS, &[], &[]);
    let mut c = server.conn();

    // Field by field, as a UI builds a hash: each write carries the ones before.
    hset_people(&mut c, 1, &[("username", "newbie")]);
    let _: i64 = redis::cmd("HINCRBY").arg("people:1").arg("visits").arg(5).query(&mut c).unwrap();
    sync_wait(&mut c);
    hset_people(&mut c, 1, &[("email", "n@x")]);
    let entry = entry_of(&mut c, "people:1").expect("rejected until every NOT NULL column is there");
    assert_eq!(entry["count"], "3", "{entry:?}");
    assert!(entry["fields"].contains("\"username\":\"newbie\"") && entry["fields"].contains("\"email\""), "{entry:?}");
    assert_eq!(entry["increments"], r#"{"visits":"5"}"#, "{entry:?}");
    assert!(entry["first_error"].contains("email") && entry["error"].contains("pwhash"), "{entry:?}");
    assert!(status(&mut c, "people")["last_error"].contains("row 1 rejected"));
    hset_people(&mut c, 1, &[("pwhash", "p")]);
    let landed = person(&db, 1).expect("the third write lands the row");
    assert_eq!(landed["username"].as_deref(), Some("newbie"));
    assert_eq!(landed["visits"].as_deref(), Some("5"), "the increment counts exactly once");
    assert_eq!(hgetall(&mut c, "people:1")["visits"], "5");
    assert_eq!(entry_of(&mut c, "people:1"), None, "the entry left when the row landed");
    assert_eq!(status(&mut c, "people")["last_error"], "", "the row's rejection is no longer the last error");

    // A newer write lands the row: the old value never comes back.
    hset_people(&mut c, 3, &[("username", "first")]);
    hset_people(&mut c, 3, &[("username", "second"), ("email", "e3"), ("pwhash", "p")]);
    assert_eq!(entry_of(&mut c, "people:3"), None, "resolved by itself");
    let err = redis::cmd("SYNC.RETRY").arg("people:3").query::<i64>(&mut c).unwrap_err();
    assert!(err.to_string().contains("no failed entry"), "{err}");
    assert_eq!(person(&db, 3).unwrap()["username"].as_deref(), Some("second"));
    assert_eq!(hgetall(&mut c, "people:3")["username"], "second");

    // A value Postgres keeps refusing holds its row's later writes, not others.
    hset_people(&mut c, 4, &[("username", "u4"), ("email", "e4"), ("pwhash", "p"), ("bio", "bad")]);
    hset(&mut c, "people:4", &[("score", "7")]);
    hset(&mut c, "people:5", &[("username", "u5"), ("email", "e5"), ("pwhash", "p")]);
    sync_wait(&mut c);
    assert!(person(&db, 5).is_some() && person(&db, 4).is_none());
    let entry = entry_of(&mut c, "people:4").expect("still rejected");
    assert!(entry["error"].contains("people_bio_check") && entry["fields"].contains("\"score\":\"7\""), "{entry:?}");
    assert_eq!(entry["count"], "2");
    hset_people(&mut c, 4, &[("bio", "good")]);
    assert_eq!(person(&db, 4).unwrap()["score"].as_deref(), Some("7"), "the later write landed with the fix");
    assert_eq!(entry_of(&mut c, "people:4"), None);

    // Write-through: SYNC.HSET answers with Postgres's error; a later landed
    // write supersedes the entry's fields, so a retry sends only the others.
    let err = redis::cmd("SYNC.HSET").arg(&["staged:1", "a", "old", "b", "bad"]).query::<i64>(&mut c).unwrap_err();
    assert!(err.to_string().contains("no_bad_b"), "{err}");
    let _: i64 = redis::cmd("SYNC.HSET").arg(&["staged:1", "a", "new"]).query(&mut c).unwrap();
    assert_eq!(entry_of(&mut c, "staged:1").expect("b is still unlanded")["fields"], r#"{"b":"bad"}"#);
    redis::cmd("SYNC.HSET").arg(&["staged:2", "b", "bad"]).query::<i64>(&mut c).unwrap_err();
    let _: i64 = redis::cmd("SYNC.HSET").arg(&["staged:2", "b", "fine"]).query(&mut c).unwrap();
    assert_eq!(entry_of(&mut c, "staged:2"), None, "every field superseded: resolved without SQL");
    db.client().batch_execute("ALTER TABLE staged DROP CONSTRAINT no_bad_b").unwrap();
    assert_eq!(redis::cmd("SYNC.RETRY").arg("staged:1").query::<i64>(&mut c).unwrap(), 1);
    sync_wait(&mut c);
    let staged = db.client().query_one("SELECT a, b FROM staged WHERE id = 1", &[]).unwrap();
    assert_eq!((staged.get::<_, String>(0), staged.get::<_, String>(1)), ("new".into(), "bad".into()));
    assert_eq!(hgetall(&mut c, "staged:1"), [("a", "new"), ("b", "bad")].map(|(f, v)| (f.into(), v.into())).into());
    assert!(failed(&mut c, &[]).is_empty());
}

#[test]
fn what_postgres_would_certainly_refuse_is_refused_before_the_write() {
    let db = test_db(PEOPLE_SQL);
    let server = Server::with_mapping(&db, PEOPLE_MAPPINGS, &[], &[]);
    let mut c = server.conn();
    // Landed: the schema is known from here on.
    hset_people(&mut c, 1, &[("username", "u1"), ("email", "e1"), ("pwhash", "p")]);
    let cases = [
        ("visits", "12a", "integer"),
        ("age", "40000", "out of range for smallint"),
        ("score", "1.2.3", "numeric"),
        ("active", "maybe", "boolean"),
        ("born", "2023-02-29", "date"),
        ("seen", "someday", "timestamp with time zone"),
        ("token", "not-a-uuid", "uuid"),
        ("doc", "{\"a\":", "jsonb"),
        ("mood", "angry", "not a label of enum mood"),
        ("username", "much-too-long", "longer than 8 characters"),
    ];
    for (field, value, why) in cases {
        for key in ["people:1", "people:2"] {
            let err = redis::cmd("HSET").arg(key).arg(field).arg(value).query::<i64>(&mut c).unwrap_err();
            let text = err.to_string();
            assert!(text.contains("pgsync:") && text.contains(&format!("column \"{field}\"")), "{text}");
            assert!(text.contains(why), "{field}: {text}");
        }
    }
    // A label added since the schema was read: a refusal has the schema read
    // again, and the label is accepted from then on.
    db.client().batch_execute("ALTER TYPE mood ADD VALUE 'angry'").unwrap();
    eventually("the new label accepted", || {
        redis::cmd("HSET").arg(&["people:1", "mood", "angry"]).query::<i64>(&mut c).is_ok()
    });
    sync_wait(&mut c);
    let refused_meanwhile: i64 = status(&mut c, "people")["refused"].parse().unwrap();
    let err = redis::cmd("HDEL").arg("people:1").arg("email").query::<i64>(&mut c).unwrap_err();
    assert!(err.to_string().contains("column \"email\" is NOT NULL"), "{err}");
    sync_wait(&mut c);
    // Nothing was written anywhere.
    assert!(!exists(&mut c, "people:2"));
    assert_eq!(hgetall(&mut c, "people:1").len(), 4, "the row's three fields and the new label");
    assert_eq!(person(&db, 1).unwrap()["email"].as_deref(), Some("e1"));
    assert!(person(&db, 2).is_none());
    assert!(failed(&mut c, &[]).is_empty());
    let st = status(&mut c, "people");
    assert_eq!((st["refused"].parse::<i64>().unwrap() - refused_meanwhile, st["failed"].as_str()), (1, "0"), "{st:?}");
    assert!(refused_meanwhile >= 20, "{st:?}");
    // A client that may not write hears NOPERM, not about the table; a Redis-only
    // rgsync write (`#` `+`) sends nothing to Postgres and is not checked.
    let _: () = redis::cmd("ACL").arg(&["SETUSER", "reader", "on", ">pw", "~*", "+@read"]).query(&mut c).unwrap();
    let mut reader = redis::Client::open(format!("redis://reader:pw@127.0.0.1:{}/", server.port))
        .and_then(|client| client.get_connection())
        .unwrap();
    let err = redis::cmd("HSET").arg(&["people:1", "age", "40000"]).query::<i64>(&mut reader).unwrap_err();
    assert_eq!(err.code(), Some("NOPERM"), "{err}");
    let _: i64 = redis::cmd("HSET").arg(&["people:9", "#", "+", "age", "40000"]).query(&mut c).unwrap();
    assert_eq!(hgetall(&mut c, "people:9")["age"], "40000");
    // Values Postgres takes in any of its forms pass.
    hset_people(&mut c, 1, &[("visits", " 7 "), ("active", "yes"), ("seen", "now"), ("doc", "[1, {\"a\": null}]")]);
    assert_eq!(person(&db, 1).unwrap()["visits"].as_deref(), Some("7"));
}
