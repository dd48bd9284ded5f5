//! Postgres -> Redis apply: writes rows read from Postgres (by the listener, a
//! reload or a TRUNCATE's clearing) into their hashes, skipping the rows Redis
//! changed since the read began, since Redis is newer for those, and, in a
//! cluster, the rows whose key is another node's (`cluster::place`).
//!
//! The rules live here, over the narrow [`RowStore`] trait, so that they are
//! unit-tested with an in-memory fake (`apply_pg/tests.rs`); `apply_pg/live.rs`
//! is the store over the Redis key API.

mod live;
#[cfg(test)]
mod tests;

use crate::model::mapping::Mapping;
use crate::model::queue::Snapshot;
use crate::pg::reader::PgRow;
use crate::pipeline::runtime::Runtime;
use crate::redis::cluster::Place;
use crate::redis::notify::{self, now_ms, Event, EventOp, Source};
use crate::redis::redis_io::own_writes;
use crate::redis::redis_lock::with_redis_lock;
use redis_module::Context;

pub(crate) use live::{fill_missing_fields, write_row};

/// What [`apply_pg_rows`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Ids to read and apply again later: Redis changed them since the
    /// snapshot, or their slot is moving between cluster nodes.
    pub later: Vec<String>,
    /// Rows applied here: written, deleted, or found already holding what
    /// Postgres has; in a cluster, rows of other nodes' keys are neither written
    /// nor counted.
    pub written: usize,
}

/// What applying rows read from Postgres needs of Redis, under the Redis lock
/// the caller holds. Narrow so that the rules above it run against a fake.
pub(crate) trait RowStore {
    /// Where `key` stands in a cluster (always [`Place::Mine`] outside one).
    fn place(&self, key: &str) -> Place;

    /// Writes a row into `key` (see [`write_row`]); false when nothing changed.
    fn write(&self, m: &Mapping, key: &str, fields: &[(String, Option<String>)]) -> bool;

    /// Deletes the key of a row that no longer exists in Postgres.
    fn delete(&self, key: &str);

    /// Publishes a change event of mapping `mapping` (if `m` asks for them).
    fn announce(&self, m: &Mapping, mapping: usize, event: &Event<'_>);

    /// Tells read-through loads in flight that these rows were written: a load
    /// reading one now may read an older value.
    fn rows_changed(&self, mapping: usize, ids: &[&str]);
}

/// Writes rows read from Postgres (listener, reload) into their hashes, under one
/// short lock: mapped fields are set, NULL columns removed, unmapped fields kept;
/// a hash that already holds the row as Postgres has it is left alone, with no
/// event but a reload's (a catch-up over a cached table publishes only what
/// changed; `notify_reload` announces every row a reload loads).
/// `gone` lists ids whose row no longer exists: their keys are deleted. Rows Redis
/// changed since `snapshot` (taken before the read) are skipped, since Redis is
/// newer for them, and so are keys this cluster node does not own; see [`Applied`].
pub fn apply_pg_rows(
    rt: &Runtime,
    mapping: usize,
    snapshot: &Snapshot<'_>,
    rows: &[PgRow],
    gone: &[String],
    source: Source,
) -> Applied {
    with_redis_lock(|ctx| apply_locked(ctx, rt, mapping, snapshot, rows, gone, source))
}

/// [`apply_pg_rows`] under the Redis lock the caller holds (`ctx`), so that
/// more can be written in the same step (the logical stream's position).
pub fn apply_locked(
    ctx: &Context,
    rt: &Runtime,
    mapping: usize,
    snapshot: &Snapshot<'_>,
    rows: &[PgRow],
    gone: &[String],
    source: Source,
) -> Applied {
    let store = live::LiveStore { ctx, rt };
    let batch = Batch { mapping, m: rt.mapping(mapping).def, rows, gone, source };
    own_writes(|| apply_rows(&store, snapshot, &batch))
}

/// One mapping's rows read from Postgres, and where they came from.
pub(crate) struct Batch<'a> {
    /// Index of the mapping.
    pub mapping: usize,
    /// The mapping itself.
    pub m: &'a Mapping,
    /// Rows to write.
    pub rows: &'a [PgRow],
    /// Ids whose row no longer exists.
    pub gone: &'a [String],
    /// Who read them (decides which events go out).
    pub source: Source,
}

/// The rules of [`apply_pg_rows`] over any [`RowStore`]. Must run under the
/// Redis lock, so capture (which needs it) cannot dirty a row between the
/// snapshot's check and the write; one queue lock for the whole chunk.
pub(crate) fn apply_rows(store: &impl RowStore, snapshot: &Snapshot<'_>, batch: &Batch<'_>) -> Applied {
    let Batch { mapping, m, rows, gone, source } = *batch;
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).chain(gone.iter().map(String::as_str)).collect();
    let newer_ids = snapshot.newer_among(mapping, ids.iter().copied());
    store.rows_changed(mapping, &ids);
    let mut applied = Applied::default();
    // Keys of other nodes are theirs to write; a key whose slot is moving is
    // read again once the move is over, and so is a row Redis changed since.
    let mut mine = |id: &str, key: &str| match store.place(key) {
        _ if newer_ids.contains(id) => {
            applied.later.push(id.to_string());
            false
        }
        Place::Mine => {
            applied.written += 1;
            true
        }
        Place::Moving => {
            applied.later.push(id.to_string());
            false
        }
        Place::Elsewhere => false,
    };
    for row in rows {
        let key = m.main_key(&row.id);
        if !mine(&row.id, &key) {
            continue;
        }
        let changed = store.write(m, &key, &row.fields);
        // `notify_reload` asks for an event per row loaded, changed or not.
        if (changed || source == Source::Reload) && notify::wanted(m, source) {
            let fields = row.fields.iter().map(|(f, _)| f.clone()).collect();
            let event = Event { key: &key, id: &row.id, op: EventOp::Upsert, source, fields, time: now_ms() };
            store.announce(m, mapping, &event);
        }
    }
    for id in gone {
        let key = m.main_key(id);
        if !mine(id, &key) {
            continue;
        }
        store.delete(&key);
        let event = Event { key: &key, id, op: EventOp::Delete, source, fields: Vec::new(), time: now_ms() };
        store.announce(m, mapping, &event);
    }
    applied
}
