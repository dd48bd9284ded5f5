//! ACL: every SYNC.* command's categories and docs, and the key checks each one
//! makes against the caller's user. Two mappings: `users` (the seed's, prefix
//! `users:`) and `notes` (prefix `app:notes:`), so a user confined to `~app:*`
//! owns one mapping and not the other.

mod common;

use common::*;
use redis::Value;
use std::collections::{BTreeSet, HashMap};

const SCHEMA: &str = "CREATE TABLE notes (id integer PRIMARY KEY, body text, n integer CHECK (n >= 0));";

const MAPPINGS: &str = r#"{"mappings": [
  {"name": "users", "table": "users", "key_prefix": "users:", "primary_key": "id", "mode": "write-through",
   "fields": {"username": "username", "email": "email", "pwhash": "password_hash", "dob": "date_of_birth"}},
  {"name": "notes", "table": "notes", "key_prefix": "app:notes:", "primary_key": "id", "mode": "write-through",
   "fields": {"body": "body", "n": "n"}}]}"#;

const SECRET: &str = "pwhash-of-user-1";

/// The confined application user of the issue.
const APP: &[&str] = &["app", "on", ">pw", "~app:*", "+@all", "-@dangerous", "-@admin"];
/// An operator of the app's mapping: every command, but only its keys (rows and
/// staging keys) and the dead letters.
const OPS: &[&str] = &["ops", "on", ">pw", "~app:*", "~__{app:*", "~pgsync:{deadletter}", "+@all"];
/// May write some rows of `users` (ids starting with 1) but only read their staging keys.
const HALF: &[&str] = &["half", "on", ">pw", "~users:1*", "%R~__{users:1*", "+@all"];

/// A server with both mappings, the three users, two dead letters (one per
/// mapping, the users one carrying a password hash) and a `users:` key without a row.
fn setup() -> (TestDb, Server) {
    let db = test_db(&format!("{USERS_SQL}\n{SCHEMA}"));
    let server = Server::with_mapping(&db, MAPPINGS, &[], &[]);
    let mut admin = server.conn();
    for user in [APP, OPS, HALF] {
        let _: () = redis::cmd("ACL").arg("SETUSER").arg(user).query(&mut admin).expect("ACL SETUSER");
    }
    // Rejections only Postgres can make (a value of the wrong type would be
    // refused at write time): a missing NOT NULL column, a CHECK.
    let no_email = [("username", "u1"), ("pwhash", SECRET), ("dob", "2000-01-01")];
    hset(&mut admin, "__{users:1}", &no_email);
    hset(&mut admin, "__{app:notes:1}", &[("body", "hi"), ("n", "-1")]);
    hset(&mut admin, "users:99", &[("username", "cached only")]);
    sync_wait(&mut admin);
    assert_eq!(failed(&mut admin, &[]).len(), 2, "both writes are dead letters");
    (db, server)
}

fn login(server: &Server, user: &str) -> redis::Connection {
    redis::Client::open(format!("redis://{user}:pw@127.0.0.1:{}/", server.port))
        .and_then(|c| c.get_connection())
        .unwrap_or_else(|e| panic!("log in as {user}: {e}"))
}

fn run(c: &mut redis::Connection, args: &[&str]) -> redis::RedisResult<Value> {
    redis::cmd(args[0]).arg(&args[1..]).query(c)
}

/// Runs a command that must be refused with NOPERM; returns the error text.
fn refused(c: &mut redis::Connection, args: &[&str]) -> String {
    match run(c, args) {
        Err(e) if e.code() == Some("NOPERM") => e.to_string(),
        other => panic!("{args:?} should be refused with NOPERM, got {other:?}"),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::Int(n) => n.to_string(),
        other => redis::from_redis_value(other).unwrap_or_default(),
    }
}

/// A flat name/value reply as a map.
fn pairs(v: &Value) -> HashMap<String, Value> {
    let Value::Array(items) = v else { panic!("not an array: {v:?}") };
    items.chunks(2).map(|p| (text(&p[0]), p[1].clone())).collect()
}

/// SYNC.FAILED's entries, each as field → text.
fn failed(c: &mut redis::Connection, args: &[&str]) -> Vec<HashMap<String, String>> {
    let reply: Vec<Value> = redis::cmd("SYNC.FAILED").arg(args).query(c).expect("SYNC.FAILED");
    reply.iter().map(|e| pairs(e).iter().map(|(k, v)| (k.clone(), text(v))).collect()).collect()
}

fn entry_of(c: &mut redis::Connection, mapping: &str) -> String {
    failed(c, &[mapping])[0]["entry"].clone()
}

#[test]
fn command_info_shows_the_categories_and_command_docs_describe_every_command() {
    let db = test_db(&format!("{USERS_SQL}\n{SCHEMA}"));
    let server = Server::with_mapping(&db, MAPPINGS, &[], &[]);
    let mut c = server.conn();
    let expected: &[(&str, &[&str])] = &[
        ("sync.hset", &["@write", "@hash", "@slow", "@blocking", "@pgsync"]),
        ("sync.jsonset", &["@write", "@slow", "@blocking", "@pgsync"]),
        ("sync.wait", &["@read", "@slow", "@blocking", "@pgsync"]),
        ("sync.status", &["@read", "@slow", "@pgsync"]),
        ("sync.failed", &["@read", "@slow", "@pgsync"]),
        ("sync.reload", &["@write", "@slow", "@blocking", "@dangerous", "@pgsync"]),
        ("sync.retry", &["@write", "@slow", "@dangerous", "@pgsync"]),
        ("sync.discard", &["@write", "@slow", "@dangerous", "@pgsync"]),
    ];
    for (command, categories) in expected {
        let info: Vec<Value> = redis::cmd("COMMAND").arg("INFO").arg(*command).query(&mut c).expect("COMMAND INFO");
        let Value::Array(fields) = &info[0] else { panic!("{command} unknown: {info:?}") };
        let Value::Array(shown) = &fields[6] else { panic!("no categories: {fields:?}") };
        let shown: BTreeSet<String> = shown.iter().map(text).collect();
        let wanted: BTreeSet<String> = categories.iter().map(|s| s.to_string()).collect();
        assert_eq!(shown, wanted, "categories of {command}");

        let docs: Vec<Value> = redis::cmd("COMMAND").arg("DOCS").arg(*command).query(&mut c).expect("COMMAND DOCS");
        assert_eq!(docs.len(), 2, "COMMAND DOCS {command} is empty");
        let doc = pairs(&docs[1]);
        for field in ["summary", "since", "complexity"] {
            assert!(!text(&doc[field]).is_empty(), "{command} has no {field}");
        }
        assert_eq!(text(&doc["module"]), "pgsync");
        let has_arguments = matches!(doc.get("arguments"), Some(Value::Array(a)) if !a.is_empty());
        assert!(has_arguments, "{command} documents no arguments: {doc:?}");
    }
    let categories: Vec<String> = redis::cmd("ACL").arg("CAT").query(&mut c).unwrap();
    assert!(categories.contains(&"pgsync".to_string()), "{categories:?}");
    // The declared arity is enforced by the server before the module runs.
    let err = run(&mut c, &["SYNC.RETRY"]).unwrap_err();
    assert!(err.to_string().contains("wrong number of arguments"), "{err}");
}

#[test]
fn a_confined_user_cannot_reach_other_rows_dead_letters_or_prefixes() {
    let (db, server) = setup();
    let mut app = login(&server, "app");

    // SYNC.HSET: another mapping's keys, as row or staging key, are refused; so
    // are the app's own rows, whose staging keys `__{app:...}` lie outside `~app:*`.
    refused(&mut app, &["SYNC.HSET", "users:7", "username", "x"]);
    refused(&mut app, &["SYNC.HSET", "__{users:7}", "username", "x"]);
    let error = refused(&mut app, &["SYNC.HSET", "app:notes:2", "body", "hello"]);
    assert!(error.contains("__{app:notes:2}"), "{error}");

    // SYNC.FAILED: the dead-letter hash is not the app's, so nothing (no password hash) is shown.
    let error = refused(&mut app, &["SYNC.FAILED"]);
    assert!(!error.contains(SECRET));
    refused(&mut app, &["SYNC.FAILED", "notes"]);

    // SYNC.RETRY, SYNC.DISCARD and SYNC.RELOAD are @dangerous.
    for command in
        [&["SYNC.DISCARD", "ALL"][..], &["SYNC.RETRY", "ALL"], &["SYNC.RELOAD", "FLUSH"], &["SYNC.RELOAD", "notes"]]
    {
        let error = refused(&mut app, command);
        assert!(error.contains("no permissions to run"), "{error}");
    }

    // Read-only commands still work.
    assert!(matches!(run(&mut app, &["SYNC.STATUS"]), Ok(Value::Array(_))));
    assert_eq!(run(&mut app, &["SYNC.WAIT", "60000"]).unwrap(), Value::Int(0));

    // Nothing was dropped, reloaded or deleted on the app's behalf.
    let mut admin = server.conn();
    assert_eq!(failed(&mut admin, &[]).len(), 2);
    assert!(exists(&mut admin, "users:99"));
    assert!(!exists(&mut admin, "__{app:notes:2}") && !exists(&mut admin, "app:notes:2"));
    let rows: i64 = db.client().query_one("SELECT count(*) FROM notes", &[]).unwrap().get(0);
    assert_eq!(rows, 0);
}

#[test]
fn key_checks_hold_for_users_allowed_every_command() {
    let (db, server) = setup();
    let mut ops = login(&server, "ops");
    let mut admin = server.conn();
    let users_entry = entry_of(&mut admin, "users");

    // SYNC.HSET of the caller's own rows works.
    let added: i64 = redis::cmd("SYNC.HSET").arg(&["app:notes:2", "body", "hello", "n", "5"]).query(&mut ops).unwrap();
    assert_eq!(added, 2);
    let n: i32 = db.client().query_one("SELECT n FROM notes WHERE id = 2", &[]).unwrap().get(0);
    assert_eq!(n, 5);

    // SYNC.FAILED shows only entries whose row the caller may read.
    let shown = failed(&mut ops, &[]);
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert_eq!(shown[0]["mapping"], "notes");
    assert!(failed(&mut ops, &["users"]).is_empty());

    // A named entry of another's row is refused; ALL passes over it.
    let error = refused(&mut ops, &["SYNC.RETRY", &users_entry]);
    assert!(error.contains("users:1"), "{error}");
    refused(&mut ops, &["SYNC.DISCARD", &users_entry]);
    assert_eq!(run(&mut ops, &["SYNC.DISCARD", "ALL"]).unwrap(), Value::Int(1));
    let left = failed(&mut admin, &[]);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["entry"], users_entry);

    // SYNC.RELOAD needs write access to every key of each mapping's prefix.
    let error = refused(&mut ops, &["SYNC.RELOAD", "users", "FLUSH"]);
    assert!(error.contains("users:*"), "{error}");
    refused(&mut ops, &["SYNC.RELOAD"]);
    assert!(exists(&mut admin, "users:99"), "a refused FLUSH deleted a key");
    let log: Vec<Value> = redis::cmd("ACL").arg("LOG").query(&mut admin).unwrap();
    let logged = log.iter().map(pairs).any(|e| text(&e["username"]) == "ops" && text(&e["object"]) == "users:*");
    assert!(logged, "the refusal is in ACL LOG: {log:?}");
    db.client().execute("INSERT INTO notes VALUES (3, 'from pg', 3)", &[]).unwrap();
    assert_eq!(run(&mut ops, &["SYNC.RELOAD", "notes"]).unwrap(), Value::Int(2));
    assert_eq!(hgetall(&mut admin, "app:notes:3")["body"], "from pg");

    // Writing a row is not enough when the staging key is read-only to the caller.
    let mut half = login(&server, "half");
    let error = refused(&mut half, &["SYNC.HSET", "users:15", "username", "x"]);
    assert!(error.contains("__{users:15}"), "{error}");
    assert!(!exists(&mut admin, "__{users:15}"));
    // ... and some keys of a prefix are not all of them.
    let error = refused(&mut half, &["SYNC.RELOAD", "users"]);
    assert!(error.contains("users:*"), "{error}");

    // A fully privileged user sees and acts on everything.
    let all = failed(&mut admin, &[]);
    assert!(all[0]["fields"].contains(SECRET), "{all:?}");
    assert_eq!(run(&mut admin, &["SYNC.RETRY", &users_entry]).unwrap(), Value::Int(1));
    sync_wait(&mut admin);
    assert_eq!(failed(&mut admin, &["users"]).len(), 1, "the retried row is rejected again");
    assert_eq!(run(&mut admin, &["SYNC.DISCARD", "ALL"]).unwrap(), Value::Int(1));
    assert_eq!(run(&mut admin, &["SYNC.RELOAD", "FLUSH"]).unwrap(), Value::Int(2));
    assert!(!exists(&mut admin, "users:99"), "FLUSH removes the key without a row");
}

#[test]
fn a_routed_write_is_checked_against_the_callers_rights_for_the_command_itself() {
    let (db, server) = setup();
    let mut admin = server.conn();
    let user = ["nodel", "on", ">pw", "~*", "+@all", "-hdel", "-hincrby"];
    let _: () = redis::cmd("ACL").arg("SETUSER").arg(&user).query(&mut admin).unwrap();
    let mut nodel = login(&server, "nodel");
    // HSET is allowed: it goes through SYNC.WRITE and lands.
    let added: i64 = redis::cmd("HSET").arg(&["__{app:notes:5}", "body", "kept", "n", "1"]).query(&mut nodel).unwrap();
    assert_eq!(added, 2);
    sync_wait(&mut admin);
    // HDEL and HINCRBY are not, though the wrappers are in @hash: refused, logged,
    // and nothing changes in Redis or Postgres.
    let error = refused(&mut nodel, &["HDEL", "app:notes:5", "body"]);
    assert!(error.contains("hdel"), "{error}");
    let error = refused(&mut nodel, &["HINCRBY", "__{app:notes:5}", "n", "1"]);
    assert!(error.contains("hincrby"), "{error}");
    assert_eq!(hgetall(&mut admin, "app:notes:5")["body"], "kept");
    sync_wait(&mut admin);
    let n: i32 = db.client().query_one("SELECT n FROM notes WHERE id = 5", &[]).unwrap().get(0);
    assert_eq!(n, 1);
    let log: Vec<Value> = redis::cmd("ACL").arg("LOG").query(&mut admin).unwrap();
    let logged = log.iter().map(pairs).any(|e| text(&e["username"]) == "nodel" && text(&e["object"]) == "hincrby");
    assert!(logged, "the refusal is in ACL LOG: {log:?}");
}
