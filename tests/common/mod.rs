//! Shared test harness: a real redis-server/valkey-server with the built module
//! loaded (killed on drop), a fresh Postgres database per test (dropped on drop),
//! and a private Postgres cluster for tests that stop the database.
#![allow(dead_code)]

pub mod cluster;
pub mod items;
pub mod json;
pub mod kafka;
pub mod private_pg;
pub mod scratch;
pub mod tls;

#[allow(unused_imports)]
pub use private_pg::{PgSetup, PrivatePg};
pub use scratch::{free_port, unique, TempDir, TestDb};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The users table of the seed scenario.
pub const USERS_SQL: &str = include_str!("../../examples/schema.sql");

/// The seed scenario's mapping, write-through.
pub const USERS_MAPPING: &str = include_str!("../../examples/pgsync.json");

/// Upper bound for anything the tests wait for; generous because the machines are shared.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The Postgres server the shared test databases live in.
pub fn admin_url() -> String {
    std::env::var("PGSYNC_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A new database on the shared Postgres with `schema` applied.
pub fn test_db(schema: &str) -> TestDb {
    TestDb::on(&admin_url(), schema)
}

/// The server binary under test: `PGSYNC_SERVER_BIN`, else `valkey-server`.
pub fn server_bin() -> String {
    std::env::var("PGSYNC_SERVER_BIN").unwrap_or_else(|_| "valkey-server".into())
}

/// The module built by cargo next to the test binary.
pub fn module_path() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join("libredis_pgsync.so");
    assert!(path.exists(), "{} is missing: run `cargo build` first", path.display());
    path
}

fn try_connect(port: u16) -> redis::RedisResult<redis::Connection> {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))?.get_connection()
}

/// A new connection to the server on `port` (for writer threads that cannot
/// borrow the [`Server`]).
pub fn connect(port: u16) -> redis::Connection {
    try_connect(port).expect("connect to server")
}

/// RedisJSON's `rejson.so`, as `scripts/install-deps.sh` puts it:
/// `PGSYNC_REJSON`, else `/usr/local/lib/redis-pgsync/rejson.so`.
pub fn rejson_path() -> PathBuf {
    let path = PathBuf::from(
        std::env::var("PGSYNC_REJSON").unwrap_or_else(|_| "/usr/local/lib/redis-pgsync/rejson.so".into()),
    );
    assert!(path.exists(), "{} is missing: run scripts/install-deps.sh", path.display());
    path
}

/// Writes `mapping` to a new file under the temporary directory; returns its path.
pub fn write_mapping(mapping: &str) -> String {
    let file = std::env::temp_dir().join(format!("{}.json", unique("pgsync_mapping")));
    std::fs::write(&file, mapping).expect("write mapping file");
    file.display().to_string()
}

/// A running server with the module loaded, killed on drop.
pub struct Server {
    pub dir: TempDir,
    pub port: u16,
    child: Option<Child>,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Server {
    /// Starts a server with the module configured by `module_args` (name, value pairs)
    /// and extra server `args`; panics if it does not answer PING in time.
    pub fn start(module_args: &[(&str, &str)], args: &[&str]) -> Server {
        Self::start_with_env(module_args, args, &[])
    }

    /// As [`Server::start`], with extra environment variables for the server.
    pub fn start_with_env(module_args: &[(&str, &str)], args: &[&str], env: &[(&str, &str)]) -> Server {
        Self::start_after(&[], module_args, args, env)
    }

    /// As [`Server::start_with_env`], with the modules `before` loaded ahead of
    /// ours (RedisJSON, whose commands our load checks for).
    pub fn start_after(
        before: &[PathBuf],
        module_args: &[(&str, &str)],
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let dir = TempDir::new("pgsync_srv");
        let mut all: Vec<String> = vec![
            "--port".into(),
            free_port().to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--dir".into(),
            dir.0.display().to_string(),
            "--save".into(),
            "".into(),
            "--logfile".into(),
            "server.log".into(),
        ];
        for module in before.iter().cloned().chain([module_path()]) {
            all.extend(["--loadmodule".into(), module.display().to_string()]);
        }
        for (name, value) in module_args {
            all.push(name.to_string());
            all.push(value.to_string());
        }
        all.extend(args.iter().map(|a| a.to_string()));
        let port = all[1].parse().expect("port");
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut server = Server { dir, port, child: None, args: all, env };
        server.spawn();
        server
    }

    /// Starts a server on `db` with the users mapping and `extra` module settings.
    pub fn users(db: &TestDb, extra: &[(&str, &str)]) -> Server {
        Self::with_mapping(db, USERS_MAPPING, extra, &[])
    }

    /// Starts a server on `db` with a mapping file holding `mapping`.
    pub fn with_mapping(db: &TestDb, mapping: &str, extra: &[(&str, &str)], args: &[&str]) -> Server {
        Self::with_mapping_after(&[], db, mapping, extra, args)
    }

    /// As [`Server::with_mapping`], with RedisJSON loaded before our module.
    pub fn with_mapping_and_rejson(db: &TestDb, mapping: &str, extra: &[(&str, &str)], args: &[&str]) -> Server {
        Self::with_mapping_after(&[rejson_path()], db, mapping, extra, args)
    }

    fn with_mapping_after(
        before: &[PathBuf],
        db: &TestDb,
        mapping: &str,
        extra: &[(&str, &str)],
        args: &[&str],
    ) -> Server {
        let file = write_mapping(mapping);
        let mut module_args = vec![("postgres-url", db.url.as_str()), ("mappings", file.as_str())];
        module_args.extend_from_slice(extra);
        Self::start_after(before, &module_args, args, &[])
    }

    fn spawn(&mut self) {
        let child = Command::new(server_bin())
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", server_bin()));
        let pid = child.id();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // Another process (a parallel test, a benchmark) may have taken the
            // port between `free_port` and the bind: only our own server counts.
            // INFO answers while the dataset loads; PING waits for it.
            if let Ok(mut c) = self.try_connection() {
                let info: redis::RedisResult<String> = redis::cmd("INFO").arg("server").query(&mut c);
                if info.is_ok_and(|i| i.contains(&format!("process_id:{pid}\r\n")))
                    && redis::cmd("PING").query::<String>(&mut c).is_ok()
                {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                if self.log().contains("Address already in use") {
                    self.port = free_port();
                    self.args[1] = self.port.to_string();
                    return self.spawn();
                }
                panic!("server exited with {status}:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "server did not answer PING:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn try_connection(&self) -> redis::RedisResult<redis::Connection> {
        try_connect(self.port)
    }

    /// A new client connection.
    pub fn conn(&self) -> redis::Connection {
        connect(self.port)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("server.log")).unwrap_or_default()
    }

    /// Kills the server with SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until the server process ends by itself (a test hook aborts it).
    pub fn wait_for_exit(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        while self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none()) {
            assert!(Instant::now() < deadline, "the server did not exit:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = None;
    }

    /// Starts the server again with the same arguments and data directory.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs `SYNC.WAIT` and asserts everything landed.
pub fn sync_wait(c: &mut redis::Connection) {
    let left: i64 = redis::cmd("SYNC.WAIT").arg(PATIENCE.as_millis() as u64).query(c).expect("SYNC.WAIT");
    assert_eq!(left, 0, "changes still pending after SYNC.WAIT");
}

/// `SYNC.STATUS <mapping>` as name → value text.
pub fn status(c: &mut redis::Connection, mapping: &str) -> std::collections::HashMap<String, String> {
    let flat: Vec<redis::Value> = redis::cmd("SYNC.STATUS").arg(mapping).query(c).expect("SYNC.STATUS");
    pairs(flat)
}

/// A flat name, value list (`SYNC.STATUS`, a `SYNC.FAILED` entry) as name → value text.
pub fn pairs(flat: Vec<redis::Value>) -> std::collections::HashMap<String, String> {
    flat.chunks(2)
        .map(|p| {
            let text = |v: &redis::Value| match v {
                redis::Value::Int(n) => n.to_string(),
                other => redis::from_redis_value::<String>(other).unwrap_or_default(),
            };
            (text(&p[0]), text(&p[1]))
        })
        .collect()
}

/// Polls `check` until it returns true or `PATIENCE` runs out.
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(Instant::now() < deadline, "gave up waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// HSET on a key with field/value pairs.
pub fn hset(c: &mut redis::Connection, key: &str, pairs: &[(&str, &str)]) {
    let mut cmd = redis::cmd("HSET");
    cmd.arg(key);
    for (f, v) in pairs {
        cmd.arg(*f).arg(*v);
    }
    let _: i64 = cmd.query(c).unwrap_or_else(|e| panic!("HSET {key}: {e}"));
}

/// HGETALL as a sorted map of text.
pub fn hgetall(c: &mut redis::Connection, key: &str) -> std::collections::BTreeMap<String, String> {
    redis::cmd("HGETALL").arg(key).query(c).expect("HGETALL")
}

/// EXISTS.
pub fn exists(c: &mut redis::Connection, key: &str) -> bool {
    redis::cmd("EXISTS").arg(key).query::<i64>(c).expect("EXISTS") == 1
}

/// A number from `INFO <section>`, e.g. `used_memory` or `evicted_keys`.
pub fn info_number(c: &mut redis::Connection, section: &str, field: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg(section).query(c).expect("INFO");
    let prefix = format!("{field}:");
    info.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("INFO {section} has no number {field}"))
}

/// The journal's size from `INFO pgsync`: rows with a log, and the bytes of
/// their logs (a record per unsettled write, or one per row once rewritten).
pub fn journal_size(c: &mut redis::Connection) -> (u64, u64) {
    (info_number(c, "pgsync", "pgsync_journal_rows"), info_number(c, "pgsync", "pgsync_journal_bytes"))
}

/// Keys of the keyspace named like a journal log (the previous version's form).
pub fn journal_keys(c: &mut redis::Connection) -> Vec<Vec<u8>> {
    redis::Commands::scan_match(c, b"pgsync:journal:*").unwrap().collect()
}

/// Ends the module's listener connection from inside `tx` and waits until it is
/// gone, so the notifications of `tx`'s changes, sent at its commit, reach nobody.
pub fn kill_listener_in(tx: &mut postgres::Transaction<'_>) {
    let killed: i64 = tx
        .query_one(
            "SELECT count(pg_terminate_backend(pid, 10000)) FROM pg_stat_activity \
             WHERE application_name = 'redis-pgsync-listener' AND datname = current_database()",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(killed, 1, "one listener connection");
}
