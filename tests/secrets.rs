//! Secrets: the Postgres password (in the URL, a file or the environment) never
//! shows in a reply or the log, and the values of a rejected row stay out of the
//! log unless `pgsync.log-values` says otherwise. Runs against a private cluster
//! with password authentication, so the password is really used.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

const ADMIN_PASSWORD: &str = "admin-Pw-4417";
const ROLE: &str = "pgsync_app";

/// A cluster with scram-sha-256 for TCP, a users database, and a role that may
/// write to it with `password`.
fn cluster_with_role(password: &str) -> (PrivatePg, TestDb) {
    let pg =
        PrivatePg::start_with(PgSetup { host_auth: Some(("scram-sha-256", ADMIN_PASSWORD)), ..PgSetup::default() });
    let db = TestDb::on(&pg.admin_url(), USERS_SQL);
    db.client()
        .batch_execute(&format!(
            "CREATE ROLE {ROLE} LOGIN PASSWORD {};
             GRANT ALL ON ALL TABLES IN SCHEMA public TO {ROLE};
             GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {ROLE};",
            literal(password)
        ))
        .expect("create role");
    (pg, db)
}

/// `text` as an SQL string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn mapping_file() -> String {
    let file = std::env::temp_dir().join(format!("{}.json", unique("pgsync_mapping")));
    std::fs::write(&file, USERS_MAPPING).expect("write mapping file");
    file.display().to_string()
}

/// Any reply as text, nested arrays and maps flattened.
fn text(value: &redis::Value) -> String {
    match value {
        redis::Value::Array(items) | redis::Value::Set(items) => items.iter().map(text).collect::<Vec<_>>().join("\n"),
        redis::Value::Map(pairs) => pairs.iter().map(|(k, v)| format!("{}\n{}", text(k), text(v))).collect(),
        other => redis::from_redis_value::<String>(other).unwrap_or_else(|_| format!("{other:?}")),
    }
}

fn reply(c: &mut redis::Connection, args: &[&str]) -> String {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    text(&cmd.query::<redis::Value>(c).unwrap_or_else(|e| panic!("{args:?}: {e}")))
}

/// The replies an operator (or anyone with read access) can get.
const INSPECTIONS: &[&[&str]] = &[
    &["CONFIG", "GET", "*"],
    &["CONFIG", "GET", "pgsync.postgres-url"],
    &["SLOWLOG", "GET", "1000"],
    &["INFO", "everything"],
    &["SYNC.STATUS"],
    &["CLIENT", "LIST"],
];

/// Runs every inspection while MONITOR watches; returns the replies and what
/// MONITOR printed.
fn inspect(server: &Server) -> String {
    let mut monitor = TcpStream::connect(("127.0.0.1", server.port)).expect("connect for MONITOR");
    monitor.set_read_timeout(Some(PATIENCE)).expect("read timeout");
    monitor.write_all(b"MONITOR\r\n").expect("MONITOR");
    let mut lines = BufReader::new(monitor);
    let mut ok = String::new();
    lines.read_line(&mut ok).expect("MONITOR reply");
    assert_eq!(ok.trim(), "+OK");
    let mut c = server.conn();
    let mut seen: String = INSPECTIONS.iter().map(|args| reply(&mut c, args) + "\n").collect();
    let marker = unique("end_of_inspection");
    reply(&mut c, &["ECHO", &marker]);
    for line in lines.lines() {
        let line = line.expect("MONITOR output");
        seen.push_str(&line);
        seen.push('\n');
        if line.contains(&marker) {
            break;
        }
    }
    seen
}

fn wait_up(server: &Server) {
    let mut c = server.conn();
    eventually("postgres up", || status(&mut c, "users")["postgres"] == "up");
}

/// Writes a row Postgres rejects (no email: NOT NULL) whose password hash is
/// `value`; waits until it is dead-lettered.
fn reject_row(server: &Server, id: i32, value: &str) {
    let mut c = server.conn();
    hset(&mut c, &format!("__{{users:{id}}}"), &[("username", &format!("u{id}")), ("pwhash", value)]);
    sync_wait(&mut c);
}

/// Also runs [`every_form_connects_and_shows_nowhere`] on the same cluster
/// (starting one takes seconds).
#[test]
fn password_in_the_url_and_rejected_values_stay_out_of_replies_and_log() {
    let password = unique("Url-Secret");
    let (pg, db) = cluster_with_role(&password);
    let url = format!("postgres://{ROLE}:{password}@127.0.0.1:{}/{}", pg.port, db.name);
    let mappings = mapping_file();
    let server = Server::start(
        &[("postgres-url", &url), ("mappings", &mappings)],
        &["--slowlog-log-slower-than", "0", "--slowlog-max-len", "10000"],
    );
    wait_up(&server);
    let mut c = server.conn();
    hset(&mut c, "__{users:1}", &[("username", "ok"), ("email", "ok@example.com"), ("pwhash", "x")]);
    sync_wait(&mut c);
    assert_eq!(db.client().query("SELECT 1 FROM users WHERE id = 1", &[]).expect("select").len(), 1);

    let shown = reply(&mut c, &["CONFIG", "GET", "pgsync.postgres-url"]);
    assert!(shown.contains(&format!("postgres://{ROLE}:***@127.0.0.1")), "CONFIG GET shows the URL redacted: {shown}");

    let row_secret = unique("RowSecret");
    reject_row(&server, 2, &row_secret);
    let failed = reply(&mut c, &["SYNC.FAILED"]);
    assert!(failed.contains(&row_secret), "the dead-letter entry keeps the full error: {failed}");
    assert!(failed.contains("null value in column"), "{failed}");

    let seen = inspect(&server);
    assert!(seen.contains("SYNC.STATUS") || seen.contains("sync.status"), "MONITOR saw the inspections:\n{seen}");
    assert!(!seen.contains(&password), "the Postgres password shows in a reply or MONITOR:\n{seen}");
    // (SLOWLOG and MONITOR show the data commands, the writer's HSET of the value
    // included: that is Redis's business. The module's own outputs must not.)
    let status_and_info = reply(&mut c, &["SYNC.STATUS"]) + &reply(&mut c, &["INFO", "pgsync"]);
    assert!(status_and_info.contains("row 2 rejected"), "last_error names the rejection: {status_and_info}");
    assert!(!status_and_info.contains(&row_secret), "a rejected value in STATUS/INFO:\n{status_and_info}");
    let log = server.log();
    assert!(log.contains("row 2 rejected") && log.contains("null value in column"), "the rejection is logged:\n{log}");
    assert!(!log.contains(&password), "the password is in the log:\n{log}");
    assert!(!log.contains(&row_secret), "a rejected value is in the log:\n{log}");

    // pgsync.log-values yes puts them back, for debugging.
    let _: () = redis::cmd("CONFIG").arg("SET").arg("pgsync.log-values").arg("yes").query(&mut c).expect("CONFIG SET");
    let logged_secret = unique("LoggedValue");
    reject_row(&server, 3, &logged_secret);
    assert!(server.log().contains(&logged_secret), "log-values yes logs the failing row");
    drop(server);
    every_form_connects_and_shows_nowhere(&pg, &db, &mappings);
}

#[test]
fn password_from_a_file_or_the_environment_in_that_order() {
    let password = unique("File-Secret");
    let (pg, db) = cluster_with_role(&password);
    let mappings = mapping_file();
    let dir = TempDir::new("pgsync_pw");
    let file = dir.0.join("pgpass");
    std::fs::write(&file, format!("{password}\n")).expect("write password file");
    let file = file.display().to_string();
    let url = |pw: &str| format!("postgres://{ROLE}{pw}@127.0.0.1:{}/{}", pg.port, db.name);
    let env = "PGSYNC_POSTGRES_PASSWORD";

    // The file beats the environment, which beats the URL.
    let wrong_url = url(":wrong-in-url");
    let args = [("postgres-url", wrong_url.as_str()), ("mappings", &mappings), ("postgres-password-file", &file)];
    let server = Server::start_with_env(&args, &[], &[(env, "wrong-in-env")]);
    wait_up(&server);
    let seen = inspect(&server) + &reply(&mut server.conn(), &["MODULE", "LIST"]);
    assert!(!seen.contains(&password), "the password shows somewhere:\n{seen}");
    assert!(!server.log().contains(&password));
    drop(server);

    let args = [("postgres-url", wrong_url.as_str()), ("mappings", &mappings)];
    let server = Server::start_with_env(&args, &[], &[(env, &password)]);
    wait_up(&server);
    let seen = inspect(&server) + &reply(&mut server.conn(), &["MODULE", "LIST"]);
    assert!(!seen.contains(&password), "the password shows somewhere:\n{seen}");
    drop(server);

    // Without file or environment the URL's own password is used: here a wrong
    // one, and the error says so.
    let server = Server::start(&args, &[]);
    let mut c = server.conn();
    eventually("postgres down", || status(&mut c, "users")["postgres"] == "down");
    let error = status(&mut c, "users")["postgres_error"].clone();
    assert!(error.contains("password authentication failed"), "a clear error: {error}");
}

/// Every byte but the unreserved ones as `%XX`.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A password of random printable characters, after `/@ :?#%'"\` and a space.
fn generated_password() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    let random: String = (0..16).map(|_| char::from(rng.gen_range(0x20u8..0x7f))).collect();
    format!("/@ :?#%'\"\\ {random}")
}

/// Generated passwords in each form the connection string takes (unencoded in
/// the URL's user info, percent-encoded, `?password=`, key=value quoted), given
/// to [`ROLE`] in turn: each really connects (the cluster asks for SCRAM), and
/// shows in no reply, error reply or log line. The rules are unit-tested on many
/// more passwords (`src/pg/redaction_property.rs`); this checks a real server's
/// outputs.
fn every_form_connects_and_shows_nowhere(pg: &PrivatePg, db: &TestDb, mappings: &str) {
    let at = format!("127.0.0.1:{}/{}", pg.port, db.name);
    // Unencoded, a password is taken only when the URL reads one way (an `@`
    // followed by a space cannot start a host), and `%` is kept only when no two
    // hex digits follow: so this one is written by hand.
    let raw = format!("Pw{}", unique("").replace(['_', '-'], "")) + "/@ :?#%'\"\\ x";
    let forms: Vec<(String, String)> = vec![
        (format!("postgres://{ROLE}:{raw}@{at}"), raw.clone()),
        {
            let pw = generated_password();
            (format!("postgresql://{ROLE}:{}@{at}", percent_encode(&pw)), pw)
        },
        {
            let pw = generated_password();
            (format!("postgres://{at}?user={ROLE}&password={}", percent_encode(&pw)), pw)
        },
        {
            let pw = generated_password();
            let quoted = pw.replace('\\', "\\\\").replace('\'', "\\'");
            (format!("host=127.0.0.1 port={} dbname={} user={ROLE} password='{quoted}'", pg.port, db.name), pw)
        },
    ];
    for (id, (url, password)) in (10..).zip(forms) {
        db.client().batch_execute(&format!("ALTER ROLE {ROLE} PASSWORD {}", literal(&password))).expect("set password");
        let server = Server::start(&[("postgres-url", &url), ("mappings", mappings)], &[]);
        wait_up(&server);
        let mut c = server.conn();
        hset(
            &mut c,
            &format!("__{{users:{id}}}"),
            &[("username", &format!("u{id}")), ("email", &format!("e{id}@x")), ("pwhash", "h")],
        );
        sync_wait(&mut c);
        let written = db.client().query("SELECT 1 FROM users WHERE id = $1", &[&id]).expect("select");
        assert_eq!(written.len(), 1, "{url}: the password connects and the row is written");
        let shown = reply(&mut c, &["CONFIG", "GET", "pgsync.postgres-url"]);
        assert!(shown.contains("***"), "CONFIG GET shows the string, redacted: {shown}");

        let mut seen = inspect(&server);
        let errors: &[&[&str]] = &[
            &["CONFIG", "SET", "pgsync.postgres-url", &url],
            &["SYNC.STATUS", "no-such-mapping"],
            // A row Postgres rejects (the username is taken).
            &[
                "SYNC.HSET",
                &format!("users:{}", id + 100),
                "username",
                &format!("u{id}"),
                "email",
                &format!("f{id}@x"),
                "pwhash",
                "h",
            ],
        ];
        for args in errors {
            let mut cmd = redis::cmd(args[0]);
            cmd.arg(&args[1..]);
            let error = cmd.query::<redis::Value>(&mut c).expect_err("an error reply");
            seen.push_str(&error.to_string());
        }
        assert!(seen.contains("Postgres rejected the row"), "{seen}");
        seen.push_str(&server.log());
        for secret in [password.clone(), percent_encode(&password)] {
            assert!(!seen.contains(&secret), "the password of {url:?} shows:\n{seen}");
        }
    }
}
