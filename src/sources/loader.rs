//! The read-through loader: one thread that reads the rows that reads missed
//! (and the rest of rows that `fill_on_write` writes created) from Postgres, in
//! batches of up to `pgsync.batch-size` rows per query (`= ANY($1)`), then writes
//! them into Redis under one short lock per batch and answers the waiting
//! clients. The Redis lock is never held while Postgres is asked.
//!
//! A row is never written over a newer Redis value: a key that exists by then is
//! left alone; a row with a change still on its way to Postgres (or written by a
//! reload or the listener while it was read) is read again once that settles.

use crate::model::mapping::Mapping;
use crate::model::queue::{RowKey, Snapshot};
use crate::model::stats::MappingStats;
use crate::pg::reader::{PgRow, RowShape};
use crate::pg::schema::TableSchema;
use crate::pipeline::retry::{self, Round};
use crate::pipeline::runtime::Runtime;
use crate::redis::config;
use crate::redis::read_through::loads::{self, Finished, Request};
use crate::redis::redis_io::{own_writes, string};
use crate::sources::apply_pg::{fill_missing_fields, write_row};
use compact_str::CompactString;
use redis_module::{Context, ThreadSafeContext};
use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the thread waits for work before it looks whether to stop.
const POLL: Duration = Duration::from_millis(100);
/// How soon a row that could not be written yet (a change of it still pending,
/// or written meanwhile) is read again.
const AGAIN: Duration = Duration::from_millis(5);

/// The requests of one batch, by mapping.
#[derive(Default)]
struct Batch {
    loads: Vec<String>,
    fills: Vec<String>,
}

/// Body of the loader thread; returns on shutdown.
pub fn run(rt: &Runtime, requests: Receiver<Request>) {
    let mut later: Vec<Request> = Vec::new();
    let mut shapes: HashMap<usize, (Arc<TableSchema>, RowShape)> = HashMap::new();
    // A round takes what is asked and loads it, a batch per mapping and query; a
    // batch that could not be read is asked again in the next round, after the
    // backoff.
    let round = || -> Result<Round, ()> {
        let wait = if later.is_empty() { POLL } else { AGAIN };
        let first = match requests.recv_timeout(wait) {
            Ok(request) => Some(request),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return Ok(Round::Done(())),
        };
        let limit = config::count(&config::BATCH_SIZE);
        let mut taken: Vec<Request> = std::mem::take(&mut later);
        taken.extend(first);
        while taken.len() < limit {
            match requests.try_recv() {
                Ok(request) => taken.push(request),
                Err(_) => break,
            }
        }
        let mut batches: BTreeMap<usize, Batch> = BTreeMap::new();
        for request in taken {
            match request {
                Request::Load(row) => batches.entry(row.mapping).or_default().loads.push(row.id.to_string()),
                Request::Fill(row) => batches.entry(row.mapping).or_default().fills.push(row.id.to_string()),
            }
        }
        let (mut loaded, mut failed) = (false, false);
        for (mapping, batch) in batches {
            for ids in chunks(batch, limit) {
                let again = match load(rt, mapping, &mut shapes, ids) {
                    Ok(again) => {
                        loaded = true;
                        again
                    }
                    Err(again) => {
                        failed = true;
                        again
                    }
                };
                later.extend(again);
            }
        }
        match (failed, loaded) {
            (true, _) => Err(()),
            (false, true) => Ok(Round::Worked),
            // Nothing was asked: `recv_timeout` has waited already.
            (false, false) => Ok(Round::Idle(Duration::ZERO)),
        }
    };
    retry::until_done(rt.shutdown, round, |()| {});
}

/// Splits a mapping's requests into batches of at most `limit` rows.
fn chunks(batch: Batch, limit: usize) -> Vec<Batch> {
    let mut out: Vec<Batch> = Vec::new();
    let mut current = Batch::default();
    let all = batch.loads.into_iter().map(|id| (true, id)).chain(batch.fills.into_iter().map(|id| (false, id)));
    for (is_load, id) in all {
        if current.loads.len() + current.fills.len() >= limit {
            out.push(std::mem::take(&mut current));
        }
        if is_load {
            current.loads.push(id);
        } else {
            current.fills.push(id);
        }
    }
    out.push(current);
    out
}

/// Reads one batch and writes it; returns what must be read again later. `Err`
/// when Postgres could not be asked: the waiting clients are answered with the
/// failure, and fills are kept for later.
fn load(
    rt: &Runtime,
    mapping: usize,
    shapes: &mut HashMap<usize, (Arc<TableSchema>, RowShape)>,
    batch: Batch,
) -> Result<Vec<Request>, Vec<Request>> {
    let m = rt.mapping(mapping).def;
    let stats = rt.mapping(mapping).stats;
    let load_rows: Vec<RowKey> = batch.loads.iter().map(|id| RowKey { mapping, id: CompactString::new(id) }).collect();
    let fills_later = || batch.fills.iter().map(|id| Request::Fill(RowKey { mapping, id: CompactString::new(id) }));
    let Some(schema) = rt.schema(mapping) else {
        // Not checked yet (the module just started): wait for it, within each
        // client's own deadline. A broken schema fails the loads at once.
        let Some(why) = stats.schema_error() else {
            let loads_later = load_rows.into_iter().map(Request::Load);
            return Ok(loads_later.chain(fills_later()).collect());
        };
        loads::fail(&load_rows, &format!("the schema of {} is not usable: {why}", m.table));
        return Err(fills_later().collect());
    };
    let shape = match shapes.get(&mapping) {
        Some((known, shape)) if Arc::ptr_eq(known, &schema) => shape,
        _ => &shapes.entry(mapping).insert_entry((schema.clone(), RowShape::new(m, &schema))).into_mut().1,
    };
    let ids: Vec<String> = batch.loads.iter().chain(batch.fills.iter()).cloned().collect();
    let snapshot = rt.queue().snapshot();
    let started = Instant::now();
    let rows =
        rt.pool.get().map_err(|e| e.to_string()).and_then(|mut c| shape.fetch(&mut c, &ids).map_err(|e| e.to_string()));
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => {
            MappingStats::bump(&stats.read_errors, 1);
            loads::fail(&load_rows, &format!("cannot read from Postgres: {e}"));
            return Err(fills_later().collect());
        }
    };
    stats.read_latency.record(started.elapsed());
    MappingStats::bump(&stats.read_loads, 1);
    MappingStats::bump(&stats.read_rows_loaded, rows.len() as u64);
    let mut found: HashMap<String, Vec<(String, Option<String>)>> =
        rows.into_iter().map(|PgRow { id, fields }| (id, fields)).collect();
    let tsc = ThreadSafeContext::new();
    let ctx = tsc.lock();
    let mut again = Vec::new();
    for row in load_rows {
        let loaded = found.get(row.id.as_str()).cloned();
        if let Some(retry) = apply_load(&ctx, rt, m, &snapshot, &row, loaded) {
            again.push(retry);
        }
    }
    for id in batch.fills {
        let row = RowKey { mapping, id: id.into() };
        if snapshot.redis_is_newer(&row) {
            again.push(Request::Fill(row));
        } else if let Some(fields) = found.remove(row.id.as_str()) {
            own_writes(|| fill_missing_fields(&ctx, &m.main_key(&row.id), &fields));
        }
    }
    Ok(again)
}

/// Writes one loaded row (or learns it is absent) and answers its waiters;
/// returns the request again when the row must be read again.
fn apply_load(
    ctx: &Context,
    rt: &Runtime,
    m: &Mapping,
    snapshot: &Snapshot<'_>,
    row: &RowKey,
    loaded: Option<Vec<(String, Option<String>)>>,
) -> Option<Request> {
    if loads::take_invalidated(row) {
        return Some(Request::Load(row.clone()));
    }
    let key = m.main_key(&row.id);
    if rt.is_replica() {
        loads::finish(row, Finished::Read(loaded));
        return None;
    }
    if crate::redis::redis_io::key_exists(ctx, &string(ctx, key.as_bytes())) {
        loads::finish(row, Finished::InRedis);
        return None;
    }
    if snapshot.redis_is_newer(row) {
        return Some(Request::Load(row.clone()));
    }
    match loaded {
        Some(fields) => {
            own_writes(|| write_row(ctx, m, &key, &fields));
            loads::finish(row, Finished::InRedis);
        }
        None => loads::finish(row, Finished::Absent),
    }
    None
}
