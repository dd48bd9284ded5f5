//! `SYNC.RELOAD`: streams mapped tables out of Postgres through a cursor into their
//! hashes, a chunk at a time, holding the Redis lock only briefly per chunk so Redis
//! keeps serving. With FLUSH it then removes the mapping's keys that have no row.
//! One reload runs at a time; `SYNC.STATUS` shows its progress. The same load runs
//! at start under `pgsync.reload-on-start` ([`on_start`]).

use crate::model::handover::{self, Announced};
use crate::model::mapping::Mapping;
use crate::model::queue::Snapshot;
use crate::model::stats::MappingStats;
use crate::pg::error::{Action, Error, ErrorKind};
use crate::pg::reader::{PgRow, Refused, RowShape};
use crate::pg::sql::quote_ident;
use crate::pg::triggers;
use crate::pipeline::retry::{self, Round};
use crate::pipeline::runtime::Runtime;
use crate::redis::cluster;
use crate::redis::notify::Source;
use crate::redis::redis_io::{notice, warn};
use crate::sources::apply_pg::apply_pg_rows;
use crate::sources::full_read::{flush_missing, report_unkeyed};
use postgres::fallible_iterator::FallibleIterator;
use std::collections::BTreeMap;
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Rows per chunk (one short Redis lock each).
const CHUNK: i32 = 1000;

/// A second reload asked for while one runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlreadyRunning;

impl std::fmt::Display for AlreadyRunning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a reload is already running; see SYNC.STATUS")
    }
}

impl std::error::Error for AlreadyRunning {}

/// Marks a reload as running; refuses a second one.
pub fn begin(rt: &Runtime) -> Result<ReloadGuard<'_>, AlreadyRunning> {
    if rt.reload_running.swap(true, Ordering::SeqCst) {
        return Err(AlreadyRunning);
    }
    rt.reload_rows.store(0, Ordering::Relaxed);
    Ok(ReloadGuard(rt))
}

/// Clears the running mark when the reload ends, however it ends.
pub struct ReloadGuard<'a>(&'a Runtime);

impl Drop for ReloadGuard<'_> {
    fn drop(&mut self) {
        self.0.reload_running.store(false, Ordering::SeqCst);
    }
}

/// Reloads `mappings` (indexes) once the journal is recovered; returns the number
/// of rows loaded. A pooled connection that died (Postgres restarted) gets one
/// retry on a fresh one.
pub fn run(rt: &Runtime, mappings: &[usize], flush: bool, source: Source) -> Result<u64, Error> {
    // A row journaled by Redis but not queued again yet would look unchanged to
    // the snapshot, and be overwritten: wait for the recovery (seconds at most).
    wait_until_recovered(rt).map_err(|why| Error::new(ErrorKind::Unavailable, why))?;
    let result = match run_once(rt, mappings, flush, source) {
        Err(e) if e.action() == Action::Reconnect => run_once(rt, mappings, flush, source),
        other => other,
    };
    result.map_err(|e| match e.kind {
        ErrorKind::Unavailable => Error::new(e.kind, format!("Postgres is unavailable: {e}")),
        _ => e,
    })
}

fn run_once(rt: &Runtime, mappings: &[usize], flush: bool, source: Source) -> Result<u64, Error> {
    let mut conn = rt.pool.get()?;
    let mut total = 0;
    for &mapping in mappings {
        // The listener's own catch-up needs no ears: the listener hears those changes itself.
        let listening = source != Source::Postgres && listen(&mut conn, rt.mapping(mapping).def)?;
        let loaded = reload_one(rt, &mut conn, mapping, flush, source);
        // What was heard goes to the listener even when the reload failed: rows
        // it wrote may be older than those changes.
        let stopped = if listening { unlisten(rt, &mut conn, mapping, flush && loaded.is_ok()) } else { Ok(()) };
        total += loaded?;
        stopped?;
    }
    Ok(total)
}

/// Reloads one mapping; returns the rows (documents) loaded.
fn reload_one(
    rt: &Runtime,
    conn: &mut postgres::Client,
    mapping: usize,
    flush: bool,
    source: Source,
) -> Result<u64, Error> {
    let m = rt.mapping(mapping).def;
    let schema = rt.usable_schema(mapping)?;
    if m.document.is_some() {
        return crate::sources::documents::reload(rt, conn, mapping, flush, source);
    }
    let shape = RowShape::new(m, &schema);
    // Taken before the cursor opens: rows Redis changes from now on are newer
    // than what the cursor returns, and must not be overwritten.
    let snapshot = rt.queue().snapshot();
    let (count, loaded) = read_and_apply(rt, conn, &shape, mapping, &snapshot, flush, source)?;
    if flush {
        flush_missing(rt, mapping, &loaded, &snapshot);
    }
    Ok(count)
}

/// LISTENs on a listening mapping's channel before its table is read, so the
/// changes made while the reload runs reach the listener afterwards (see
/// [`crate::model::handover`]). False, listening to nothing, when the mapping
/// does not listen or its triggers are not in place yet (no change would be
/// announced).
fn listen(conn: &mut postgres::Client, m: &Mapping) -> Result<bool, Error> {
    if !m.listen || !triggers::installed(conn, m)? {
        return Ok(false);
    }
    conn.batch_execute(&format!("LISTEN {}", quote_ident(&m.pg_channel())))?;
    Ok(true)
}

/// Stops listening on the mapping's channel and hands what was announced
/// meanwhile to the listener; with `covered` (the reload, with FLUSH, wrote the
/// whole table), also records that the listener's catch-up of the mapping, if
/// it joined before now, is done.
fn unlisten(rt: &Runtime, conn: &mut postgres::Client, mapping: usize, covered: bool) -> Result<(), Error> {
    let stopped = rt.handover.now();
    conn.batch_execute(&format!("UNLISTEN {}", quote_ident(&rt.mapping(mapping).def.pg_channel())))?;
    let mut heard = BTreeMap::new();
    let mut notifications = conn.notifications();
    let mut buffered = notifications.iter();
    while let Some(n) = buffered.next()? {
        hear(&mut heard, n.channel(), n.payload());
    }
    rt.handover.hand_over(heard);
    if covered {
        rt.handover.cover(mapping, stopped);
    }
    Ok(())
}

/// Streams a mapping's table into its hashes. Reading the next chunk from
/// Postgres and applying the last one under the Redis lock overlap (a thread of
/// its own applies, fed a chunk or two ahead), so a reload runs at the pace of
/// the slower of the two rather than of their sum. Returns the rows read, and
/// their ids when `flush` needs them.
fn read_and_apply(
    rt: &Runtime,
    conn: &mut postgres::Client,
    shape: &RowShape,
    mapping: usize,
    snapshot: &Snapshot<'_>,
    flush: bool,
    source: Source,
) -> Result<(u64, HashSet<String>), Error> {
    std::thread::scope(|scope| {
        let (chunks, received) = crossbeam_channel::bounded::<Vec<PgRow>>(2);
        let applier = scope.spawn(move || {
            let mut loaded = HashSet::new();
            let mut written = 0u64;
            for rows in received {
                MappingStats::bump(&rt.mapping(mapping).stats.reload_rows_read, rows.len() as u64);
                if flush {
                    loaded.extend(rows.iter().map(|r| r.id.clone()));
                }
                // In a cluster, only this node's rows are written and counted.
                let applied = apply_pg_rows(rt, mapping, snapshot, &rows, &[], source);
                let count = if cluster::enabled() { applied.written } else { rows.len() };
                written += count as u64;
                rt.reload_rows.fetch_add(count as u64, Ordering::Relaxed);
            }
            (loaded, written)
        });
        let stopped = || Error::new(ErrorKind::Unavailable, "the reload stopped applying rows");
        let mut refused = Refused::default();
        let read = shape.stream(conn, CHUNK, &mut refused, |rows| chunks.send(rows).map_err(|_| stopped()));
        if let Some(why) = refused.first {
            report_unkeyed(rt, mapping, refused.count, &why);
        }
        drop(chunks);
        // A panic while applying goes on up to the reload thread's guard.
        let (loaded, written) = applier.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        // A single server counts the rows read (refused ones too), as before.
        read.map(|count| (if cluster::enabled() { written } else { count }, loaded))
    })
}

/// Adds one notification to `out`, by channel; a malformed one is logged and
/// ignored.
pub(crate) fn hear(out: &mut BTreeMap<String, Announced>, channel: &str, payload: &str) {
    if let Err(e) = handover::hear(out, channel, payload) {
        warn(&format!("ignored a malformed notification on {channel}: {e}"));
    }
}

/// Body of the `pgsync.reload-on-start` thread: reloads every mapping, retrying
/// until it succeeds or the module stops; the recovery after Redis lost its data.
pub fn on_start(rt: &Runtime) {
    let all: Vec<usize> = rt.each_mapping().map(|m| m.index).collect();
    let round = || {
        begin(rt)
            .map_err(|e| Error::new(ErrorKind::Unavailable, e.to_string()))
            .and_then(|_guard| run(rt, &all, false, Source::Reload))
            .map(Round::Done)
    };
    let failed = |e: Error| warn(&format!("reload on start failed, will retry: {e}"));
    if let Some(rows) = retry::until_done(rt.shutdown, round, failed) {
        notice(&format!("reload on start loaded {rows} rows"));
    }
}

/// Blocks a background thread until the journal is recovered (readers of
/// Postgres must not write a row over a journaled change not queued again yet).
/// Gives up when this server is a replica (its keys are its primary's) or stops.
fn wait_until_recovered(rt: &Runtime) -> Result<(), &'static str> {
    while !rt.dirty.recovery().is_done() {
        if rt.is_replica() {
            return Err("this server is a replica");
        }
        if rt.shutdown.is_stopped() {
            return Err("pgsync is stopping");
        }
        rt.shutdown.sleep(Duration::from_millis(50));
    }
    Ok(())
}
