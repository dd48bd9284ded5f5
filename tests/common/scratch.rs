//! Throw-away resources shared by the tests and the benchmark (`bench/` includes
//! this file): unique names, temp dirs, free ports, and a Postgres database that is
//! created with a schema and dropped with `WITH (FORCE)` when its guard drops.

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A name unique to this process and call, usable as a SQL identifier.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A fresh temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates a fresh directory under the system temp dir.
    pub fn new(prefix: &str) -> TempDir {
        let path = std::env::temp_dir().join(unique(prefix));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free TCP port on loopback (never 6379/6380, the ports of other servers here).
pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        if port != 6379 && port != 6380 {
            return port;
        }
    }
}

/// Replaces the database name at the end of a Postgres URL.
fn url_with_db(base: &str, db: &str) -> String {
    match base.rfind('/') {
        Some(i) if i > "postgres://".len() => format!("{}/{}", &base[..i], db),
        _ => format!("{base}/{db}"),
    }
}

/// A database created with a schema and dropped afterwards.
pub struct TestDb {
    /// Database name.
    pub name: String,
    /// URL of the database.
    pub url: String,
    admin: String,
}

impl TestDb {
    /// A new database on the server of `admin` (a Postgres URL), with `schema` run in it.
    pub fn on(admin: &str, schema: &str) -> TestDb {
        let name = unique("pgsync_test");
        let mut c = postgres::Client::connect(admin, postgres::NoTls).expect("connect to Postgres (admin URL)");
        c.batch_execute(&format!("CREATE DATABASE {name}")).expect("create database");
        let url = url_with_db(admin, &name);
        let db = TestDb { name, url, admin: admin.to_string() };
        db.client().batch_execute(schema).expect("create schema");
        db
    }

    /// A new connection to this database.
    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).expect("connect to database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.admin, postgres::NoTls) {
            let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }
}
