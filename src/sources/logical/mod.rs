//! Postgres -> Redis by logical replication (`pgsync.cdc`, docs/logical.md): a
//! publication of the listening tables and a slot for this Redis primary, both
//! named by `pgsync.cdc-slot`. A session resumes from the position Redis holds
//! (`redis::cdc_position`) when it is the slot's own and not behind it; otherwise (first start,
//! Redis lost data, the tables changed) the slot is made anew and the tables
//! are loaded from its exported snapshot (`load`). Committed transactions are
//! then applied with their position in one step (`apply`), those the stream
//! delivered back to back gathered into one (`group`), and only then is
//! Postgres told that Redis holds it. Transactions the module wrote itself
//! carry its mark and are not applied again.

pub mod apply;
pub mod group;
pub mod load;
pub mod mode;
mod session;
pub mod status;
pub mod txn;

use crate::pg::error::{Error, ErrorKind};
use crate::pg::replication::catalog::{self, format_lsn};
use crate::pg::replication::stream::{Event, NewSlot, Stream};
use crate::pg::replication::{pgoutput, OWN_WRITES_PREFIX};
use crate::pipeline::runtime::Runtime;
use crate::redis::cdc_position as state;
use crate::redis::cluster;
use crate::redis::config;
use crate::redis::notify::Source as NotifySource;
use crate::redis::redis_io::{bytes, call, notice, warn};
use crate::redis::redis_lock::with_redis_lock;
use crate::sources::apply_pg::apply_pg_rows;
use crate::sources::documents;
use group::{Group, Ready};
use postgres::Client;
use session::Session;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use txn::{Relations, Txn};

const POLL: Duration = Duration::from_millis(200);
/// How often the slot's lag is read while streaming.
const LAG_EVERY: Duration = Duration::from_secs(1);

/// Decides, on a fresh connection, whether the listening mappings follow the
/// logical stream (true) or the triggers (false); `Err` when `pgsync.cdc
/// logical` cannot be served (the listener shows why and tries again later).
pub fn chosen(rt: &Runtime, listening: &[usize]) -> Result<bool, Error> {
    let setting = config::cdc();
    let obstacle = if setting == config::Cdc::notify {
        None
    } else {
        let mut client = connect(rt)?;
        let mappings = || listening.iter().map(|&i| rt.mapping(i).def);
        let tables: Vec<&str> = mappings().filter(|m| m.document.is_none()).map(|m| m.table.as_str()).collect();
        let watched: Vec<(&str, &str)> = mappings()
            .filter_map(|m| m.document.as_ref())
            .flat_map(|d| d.watch.iter().map(|w| (w.table.as_str(), w.column.as_str())))
            .collect();
        catalog::unusable(&mut client, &tables, &watched)?
    };
    match mode::choose(setting, obstacle) {
        Ok((source, line)) => {
            mode::show(&line);
            let logical = source == mode::Source::Logical;
            crate::pg::replication::MARK_OWN_WRITES.store(logical, Ordering::Relaxed);
            Ok(logical)
        }
        Err(why) => {
            mode::show(&format!("waiting: {why}"));
            Err(Error::new(ErrorKind::Schema, why.to_string()))
        }
    }
}

fn connect(rt: &Runtime) -> Result<Client, Error> {
    let mut config = rt.pg_config.clone();
    config.application_name("redis-pgsync-cdc");
    Ok(config.connect(rt.tls.clone())?)
}

/// The slot (and publication) of this Redis primary: `pgsync.cdc-slot`, and in a
/// cluster followed by the start of the shard's id, which the shard's replicas
/// share (a promoted replica continues its primary's slot, and each shard has
/// its own). `None` while this cluster node owns no slot (it may still become a
/// replica: a slot made now would be left behind).
fn slot_name() -> Option<String> {
    let base = config::string(&config::CDC_SLOT);
    if !cluster::enabled() {
        return Some(base);
    }
    let shard = with_redis_lock(|ctx| {
        if cluster::owned_slots(ctx).is_empty() {
            return None;
        }
        call(ctx, "CLUSTER", &[b"MYSHARDID"]).ok().as_ref().and_then(bytes)
    })?;
    let shard: String = String::from_utf8_lossy(&shard).chars().filter(char::is_ascii_alphanumeric).take(16).collect();
    Some(format!("{base}_{}", shard.to_ascii_lowercase()))
}

/// When the triggers serve (or nothing listens) on a primary: drops the slot
/// and publication a logical run left, so Postgres stops keeping WAL for them.
/// Best effort: a failure is logged, and the next start tries again.
pub fn release(rt: &Runtime) {
    if rt.is_replica() {
        return;
    }
    let Some(slot) = slot_name() else { return };
    match connect(rt).and_then(|mut client| catalog::release(&mut client, &slot)) {
        Ok(true) => {
            notice(&format!("dropped replication slot and publication {slot}: logical replication is not used"))
        }
        Ok(false) => {}
        Err(e) => warn(&format!("cannot check for an unused replication slot {slot}: {e}")),
    }
}

/// One replication session, until it fails, the server stops being ready (a
/// demotion, a recovery to wait for), the position Redis held is gone (a
/// flush), or the module stops.
pub fn follow(rt: &Runtime, listening: &[usize]) -> Result<(), Error> {
    let mut client = connect(rt)?;
    let Some(session) = Session::prepare(rt, &mut client, listening)? else { return Ok(()) };
    let resume = resume_point(&mut client, &session)?;
    let mut stream =
        Stream::open(&session.endpoint, &session.slot, &session.slot, resume.unwrap_or(0)).map_err(unavailable)?;
    let mut deferred: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    let position = match resume {
        Some(lsn) => {
            notice(&format!("logical stream resumes at {} on slot {}", format_lsn(lsn), session.slot));
            lsn
        }
        None => initial_load(rt, &mut client, &session, &mut stream, &mut deferred)?,
    };
    stream.start().map_err(unavailable)?;
    stream.ack(position);
    session.show(rt, "listening");
    stream_changes(rt, &mut client, &session, &mut stream, position, deferred)
}

fn unavailable(e: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Unavailable, e.to_string())
}

/// Where the session resumes: the position Redis holds when it is the slot's and
/// not behind it; `None` (the slot dropped, if any) when a full load is needed.
fn resume_point(client: &mut Client, session: &Session) -> Result<Option<u64>, Error> {
    let stored = state::get().filter(|p| p.scope == session.scope);
    let confirmed = catalog::confirmed_flush(client, &session.slot)?;
    let resume = match (&stored, confirmed) {
        (Some(p), Some(confirmed)) if p.lsn >= confirmed => Some(p.lsn),
        (Some(p), Some(confirmed)) => {
            warn(&format!(
                "Redis's logical position {} is behind the slot's confirmed {} (Redis lost data): full reload",
                format_lsn(p.lsn),
                format_lsn(confirmed)
            ));
            None
        }
        (Some(_), None) => {
            warn(&format!("replication slot {} is gone: full reload", session.slot));
            None
        }
        (None, _) => None,
    };
    if resume.is_none() && confirmed.is_some() {
        catalog::drop_slot(client, &session.slot)?;
    }
    Ok(resume)
}

/// Creates the slot, loads every listening table from its exported snapshot and
/// stores the slot's consistent point as the position; returns it.
fn initial_load(
    rt: &Runtime,
    client: &mut Client,
    session: &Session,
    stream: &mut Stream,
    deferred: &mut BTreeMap<usize, BTreeSet<String>>,
) -> Result<u64, Error> {
    // A crash during the load leaves no position: the next start loads again.
    with_redis_lock(state::forget);
    let NewSlot { consistent_point, snapshot } = stream.create_slot(&session.slot).map_err(unavailable)?;
    session.show(rt, "catching up (initial load)");
    let (rows, later) = load::run(rt, client, &session.mappings, &snapshot)?;
    absorb(deferred, later);
    let position = state::Position { lsn: consistent_point, scope: session.scope.clone() };
    with_redis_lock(|ctx| state::store(ctx, position));
    notice(&format!("logical stream: loaded {rows} rows, streaming from {}", format_lsn(consistent_point)));
    Ok(consistent_point)
}

/// Applies the stream's transactions from `position` on, until the session
/// ends (see [`follow`]).
fn stream_changes(
    rt: &Runtime,
    client: &mut Client,
    session: &Session,
    stream: &mut Stream,
    mut position: u64,
    mut deferred: BTreeMap<usize, BTreeSet<String>>,
) -> Result<(), Error> {
    let mut relations = Relations::new(session.targets.clone(), session.watchers.clone());
    let mut txn = Txn::default();
    let mut group = Group::default();
    let mut lag_read = Instant::now() - LAG_EVERY;
    let mut reread_at = Instant::now();
    while !rt.shutdown.is_stopped() && rt.not_ready().is_none() {
        if state::get().is_none_or(|p| p.scope != session.scope) {
            notice("the logical position Redis held is gone (flushed): starting again");
            return Ok(());
        }
        if lag_read.elapsed() >= LAG_EVERY {
            lag_read = Instant::now();
            session.read_lag(client)?;
        }
        // At most once a poll: a row Redis keeps changing must not cost a query per event.
        if !deferred.is_empty() && reread_at.elapsed() >= POLL {
            reread_at = Instant::now();
            reread(rt, client, session, &mut deferred)?;
        }
        // While a group waits, only what the stream already holds is read.
        let wait = if group.end().is_some() { Duration::ZERO } else { POLL };
        let event = stream.next(wait).map_err(unavailable)?;
        if event.is_none() || group.is_due() {
            if let Some(ready) = group.take() {
                // Documents first: the position stored with the rows then
                // covers them (a crash in between rebuilds them again).
                rebuild_documents(rt, client, &ready, &mut deferred)?;
                absorb(&mut deferred, apply::commit(rt, &ready.txn, ready.end, &session.scope));
                position = ready.end;
                stream.ack(position);
            }
        }
        match event {
            None | Some(Event::KeepAlive) => {}
            Some(Event::Begin { xid }) => txn = Txn { xid, ..Txn::default() },
            Some(Event::Data(bytes)) => {
                let message = pgoutput::decode(&bytes).map_err(|e| unavailable(format!("pgoutput: {e}")))?;
                txn.add(&mut relations, message);
            }
            Some(Event::Message { transactional: true, prefix }) if prefix == OWN_WRITES_PREFIX => txn.own = true,
            Some(Event::Message { .. }) => {}
            Some(Event::Commit { end }) => {
                let done = std::mem::take(&mut txn);
                // Postgres may send again what a session before this one applied.
                if end > group.end().unwrap_or(position) {
                    group.add(done, end);
                }
            }
        }
    }
    Ok(())
}

/// Rebuilds the documents whose roots the group's transactions named (all of a
/// mapping's when one truncated a watched table), from Postgres as it is once
/// they are visible: one query per mapping for the whole group.
fn rebuild_documents(
    rt: &Runtime,
    client: &mut Client,
    ready: &Ready,
    deferred: &mut BTreeMap<usize, BTreeSet<String>>,
) -> Result<(), Error> {
    catalog::wait_visible(client, &ready.xids)?;
    for (&mapping, roots) in &ready.txn.roots {
        if roots.truncated {
            documents::rebuild_all(rt, client, mapping)?;
        } else if !roots.ids.is_empty() {
            let ids: Vec<String> = roots.ids.iter().cloned().collect();
            deferred.entry(mapping).or_default().extend(documents::rebuild_announced(rt, client, mapping, &ids)?);
        }
    }
    Ok(())
}

/// Adds rows to read again, by mapping.
fn absorb(deferred: &mut BTreeMap<usize, BTreeSet<String>>, later: BTreeMap<usize, Vec<String>>) {
    for (mapping, ids) in later.into_iter().filter(|(_, ids)| !ids.is_empty()) {
        deferred.entry(mapping).or_default().extend(ids);
    }
}

/// Reads again the rows Redis held a newer change to, and applies what Postgres
/// has now (rows still newer in Redis wait for the next round).
fn reread(
    rt: &Runtime,
    client: &mut Client,
    session: &Session,
    deferred: &mut BTreeMap<usize, BTreeSet<String>>,
) -> Result<(), Error> {
    for (mapping, ids) in std::mem::take(deferred) {
        let ids: Vec<String> = ids.into_iter().collect();
        let Some(shape) = session.shapes.get(&mapping) else {
            // A document mapping: roots whose slot was moving.
            let later = documents::rebuild_announced(rt, client, mapping, &ids)?;
            if !later.is_empty() {
                deferred.insert(mapping, later.into_iter().collect());
            }
            continue;
        };
        let snapshot = rt.queue().snapshot();
        let rows = shape.fetch(client, &ids)?;
        let present: BTreeSet<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        let gone: Vec<String> = ids.iter().filter(|id| !present.contains(id.as_str())).cloned().collect();
        let later = apply_pg_rows(rt, mapping, &snapshot, &rows, &gone, NotifySource::Postgres).later;
        if !later.is_empty() {
            deferred.insert(mapping, later.into_iter().collect());
        }
    }
    Ok(())
}
