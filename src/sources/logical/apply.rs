//! Applies one committed transaction of the stream to Redis: a truncated
//! mapping's cached rows go first (a key-scan step per short lock), then, under
//! one lock, every row the transaction left is written or deleted through the
//! Postgres -> Redis apply (`sources::apply_pg`) and the position past the
//! commit is stored in the same step, so the rows and the position persist and
//! replicate together. A transaction the module wrote itself stores only the
//! position.

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
    with_redis_lock(|ctx| {
        for (&mapping, c) in changes {
            let mut rows = Vec::new();
            let mut gone = Vec::new();
            for (id, fields) in &c.rows {
                match fields {
                    Some(fields) => rows.push(PgRow { id: id.clone(), fields: fields.clone() }),
                    None => gone.push(id.clone()),
                }
            }
            let applied = apply_locked(ctx, rt, mapping, &snapshot, &rows, &gone, Source::Postgres);
            if !applied.later.is_empty() {
                later.entry(mapping).or_default().extend(applied.later);
            }
        }
        state::store(ctx, Position { lsn: end, scope: scope.to_string() });
    });
    later
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
