//! Postgres → Redis: SYNC.RELOAD, the LISTEN/NOTIFY listener, change notifications
//! and the changelog stream, read-only mappings.

mod common;

use common::*;
use redis::Commands;
use std::time::{Duration, Instant};

/// Users, write-through, listening, publishing on `sync:users:<id>` and logging to
/// the `changes:users` stream.
const LISTENING_USERS: &str = r#"{"mappings": [{"name": "users", "table": "users", "key_prefix": "users:",
  "primary_key": "id", "mode": "write-through", "listen": true, "notify": "sync:users", "notify_reload": true,
  "changelog": {"stream": "changes:users", "maxlen": 1000},
  "fields": {"username": "username", "email": "email", "pwhash": "password_hash", "score": "score", "bio": "bio"}}]}"#;

const SCHEMA: &str = "CREATE TABLE users (id serial PRIMARY KEY, username text UNIQUE NOT NULL, email text NOT NULL, \
    password_hash text NOT NULL DEFAULT 'x', score integer, bio text); \
    CREATE TABLE write_log (n serial); \
    CREATE FUNCTION log_write() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO write_log DEFAULT VALUES; RETURN NULL; END $$; \
    CREATE TRIGGER log_write AFTER INSERT OR UPDATE OR DELETE ON users FOR EACH ROW EXECUTE FUNCTION log_write();";

fn insert_users(db: &TestDb, from: i32, to: i32) {
    db.client()
        .execute(
            "INSERT INTO users (id, username, email, score) SELECT i, 'user' || i, 'u' || i || '@x', i FROM generate_series($1::int, $2::int) i",
            &[&from, &to],
        )
        .unwrap();
}

fn writes(db: &TestDb) -> i64 {
    db.client().query_one("SELECT count(*) FROM write_log", &[]).unwrap().get(0)
}

fn listening(c: &mut redis::Connection) {
    eventually("listener up", || status(c, "users")["listener"] == "listening");
}

#[test]
fn reload_restores_every_row_and_flush_removes_strays_without_writing_back() {
    let db = test_db(SCHEMA);
    insert_users(&db, 1, 50);
    db.client().execute("UPDATE users SET bio = NULL, score = NULL WHERE id = 7", &[]).unwrap();
    let server = Server::with_mapping(&db, LISTENING_USERS, &[], &[]);
    let mut c = server.conn();
    listening(&mut c);
    let before = writes(&db);
    let _: () = redis::cmd("FLUSHALL").query(&mut c).unwrap();
    let loaded: i64 = redis::cmd("SYNC.RELOAD").query(&mut c).unwrap();
    assert_eq!(loaded, 50);
    let u3 = hgetall(&mut c, "users:3");
    assert_eq!((u3["username"].as_str(), u3["email"].as_str(), u3["score"].as_str()), ("user3", "u3@x", "3"));
    assert!(!hgetall(&mut c, "users:7").contains_key("score"), "NULL → field absent");
    hset(&mut c, "users:999", &[("username", "stray")]);
    let _: () = c.set("users:notes", "not a row").unwrap();
    let loaded: i64 = redis::cmd("SYNC.RELOAD").arg("users").arg("FLUSH").query(&mut c).unwrap();
    assert_eq!(loaded, 50);
    assert!(!exists(&mut c, "users:999"), "FLUSH removed the key without a row");
    assert!(exists(&mut c, "users:50"));
    assert!(exists(&mut c, "users:notes"), "FLUSH leaves keys that are not hashes");
    sync_wait(&mut c);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(writes(&db), before, "nothing from the reload was written back to Postgres");
    assert!(status(&mut c, "users")["reload"].contains("50 rows"));
}

#[test]
fn redis_answers_every_ping_and_get_during_a_large_reload() {
    let db = test_db(SCHEMA);
    insert_users(&db, 1, 200_000);
    let server = Server::with_mapping(&db, LISTENING_USERS, &[], &[]);
    let mut c = server.conn();
    listening(&mut c);
    let _: () = c.set("plain", "value").unwrap();
    let port = server.port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pinger = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut p = connect(port);
            p.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let (mut sent, mut worst) = (0u64, Duration::ZERO);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                let pong: String = redis::cmd("PING").query(&mut p).expect("PING answered during the reload");
                let got: String = p.get("plain").expect("GET answered during the reload");
                assert_eq!((pong.as_str(), got.as_str()), ("PONG", "value"));
                worst = worst.max(t.elapsed());
                sent += 1;
            }
            (sent, worst)
        })
    };
    let reload = std::thread::spawn(move || {
        let loaded: i64 = redis::cmd("SYNC.RELOAD").arg("users").query(&mut connect(port)).unwrap();
        loaded
    });
    let mut progress = String::new();
    eventually("the reload shows its progress", || {
        progress = status(&mut c, "users")["reload"].clone();
        progress.starts_with("running") || reload.is_finished()
    });
    if progress.starts_with("running") {
        let err = redis::cmd("SYNC.RELOAD").query::<i64>(&mut c).unwrap_err();
        assert!(err.to_string().contains("already running"), "{err}");
    }
    let loaded = reload.join().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (answered, worst) = pinger.join().unwrap();
    assert!(progress.starts_with("running"), "SYNC.STATUS showed the reload running ({progress})");
    assert_eq!(loaded, 200_000);
    assert!(answered > 10, "the other client kept being served ({answered} round trips)");
    println!("{answered} PING+GET round trips during the reload, worst {worst:?}");
    let dbsize: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert!(dbsize >= 200_001);
}

#[test]
fn inserts_updates_and_deletes_in_postgres_reach_redis() {
    let db = test_db(SCHEMA);
    let server = Server::with_mapping(&db, LISTENING_USERS, &[], &[]);
    let mut c = server.conn();
    listening(&mut c);
    let mut pg = db.client();
    pg.batch_execute("INSERT INTO users (id, username, email, score) VALUES (1, 'ana', 'ana@x', 5)").unwrap();
    eventually("insert arrives", || hgetall(&mut c, "users:1").get("username").map(String::as_str) == Some("ana"));
    pg.batch_execute("UPDATE users SET score = 6, bio = 'hi' WHERE id = 1").unwrap();
    eventually("update arrives", || hgetall(&mut c, "users:1").get("bio").map(String::as_str) == Some("hi"));
    assert_eq!(hgetall(&mut c, "users:1")["score"], "6");
    let wide = "w".repeat(20_000);
    pg.execute("INSERT INTO users (id, username, email, bio) VALUES (2, 'wide', 'w@x', $1)", &[&wide]).unwrap();
    eventually("a row wider than 8000 bytes arrives", || {
        hgetall(&mut c, "users:2").get("bio").map(String::len) == Some(20_000)
    });
    pg.batch_execute("UPDATE users SET id = 3 WHERE id = 2").unwrap();
    eventually("a key change moves the hash", || exists(&mut c, "users:3") && !exists(&mut c, "users:2"));
    pg.batch_execute("DELETE FROM users WHERE id = 1").unwrap();
    eventually("delete arrives", || !exists(&mut c, "users:1"));
}

#[test]
fn module_writes_are_not_echoed_back_by_the_listener() {
    let db = test_db(SCHEMA);
    let server = Server::with_mapping(&db, LISTENING_USERS, &[], &[]);
    let mut c = server.conn();
    listening(&mut c);
    let mut sub = server.conn();
    let _: () = redis::cmd("CONFIG").arg("SET").arg("notify-keyspace-events").arg("Kh").query(&mut c).unwrap();
    let mut pubsub = sub.as_pubsub();
    pubsub.subscribe("__keyspace@0__:users:1").unwrap();
    pubsub.set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
    hset(&mut c, "__{users:1}", &[("username", "w"), ("email", "w@x"), ("score", "1")]);
    sync_wait(&mut c);
    let mut events = 0;
    while let Ok(msg) = pubsub.get_message() {
        let kind: String = msg.get_payload().unwrap();
        assert_eq!(kind, "hset");
        events += 1;
    }
    assert_eq!(events, 1, "users:1 was written once (by apply), not again by the listener");
    assert_eq!(hgetall(&mut c, "users:1")["score"], "1");
}

#[test]
fn the_listener_catches_up_after_its_connection_is_killed() {
    let db = test_db(SCHEMA);
    insert_users(&db, 1, 3);
    let server = Server::with_mapping(&db, LISTENING_USERS, &[("retry-max-delay-ms", "2000")], &[]);
    let mut c = server.conn();
    listening(&mut c);
    let _: i64 = redis::cmd("SYNC.RELOAD").query(&mut c).unwrap();
    // Kill the listener inside the transaction that makes the changes, and wait for
    // it to be gone before committing: their notifications reach nobody.
    let mut pg = db.client();
    let mut tx = pg.transaction().unwrap();
    tx.batch_execute(
        "UPDATE users SET score = 77 WHERE id = 1; DELETE FROM users WHERE id = 2; \
        INSERT INTO users (id, username, email) VALUES (10, 'late', 'l@x')",
    )
    .unwrap();
    kill_listener_in(&mut tx);
    tx.commit().unwrap();
    eventually("caught up", || {
        hgetall(&mut c, "users:1").get("score").map(String::as_str) == Some("77")
            && !exists(&mut c, "users:2")
            && exists(&mut c, "users:10")
    });
    listening(&mut c);
    assert!(server.log().matches("listener caught up").count() >= 2, "at start and after the kill: {}", server.log());
}

#[test]
fn subscribers_get_exactly_their_events_from_every_source() {
    let db = test_db(SCHEMA);
    let server = Server::with_mapping(&db, LISTENING_USERS, &[], &[]);
    let mut c = server.conn();
    listening(&mut c);
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("changes:users")
        .arg("audit")
        .arg("$")
        .arg("MKSTREAM")
        .query(&mut c)
        .unwrap();
    let mut all_conn = server.conn();
    let mut all = all_conn.as_pubsub();
    all.psubscribe("sync:users:*").unwrap();
    let mut seven_conn = server.conn();
    let mut seven = seven_conn.as_pubsub();
    seven.subscribe("sync:users:7").unwrap();

    hset(&mut c, "__{users:7}", &[("username", "seven"), ("email", "7@x")]); // redis
    hset(&mut c, "__{users:8}", &[("username", "eight"), ("email", "8@x")]); // redis
    sync_wait(&mut c);
    db.client().batch_execute("UPDATE users SET score = 1 WHERE id = 7").unwrap(); // postgres
    eventually("postgres change applied", || hgetall(&mut c, "users:7").contains_key("score"));
    let _: i64 = redis::cmd("SYNC.RELOAD").query(&mut c).unwrap(); // reload: 7 and 8
    hset(&mut c, "__{users:7}", &[("#", "~")]); // redis delete
    sync_wait(&mut c);

    let collect = |ps: &mut redis::PubSub, n: usize| -> Vec<serde_json::Value> {
        ps.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut out = Vec::new();
        while out.len() < n {
            let msg = ps.get_message().expect("event");
            out.push(serde_json::from_str(&msg.get_payload::<String>().unwrap()).unwrap());
        }
        ps.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        assert!(ps.get_message().is_err(), "no extra events");
        out
    };
    let seen_all = collect(&mut all, 6);
    let seen_seven = collect(&mut seven, 4);
    let sources = |events: &[serde_json::Value]| -> Vec<String> {
        events
            .iter()
            .map(|e| {
                format!("{}:{}:{}", e["id"].as_str().unwrap(), e["source"].as_str().unwrap(), e["op"].as_str().unwrap())
            })
            .collect()
    };
    assert_eq!(sources(&seen_seven), ["7:redis:upsert", "7:postgres:upsert", "7:reload:upsert", "7:redis:delete"]);
    let mut all_sources = sources(&seen_all);
    all_sources.sort();
    assert_eq!(
        all_sources,
        [
            "7:postgres:upsert",
            "7:redis:delete",
            "7:redis:upsert",
            "7:reload:upsert",
            "8:redis:upsert",
            "8:reload:upsert"
        ]
    );
    assert_eq!(seen_seven[0]["key"], "users:7");
    assert!(seen_seven[0]["fields"].as_array().unwrap().iter().any(|f| f == "username"));
    assert!(seen_seven[0]["time"].as_u64().unwrap() > 0);

    let read: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("audit")
        .arg("c1")
        .arg("STREAMS")
        .arg("changes:users")
        .arg(">")
        .query(&mut c)
        .unwrap();
    let logged: Vec<serde_json::Value> =
        read.keys[0].ids.iter().map(|e| serde_json::from_str(&e.get::<String>("event").unwrap()).unwrap()).collect();
    let mut logged_sources = sources(&logged);
    logged_sources.sort();
    assert_eq!(logged_sources, all_sources, "the changelog holds the same events");
}

#[test]
fn bad_requests_get_clear_errors() {
    let pg = PrivatePg::start();
    let db = TestDb::on(&pg.admin_url(), SCHEMA);
    let mapping = r#"{"mappings": [{"name": "users", "table": "users", "key_prefix": "users:", "primary_key": "id",
        "mode": "write-behind", "listen": false}]}"#;
    let server = Server::with_mapping(&db, mapping, &[], &[]);
    let mut c = server.conn();
    eventually("schema checked", || status(&mut c, "users")["schema"] == "ok");
    assert_eq!(status(&mut c, "users")["listener"], "off", "a mapping with listen:false has no listener");
    let err = redis::cmd("SYNC.RELOAD").arg("nope").query::<i64>(&mut c).unwrap_err();
    assert!(err.to_string().contains("unknown mapping \"nope\""), "{err}");
    pg.down();
    let err = redis::cmd("SYNC.RELOAD").arg("users").query::<i64>(&mut c).unwrap_err();
    assert!(err.to_string().contains("reload failed") && err.to_string().contains("Postgres"), "{err}");
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn read_only_mappings_follow_postgres_and_never_write_to_it() {
    let db = test_db(SCHEMA);
    insert_users(&db, 1, 2);
    let mapping = r#"{"mappings": [{"name": "users", "table": "users", "key_prefix": "users:", "primary_key": "id",
        "mode": "read-only", "fields": {"username": "username", "score": "score"}}]}"#;
    let server = Server::with_mapping(&db, mapping, &[("reload-on-start", "yes")], &[]);
    let mut c = server.conn();
    eventually("reload on start loaded the table", || hgetall(&mut c, "users:2").contains_key("username"));
    listening(&mut c);
    let before = writes(&db);
    hset(&mut c, "users:1", &[("score", "1000")]);
    let err = redis::cmd("SYNC.HSET").arg("users:1").arg("score").arg("5").query::<i64>(&mut c).unwrap_err();
    assert!(err.to_string().contains("read-only"), "{err}");
    sync_wait(&mut c);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(writes(&db), before, "a read-only mapping never writes to Postgres");
    db.client().batch_execute("UPDATE users SET score = 5 WHERE id = 2").unwrap();
    eventually("listener applies", || hgetall(&mut c, "users:2")["score"] == "5");
}

#[test]
fn missing_rights_to_install_triggers_are_reported_clearly() {
    let db = test_db(SCHEMA);
    let role = unique("pgsync_limited");
    let mut admin = db.client();
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN; GRANT SELECT, INSERT, UPDATE, DELETE ON users, write_log TO {role}; \
             GRANT USAGE ON SEQUENCE write_log_n_seq TO {role}; \
             REVOKE CREATE ON SCHEMA public FROM PUBLIC"
        ))
        .unwrap();
    let url = db.url.replace("postgres://postgres@", &format!("postgres://{role}@"));
    let file = std::env::temp_dir().join(format!("{}.json", unique("pgsync_mapping")));
    std::fs::write(&file, LISTENING_USERS).unwrap();
    let server = Server::start(&[("postgres-url", &url), ("mappings", &file.display().to_string())], &[]);
    let mut c = server.conn();
    eventually("listener error reported", || status(&mut c, "users")["listener"].starts_with("error"));
    let state = status(&mut c, "users")["listener"].clone();
    assert!(state.contains("permission denied") && state.contains("README"), "{state}");
    // Writing still works with the rights the role has.
    hset(&mut c, "__{users:1}", &[("username", "a"), ("email", "a@x")]);
    sync_wait(&mut c);
    assert_eq!(writes(&db), 1);
    drop(server);
    drop(c);
    let mut admin = postgres::Client::connect(&admin_url(), postgres::NoTls).unwrap();
    let _ =
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE); DROP ROLE IF EXISTS {role}", db.name));
}
