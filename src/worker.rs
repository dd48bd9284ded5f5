//! Workers: each takes a batch of dirty rows from the queue, writes each mapping's
//! rows to Postgres in multi-row statements, and hands the outcomes to apply. Rows
//! of a mapping that cannot be written now (Postgres unavailable, table not usable)
//! go back to the queue, the other mappings' rows go on, and the worker backs off
//! exponentially up to `pgsync.retry-max-delay-ms`.

use crate::apply;
use crate::config;
use crate::pg::error::{Error, ErrorKind};
use crate::pg::writer::{self, RowOutcome};
use crate::queue::{Entry, RowKey};
use crate::redis_io::warn;
use crate::runtime::{self, panic_message, Pool, Runtime};
use crate::stats::MappingStats;
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

/// Body of worker thread `slot`; returns when the slot is no longer wanted.
pub fn run(slot: usize) {
    let Some(rt) = runtime::get() else { return };
    while rt.keep_worker(slot) {
        if rt.is_replica() {
            rt.queue.sleep(IDLE_WAIT);
            continue;
        }
        let batch = rt.queue.take_batch(
            config::count(&config::BATCH_SIZE),
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
    for (mapping, mut rows) in groups {
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sync_mapping(rt, mapping, &mut rows, &mut conn)));
        let failure = match result {
            Ok(Ok(())) => {
                rt.backoffs[mapping].reset();
                continue;
            }
            Ok(Err(e)) => e,
            Err(panic) => Error::new(ErrorKind::Unavailable, format!("worker bug: {}", panic_message(&panic))),
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

/// Writes one mapping's rows and applies their outcomes; `Err` leaves them to retry.
fn sync_mapping(
    rt: &Runtime,
    mapping: usize,
    rows: &mut [(RowKey, Entry)],
    conn: &mut Option<Connection>,
) -> Result<(), Error> {
    let m = &rt.mappings.all()[mapping];
    let schema = rt.usable_schema(mapping)?;
    let mut outcomes: Vec<RowOutcome> = vec![Ok(Default::default()); rows.len()];
    let mut prepared = Vec::with_capacity(rows.len());
    let mut positions = Vec::with_capacity(rows.len());
    for (i, (row, entry)) in rows.iter().enumerate() {
        match writer::prepare(mapping, m, &schema, &row.id, &entry.change) {
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
    apply::apply_batch(rt, rows, &outcomes);
    Ok(())
}
