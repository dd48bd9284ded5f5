//! Loading the module: configs from arguments and CONFIG, clear load errors, an
//! unreachable or mismatched Postgres, INFO, and refusal on servers older than 7.2.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Starts a server expected to refuse the module; returns its exit status and log.
fn failed_start(server: &str, module_args: &[&str]) -> (std::process::ExitStatus, String) {
    let dir = TempDir::new("pgsync_fail");
    let mut child = Command::new(server)
        .args(["--port", &free_port().to_string(), "--dir", &dir.0.display().to_string(), "--logfile", "server.log"])
        .arg("--loadmodule")
        .arg(module_path())
        .args(module_args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start server");
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("server kept running although the module should have been refused");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, std::fs::read_to_string(dir.0.join("server.log")).unwrap_or_default())
}

fn write_mapping(text: &str) -> String {
    let path = std::env::temp_dir().join(format!("{}.json", unique("pgsync_bad")));
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn assert_refused(args: &[&str], expected: &str) {
    let (status, log) = failed_start(&server_bin(), args);
    assert!(status.code().is_some(), "exited normally, not by a signal: {status}");
    assert_ne!(status.code(), Some(0));
    assert!(log.contains(expected), "log names the problem ({expected}):\n{log}");
}

#[test]
fn bad_configuration_fails_the_load_with_a_message() {
    let url = "postgres://postgres@127.0.0.1:5432/postgres";
    let broken = write_mapping("{\"mappings\": [");
    assert_refused(&["postgres-url", url, "mappings", &broken], "invalid mapping file");
    let bad_mode = write_mapping(
        r#"{"mappings": [{"name": "u", "table": "u", "key_prefix": "u:", "primary_key": "id", "mode": "sideways"}]}"#,
    );
    assert_refused(&["postgres-url", url, "mappings", &bad_mode], "sideways");
    assert_refused(&["postgres-url", url, "mappings", "/nonexistent/pgsync.json"], "cannot read mapping file");
    let good = write_mapping(USERS_MAPPING);
    assert_refused(&["postgres-url", url, "mappings", &good, "colour", "blue"], "unknown option \"colour\"");
    assert_refused(&["mappings", &good], "pgsync.postgres-url is not set");
    assert_refused(&["postgres-url", "postgres://bob:hunter2@[nope", "mappings", &good], "not a valid Postgres URL");
    let (_, log) = failed_start(&server_bin(), &["postgres-url", "postgres://bob:hunter2@[nope", "mappings", &good]);
    assert!(!log.contains("hunter2"), "the password never reaches the log:\n{log}");
    // An unencoded password that makes the URL readable two ways (`1234` a port,
    // `hunter2@...` a database): refused, without the URL.
    let ambiguous = "postgres://bob:1234/hunter2@127.0.0.1/postgres";
    let (_, log) = failed_start(&server_bin(), &["postgres-url", ambiguous, "mappings", &good]);
    assert!(log.contains("more than one way"), "the load error says why:\n{log}");
    assert!(!log.contains("hunter2"), "the password never reaches the log:\n{log}");
    let with = |query: &str| format!("postgres://bob:hunter2@127.0.0.1/postgres?{query}");
    assert_refused(&["postgres-url", &with("sslmode=sometimes"), "mappings", &good], "sslmode \"sometimes\"");
    let unreadable = with("sslmode=verify-full&sslrootcert=/nonexistent/ca.pem");
    assert_refused(
        &["postgres-url", &unreadable, "mappings", &good],
        "cannot read sslrootcert \"/nonexistent/ca.pem\"",
    );
    let no_file = ["postgres-url", url, "mappings", &good, "postgres-password-file", "/nonexistent/pw"];
    assert_refused(&no_file, "cannot read pgsync.postgres-password-file \"/nonexistent/pw\"");
    // A document store in RedisJSON needs the JSON module, loaded first.
    let rejson = write_mapping(
        r#"{"mappings": [{"name": "customers", "mode": "document", "key_prefix": "customer:",
        "query": "SELECT 1, '{}'", "ids_query": "SELECT 1", "store": "rejson",
        "watch": [{"table": "customer", "column": "id_customer"}]}]}"#,
    );
    assert_refused(&["postgres-url", url, "mappings", &rejson], "\"store\": \"rejson\" needs the JSON.SET command");
    // So do rows cached as JSON documents.
    let json_rows = write_mapping(
        r#"{"mappings": [{"name": "products", "table": "products", "key_prefix": "product:", "primary_key": "id",
        "mode": "read-only", "type": "json"}]}"#,
    );
    assert_refused(
        &["postgres-url", url, "mappings", &json_rows],
        "mapping \"products\": \"type\": \"json\" needs the JSON.SET command: load the RedisJSON or valkey-json module before pgsync",
    );
    // A Kafka source's TLS files are read at load.
    let kafka = |tls: &str| {
        write_mapping(&format!(
            r#"{{"mappings": [{{"name": "k", "table": "k", "key_prefix": "k:", "primary_key": "id",
            "mode": "write-behind", "kafka": {{"brokers": "127.0.0.1:9", "topic": "t", "group": "g", "tls": {tls}}}}}]}}"#
        ))
    };
    let missing_ca = kafka(r#"{"ca_file": "/nonexistent/ca.pem"}"#);
    assert_refused(&["postgres-url", url, "mappings", &missing_ca], "kafka tls \"ca_file\" /nonexistent/ca.pem");
    let half = kafka(r#"{"cert_file": "/etc/hostname"}"#);
    assert_refused(&["postgres-url", url, "mappings", &half], "\"cert_file\" and \"key_file\" go together");
    let not_pem = kafka(r#"{"ca_file": "/etc/hostname"}"#);
    assert_refused(&["postgres-url", url, "mappings", &not_pem], "no PEM certificate");
}

#[test]
fn unreachable_postgres_does_not_stop_redis() {
    let port = free_port();
    let url = format!("postgres://bob:hunter2@127.0.0.1:{port}/nowhere");
    let mapping = write_mapping(USERS_MAPPING);
    let server = Server::start(&[("postgres-url", &url), ("mappings", &mapping)], &[]);
    let mut c = server.conn();
    hset(&mut c, "__{users:1}", &[("username", "a"), ("email", "a@x"), ("pwhash", "p")]);
    eventually("Postgres reported down", || status(&mut c, "users")["postgres"] == "down");
    let st = status(&mut c, "users");
    assert_eq!(st["pending"], "1", "{st:?}");
    assert!(!st["postgres_error"].is_empty());
    let left: i64 = redis::cmd("SYNC.WAIT").arg(100).query(&mut c).unwrap();
    assert_eq!(left, 1, "SYNC.WAIT times out and reports what is pending");
    let info: String = redis::cmd("INFO").arg("pgsync").query(&mut c).unwrap();
    assert!(info.contains("pgsync_users_postgres:down"), "{info}");
    for text in [info, server.log(), format!("{st:?}")] {
        assert!(!text.contains("hunter2"), "password leaked: {text}");
    }
}

#[test]
fn tunable_configs_work_with_config_get_and_set() {
    let db = test_db(USERS_SQL);
    let server = Server::users(&db, &[("workers", "3"), ("batch-size", "7")]);
    let mut c = server.conn();
    let get = |c: &mut redis::Connection, name: &str| -> String {
        let pair: Vec<String> = redis::cmd("CONFIG").arg("GET").arg(name).query(c).unwrap();
        pair[1].clone()
    };
    assert_eq!(get(&mut c, "pgsync.workers"), "3");
    assert_eq!(get(&mut c, "pgsync.batch-size"), "7");
    assert_eq!(get(&mut c, "pgsync.batch-delay-ms"), "1");
    assert_eq!(get(&mut c, "pgsync.retry-max-delay-ms"), "5000");
    for (name, value) in [
        ("pgsync.workers", "1"),
        ("pgsync.batch-size", "100"),
        ("pgsync.batch-delay-ms", "5"),
        ("pgsync.retry-max-delay-ms", "1000"),
    ] {
        let _: () = redis::cmd("CONFIG").arg("SET").arg(name).arg(value).query(&mut c).unwrap();
        assert_eq!(get(&mut c, name), value);
    }
    let err = redis::cmd("CONFIG").arg("SET").arg("pgsync.workers").arg("0").query::<()>(&mut c).unwrap_err();
    assert!(err.to_string().contains("pgsync.workers"), "{err}");
    let err = redis::cmd("CONFIG").arg("SET").arg("pgsync.mappings").arg("/x").query::<()>(&mut c).unwrap_err();
    assert!(err.to_string().to_lowercase().contains("immutable") || err.to_string().contains("can't set"), "{err}");
    // Still syncing with one worker after the change.
    hset(&mut c, "__{users:1}", &[("username", "a"), ("email", "a@x"), ("pwhash", "p")]);
    sync_wait(&mut c);
    let n: i64 = db.client().query_one("SELECT count(*) FROM users", &[]).unwrap().get(0);
    assert_eq!(n, 1);
}

#[test]
fn a_mapping_that_does_not_match_the_table_is_reported() {
    let db = test_db(USERS_SQL);
    let mapping = r#"{"mappings": [{"name": "users", "table": "users", "key_prefix": "users:",
        "primary_key": "id", "mode": "write-through", "fields": {"score": "scroe"}},
        {"name": "ghosts", "table": "ghosts", "key_prefix": "ghosts:", "primary_key": "id", "mode": "write-through"}]}"#;
    let server = Server::with_mapping(&db, mapping, &[], &[]);
    let mut c = server.conn();
    eventually("schema errors reported", || status(&mut c, "ghosts")["schema"].contains("does not exist"));
    assert!(status(&mut c, "users")["schema"].contains("column \"scroe\" does not exist"));
    assert!(server.log().contains("\"ghosts\" does not exist"));
    let err = redis::cmd("SYNC.STATUS").arg("nope").query::<()>(&mut c).unwrap_err();
    assert!(err.to_string().contains("unknown mapping"), "{err}");
    // The broken mapping's changes wait without holding up the healthy one.
    hset(&mut c, "__{ghosts:1}", &[("name", "boo")]);
    db.client()
        .batch_execute(
            "ALTER TABLE users ADD COLUMN scroe integer; \
             INSERT INTO users (id, username, email, password_hash) VALUES (1, 'u', 'u@x', 'p')",
        )
        .unwrap();
    redis::cmd("CONFIG").arg("SET").arg("pgsync.retry-max-delay-ms").arg("200").query::<()>(&mut c).unwrap();
    hset(&mut c, "__{users:1}", &[("score", "4")]);
    eventually("the healthy mapping syncs", || {
        let n: i64 = db.client().query_one("SELECT count(*) FROM users WHERE scroe = 4", &[]).unwrap().get(0);
        n == 1
    });
    // Still waiting: queued, or taken by a worker that is failing it again.
    let ghosts = status(&mut c, "ghosts");
    let waiting: i64 = ghosts["pending"].parse::<i64>().unwrap() + ghosts["in_flight"].parse::<i64>().unwrap();
    assert_eq!(waiting, 1, "{ghosts:?}");
    // Fixing the table lets the waiting change through.
    db.client().batch_execute("CREATE TABLE ghosts (id int PRIMARY KEY, name text)").unwrap();
    sync_wait(&mut c);
    let name: String = db.client().query_one("SELECT name FROM ghosts WHERE id = 1", &[]).unwrap().get(0);
    assert_eq!(name, "boo");
}

#[test]
fn servers_older_than_7_2_refuse_the_module_cleanly() {
    let old = std::env::var("PGSYNC_OLD_SERVER_BIN").unwrap_or_else(|_| "/usr/bin/redis-server".into());
    let version = Command::new(&old).arg("--version").output();
    let Ok(version) = version else {
        panic!("{old} not found: install Debian's redis-server 7.0 or set PGSYNC_OLD_SERVER_BIN");
    };
    let text = String::from_utf8_lossy(&version.stdout).to_string();
    assert!(text.contains("v=7.0") || text.contains("v=6."), "{old} is not an old server: {text}");
    let mapping = write_mapping(USERS_MAPPING);
    let (status, log) =
        failed_start(&old, &["postgres-url", "postgres://postgres@127.0.0.1/postgres", "mappings", &mapping]);
    assert!(status.code().is_some(), "refused without a crash: {status}");
    assert!(log.contains("needs Redis 7.2+"), "{log}");
}

#[test]
fn info_and_status_cover_every_mapping() {
    let db = test_db(USERS_SQL);
    let server = Server::users(&db, &[]);
    let mut c = server.conn();
    // A write made before the schema check finishes waits (and counts a retry).
    eventually("schema checked", || status(&mut c, "users")["schema"] == "ok");
    hset(&mut c, "__{users:1}", &[("username", "a"), ("email", "a@x"), ("pwhash", "p")]);
    sync_wait(&mut c);
    let info: String = redis::cmd("INFO").arg("pgsync").query(&mut c).unwrap();
    for field in [
        "mode:write-through",
        "pending:0",
        "in_flight:0",
        "synced:1",
        "failed:0",
        "retries:0",
        "lag_ms:0",
        "postgres:up",
        "role:primary",
    ] {
        assert!(info.contains(&format!("pgsync_users_{field}")), "{field} in {info}");
    }
    let all: Vec<redis::Value> = redis::cmd("SYNC.STATUS").query(&mut c).unwrap();
    assert_eq!(all.len(), 2);
    let err = redis::cmd("SYNC.STATUS").arg("a").arg("b").query::<()>(&mut c).unwrap_err();
    assert!(err.to_string().contains("wrong number of arguments"));
    let err = redis::cmd("SYNC.WAIT").arg("soon").query::<()>(&mut c).unwrap_err();
    assert!(err.to_string().contains("timeout-ms"));
}
