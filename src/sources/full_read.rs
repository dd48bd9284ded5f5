//! What a read of a whole table leaves behind it: the mapping's cached keys it
//! did not see, deleted when the read stands for the table (a reload with
//! FLUSH, a catch-up, a logical initial load), and the rows it could not key,
//! counted and reported. Shared by the reload, the documents and the logical
//! stream.

use crate::model::queue::Snapshot;
use crate::model::stats::MappingStats;
use crate::pipeline::runtime::Runtime;
use crate::redis::keyscan::RowKeys;
use crate::redis::redis_io::{call_logged, own_writes, warn};
use crate::redis::redis_lock::with_redis_lock;
use std::collections::HashSet;
use std::sync::atomic::Ordering;

/// Counts (in `refused`) rows read from Postgres that were not written because
/// a write to their key would be refused (a value that could be read back as
/// another row's, or that is not its type's canonical text). Logged the first
/// time only; `last_error` shows the latest.
pub fn report_unkeyed(rt: &Runtime, mapping: usize, count: u64, why: &str) {
    let message =
        format!("{}: {count} row(s) read from Postgres not written to Redis: {why}", rt.mapping(mapping).def.name);
    if !rt.mapping(mapping).stats.unkeyed_logged.swap(true, Ordering::Relaxed) {
        warn(&format!("{message} (such rows are counted in refused; this is logged once)"));
    }
    rt.mapping(mapping).stats.set_last_error(&message);
    MappingStats::bump(&rt.mapping(mapping).stats.refused, count);
}

/// Deletes the mapping's keys whose row does not exist (and that have no change
/// on its way to Postgres), scanning the keyspace a step per short lock.
pub fn flush_missing(rt: &Runtime, mapping: usize, loaded: &HashSet<String>, snapshot: &Snapshot<'_>) {
    let m = rt.mapping(mapping).def;
    let mut keys = RowKeys::new(&rt.mappings, mapping);
    let mut more = true;
    while more {
        more = with_redis_lock(|ctx| {
            let Some(ids) = keys.next_step(ctx) else { return false };
            let stray = ids.iter().map(String::as_str).filter(|id| !loaded.contains(*id));
            let newer = snapshot.newer_among(mapping, stray.clone());
            own_writes(|| {
                for id in stray.filter(|id| !newer.contains(id)) {
                    call_logged(ctx, "DEL", &[m.main_key(id).as_bytes()]);
                }
            });
            true
        });
    }
}
