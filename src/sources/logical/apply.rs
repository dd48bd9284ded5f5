//! Applies one committed transaction of the stream to Redis: a truncated
//! mapping's cached rows go first (a key-scan step per short lock), then the
//! rows the transaction left are written or deleted through the Postgres ->
//! Redis apply (`sources::apply_pg`), [`ROWS_PER_LOCK`] per short lock, and the
//! position past the commit is stored in the same step as the last of them, so
//! it persists and replicates with the rows. A large transaction thus leaves
//! the server room between its steps (one 200,000-row UPDATE under a single
//! lock stalled it for about a second); a crash between two steps replays the
//! whole transaction from the stored position, and writing a row again to what
//! it already holds is harmless. A transaction the module wrote itself stores
//! only the position.

use super::txn::{MappingChanges, Txn};
use crate::model::queue::Snapshot;
use crate::pg::reader::PgRow;
use crate::pipeline::runtime::Runtime;
use crate::redis::cdc_position::{self as state, Position};
use crate::redis::keyscan::RowKeys;
use crate::redis::notify::Source;
use crate::redis::redis_lock::with_redis_lock;
use crate::sources::apply_pg::apply_locked;
use crate::sources::full_read::report_unkeyed;
use std::collections::BTreeMap;

/// Applies `txn`, committed before `end`, and stores `end` (for `scope`).
/// Returns, per mapping, the rows Redis holds a newer change to (or whose slot
/// is moving): they are read again from Postgres later.
pub fn commit(rt: &Runtime, txn: &Txn, end: u64, scope: &str) -> BTreeMap<usize, Vec<String>> {
    let mut later: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let snapshot = rt.queue().snapshot();
    let changes = if txn.own { &BTreeMap::new() } else { &txn.changes };
    for (&mapping, c) in changes {
        if let (count @ 1.., Some(why)) = (c.unkeyed.0, &c.unkeyed.1) {
            report_unkeyed(rt, mapping, count, why);
        }
        if c.truncated {
            later.entry(mapping).or_default().extend(clear(rt, mapping, c, &snapshot));
        }
    }
    let steps = steps(changes);
    let last = steps.len().saturating_sub(1);
    for (i, step) in steps.iter().enumerate() {
        with_redis_lock(|ctx| {
            let applied = apply_locked(ctx, rt, step.mapping, &snapshot, &step.rows, &step.gone, Source::Postgres);
            if !applied.later.is_empty() {
                later.entry(step.mapping).or_default().extend(applied.later);
            }
            if i == last {
                state::store(ctx, Position { lsn: end, scope: scope.to_string() });
            }
        });
    }
    if steps.is_empty() {
        with_redis_lock(|ctx| state::store(ctx, Position { lsn: end, scope: scope.to_string() }));
    }
    later
}

/// Rows written or deleted per short Redis lock.
const ROWS_PER_LOCK: usize = 1000;

/// One lock's worth of a mapping's rows.
#[derive(Debug, Default)]
struct Step {
    mapping: usize,
    rows: Vec<PgRow>,
    gone: Vec<String>,
}

/// The transaction's rows cut into steps of at most [`ROWS_PER_LOCK`], mapping
/// by mapping in order.
fn steps(changes: &BTreeMap<usize, MappingChanges>) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    for (&mapping, c) in changes {
        for (i, (id, fields)) in c.rows.iter().enumerate() {
            if i % ROWS_PER_LOCK == 0 {
                steps.push(Step { mapping, ..Step::default() });
            }
            let Some(step) = steps.last_mut() else { continue };
            match fields {
                Some(fields) => step.rows.push(PgRow { id: id.clone(), fields: fields.clone() }),
                None => step.gone.push(id.clone()),
            }
        }
    }
    steps
}

/// Deletes every cached row of a truncated mapping but those the transaction
/// wrote after the TRUNCATE (and those Redis changed since: returned).
fn clear(rt: &Runtime, mapping: usize, changes: &MappingChanges, snapshot: &Snapshot<'_>) -> Vec<String> {
    let mut keys = RowKeys::new(&rt.mappings, mapping);
    let mut later = Vec::new();
    while let Some(step) = with_redis_lock(|ctx| {
        let ids = keys.next_step(ctx)?;
        let gone: Vec<String> = ids.into_iter().filter(|id| !changes.rows.contains_key(id)).collect();
        Some(apply_locked(ctx, rt, mapping, snapshot, &[], &gone, Source::Postgres).later)
    }) {
        later.extend(step);
    }
    later
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_transaction_is_cut_into_steps_of_at_most_rows_per_lock() {
        let mut changes = BTreeMap::new();
        let mut big = MappingChanges::default();
        for i in 0..2500 {
            big.rows.insert(format!("{i:05}"), (i % 2 == 0).then(Vec::new));
        }
        changes.insert(3, big);
        let mut small = MappingChanges::default();
        small.rows.insert("1".into(), None);
        changes.insert(7, small);
        changes.insert(9, MappingChanges { truncated: true, ..MappingChanges::default() });
        let steps = steps(&changes);
        let sizes: Vec<(usize, usize)> = steps.iter().map(|s| (s.mapping, s.rows.len() + s.gone.len())).collect();
        assert_eq!(sizes, [(3, 1000), (3, 1000), (3, 500), (7, 1)]);
        assert_eq!(steps[0].rows.len(), 500, "upserts and deletes keep their place in the step");
        assert_eq!(steps[3].gone, ["1"]);
    }
}
