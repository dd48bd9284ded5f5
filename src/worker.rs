//! Workers: each takes a batch of dirty rows from the queue, writes it to Postgres
//! in multi-row statements, and hands the outcomes to apply. While Postgres is
//! unavailable the batch goes back to the queue and the worker backs off
//! exponentially up to `pgsync.retry-max-delay-ms`.

use crate::apply;
use crate::config;
use crate::pg::error::{Error, ErrorKind};
use crate::pg::schema::TableSchema;
use crate::pg::writer;
use crate::queue::{Entry, Outcome, RowKey};
use crate::redis_io::warn;
use crate::runtime::{self, panic_message, Runtime};
use crate::stats::MappingStats;
use std::sync::Arc;
use std::time::Duration;

const FIRST_RETRY_DELAY: Duration = Duration::from_millis(50);
const IDLE_WAIT: Duration = Duration::from_millis(500);

/// Body of worker thread `slot`; returns when the slot is no longer wanted.
pub fn run(slot: usize) {
    let Some(rt) = runtime::get() else { return };
    let mut delay = FIRST_RETRY_DELAY;
    while rt.keep_worker(slot) {
        if rt.is_replica() {
            rt.queue.sleep(IDLE_WAIT);
            continue;
        }
        let batch = rt.queue.take_batch(
            config::count(&config::BATCH_SIZE),
            config::millis(&config::BATCH_DELAY_MS),
            IDLE_WAIT,
        );
        if batch.is_empty() {
            continue;
        }
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sync_batch(rt, &batch)));
        let failure = match result {
            Ok(Ok(())) => {
                delay = FIRST_RETRY_DELAY;
                continue;
            }
            Ok(Err(e)) => e,
            Err(panic) => Error::new(ErrorKind::Unavailable, format!("worker bug: {}", panic_message(&panic))),
        };
        wait_after_failure(rt, batch, &failure, delay);
        delay = (delay * 2).min(config::millis(&config::RETRY_MAX_DELAY_MS).max(FIRST_RETRY_DELAY));
    }
}

/// Puts the batch back, records why, and sleeps `delay`.
fn wait_after_failure(rt: &Runtime, batch: Vec<(RowKey, Entry)>, failure: &Error, delay: Duration) {
    let mut seen = Vec::new();
    for (row, _) in &batch {
        if !seen.contains(&row.mapping) {
            seen.push(row.mapping);
            MappingStats::bump(&rt.stats[row.mapping].retries, 1);
            rt.stats[row.mapping].set_last_error(&failure.message);
            if failure.kind == ErrorKind::Schema {
                rt.invalidate_schema(row.mapping);
            }
        }
    }
    if failure.kind == ErrorKind::Unavailable {
        if rt.postgres.describe() != "down" {
            warn(&format!(
                "Postgres unavailable, changes wait and are retried: {failure}"
            ));
        }
        rt.postgres.mark_down(&failure.message);
    }
    rt.queue.requeue(batch);
    rt.queue.sleep(delay);
}

/// Writes one batch and applies its outcomes; `Err` leaves the batch to retry.
fn sync_batch(rt: &Runtime, batch: &[(RowKey, Entry)]) -> Result<(), Error> {
    let mut schemas: Vec<Option<Arc<TableSchema>>> = vec![None; rt.mappings.all().len()];
    for (row, _) in batch {
        if schemas[row.mapping].is_none() {
            let schema = rt.schema(row.mapping).ok_or_else(|| {
                let why = rt.stats[row.mapping]
                    .schema_error()
                    .unwrap_or_else(|| "not checked yet".into());
                Error::new(
                    ErrorKind::Schema,
                    format!(
                        "table of mapping \"{}\" unusable: {why}",
                        rt.mappings.all()[row.mapping].name
                    ),
                )
            })?;
            schemas[row.mapping] = Some(schema);
        }
    }
    let mut outcomes: Vec<Outcome> = vec![Ok(()); batch.len()];
    let mut prepared = Vec::with_capacity(batch.len());
    let mut positions = Vec::with_capacity(batch.len());
    for (i, (row, entry)) in batch.iter().enumerate() {
        let schema = schemas[row.mapping]
            .as_deref()
            .ok_or_else(|| Error::new(ErrorKind::Schema, "schema vanished"))?;
        match writer::prepare(
            row.mapping,
            &rt.mappings.all()[row.mapping],
            schema,
            &row.id,
            &entry.change,
        ) {
            Ok(p) => {
                prepared.push(p);
                positions.push(i);
            }
            Err(e) => outcomes[i] = Err(e),
        }
    }
    if !prepared.is_empty() {
        let tables = |i: usize| rt.mappings.all().get(i).zip(schemas.get(i).and_then(|s| s.as_deref()));
        let mut conn = rt.pool.get()?;
        let written = writer::write(&mut *conn, &tables, &prepared)?;
        rt.postgres.mark_up();
        for (pos, outcome) in positions.into_iter().zip(written) {
            outcomes[pos] = outcome;
        }
    }
    apply::apply_batch(rt, batch, &outcomes);
    Ok(())
}
