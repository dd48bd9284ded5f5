//! What every phase needs: servers started on a free port in a temp dir (with or
//! without the module), a Postgres database of the run's own, and small helpers
//! around `SYNC.*` commands.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Everything a phase needs to know about the programs under test.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Path of `libredis_pgsync.so`.
    pub module: PathBuf,
    /// Server binary (valkey-server or redis-server).
    pub server_bin: String,
    /// Admin URL of the Postgres server the run's database is created on.
    pub pg_admin: String,
}

/// The run's database: the test harness's guard (created with a schema, dropped
/// on drop), shared through `tests/common/scratch.rs`.
pub type Db = crate::scratch::TestDb;

pub use crate::scratch::{free_port, unique, TempDir};

/// What the benchmark asks of its database beyond the shared guard.
pub trait DbExt {
    /// Transactions committed in this database so far (`pg_stat_database`; a
    /// backend reports its counts at exit or at most once a second).
    fn xact_commits(&self) -> Option<i64>;

    /// Runs statements, printing (not failing on) an error; used to reset tables
    /// between runs.
    fn exec(&self, sql: &str);
}

impl DbExt for Db {
    fn xact_commits(&self) -> Option<i64> {
        self.client()
            .query_one("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()", &[])
            .ok()
            .map(|r| r.get(0))
    }

    fn exec(&self, sql: &str) {
        if let Err(e) = self.client().batch_execute(sql) {
            eprintln!("warning: `{sql}` failed: {e}");
        }
    }
}

/// A Postgres URL nothing listens on (port 1 of loopback is closed): a module
/// pointed at it queues every change in Redis and never writes anything.
pub const UNREACHABLE_PG: &str = "postgres://postgres@127.0.0.1:1/none";

/// A running server, killed on drop.
pub struct Server {
    /// Port it listens on (127.0.0.1).
    pub port: u16,
    dir: TempDir,
    child: Child,
    bin: String,
    args: Vec<String>,
    /// The module's mapping file, read again on a restart; removed on drop.
    mapping_file: Option<PathBuf>,
}

impl Server {
    /// Starts `bin` without the module.
    pub fn plain(bin: &str) -> Server {
        Self::start(bin, &[])
    }

    /// Starts `bin` without the module, with extra server arguments.
    pub fn plain_with(bin: &str, server_args: &[&str]) -> Server {
        Self::start(bin, &server_args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
    }

    /// Starts `bin` with the module on `db`, the mapping file holding `mapping` and
    /// extra module settings (`name`, `value` pairs), and waits until the module
    /// reports Postgres up and the mapping's schema checked.
    pub fn with_module(setup: &Setup, db: &Db, mapping: &str, mapping_name: &str, extra: &[(&str, &str)]) -> Server {
        Self::with_module_args(setup, db, mapping, mapping_name, extra, &[])
    }

    /// [`Server::with_module`] with extra server arguments (`--cluster-enabled yes`).
    pub fn with_module_args(
        setup: &Setup,
        db: &Db,
        mapping: &str,
        mapping_name: &str,
        extra: &[(&str, &str)],
        server_args: &[&str],
    ) -> Server {
        let server = Self::start_module_with(setup, &[], &db.url, mapping, extra, server_args);
        server.wait_module_ready(mapping_name);
        server
    }

    /// [`Server::with_module`] with the modules `before` (RedisJSON) loaded first.
    pub fn with_module_after(
        setup: &Setup,
        before: &[&Path],
        db: &Db,
        mapping: &str,
        mapping_name: &str,
        extra: &[(&str, &str)],
    ) -> Server {
        let server = Self::start_module_with(setup, before, &db.url, mapping, extra, &[]);
        server.wait_module_ready(mapping_name);
        server
    }

    /// Starts `bin` with the module pointed at [`UNREACHABLE_PG`]: every captured
    /// change stays queued in Redis. Waits until `SYNC.STATUS <mapping_name>` answers.
    /// `server_args` are extra server arguments (`--appendonly yes`).
    pub fn with_module_queueing(setup: &Setup, mapping: &str, mapping_name: &str, server_args: &[&str]) -> Server {
        let server = Self::start_module_with(setup, &[], UNREACHABLE_PG, mapping, &[], server_args);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut c = server.conn();
        while status(&mut c, mapping_name).is_empty() {
            if Instant::now() > deadline {
                eprintln!("warning: SYNC.STATUS {mapping_name} did not answer after 30 s");
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn start_module_with(
        setup: &Setup,
        before: &[&Path],
        url: &str,
        mapping: &str,
        extra: &[(&str, &str)],
        server_args: &[&str],
    ) -> Server {
        let file = std::env::temp_dir().join(format!("{}.json", unique("pgsync_bench_mapping")));
        std::fs::write(&file, mapping).expect("write mapping file");
        let mut args: Vec<String> =
            before.iter().flat_map(|m| ["--loadmodule".to_string(), m.display().to_string()]).collect();
        args.extend([
            "--loadmodule".to_string(),
            setup.module.display().to_string(),
            "postgres-url".into(),
            url.to_string(),
            "mappings".into(),
            file.display().to_string(),
        ]);
        for (name, value) in extra {
            args.push(name.to_string());
            args.push(value.to_string());
        }
        args.extend(server_args.iter().map(|a| a.to_string()));
        let mut server = Self::start(&setup.server_bin, &args);
        server.mapping_file = Some(file);
        server
    }

    fn start(bin: &str, extra: &[String]) -> Server {
        let dir = TempDir::new("pgsync_bench_srv");
        let port = free_port();
        let mut args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--dir",
            &dir.0.display().to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
            "--logfile",
            "server.log",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend_from_slice(extra);
        let child = spawn(bin, &args);
        let mut server = Server { port, dir, child, bin: bin.to_string(), args, mapping_file: None };
        server.wait_ping(Duration::from_secs(20));
        server
    }

    /// Stops the server with `SHUTDOWN` (which writes out the AOF), starts it again
    /// on the same directory and waits until it has loaded its data (up to `patience`).
    pub fn restart(&mut self, patience: Duration) {
        self.restart_with(patience, || {});
    }

    /// [`Server::restart`], running `meanwhile` while the server is down.
    pub fn restart_with(&mut self, patience: Duration, meanwhile: impl FnOnce()) {
        let _ = redis::cmd("SHUTDOWN").query::<()>(&mut self.conn());
        let deadline = Instant::now() + Duration::from_secs(60);
        while !matches!(self.child.try_wait(), Ok(Some(_))) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        meanwhile();
        self.child = spawn(&self.bin, &self.args);
        self.wait_ping(patience);
    }

    fn wait_ping(&mut self, patience: Duration) {
        let deadline = Instant::now() + patience;
        loop {
            if let Ok(mut c) = self.try_conn() {
                if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                    return;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("server exited with {status}:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "server did not answer PING:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_module_ready(&self, mapping: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut c = self.conn();
        loop {
            let s = status(&mut c, mapping);
            let get = |k: &str| s.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str()).unwrap_or("");
            if get("postgres") == "up" && get("schema") == "ok" {
                return;
            }
            if Instant::now() > deadline {
                eprintln!("warning: module not ready after 30 s: {s:?}");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn try_conn(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))?.get_connection()
    }

    /// A new client connection.
    pub fn conn(&self) -> redis::Connection {
        self.try_conn().expect("connect to server")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("server.log")).unwrap_or_default()
    }
}

fn spawn(bin: &str, args: &[String]) -> Child {
    Command::new(bin)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"))
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(file) = &self.mapping_file {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// `INFO memory`'s `used_memory` in bytes (0 when unreadable).
pub fn used_memory(c: &mut redis::Connection) -> u64 {
    info_number(c, "memory", "used_memory")
}

/// A number of `INFO <section>` (0 when unreadable).
pub fn info_number(c: &mut redis::Connection, section: &str, field: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg(section).query(c).unwrap_or_default();
    let prefix = format!("{field}:");
    info.lines().find_map(|l| l.strip_prefix(prefix.as_str())).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// A byte count in MiB with one decimal.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// `SYNC.STATUS <mapping>` as (name, value text) pairs; empty on error.
pub fn status(c: &mut redis::Connection, mapping: &str) -> Vec<(String, String)> {
    let flat: Vec<redis::Value> = match redis::cmd("SYNC.STATUS").arg(mapping).query(c) {
        Ok(v) => v,
        Err(_) => return Vec::new(),
    };
    let text = |v: &redis::Value| match v {
        redis::Value::Int(n) => n.to_string(),
        other => redis::from_redis_value::<String>(other).unwrap_or_default(),
    };
    flat.chunks(2).filter(|p| p.len() == 2).map(|p| (text(&p[0]), text(&p[1]))).collect()
}

/// One figure of `SYNC.STATUS <mapping>` as an integer (0 if missing).
pub fn status_int(c: &mut redis::Connection, mapping: &str, figure: &str) -> i64 {
    status(c, mapping).into_iter().find(|(n, _)| n == figure).and_then(|(_, v)| v.parse().ok()).unwrap_or(0)
}

/// `SYNC.WAIT <timeout-ms>`: the number of rows still pending, or an error text.
pub fn sync_wait(c: &mut redis::Connection, timeout: Duration) -> Result<i64, String> {
    redis::cmd("SYNC.WAIT").arg(timeout.as_millis() as u64).query(c).map_err(|e| e.to_string())
}

/// Polls `SYNC.STATUS <mapping>` every 10 ms until nothing is pending or in flight;
/// returns the rows left (0 when drained, more on timeout).
pub fn poll_drained(c: &mut redis::Connection, mapping: &str, timeout: Duration) -> Result<i64, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let s = status(c, mapping);
        if s.is_empty() {
            return Err("SYNC.STATUS failed".into());
        }
        let get = |k: &str| s.iter().find(|(n, _)| n == k).and_then(|(_, v)| v.parse::<i64>().ok()).unwrap_or(0);
        let left = get("pending") + get("in_flight");
        if left == 0 || Instant::now() > deadline {
            return Ok(left);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Asks Postgres for a checkpoint so a timed run does not start with a backlog of
/// dirty pages from the previous one (needs a superuser; ignored otherwise).
pub fn checkpoint(db: &Db) {
    let _ = db.client().batch_execute("CHECKPOINT");
}

/// One figure of `SYNC.STATUS <mapping>` as text (empty if missing).
pub fn status_text(c: &mut redis::Connection, mapping: &str, figure: &str) -> String {
    status(c, mapping).into_iter().find(|(n, _)| n == figure).map(|(_, v)| v).unwrap_or_default()
}
