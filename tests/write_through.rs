//! Write-through of `__{users:<id>}` hashes into the seed's `users` table.

mod common;

use common::*;
use std::collections::BTreeMap;

const PWHASH: &str = "d1e8a70b5ccab1dc2f56bbf7e99f064a660c08e361a35751b9c483c88943d082";

fn seed_user(c: &mut redis::Connection, id: u32, name: &str, day: &str) {
    let first = format!("{}{}", name[..1].to_uppercase(), &name[1..]);
    let email = format!("{name}@detal.com.br");
    hset(
        c,
        &format!("__{{users:{id}}}"),
        &[
            ("username", name),
            ("email", &email),
            ("pwhash", PWHASH),
            ("first", &first),
            ("last", "deTal"),
            ("dob", "1981-01-01"),
            ("score", "0"),
            ("created_at", day),
            ("updated_at", day),
        ],
    );
}

fn seed_all(c: &mut redis::Connection) {
    seed_user(c, 1, "fulano", "2024-06-21");
    seed_user(c, 2, "beltrano", "2024-06-22");
    seed_user(c, 3, "sicrano", "2024-06-23");
}

#[test]
fn seed_users_arrive_as_typed_rows_and_move_to_their_hash() {
    let db = test_db(USERS_SQL);
    let server = Server::users(&db, &[]);
    let mut c = server.conn();
    seed_all(&mut c);
    sync_wait(&mut c);

    let mut pg = db.client();
    let rows = pg
        .query(
            "SELECT id, username, email, password_hash, first_name, last_name, \
             date_of_birth = DATE '1981-01-01', score, created_at::text, updated_at::text, \
             pg_typeof(date_of_birth)::text, pg_typeof(score)::text, pg_typeof(created_at)::text \
             FROM users ORDER BY id",
            &[],
        )
        .unwrap();
    assert_eq!(rows.len(), 3);
    let names: Vec<String> = rows.iter().map(|r| r.get(1)).collect();
    assert_eq!(names, ["fulano", "beltrano", "sicrano"]);
    let r = &rows[0];
    assert_eq!(r.get::<_, i32>(0), 1);
    assert_eq!(r.get::<_, String>(2), "fulano@detal.com.br");
    assert_eq!(r.get::<_, String>(3), PWHASH);
    assert_eq!(r.get::<_, String>(4), "Fulano");
    assert!(r.get::<_, bool>(6), "date_of_birth is 1981-01-01");
    assert_eq!(r.get::<_, i32>(7), 0);
    assert_eq!(r.get::<_, String>(8), "2024-06-21 00:00:00");
    assert_eq!(rows[2].get::<_, String>(9), "2024-06-23 00:00:00");
    assert_eq!(
        (r.get::<_, String>(10), r.get::<_, String>(11), r.get::<_, String>(12)),
        ("date".into(), "integer".into(), "timestamp without time zone".into())
    );

    for id in 1..=3 {
        let cached = hgetall(&mut c, &format!("users:{id}"));
        assert_eq!(cached.len(), 9, "users:{id} holds every field: {cached:?}");
        assert!(!exists(&mut c, &format!("__{{users:{id}}}")), "staging key of {id} is gone");
    }
    assert_eq!(hgetall(&mut c, "users:2")["username"], "beltrano");
}

#[test]
fn partial_update_changes_only_that_column() {
    let db = test_db(USERS_SQL);
    let server = Server::users(&db, &[]);
    let mut c = server.conn();
    seed_all(&mut c);
    sync_wait(&mut c);
    hset(&mut c, "__{users:2}", &[("score", "524187")]);
    sync_wait(&mut c);

    let mut pg = db.client();
    let row = pg.query_one("SELECT score, username, email, first_name FROM users WHERE id = 2", &[]).unwrap();
    assert_eq!(row.get::<_, i32>(0), 524187);
    assert_eq!(row.get::<_, String>(1), "beltrano");
    assert_eq!(row.get::<_, String>(2), "beltrano@detal.com.br");
    assert_eq!(row.get::<_, String>(3), "Beltrano");
    let other: i32 = pg.query_one("SELECT score FROM users WHERE id = 1", &[]).unwrap().get(0);
    assert_eq!(other, 0);
    let cached = hgetall(&mut c, "users:2");
    assert_eq!(cached["score"], "524187");
    assert_eq!(cached["username"], "beltrano");
    assert_eq!(cached.len(), 9);
}

fn ack(c: &mut redis::Connection, stream: &str) -> Vec<String> {
    let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE").arg(stream).arg("-").arg("+").query(c).unwrap();
    assert_eq!(entries.len(), 1, "one ack in {stream}");
    let ttl: i64 = redis::cmd("TTL").arg(stream).query(c).unwrap();
    assert!(ttl > 3500 && ttl <= 3600, "ack stream expires within the hour, ttl {ttl}");
    entries.into_iter().next().unwrap().1
}

#[test]
fn every_hash_write_command_on_the_staging_key_is_captured() {
    let db = test_db(USERS_SQL);
    let server = Server::users(&db, &[]);
    let mut c = server.conn();
    let _: () = redis::cmd("HMSET")
        .arg("__{users:1}")
        .arg(&["username", "h", "email", "h@x", "pwhash", "p"])
        .query(&mut c)
        .unwrap();
    sync_wait(&mut c);
    let _: i64 = redis::cmd("HSETNX").arg("__{users:1}").arg("first").arg("Ana").query(&mut c).unwrap();
    sync_wait(&mut c);
    let _: i64 = redis::cmd("HINCRBY").arg("__{users:1}").arg("score").arg(7).query(&mut c).unwrap();
    sync_wait(&mut c);
    let _: String = redis::cmd("HINCRBYFLOAT").arg("__{users:1}").arg("score").arg("1").query(&mut c).unwrap();
    sync_wait(&mut c);
    let row = db.client().query_one("SELECT username, first_name, score FROM users WHERE id = 1", &[]).unwrap();
    assert_eq!(row.get::<_, String>(0), "h");
    assert_eq!(row.get::<_, String>(1), "Ana");
    assert_eq!(row.get::<_, i32>(2), 8);
    let cached = hgetall(&mut c, "users:1");
    assert_eq!((cached["first"].as_str(), cached["score"].as_str()), ("Ana", "8"));
    assert!(!exists(&mut c, "__{users:1}"));
}

#[test]
fn every_hash_op_works_with_and_without_uuid() {
    let db = test_db(USERS_SQL);
    let server = Server::users(&db, &[]);
    let mut c = server.conn();
    // The mapping listens: its first catch-up (a reload of the table) must be
    // over, or, on a loaded machine, it could write back a row that `-` below
    // deleted from Redis only after the catch-up had read it.
    eventually("listener caught up", || status(&mut c, "users")["listener"] == "listening");
    let mut pg = db.client();
    let count = |pg: &mut postgres::Client, id: i32| -> i64 {
        pg.query_one("SELECT count(*) FROM users WHERE id = $1", &[&id]).unwrap().get(0)
    };
    let base = |n: &str| {
        vec![("username".to_string(), n.to_string()), ("email".into(), format!("{n}@x")), ("pwhash".into(), "p".into())]
    };
    let write = |c: &mut redis::Connection, id: u32, op: &str, extra: Vec<(String, String)>| {
        let mut pairs = extra;
        pairs.push(("#".into(), op.into()));
        let refs: Vec<(&str, &str)> = pairs.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        hset(c, &format!("__{{users:{id}}}"), &refs);
    };

    // `=`: upsert in Redis and Postgres, default op; `#` is never stored.
    write(&mut c, 1, "=", base("a"));
    write(&mut c, 2, "=u2", base("b"));
    sync_wait(&mut c);
    assert_eq!(count(&mut pg, 1), 1);
    assert_eq!(count(&mut pg, 2), 1);
    assert!(!hgetall(&mut c, "users:1").contains_key("#"));
    assert_eq!(ack(&mut c, "{users:2}u2"), ["status", "done"]);

    // `#` with nothing else staged writes nothing, and acks.
    write(&mut c, 1, "=u1", vec![]);
    sync_wait(&mut c);
    assert_eq!(count(&mut pg, 1), 1, "the row is still there");
    assert_eq!(ack(&mut c, "{users:1}u1"), ["status", "done"]);

    // `+`: Redis only.
    write(&mut c, 3, "+", base("c"));
    write(&mut c, 4, "+u4", base("d"));
    sync_wait(&mut c);
    assert_eq!(hgetall(&mut c, "users:3")["username"], "c");
    assert_eq!(hgetall(&mut c, "users:4")["username"], "d");
    assert_eq!(count(&mut pg, 3) + count(&mut pg, 4), 0, "+ never reaches Postgres");
    assert_eq!(ack(&mut c, "{users:4}u4"), ["status", "done"]);
    assert!(!exists(&mut c, "__{users:3}"));

    // `-`: delete in Redis only.
    write(&mut c, 1, "-", vec![]);
    write(&mut c, 2, "-u2b", vec![]);
    sync_wait(&mut c);
    assert!(!exists(&mut c, "users:1") && !exists(&mut c, "users:2"));
    assert_eq!(count(&mut pg, 1) + count(&mut pg, 2), 2, "- leaves Postgres alone");
    assert_eq!(ack(&mut c, "{users:2}u2b"), ["status", "done"]);

    // `~`: delete in Redis and Postgres.
    write(&mut c, 1, "~", vec![]);
    write(&mut c, 2, "~u2c", vec![]);
    sync_wait(&mut c);
    assert_eq!(count(&mut pg, 1) + count(&mut pg, 2), 0);
    assert!(!exists(&mut c, "__{users:1}") && !exists(&mut c, "__{users:2}"));
    assert_eq!(ack(&mut c, "{users:2}u2c"), ["status", "done"]);

    // A rejected write acks `status failed error <text>`.
    // (A new row without its NOT NULL columns: only Postgres refuses that.)
    write(&mut c, 5, "=u5", vec![("username".into(), "e".into())]);
    sync_wait(&mut c);
    let failed = ack(&mut c, "{users:5}u5");
    assert_eq!(&failed[..4], ["status", "failed", "error", failed[3].as_str()]);
    assert!(failed[3].contains("null value"), "{failed:?}");
    assert!(!exists(&mut c, "users:5") && !exists(&mut c, "__{users:5}"));

    // An unknown op is refused, clearly, before anything is written.
    let err = redis::cmd("HSET").arg("__{users:6}").arg("username").arg("f").arg("#").arg("*").query::<i64>(&mut c);
    assert!(err.unwrap_err().to_string().contains("unknown # operation"));
    assert!(!exists(&mut c, "__{users:6}"));
    let st = status(&mut c, "users");
    assert!(st["last_error"].contains("unknown # operation"), "{st:?}");
    assert_eq!(count(&mut pg, 6), 0);
}

#[test]
fn rejected_rows_are_isolated_from_their_batch() {
    let db = test_db(USERS_SQL);
    // A long batch delay makes the good and bad rows share one batch.
    let server = Server::users(&db, &[("batch-delay-ms", "300")]);
    let mut c = server.conn();
    seed_all(&mut c);
    sync_wait(&mut c);
    let before = hgetall(&mut c, "users:2");

    let mut pipe = redis::pipe();
    pipe.atomic();
    pipe.cmd("HSET").arg("__{users:10}").arg(&["username", "ten", "email", "ten@x", "pwhash", "p"]).ignore();
    pipe.cmd("HSET").arg("__{users:2}").arg(&["email", "fulano@detal.com.br"]).ignore(); // duplicate email
    pipe.cmd("HSET").arg("__{users:11}").arg(&["username", "fulano", "email", "e@x", "pwhash", "p"]).ignore(); // duplicate username
    pipe.cmd("HSET").arg("__{users:3}").arg(&["username", "beltrano", "score", "5"]).ignore(); // duplicate username
    pipe.cmd("HSET")
        .arg("__{users:12}")
        .arg(&["username", "twelve", "email", "t@x", "pwhash", "p", "score", "12"])
        .ignore();
    let _: () = pipe.query(&mut c).unwrap();
    sync_wait(&mut c);

    let mut pg = db.client();
    let ids: Vec<i32> = pg.query("SELECT id FROM users ORDER BY id", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, [1, 2, 3, 10, 12], "good rows of the batch committed, bad ones did not");
    let email: String = pg.query_one("SELECT email FROM users WHERE id = 2", &[]).unwrap().get(0);
    assert_eq!(email, "beltrano@detal.com.br");
    assert_eq!(hgetall(&mut c, "users:2"), before, "users:2 untouched by its rejected write");
    assert_eq!(hgetall(&mut c, "users:3")["username"], "sicrano");
    assert!(!exists(&mut c, "users:11"));
    for key in ["__{users:2}", "__{users:3}", "__{users:11}"] {
        assert!(!exists(&mut c, key), "{key} removed after rejection");
    }
    let st = status(&mut c, "users");
    assert_eq!(st["failed"], "3", "{st:?}");
    assert!(server.log().contains("rejected"), "rejections are logged");
}

#[test]
fn unmapped_fields_stay_in_redis_and_hostile_input_does_no_harm() {
    let db = test_db(USERS_SQL);
    let server = Server::users(&db, &[]);
    let mut c = server.conn();
    // From here on a value too long for its column is refused at write time.
    eventually("schema checked", || status(&mut c, "users")["schema"] == "ok");
    let evil = "Robert'); DROP TABLE users; --\"";
    hset(
        &mut c,
        "__{users:1}",
        &[("username", evil), ("email", "e@x"), ("pwhash", "p"), ("nickname", "bobby"), ("a\"b'; --", "x;y")],
    );
    let _: i64 = redis::cmd("HSET")
        .arg("__{users:2}")
        .arg("username")
        .arg("two")
        .arg("email")
        .arg("t@x")
        .arg("pwhash")
        .arg("p")
        .arg("blob")
        .arg(&b"\xff\x00\xfe"[..])
        .query(&mut c)
        .unwrap();
    let _: i64 = redis::cmd("HSET")
        .arg("__{users:3}")
        .arg("username")
        .arg(&b"\xff\xfe"[..])
        .arg("email")
        .arg("3@x")
        .arg("pwhash")
        .arg("p")
        .query(&mut c)
        .unwrap();
    let huge = "x".repeat(1 << 20);
    hset(&mut c, "__{users:4}", &[("username", "four"), ("email", "4@x"), ("pwhash", "p"), ("bio", &huge)]);
    let err = redis::cmd("HSET")
        .arg(&["__{users:5}", "username", "five", "email", "5@x", "pwhash", &huge])
        .query::<i64>(&mut c)
        .unwrap_err();
    assert!(err.to_string().contains("(column \"password_hash\", character varying): longer than 255"), "{err}");
    assert!(!exists(&mut c, "__{users:5}"));
    sync_wait(&mut c);

    let mut pg = db.client();
    let name: String = pg.query_one("SELECT username FROM users WHERE id = 1", &[]).unwrap().get(0);
    assert_eq!(name, evil, "the value is stored verbatim, not executed");
    let cached = hgetall(&mut c, "users:1");
    assert_eq!(cached["nickname"], "bobby");
    assert_eq!(cached["a\"b'; --"], "x;y");
    let blob: Vec<u8> = redis::cmd("HGET").arg("users:2").arg("blob").query(&mut c).unwrap();
    assert_eq!(blob, b"\xff\x00\xfe", "binary unmapped value kept in Redis");
    let n: i64 = pg.query_one("SELECT count(*) FROM users WHERE id IN (2, 4)", &[]).unwrap().get(0);
    assert_eq!(n, 2);
    assert_eq!(hgetall(&mut c, "users:4")["bio"].len(), 1 << 20, "a 1 MiB unmapped value stays in Redis");
    let n3: i64 = pg.query_one("SELECT count(*) FROM users WHERE id IN (3, 5)", &[]).unwrap().get(0);
    assert_eq!(n3, 0, "a non-UTF-8 value is rejected, one too long for its column refused");
    let log = server.log();
    assert!(log.contains("not valid UTF-8"), "{log}");
    let st = status(&mut c, "users");
    assert_eq!((st["failed"].as_str(), st["refused"].as_str()), ("1", "1"), "{st:?}");
}

#[test]
fn keys_that_do_not_parse_are_refused_without_a_crash() {
    let db = test_db(USERS_SQL);
    // log-values: the rejected values below must reach the log as plain text.
    let server = Server::users(&db, &[("log-values", "yes")]);
    let mut c = server.conn();
    eventually("schema checked", || status(&mut c, "users")["schema"] == "ok");
    let refused = |c: &mut redis::Connection, key: &str, pairs: &[&str]| {
        redis::cmd("HSET").arg(key).arg(pairs).query::<i64>(c).unwrap_err().to_string()
    };
    let err = refused(&mut c, "__{users:}", &["username", "x", "email", "x@x", "pwhash", "p"]);
    assert!(err.contains("no id"), "{err}");
    let err = refused(&mut c, "__{users:abc}", &["username", "y", "email", "y@x", "pwhash", "p", "#", "=k1"]);
    assert!(err.contains("not a canonical integer"), "{err}");
    assert!(!exists(&mut c, "__{users:abc}") && !exists(&mut c, "{users:abc}k1"), "refused before it ran");
    let st = status(&mut c, "users");
    assert_eq!((st["refused"].as_str(), st["failed"].as_str()), ("2", "0"));
    // Key names and values reach the log; printf directives in them must stay text.
    refused(&mut c, "__{users:%s%s%s%s%s%s%s%s%n}", &["#", "*%s%n"]);
    let err = refused(&mut c, "__{users:9}", &["username", "%s%s%s%s%n", "email", "x", "pwhash", "p", "score", "%s%n"]);
    assert!(err.contains("field \"score\" (column \"score\", integer): not an integer"), "{err}");
    // Rejected by Postgres (no password_hash), its values logged.
    hset(&mut c, "__{users:9}", &[("username", "%s%s%s%s%n"), ("email", "x"), ("first", "%s%n")]);
    sync_wait(&mut c);
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
    let log = server.log();
    assert!(
        log.contains("__{users:%s%s%s%s%s%s%s%s%n}") && log.contains("(9, %s%s%s%s%n, x"),
        "logged verbatim:\n{log}"
    );
    let err = redis::cmd("SYNC.HSET").arg("users:").arg("a").arg("b").query::<i64>(&mut c).unwrap_err();
    assert!(err.to_string().contains("no id"), "{err}");
    let n: i64 = db.client().query_one("SELECT count(*) FROM users", &[]).unwrap().get(0);
    assert_eq!(n, 0);
}

#[test]
fn sync_hset_replies_after_commit_or_with_the_postgres_error() {
    let db = test_db(USERS_SQL);
    let server = Server::users(&db, &[("batch-delay-ms", "50")]);
    let mut c = server.conn();
    let mut pg = db.client();
    for id in 1..=20 {
        let name = format!("u{id}");
        let email = format!("{name}@x");
        let added: i64 = redis::cmd("SYNC.HSET")
            .arg(format!("users:{id}"))
            .arg(&["username", &name, "email", &email, "pwhash", "p", "score", "7"])
            .query(&mut c)
            .unwrap();
        assert_eq!(added, 4);
        // Visible to another connection the moment the reply arrives.
        let n: i64 = pg.query_one("SELECT count(*) FROM users WHERE id = $1", &[&id]).unwrap().get(0);
        assert_eq!(n, 1, "row {id} committed before SYNC.HSET replied");
        assert_eq!(hgetall(&mut c, &format!("users:{id}"))["score"], "7");
    }
    let err = redis::cmd("SYNC.HSET")
        .arg("users:21")
        .arg(&["username", "u1", "email", "new@x", "pwhash", "p"])
        .query::<i64>(&mut c)
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("Postgres rejected the row") && text.contains("users_username_key"), "{text}");
    assert!(!exists(&mut c, "users:21"));

    let wrong = |args: &[&str]| {
        let mut cmd = redis::cmd("SYNC.HSET");
        for a in args {
            cmd.arg(*a);
        }
        cmd.query::<i64>(&mut server.conn()).unwrap_err().to_string()
    };
    assert!(wrong(&["users:1", "score"]).contains("wrong number of arguments"));
    assert!(wrong(&["orders:1", "a", "b"]).contains("matches no mapping"));
    assert!(wrong(&["users:1", "#", "="]).contains("# field"));
}

#[test]
fn concurrent_writers_converge_postgres_to_redis() {
    let db = test_db(USERS_SQL);
    let server = Server::users(&db, &[]);
    let port = server.port;
    let writers: Vec<_> = (0..5)
        .map(|w| {
            std::thread::spawn(move || {
                let mut c = connect(port);
                let mut rng = rand::thread_rng();
                for i in 0..2000 {
                    let id: u32 = rand::Rng::gen_range(&mut rng, 1..=500);
                    let name = format!("user{id}");
                    let email = format!("user{id}@x");
                    let score = format!("{}", w * 100_000 + i);
                    hset(
                        &mut c,
                        &format!("__{{users:{id}}}"),
                        &[("username", &name), ("email", &email), ("pwhash", "p"), ("score", &score)],
                    );
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let mut c = server.conn();
    sync_wait(&mut c);
    let mut pg = db.client();
    let rows: BTreeMap<i32, i32> =
        pg.query("SELECT id, score FROM users", &[]).unwrap().iter().map(|r| (r.get(0), r.get(1))).collect();
    let mut redis_scores = BTreeMap::new();
    for id in 1..=500 {
        let cached = hgetall(&mut c, &format!("users:{id}"));
        if let Some(score) = cached.get("score") {
            redis_scores.insert(id, score.parse::<i32>().unwrap());
        }
        assert!(!exists(&mut c, &format!("__{{users:{id}}}")), "staging key {id} drained");
    }
    assert!(redis_scores.len() > 400, "most keys were written");
    assert_eq!(rows, redis_scores, "Postgres equals Redis for every key");
}
