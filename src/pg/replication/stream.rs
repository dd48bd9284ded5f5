//! The replication connection: a `pgwire-replication` client (docs/logical.md
//! says why that crate) driven by a small tokio runtime of its own, so the
//! listener's thread stays a plain blocking one. A session is opened gated: the
//! slot can be created on it, with its snapshot exported for the initial load,
//! before the stream starts. Postgres hears a position as flushed only through
//! [`Stream::ack`], which the listener calls once Redis holds it.

use pgwire_replication::{
    Lsn, PgWireError, ReplicationClient, ReplicationConfig, ReplicationEvent, SslMode, TlsConfig,
};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Why the replication connection cannot be set up or read.
#[derive(Debug)]
pub enum StreamError {
    /// The connection string's `sslmode` is one the replication client lacks.
    SslMode(String),
    /// The session's own tokio runtime cannot start.
    Runtime(std::io::Error),
    /// The connection or the protocol failed.
    Wire(PgWireError),
    /// `CREATE_REPLICATION_SLOT` answered without the column it returns.
    SlotColumn(usize),
    /// `CREATE_REPLICATION_SLOT` answered a position that does not parse.
    SlotPosition(String),
    /// The server closed the stream.
    Ended,
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamError::SslMode(mode) => write!(f, "sslmode {mode} is not supported"),
            StreamError::Runtime(e) => write!(f, "cannot start the replication runtime: {e}"),
            StreamError::Wire(e) => e.fmt(f),
            StreamError::SlotColumn(i) => write!(f, "CREATE_REPLICATION_SLOT returned no column {i}"),
            StreamError::SlotPosition(point) => write!(f, "CREATE_REPLICATION_SLOT: bad position {point}"),
            StreamError::Ended => f.write_str("the replication stream ended"),
        }
    }
}

impl std::error::Error for StreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StreamError::Runtime(e) => Some(e),
            StreamError::Wire(e) => Some(e),
            _ => None,
        }
    }
}

impl From<PgWireError> for StreamError {
    fn from(e: PgWireError) -> StreamError {
        StreamError::Wire(e)
    }
}

/// Where and how to connect, taken from the module's connection settings.
#[derive(Clone)]
pub struct Endpoint {
    host: String,
    port: u16,
    user: String,
    password: String,
    database: String,
    tls: TlsConfig,
    options: String,
}

impl Endpoint {
    /// The endpoint of `config` (host, port, user, password, database, session
    /// options), with the TLS policy of the connection string's `sslmode` and
    /// `sslrootcert` (`taken`, as `pg::conninfo::split` takes them out).
    pub fn new(config: &postgres::Config, taken: &[(String, String)]) -> Result<Endpoint, StreamError> {
        let host = match config.get_hosts().first() {
            Some(postgres::config::Host::Tcp(host)) => host.clone(),
            Some(postgres::config::Host::Unix(path)) => path.display().to_string(),
            None => "localhost".into(),
        };
        let param = |name: &str| taken.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let root = param("sslrootcert").filter(|r| *r != "system").map(PathBuf::from);
        let mode = match param("sslmode").unwrap_or("prefer") {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" if root.is_some() => SslMode::VerifyCa,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => return Err(StreamError::SslMode(other.to_string())),
        };
        let tls = TlsConfig { mode, ca_pem_path: root, ..TlsConfig::disabled() };
        Ok(Endpoint {
            host,
            port: config.get_ports().first().copied().unwrap_or(5432),
            user: config.get_user().unwrap_or("postgres").to_string(),
            password: config.get_password().map(|p| String::from_utf8_lossy(p).into_owned()).unwrap_or_default(),
            database: config.get_dbname().or(config.get_user()).unwrap_or("postgres").to_string(),
            tls,
            options: config.get_options().unwrap_or_default().to_string(),
        })
    }
}

/// What the stream delivers, as the listener needs it.
#[derive(Debug)]
pub enum Event {
    /// A transaction starts.
    Begin {
        /// Its id (32 bits, as the protocol sends it).
        xid: u32,
    },
    /// A `pgoutput` message of the transaction (see `pgoutput::decode`).
    Data(Vec<u8>),
    /// A logical message, transactional or not, with its prefix.
    Message {
        /// Whether it belongs to the transaction being read.
        transactional: bool,
        /// Its prefix.
        prefix: String,
    },
    /// The transaction committed; `end` is the position just past it.
    Commit {
        /// Where the next transaction starts: what to store and acknowledge.
        end: u64,
    },
    /// The server is alive (nothing to apply).
    KeepAlive,
}

/// The slot created for a fresh start.
pub struct NewSlot {
    /// Where the stream of the slot begins.
    pub consistent_point: u64,
    /// The snapshot the initial load reads in, valid until the stream starts.
    pub snapshot: String,
}

/// One replication session.
pub struct Stream {
    runtime: tokio::runtime::Runtime,
    client: ReplicationClient,
}

impl Stream {
    /// Connects (gated: nothing streams before [`Stream::start`]) for `slot`
    /// over `publication`, to resume after `start` (0: the slot's confirmed position).
    pub fn open(endpoint: &Endpoint, slot: &str, publication: &str, start: u64) -> Result<Stream, StreamError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("pgsync-cdc-io")
            .enable_all()
            .build()
            .map_err(StreamError::Runtime)?;
        let e = endpoint;
        let config = ReplicationConfig::new(&e.host, &e.user, &e.password, &e.database, slot, publication)
            .with_port(e.port)
            .with_tls(e.tls.clone())
            .with_start_lsn(Lsn::from_u64(start))
            .with_options(e.options.clone())
            .with_application_name("redis-pgsync-cdc")
            .with_status_interval(Duration::from_millis(500))
            .with_wakeup_interval(Duration::from_secs(1))
            .with_buffer_size(1024);
        let client = runtime.block_on(ReplicationClient::connect_gated(config))?;
        Ok(Stream { runtime, client })
    }

    /// Creates `slot` with its snapshot exported (valid until [`Stream::start`]).
    pub fn create_slot(&mut self, slot: &str) -> Result<NewSlot, StreamError> {
        let sql =
            format!("CREATE_REPLICATION_SLOT {} LOGICAL pgoutput EXPORT_SNAPSHOT", crate::pg::sql::quote_ident(slot));
        let rows = self.runtime.block_on(self.client.simple_query(&sql))?;
        let text = |i: usize| {
            rows.first()
                .and_then(|row| row.get(i).cloned().flatten())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .ok_or(StreamError::SlotColumn(i))
        };
        let point = text(1)?;
        let consistent_point =
            super::catalog::parse_lsn(&point).ok_or_else(|| StreamError::SlotPosition(point.clone()))?;
        Ok(NewSlot { consistent_point, snapshot: text(2)? })
    }

    /// Starts streaming; waits until Postgres accepted it (the slot is then ours).
    pub fn start(&mut self) -> Result<(), StreamError> {
        self.runtime
            .block_on(async {
                self.client.start().await?;
                self.client.wait_started().await
            })
            .map_err(StreamError::Wire)
    }

    /// The next event, or `None` when `wait` passes without one.
    pub fn next(&mut self, wait: Duration) -> Result<Option<Event>, StreamError> {
        // The timer is made inside the runtime, which drives it.
        let client = &mut self.client;
        let received = self.runtime.block_on(async move { tokio::time::timeout(wait, client.recv()).await });
        let event = match received {
            Err(_elapsed) => return Ok(None),
            Ok(Err(e)) => return Err(StreamError::Wire(e)),
            Ok(Ok(None)) => return Err(StreamError::Ended),
            Ok(Ok(Some(event))) => event,
        };
        Ok(Some(match event {
            ReplicationEvent::Begin { xid, .. } => Event::Begin { xid },
            ReplicationEvent::XLogData { data, .. } => Event::Data(data.to_vec()),
            ReplicationEvent::Message { transactional, prefix, .. } => Event::Message { transactional, prefix },
            ReplicationEvent::Commit { end_lsn, .. } => Event::Commit { end: end_lsn.as_u64() },
            ReplicationEvent::KeepAlive { .. } | ReplicationEvent::StoppedAt { .. } => Event::KeepAlive,
        }))
    }

    /// Tells Postgres that everything before `lsn` is held by Redis.
    pub fn ack(&self, lsn: u64) {
        self.client.update_applied_lsn(Lsn::from_u64(lsn));
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.client.stop();
    }
}
