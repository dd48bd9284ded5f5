//! The initial load of a fresh slot: each listening mapping's table is read in
//! the snapshot the slot exported, so the stream then carries on with exactly
//! the transactions the load did not see, and the mapping's keys that have no
//! row are removed (a load with FLUSH). Rows already cached as Postgres has them
//! are neither written nor announced.

use crate::model::stats::MappingStats;
use crate::pg::error::Error;
use crate::pg::reader::{Refused, RowShape};
use crate::pipeline::runtime::Runtime;
use crate::redis::notify::Source;
use crate::sources::apply_pg::apply_pg_rows;
use crate::sources::documents;
use crate::sources::full_read::{flush_missing, report_unkeyed};
use postgres::Client;
use std::collections::{BTreeMap, HashSet};

/// Rows per chunk (one short Redis lock each).
const CHUNK: i32 = 1000;

/// Loads `mappings` in `snapshot`; returns the rows read, and per mapping the
/// rows Redis holds a newer change to (to read again once it landed).
pub fn run(
    rt: &Runtime,
    client: &mut Client,
    mappings: &[usize],
    snapshot: &str,
) -> Result<(u64, BTreeMap<usize, Vec<String>>), Error> {
    let mut total = 0;
    let mut later: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for &mapping in mappings {
        if rt.mapping(mapping).def.document.is_some() {
            // Documents are read as Postgres is now, not in the snapshot: a
            // change the stream then brings rebuilds them again, so none is
            // missed, and a rebuild is the same whichever came first.
            total += documents::reload(rt, client, mapping, true, Source::Postgres)?;
            continue;
        }
        let schema = rt.usable_schema(mapping)?;
        let shape = RowShape::new(rt.mapping(mapping).def, &schema);
        // Rows Redis changes from now on are newer than what is read.
        let queue = rt.queue().snapshot();
        let mut loaded = HashSet::new();
        let mut refused = Refused::default();
        total += shape.stream_at(client, Some(snapshot), CHUNK, &mut refused, |rows| {
            // Counted as a catch-up's reads are (SYNC.STATUS reload_rows_read).
            MappingStats::bump(&rt.mapping(mapping).stats.reload_rows_read, rows.len() as u64);
            loaded.extend(rows.iter().map(|r| r.id.clone()));
            let applied = apply_pg_rows(rt, mapping, &queue, &rows, &[], Source::Postgres);
            later.entry(mapping).or_default().extend(applied.later);
            Ok(())
        })?;
        if let Some(why) = refused.first {
            report_unkeyed(rt, mapping, refused.count, &why);
        }
        flush_missing(rt, mapping, &loaded, &queue);
    }
    Ok((total, later))
}
