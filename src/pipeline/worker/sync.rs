//! What a worker does with a batch, apart from Redis and Postgres: it reaches them
//! through two narrow traits, so that its batching, requeue, backoff and outcome
//! handling are unit-tested with in-memory fakes (`tests.rs`).

use crate::model::backoff::SharedBackoff;
use crate::model::guard;
use crate::pg::error::{Action, Error, ErrorKind};
use crate::pg::writer::RowOutcome;
use crate::redis::config;
use std::collections::BTreeMap;
use std::time::Instant;

/// A row of a batch, as far as the worker needs to know it.
pub trait BatchRow {
    /// Index of the row's mapping.
    fn mapping(&self) -> usize;
}

/// The Redis side: the dirty set the rows come from, and the apply that settles them.
pub trait RedisSide {
    /// The rows it hands out.
    type Row: BatchRow;

    /// Waits for work and takes a batch of rows whose mapping is `ready`; empty
    /// when there was nothing to take.
    fn take(&self, ready: &dyn Fn(usize) -> bool) -> Vec<Self::Row>;

    /// Puts back a mapping's rows that cannot be written now, and records why.
    fn requeue(&self, mapping: usize, rows: Vec<Self::Row>, failure: &Error);

    /// Applies the outcomes of written rows to Redis (`outcomes[i]` is `rows[i]`'s):
    /// commits merged, rejections dead-lettered. May panic (a bug).
    fn apply(&self, rows: &[Self::Row], outcomes: &[RowOutcome]);

    /// Lets go of rows whose apply failed (a bug), answering their waiters with `why`.
    fn release(&self, rows: &[Self::Row], why: &str);
}

/// The Postgres side: writes a mapping's rows.
pub trait PostgresSide<R> {
    /// Writes one mapping's rows; each row's outcome (a rejection is the row's
    /// error), or `Err` when none of them is known to be committed. May panic (a bug).
    fn write(&mut self, mapping: usize, rows: &[R]) -> Result<Vec<RowOutcome>, Error>;

    /// Gives up the connection in use, if any; the next write takes another.
    fn release(&mut self);
}

/// Takes a batch (of mappings not backing off) and syncs it.
pub fn step<D: RedisSide, P: PostgresSide<D::Row>>(redis: &D, postgres: &mut P, backoffs: &[SharedBackoff]) {
    let batch = redis.take(&|mapping| backoffs.get(mapping).is_none_or(|b| b.ready(Instant::now())));
    if !batch.is_empty() {
        sync_batch(redis, postgres, backoffs, batch);
    }
}

/// Syncs a batch mapping by mapping. A mapping whose rows cannot be written now
/// goes back and waits out its own backoff; the others go on.
fn sync_batch<D: RedisSide, P: PostgresSide<D::Row>>(
    redis: &D,
    postgres: &mut P,
    backoffs: &[SharedBackoff],
    batch: Vec<D::Row>,
) {
    let mut groups: BTreeMap<usize, Vec<D::Row>> = BTreeMap::new();
    for row in batch {
        groups.entry(row.mapping()).or_default().push(row);
    }
    for (mapping, rows) in groups {
        let backoff = backoffs.get(mapping);
        let Err((rows, failure)) = sync_mapping(redis, postgres, mapping, rows) else {
            if let Some(b) = backoff {
                b.reset();
            }
            continue;
        };
        // The connection may be what failed; the next mapping gets another.
        postgres.release();
        redis.requeue(mapping, rows, &failure);
        if let Some(b) = backoff {
            b.failed(Instant::now(), config::millis(&config::RETRY_MAX_DELAY_MS));
        }
    }
}

/// Rows that must wait (Postgres unavailable, table not usable), and why.
type Wait<R> = (Vec<R>, Error);

/// Writes one mapping's rows and settles their outcomes; rows that cannot be
/// written now come back with the reason. A failure that is a row's own (a
/// rejection the writer could not pin on one row, or a panic: a bug, and retrying
/// a bug would stall the mapping forever) has the rows written again one at a
/// time, and the row that fails on its own is dead-lettered with the error.
fn sync_mapping<D: RedisSide, P: PostgresSide<D::Row>>(
    redis: &D,
    postgres: &mut P,
    mapping: usize,
    rows: Vec<D::Row>,
) -> Result<(), Wait<D::Row>> {
    let fault = match guard::catch(|| postgres.write(mapping, &rows)) {
        Ok(Ok(outcomes)) => {
            settle(redis, &rows, &outcomes);
            return Ok(());
        }
        Ok(Err(e)) if e.action() != Action::DeadLetter => return Err((rows, e)),
        Ok(Err(e)) => e,
        Err(panic) => {
            // It may have stopped mid-transaction: never go on with that connection.
            postgres.release();
            Error::new(ErrorKind::Rejected, format!("pgsync bug: the worker panicked writing this row: {panic}"))
        }
    };
    if rows.len() > 1 {
        return isolate(redis, postgres, mapping, rows);
    }
    settle(redis, &rows, &[Err(fault)]);
    Ok(())
}

/// Writes the rows of a batch that failed by a row's fault one at a time; stops
/// at the first that must wait, and hands it and the rest back.
fn isolate<D: RedisSide, P: PostgresSide<D::Row>>(
    redis: &D,
    postgres: &mut P,
    mapping: usize,
    rows: Vec<D::Row>,
) -> Result<(), Wait<D::Row>> {
    let mut rows = rows.into_iter();
    while let Some(row) = rows.next() {
        if let Err((mut back, failure)) = sync_mapping(redis, postgres, mapping, vec![row]) {
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
fn settle<D: RedisSide>(redis: &D, rows: &[D::Row], outcomes: &[RowOutcome]) {
    if let Err(panic) = guard::catch(|| redis.apply(rows, outcomes)) {
        redis.release(rows, &format!("pgsync bug while applying a batch to Redis: {panic}"));
    }
}
