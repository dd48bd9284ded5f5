//! The real sides of a worker: the queue and apply of the running module, and
//! Postgres through the pool and the batch writer.

use super::sync::{BatchRow, PostgresSide, RedisSide};
use super::IDLE_WAIT;
use crate::model::doubt::{without_committed, Doubt};
use crate::model::fault;
use crate::model::queue::{BatchLimits, Entry, Rejected, RowKey};
use crate::model::stats::{MappingStats, Reachability};
use crate::pg::commit_marker::{self, Marker, Proof};
use crate::pg::error::{Action, Error, ErrorKind};
use crate::pg::prepared::Prepared;
use crate::pg::writer::{self, ColumnWrite, PrepareError, PreparedRow, RowOutcome};
use crate::pipeline::apply;
use crate::pipeline::retry::{self, Round};
use crate::pipeline::runtime::Runtime;
use crate::redis::config;
use crate::redis::redis_io::warn;
use crate::redis::waiters;
use r2d2::PooledConnection;
use r2d2_postgres::PostgresConnectionManager;
use std::borrow::Cow;
use std::collections::HashSet;

type Connection = PooledConnection<PostgresConnectionManager<crate::pg::tls::Tls>>;

/// A queued row and its change.
pub type Row = (RowKey, Entry);

impl BatchRow for Row {
    fn mapping(&self) -> usize {
        self.0.mapping
    }
}

/// The module's queue, and apply into Redis.
pub struct LiveRedis<'a>(pub &'a Runtime);

impl RedisSide for LiveRedis<'_> {
    type Row = Row;

    fn take(&self, ready: &dyn Fn(usize) -> bool) -> Vec<Row> {
        let limits = BatchLimits {
            rows: config::count(&config::BATCH_SIZE),
            bytes: config::count(&config::BATCH_MAX_BYTES),
            linger: config::millis(&config::BATCH_DELAY_MS),
            idle: IDLE_WAIT,
        };
        // Rows wait for their table's first check instead of failing on it: a
        // server just started would otherwise count a retry, and back off, for
        // every mapping written before the checker's first round.
        let checked: Vec<bool> = (0..self.0.mappings.all().len()).map(|m| self.0.schema_checked(m)).collect();
        self.0.dirty.take(limits, &|m| checked.get(m).copied().unwrap_or(true) && ready(m))
    }

    fn requeue(&self, mapping: usize, rows: Vec<Row>, failure: &Error) {
        let rt = self.0;
        let stats = rt.mapping(mapping).stats;
        MappingStats::bump(&stats.retries, 1);
        stats.set_last_error(&failure.message);
        match failure.action() {
            Action::Reconnect => {
                if rt.postgres.reachability() != Reachability::Down {
                    warn(&format!("Postgres unavailable, changes wait and are retried: {failure}"));
                }
                rt.postgres.mark_down(&failure.message);
            }
            Action::Retry => rt.invalidate_schema(mapping),
            // A rejection that no single row could be blamed for: it waits like the rest.
            Action::DeadLetter => {}
        }
        rt.dirty.requeue(rows);
    }

    fn apply(&self, rows: &[Row], outcomes: &[RowOutcome]) {
        apply::apply_batch(self.0, rows, outcomes);
    }

    fn release(&self, rows: &[Row], why: &str) {
        warn(why);
        self.0.dirty.release(rows);
        for (row, entry) in rows {
            waiters::settle(row, entry.change.version, &Err(Rejected(why.to_string())));
        }
    }
}

/// Postgres through the module's pool: a worker keeps its connection, and the
/// statements it prepared on it, from batch to batch until a failure gives it up.
pub struct LivePostgres<'a> {
    rt: &'a Runtime,
    conn: Option<Connection>,
    prepared: Prepared,
    /// Whether batches that increment write a commit marker (the marker table
    /// could be created).
    markers: bool,
    /// This worker's last committed marker, deleted with the next one.
    last_marker: Option<i64>,
}

impl<'a> LivePostgres<'a> {
    /// Writes through `rt`'s pool.
    pub fn new(rt: &'a Runtime) -> LivePostgres<'a> {
        LivePostgres { rt, conn: None, prepared: Prepared::default(), markers: true, last_marker: None }
    }

    /// The worker's connection (a new one from the pool when it has none) and
    /// the statements prepared on it.
    fn connection(&mut self) -> Result<(&mut Connection, &mut Prepared), Error> {
        if self.conn.is_none() {
            let mut conn = self.rt.pool.get()?;
            // A generic plan of the upsert cannot see how many rows the arrays
            // hold, and chose a scan of the whole table: plan each execution with
            // its values (parsing once is what the prepared statements save).
            // Servers before Postgres 12 lack the setting and keep their default.
            let _ = conn.batch_execute("SET plan_cache_mode = force_custom_plan");
            self.markers = marker_table(&mut conn)?;
            self.conn = Some(conn);
            self.prepared.clear();
        }
        let conn = self.conn.as_mut().ok_or_else(|| Error::new(ErrorKind::Unavailable, "no connection"))?;
        Ok((conn, &mut self.prepared))
    }
}

impl LivePostgres<'_> {
    /// Which of the markers that recovered rows doubt about committed (none
    /// asked when there is no doubt, or no marker table on this server).
    fn committed_markers(&mut self, doubts: &[Vec<Doubt>]) -> Result<HashSet<i64>, Error> {
        let ids: Vec<i64> = doubts.iter().flatten().map(|d| d.marker).collect();
        if ids.is_empty() || !self.markers {
            return Ok(HashSet::new());
        }
        let (conn, _) = self.connection()?;
        commit_marker::which_committed(&mut **conn, &ids)
    }
}

impl PostgresSide<Row> for LivePostgres<'_> {
    /// Prepares the rows (a row that cannot be prepared, or is too large, is
    /// rejected on its own) and writes the rest in multi-row statements.
    fn write(&mut self, mapping: usize, rows: &[Row]) -> Result<Vec<RowOutcome>, Error> {
        let rt = self.rt;
        let m = rt.mapping(mapping).def;
        let schema = rt.usable_schema(mapping)?;
        let max_row_bytes = config::count(&config::MAX_ROW_BYTES);
        let mut outcomes: Vec<RowOutcome> = vec![Ok(Default::default()); rows.len()];
        let mut prepared = Vec::with_capacity(rows.len());
        let mut positions = Vec::with_capacity(rows.len());
        let doubts = rt.dirty.doubts_of(rows.iter().map(|(row, _)| row));
        let committed = self.committed_markers(&doubts)?;
        for (i, (row, entry)) in rows.iter().enumerate() {
            fault::panic_if_targeted(&row.id);
            let change = match doubts[i].is_empty() {
                true => Cow::Borrowed(&entry.change),
                false => Cow::Owned(without_committed(&entry.change, &doubts[i], &committed)),
            };
            match writer::prepare(mapping, m, &schema, &row.id, &change).and_then(|p| within(p, max_row_bytes)) {
                Ok(p) if writer::writes_nothing(&p) => {}
                Ok(p) => {
                    prepared.push(p);
                    positions.push(i);
                }
                Err(e) => outcomes[i] = Err(Error::new(ErrorKind::Rejected, e.to_string())),
            }
        }
        if !prepared.is_empty() {
            let tables = |i: usize| (i == mapping).then_some((m, &*schema));
            let increments = prepared.iter().any(|p| p.values.values().any(|w| matches!(w, ColumnWrite::Add(_))));
            let marker = (increments && self.markers).then(|| Marker::new(self.last_marker));
            let mut resolve = |id: i64| resolve_marker(rt, id);
            let proof = marker.map(|marker| Proof { marker, resolve: &mut resolve });
            if let Some(marker) = marker {
                apply::mark_in_flight(rt, rows, marker.id);
            }
            let (conn, statements) = self.connection()?;
            let written = writer::write(&mut **conn, statements, &tables, &prepared, proof)?;
            if let Some(marker) = marker {
                self.last_marker = Some(marker.id);
            }
            fault::abort_if_armed();
            rt.postgres.mark_up();
            for (pos, outcome) in positions.into_iter().zip(written) {
                outcomes[pos] = outcome;
            }
        }
        Ok(outcomes)
    }

    fn release(&mut self) {
        self.conn = None;
    }
}

/// Makes sure the commit markers' table exists; `false` (with a warning) when
/// it cannot be created, and increments are then written at least once.
fn marker_table(conn: &mut Connection) -> Result<bool, Error> {
    // Two workers creating it at once: the loser fails once, then finds it.
    let created = commit_marker::ensure_table(&mut **conn).or_else(|_| commit_marker::ensure_table(&mut **conn));
    match created {
        Ok(()) => Ok(true),
        Err(e) if e.action() == Action::Reconnect => Err(e),
        Err(e) => {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                warn(&format!(
                    "cannot create the table pgsync_commits ({e}): an increment whose commit's answer is lost may \
                     be counted twice"
                ))
            });
            Ok(false)
        }
    }
}

/// Asks, on a connection of its own, whether the batch with marker `id`
/// committed; waits for Postgres as long as it takes (the batch's rows stay in
/// flight meanwhile), unless the module stops.
fn resolve_marker(rt: &Runtime, id: i64) -> Result<bool, Error> {
    let ask = || rt.pool.get().map_err(Error::from).and_then(|mut conn| commit_marker::committed(&mut *conn, id));
    let mut last = None;
    let failed = |e: Error| {
        if !rt.shutdown.is_stopped() {
            warn(&format!("the outcome of a batch's commit is unknown; asking Postgres again: {e}"));
        }
        last = Some(e);
    };
    match retry::until_done(rt.shutdown, || ask().map(Round::Done), failed) {
        Some(committed) => Ok(committed),
        None => Err(last.unwrap_or_else(|| Error::new(ErrorKind::Unavailable, "pgsync is stopping"))),
    }
}

/// Rejects a row whose values are over `pgsync.max-row-bytes`: Postgres takes at
/// most 1 GiB in one message, and such a row would fail the same way forever,
/// looking like a lost connection. A rejection is a dead letter, not a retry.
fn within(row: PreparedRow, max: usize) -> Result<PreparedRow, PrepareError> {
    let bytes: usize = row
        .values
        .iter()
        .map(|(column, write)| {
            column.len()
                + match write {
                    ColumnWrite::Set(value) => value.as_ref().map_or(0, String::len),
                    ColumnWrite::Add(delta) => delta.len(),
                    ColumnWrite::Paths(sets) => sets.len(),
                }
        })
        .sum();
    if bytes > max {
        return Err(PrepareError::TooLarge { bytes, max });
    }
    Ok(row)
}
