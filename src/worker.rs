//! Workers: each takes a batch of dirty rows from the queue (bounded in rows and
//! bytes), writes each mapping's rows to Postgres in multi-row statements, and
//! hands the outcomes to apply. Rows of a mapping that cannot be written now
//! (Postgres unavailable, table not usable) go back to the queue, the other
//! mappings' rows go on, and the worker backs off exponentially up to
//! `pgsync.retry-max-delay-ms`. A row that can never be written (too large, or one
//! that makes the worker panic) is dead-lettered instead, so it cannot stall its
//! mapping.

use crate::apply;
use crate::config;
use crate::fault;
use crate::guard;
use crate::pg::error::{Error, ErrorKind};
use crate::pg::writer::{self, ColumnWrite, PreparedRow, RowOutcome};
use crate::queue::{Entry, RowKey};
use crate::redis_io::warn;
use crate::runtime::{Pool, Runtime};
use crate::stats::MappingStats;
use crate::waiters;
use r2d2::PooledConnection;
use r2d2_postgres::PostgresConnectionManager;
use std::collections::BTreeMap;
use std::time::Duration;

const FIRST_RETRY_DELAY: Duration = Duration::from_millis(50);
/// How long an idle worker waits before looking again (and how finely the
/// per-mapping retry delays are honoured).
const IDLE_WAIT: Duration = Duration::from_millis(100);

type Connection = PooledConnection<PostgresConnectionManager<crate::pg::connect::Tls>>;
type Rows = Vec<(RowKey, Entry)>;

/// Body of a worker thread; returns once `keep_going` says it is no longer wanted.
pub fn run(rt: &Runtime, keep_going: impl Fn() -> bool) {
    while keep_going() {
        if rt.is_replica() {
            rt.queue.sleep(IDLE_WAIT);
            continue;
        }
        let batch = rt.queue.take_batch(
            config::count(&config::BATCH_SIZE),
            config::count(&config::BATCH_MAX_BYTES),
            config::millis(&config::BATCH_DELAY_MS),
            IDLE_WAIT,
            &|mapping| rt.backoffs[mapping].ready(),
        );
        if !batch.is_empty() {
            sync_batch(rt, batch);
        }
    }
}

/// Syncs a batch mapping by mapping. A mapping whose rows cannot be written now
/// waits out its own backoff; the others go on.
fn sync_batch(rt: &Runtime, batch: Rows) {
    let mut groups: BTreeMap<usize, Rows> = BTreeMap::new();
    for (row, entry) in batch {
        groups.entry(row.mapping).or_default().push((row, entry));
    }
    let mut conn: Option<Connection> = None;
    for (mapping, rows) in groups {
        let Err((rows, failure)) = sync_mapping(rt, mapping, rows, &mut conn) else {
            rt.backoffs[mapping].reset();
            continue;
        };
        // The connection may be what failed; the next mapping gets a fresh one.
        conn = None;
        put_back(rt, mapping, rows, &failure);
        let cap = config::millis(&config::RETRY_MAX_DELAY_MS).max(FIRST_RETRY_DELAY);
        rt.backoffs[mapping].failed(FIRST_RETRY_DELAY, cap);
    }
}

/// Puts a mapping's rows back after a failure that may heal, and records why.
fn put_back(rt: &Runtime, mapping: usize, rows: Rows, failure: &Error) {
    let stats = &rt.stats[mapping];
    MappingStats::bump(&stats.retries, 1);
    stats.set_last_error(&failure.message);
    match failure.kind {
        ErrorKind::Schema => rt.invalidate_schema(mapping),
        ErrorKind::Unavailable => {
            if rt.postgres.describe() != "down" {
                warn(&format!("Postgres unavailable, changes wait and are retried: {failure}"));
            }
            rt.postgres.mark_down(&failure.message);
        }
        ErrorKind::Rejected => {}
    }
    rt.queue.requeue(rows);
}

fn connection<'c>(pool: &Pool, conn: &'c mut Option<Connection>) -> Result<&'c mut Connection, Error> {
    if conn.is_none() {
        *conn = Some(pool.get()?);
    }
    conn.as_mut().ok_or_else(|| Error::new(ErrorKind::Unavailable, "no connection"))
}

/// Rows that must wait (Postgres unavailable, table not usable), and why.
type Wait = (Rows, Error);

/// Writes one mapping's rows and settles their outcomes; rows that cannot be
/// written now come back with the reason. A panic while writing is a bug, and
/// retrying a bug would stall the mapping forever: the batch is written again a
/// row at a time, and the row that panics on its own is dead-lettered with the
/// panic message.
fn sync_mapping(rt: &Runtime, mapping: usize, rows: Rows, conn: &mut Option<Connection>) -> Result<(), Wait> {
    let outcomes = match guard::catch(|| write_rows(rt, mapping, &rows, conn)) {
        Ok(Ok(outcomes)) => outcomes,
        Ok(Err(e)) => return Err((rows, e)),
        Err(panic) => {
            // It may have stopped mid-transaction: never reuse the connection.
            *conn = None;
            if rows.len() > 1 {
                return isolate(rt, mapping, rows, conn);
            }
            vec![Err(format!("pgsync bug: the worker panicked writing this row: {panic}"))]
        }
    };
    settle(rt, &rows, &outcomes);
    Ok(())
}

/// Writes the rows of a batch that panicked one at a time; stops at the first
/// that must wait, and hands it and the rest back.
fn isolate(rt: &Runtime, mapping: usize, rows: Rows, conn: &mut Option<Connection>) -> Result<(), Wait> {
    let mut rows = rows.into_iter();
    while let Some(row) = rows.next() {
        if let Err((mut back, failure)) = sync_mapping(rt, mapping, vec![row], conn) {
            back.extend(rows);
            return Err((back, failure));
        }
    }
    Ok(())
}

/// Applies the outcomes of written rows. A panic here (a bug) comes after
/// Postgres committed, and writing the rows again could count an increment twice:
/// they are released instead (their journal entries bring them back after a
/// restart), and `SYNC.HSET` callers waiting for them get the error.
fn settle(rt: &Runtime, rows: &Rows, outcomes: &[RowOutcome]) {
    let Err(panic) = guard::catch(|| apply::apply_batch(rt, rows, outcomes)) else {
        return;
    };
    let message = format!("pgsync bug while applying a batch to Redis: {panic}");
    warn(&message);
    rt.queue.complete(rows.iter().map(|(row, _)| row));
    for (row, entry) in rows {
        waiters::settle(row, entry.change.version, &Err(message.clone()));
    }
}

/// Writes one mapping's rows to Postgres; `Err` leaves them all to retry.
fn write_rows(
    rt: &Runtime,
    mapping: usize,
    rows: &[(RowKey, Entry)],
    conn: &mut Option<Connection>,
) -> Result<Vec<RowOutcome>, Error> {
    let m = &rt.mappings.all()[mapping];
    let schema = rt.usable_schema(mapping)?;
    let max_row_bytes = config::count(&config::MAX_ROW_BYTES);
    let mut outcomes: Vec<RowOutcome> = vec![Ok(Default::default()); rows.len()];
    let mut prepared = Vec::with_capacity(rows.len());
    let mut positions = Vec::with_capacity(rows.len());
    for (i, (row, entry)) in rows.iter().enumerate() {
        fault::panic_if_targeted(&row.id);
        match writer::prepare(mapping, m, &schema, &row.id, &entry.change).and_then(|p| within(p, max_row_bytes)) {
            Ok(p) if writer::writes_nothing(&p) => {}
            Ok(p) => {
                prepared.push(p);
                positions.push(i);
            }
            Err(e) => outcomes[i] = Err(e),
        }
    }
    if !prepared.is_empty() {
        let tables = |i: usize| (i == mapping).then_some((m, &*schema));
        let written = writer::write(&mut **connection(&rt.pool, conn)?, &tables, &prepared)?;
        rt.postgres.mark_up();
        for (pos, outcome) in positions.into_iter().zip(written) {
            outcomes[pos] = outcome;
        }
    }
    Ok(outcomes)
}

/// Rejects a row whose values are over `pgsync.max-row-bytes`: Postgres takes at
/// most 1 GiB in one message, and such a row would fail the same way forever,
/// looking like a lost connection. A rejection is a dead letter, not a retry.
fn within(row: PreparedRow, max: usize) -> Result<PreparedRow, String> {
    let bytes: usize = row
        .values
        .iter()
        .map(|(column, write)| {
            column.len()
                + match write {
                    ColumnWrite::Set(value) => value.as_ref().map_or(0, String::len),
                    ColumnWrite::Add(delta) => delta.len(),
                }
        })
        .sum();
    if bytes > max {
        return Err(format!(
            "the row's values are {bytes} bytes, over pgsync.max-row-bytes ({max}); not sent to Postgres"
        ));
    }
    Ok(row)
}
