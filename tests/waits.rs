//! Blocked `SYNC.WAIT` and `SYNC.HSET` clients: no thread per call (abandoned
//! calls leave the server's thread count flat), timeouts that reply, and replies
//! once the rows land. Postgres is a private cluster, stopped for real.

mod common;

use common::*;
use std::io::Write;
use std::net::TcpStream;

/// A field of `INFO <section>`.
fn info(c: &mut redis::Connection, section: &str, field: &str) -> String {
    let text: String = redis::cmd("INFO").arg(section).query(c).expect("INFO");
    let prefix = format!("{field}:");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {field} in INFO {section}"))
        .trim()
        .to_string()
}

/// The server process's thread count, from /proc.
fn threads(c: &mut redis::Connection) -> usize {
    let pid = info(c, "server", "process_id");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|n| n.trim().parse().ok()).expect("Threads: line")
}

fn blocked_clients(c: &mut redis::Connection) -> usize {
    info(c, "clients", "blocked_clients").parse().expect("blocked_clients")
}

/// A command in RESP, to send on a raw socket without reading the reply.
fn resp(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend(format!("${}\r\n{a}\r\n", a.len()).into_bytes());
    }
    out
}

/// Opens `n` connections that each send `command` and stay blocked in it; then
/// they disconnect without reading a reply.
fn block_and_abandon(server: &Server, c: &mut redis::Connection, n: usize, command: impl Fn(usize) -> Vec<u8>) {
    let before = blocked_clients(c);
    let sockets: Vec<TcpStream> = (0..n)
        .map(|i| {
            let mut s = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
            s.write_all(&command(i)).expect("send");
            s
        })
        .collect();
    eventually("every client blocked", || blocked_clients(c) == before + n);
    drop(sockets);
    eventually("the abandoned clients are gone", || blocked_clients(c) == before);
}

fn user(id: u32) -> Vec<(String, String)> {
    vec![("username".into(), format!("user{id}")), ("email".into(), format!("{id}@x")), ("pwhash".into(), "p".into())]
}

fn sync_hset(c: &mut redis::Connection, id: u32) -> redis::RedisResult<i64> {
    let mut cmd = redis::cmd("SYNC.HSET");
    cmd.arg(format!("users:{id}"));
    for (f, v) in user(id) {
        cmd.arg(f).arg(v);
    }
    cmd.query(c)
}

fn pg_users(db: &TestDb) -> i64 {
    db.client().query_one("SELECT count(*) FROM users", &[]).expect("count users").get(0)
}

fn waiting(c: &mut redis::Connection) -> i64 {
    let st = status(c, "users");
    st["pending"].parse::<i64>().unwrap() + st["in_flight"].parse::<i64>().unwrap()
}

#[test]
fn abandoned_waits_leave_no_thread_behind() {
    let pg = PrivatePg::start();
    let db = TestDb::on(&pg.admin_url(), USERS_SQL);
    let server = Server::users(&db, &[("retry-max-delay-ms", "200"), ("hset-timeout-ms", "0")]);
    let mut c = server.conn();
    assert_eq!(sync_hset(&mut c, 1).unwrap(), 3);
    pg.down();
    hset(&mut c, "__{users:2}", &user(2).iter().map(|(f, v)| (f.as_str(), v.as_str())).collect::<Vec<_>>());
    let before = threads(&mut c);

    for _ in 0..10 {
        block_and_abandon(&server, &mut c, 200, |_| resp(&["SYNC.WAIT"]));
    }
    block_and_abandon(&server, &mut c, 200, |i| {
        let id = (1000 + i).to_string();
        let key = format!("users:{id}");
        let (name, email) = (format!("user{id}"), format!("{id}@x"));
        resp(&["SYNC.HSET", &key, "username", &name, "email", &email, "pwhash", "p"])
    });

    let after = threads(&mut c);
    println!("server threads: {before} before, {after} after 2,200 abandoned calls");
    assert!(after <= before + 4, "2,000 abandoned SYNC.WAIT calls left threads: {before} before, {after} after");
    assert_eq!(info(&mut c, "clients", "connected_clients"), "1");

    // The abandoned SYNC.HSET changes are still queued and land; nothing is answered twice.
    assert_eq!(waiting(&mut c), 201);
    pg.up();
    sync_wait(&mut c);
    assert_eq!(pg_users(&db), 202);
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn sync_wait_replies_the_pending_count_at_its_deadline_and_0_once_rows_land() {
    let pg = PrivatePg::start();
    let db = TestDb::on(&pg.admin_url(), USERS_SQL);
    let server = Server::users(&db, &[("retry-max-delay-ms", "200")]);
    let mut c = server.conn();
    pg.down();
    for id in 1..=3 {
        hset(
            &mut c,
            &format!("__{{users:{id}}}"),
            &[("username", &format!("u{id}")), ("email", &format!("{id}@x")), ("pwhash", "p")],
        );
    }
    let left: i64 = redis::cmd("SYNC.WAIT").arg(300).query(&mut c).unwrap();
    assert_eq!(left, 3, "the deadline passed with three rows pending");

    let port = server.port;
    let waiter = std::thread::spawn(move || redis::cmd("SYNC.WAIT").query::<i64>(&mut connect(port)));
    eventually("SYNC.WAIT blocked", || blocked_clients(&mut c) == 1);
    pg.up();
    assert_eq!(waiter.join().unwrap().unwrap(), 0);
    assert_eq!(pg_users(&db), 3, "SYNC.WAIT replied before the rows were in Postgres");
}

#[test]
fn sync_hset_times_out_with_a_clear_error_and_the_change_still_lands() {
    let pg = PrivatePg::start();
    let db = TestDb::on(&pg.admin_url(), USERS_SQL);
    let server = Server::users(&db, &[("retry-max-delay-ms", "200")]);
    let mut c = server.conn();
    let default: Vec<String> = redis::cmd("CONFIG").arg("GET").arg("pgsync.hset-timeout-ms").query(&mut c).unwrap();
    assert_eq!(default, ["pgsync.hset-timeout-ms", "10000"]);
    pg.down();

    let _: () = redis::cmd("CONFIG").arg("SET").arg("pgsync.hset-timeout-ms").arg(300).query(&mut c).unwrap();
    let err = sync_hset(&mut c, 1).unwrap_err().to_string();
    assert!(err.contains("not committed yet after 300 ms") && err.contains("stays queued"), "unexpected error: {err}");
    assert_eq!(waiting(&mut c), 1, "the change stays queued");

    // 0 waits as long as it takes.
    let _: () = redis::cmd("CONFIG").arg("SET").arg("pgsync.hset-timeout-ms").arg(0).query(&mut c).unwrap();
    let port = server.port;
    let blocked = std::thread::spawn(move || sync_hset(&mut connect(port), 2));
    eventually("SYNC.HSET blocked", || blocked_clients(&mut c) == 1);
    pg.up();
    assert_eq!(blocked.join().unwrap().unwrap(), 3);
    sync_wait(&mut c);
    assert_eq!(pg_users(&db), 2, "the change that timed out landed too");
    assert_eq!(hgetall(&mut c, "users:1")["username"], "user1");
}
