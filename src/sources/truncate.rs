//! A TRUNCATE of a listened table, as the listener applies it: every cached row of
//! the mapping whose row is gone from Postgres is deleted from Redis, with a
//! `delete` event each, as if each row had been announced deleted. Redis keeps
//! serving: the keys are scanned a step per short lock, and Postgres is asked
//! between the locks, never under one.

use crate::pg::error::Error;
use crate::pg::reader::RowShape;
use crate::pipeline::runtime::Runtime;
use crate::redis::keyscan::RowKeys;
use crate::redis::notify::Source;
use crate::redis::redis_lock::with_redis_lock;
use crate::sources::apply_pg::apply_pg_rows;
use postgres::Client;
use std::collections::HashSet;

/// Clears `mapping`'s cached rows after its table was truncated. Returns the ids
/// kept because Redis holds a change to them that is newer than what Postgres
/// has: the listener reads those rows again once that change has landed.
pub fn clear(rt: &Runtime, client: &mut Client, mapping: usize, shape: &RowShape) -> Result<Vec<String>, Error> {
    let snapshot = rt.queue().snapshot();
    let mut keys = RowKeys::new(&rt.mappings, mapping);
    let mut kept = Vec::new();
    loop {
        let step = with_redis_lock(|ctx| {
            let ids = keys.next_step(ctx)?;
            // Checked before Postgres is read: a change captured before the snapshot
            // and not pending now has landed, so the read below sees its row.
            let newer = snapshot.newer_among(mapping, ids.iter().map(String::as_str));
            let (newer, older): (Vec<&String>, Vec<&String>) = ids.iter().partition(|id| newer.contains(id.as_str()));
            kept.extend(newer.into_iter().cloned());
            Some(older.into_iter().cloned().collect::<Vec<String>>())
        });
        let Some(candidates) = step else { break };
        if candidates.is_empty() {
            continue;
        }
        // Rows present now were written after the TRUNCATE (by Redis, or by someone
        // whose notification follows): their keys stay. After a TRUNCATE there are
        // few, so reading them whole costs little.
        let present: HashSet<String> = shape.fetch(client, &candidates)?.into_iter().map(|row| row.id).collect();
        let gone: Vec<String> = candidates.into_iter().filter(|id| !present.contains(id)).collect();
        kept.extend(apply_pg_rows(rt, mapping, &snapshot, &[], &gone, Source::Postgres).later);
    }
    Ok(kept)
}
