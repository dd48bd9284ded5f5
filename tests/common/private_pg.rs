//! A Postgres cluster of a test's (or the benchmark's) own: initdb into a temp
//! dir, run as the `postgres` user, with extra settings such as `wal_level =
//! logical`. Shared by the tests (`tests/common/mod.rs`) and the benchmark
//! (`bench/` includes this file next to `scratch.rs`).

use super::scratch::{free_port, TempDir};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A Postgres cluster of the test's own (initdb into a temp dir, run as the
/// `postgres` user), for tests that stop and start the database.
pub struct PrivatePg {
    pub dir: TempDir,
    pub port: u16,
    bin: PathBuf,
    /// Extra server options (`-c name=value ...`).
    options: String,
    /// The superuser's password, when TCP connections need one.
    admin_password: Option<String>,
}

/// Settings of a [`PrivatePg`] beyond the defaults (trust, no TLS).
#[derive(Default)]
pub struct PgSetup {
    /// TLS certificate and key (PEM) for the server: `ssl = on` with them.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Authentication method for TCP connections (`scram-sha-256`, `md5`), with
    /// the superuser's password; `None` is trust.
    pub host_auth: Option<(&'static str, &'static str)>,
    /// Extra server settings, e.g. `-c wal_level=logical`.
    pub settings: &'static str,
}

impl PgSetup {
    /// A Postgres that allows logical replication (`wal_level = logical`).
    pub fn logical() -> PgSetup {
        PgSetup {
            settings: "-c wal_level=logical -c max_replication_slots=4 -c max_wal_senders=8",
            ..PgSetup::default()
        }
    }
}

fn pg_bin_dir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    dirs.sort();
    dirs.pop().expect("PostgreSQL binaries under /usr/lib/postgresql")
}

fn as_postgres(program: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = if unsafe_is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.args(args).output().unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()))
}

fn unsafe_is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false)
}

impl PrivatePg {
    /// initdb and start a cluster on a free port.
    pub fn start() -> PrivatePg {
        Self::start_with(PgSetup::default())
    }

    /// initdb and start a cluster on a free port, with TLS or password
    /// authentication as `setup` says.
    pub fn start_with(setup: PgSetup) -> PrivatePg {
        let dir = TempDir::new("pgsync_pg");
        let bin = pg_bin_dir();
        let data = dir.0.join("data");
        let mut args = vec!["-D".to_string(), data.display().to_string(), "-U".into(), "postgres".into()];
        args.extend(["-E".into(), "UTF8".into(), "--no-sync".into(), "--auth-local=trust".into()]);
        let admin_password = setup.host_auth.map(|(method, password)| {
            let file = dir.0.join("pwfile");
            std::fs::write(&file, password).expect("write pwfile");
            args.push(format!("--auth-host={method}"));
            args.push(format!("--pwfile={}", file.display()));
            password.to_string()
        });
        if admin_password.is_none() {
            args.push("--auth-host=trust".into());
        }
        let mut options = String::new();
        if let Some((cert, key)) = &setup.tls {
            for (from, to) in [(cert, "server.crt"), (key, "server.key")] {
                std::fs::copy(from, dir.0.join(to)).expect("copy TLS file");
            }
            let key = dir.0.join("server.key");
            std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod key");
            options = format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                dir.0.join("server.crt").display(),
                key.display()
            );
        }
        if !setup.settings.is_empty() {
            options = format!("{options} {}", setup.settings);
        }
        if unsafe_is_root() {
            let _ = Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir.0).status();
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = as_postgres(&bin.join("initdb"), &args);
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let pg = PrivatePg { dir, port: free_port(), bin, options, admin_password };
        pg.up();
        pg
    }

    /// URL of the cluster's `postgres` database, as its superuser.
    pub fn admin_url(&self) -> String {
        let password = self.admin_password.as_ref().map(|p| format!(":{p}")).unwrap_or_default();
        format!("postgres://postgres{password}@127.0.0.1:{}/postgres", self.port)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("pg.log")).unwrap_or_default()
    }

    /// Starts the cluster and waits until it accepts connections.
    pub fn up(&self) {
        let data = self.dir.0.join("data");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off{}",
            self.port,
            self.dir.0.display(),
            self.options
        );
        let log = self.dir.0.join("pg.log");
        let out = as_postgres(
            &self.bin.join("pg_ctl"),
            &["-D", data.to_str().unwrap(), "-o", &opts, "-l", log.to_str().unwrap(), "-w", "start"],
        );
        assert!(out.status.success(), "pg_ctl start failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Stops the cluster (fast shutdown: connections are cut).
    pub fn down(&self) {
        let data = self.dir.0.join("data");
        let out = as_postgres(&self.bin.join("pg_ctl"), &["-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"]);
        assert!(out.status.success(), "pg_ctl stop failed: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let data = self.dir.0.join("data");
        let _ = as_postgres(&self.bin.join("pg_ctl"), &["-D", data.to_str().unwrap(), "-m", "immediate", "stop"]);
    }
}
