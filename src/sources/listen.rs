//! The listener: one thread, on its own Postgres connection, that installs the
//! NOTIFY triggers, LISTENs on every listening mapping's channel and applies the
//! announced rows to Redis (reading each row, since the payload only names it).
//! A TRUNCATE clears the mapping's cached rows first, then the rows announced
//! after it are applied. Each mapping joins once its schema is loaded and catches
//! up with a reload when it joins (at start, after a lost connection, once its
//! schema loads), so no change made while nobody listened is missed.

use crate::model::handover::Announced;
use crate::pg::error::{Error, ErrorKind};
use crate::pg::reader::RowShape;
use crate::pg::sql::quote_ident;
use crate::pg::triggers;
use crate::pipeline::retry::{self, Round};
use crate::pipeline::runtime::Runtime;
use crate::redis::notify::Source;
use crate::redis::redis_io::{notice, warn};
use crate::sources::apply_pg::apply_pg_rows;
use crate::sources::documents;
use crate::sources::full_read;
use crate::sources::reload;
use crate::sources::truncate;
use postgres::fallible_iterator::FallibleIterator;
use postgres::Client;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const POLL: Duration = Duration::from_millis(200);
const MAX_NOTIFICATIONS_PER_ROUND: usize = 5000;

/// Body of the listener thread; returns on shutdown, or at once when no mapping
/// listens.
pub fn run(rt: &Runtime) {
    let listening: Vec<usize> = rt.each_mapping().filter(|m| m.def.listen).map(|m| m.index).collect();
    if listening.is_empty() {
        crate::sources::logical::release(rt);
        return;
    }
    let round = || -> Result<Round, Error> {
        if let Some(why) = rt.not_ready() {
            for &i in &listening {
                rt.mapping(i).stats.set_listener(why);
            }
            return Ok(Round::Idle(POLL));
        }
        let followed = match crate::sources::logical::chosen(rt, &listening) {
            Ok(true) => crate::sources::logical::follow(rt, &listening),
            Ok(false) => {
                crate::sources::logical::release(rt);
                connect_and_listen(rt, &listening)
            }
            Err(e) => Err(e),
        };
        followed.map(|()| Round::Worked)
    };
    retry::until_done(rt.shutdown, round, |e| {
        for &i in &listening {
            rt.mapping(i).stats.set_listener(&format!("down: {e}"));
        }
    });
}

/// The mappings of one connection: those listening (by channel), those waiting
/// for their schema, and those that joined but have not caught up yet.
#[derive(Default)]
struct Channels {
    /// Each joined mapping by channel, with the shape of its rows (`None`: a
    /// document mapping, rebuilt by its query).
    joined: BTreeMap<String, (usize, Option<RowShape>)>,
    waiting: Vec<usize>,
    to_catch_up: Vec<usize>,
    /// When each mapping last needed a catch-up (joined, or a watched table was
    /// truncated), from [`crate::model::handover::Handover::now`].
    since: BTreeMap<usize, u64>,
}

/// One connection's life, until it fails, the server stops being ready (a
/// demotion), or the module stops. Each mapping joins once its schema is loaded,
/// so one broken mapping never keeps the others from listening, and catches up
/// with a reload (with FLUSH) of its table: changes made while nobody listened
/// (Redis down, the connection lost, the schema broken) are not missed.
fn connect_and_listen(rt: &Runtime, listening: &[usize]) -> Result<(), Error> {
    let mut config = rt.pg_config.clone();
    config.application_name("redis-pgsync-listener");
    let mut client = config.connect(rt.tls.clone())?;
    let mut channels = Channels { waiting: listening.to_vec(), ..Default::default() };
    // Rows skipped because Redis was newer are read again in the next round, so a
    // change to other columns still arrives once Redis's own change has landed.
    let mut deferred: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    while !rt.shutdown.is_stopped() {
        if rt.not_ready().is_some() {
            return Ok(());
        }
        join(rt, &mut client, &mut channels)?;
        catch_up(rt, &mut channels.to_catch_up, &channels.since)?;
        // Deferred rows come first, then what reloads heard, so a TRUNCATE heard
        // in this round supersedes them.
        let mut announced: BTreeMap<String, Announced> = std::mem::take(&mut deferred)
            .into_iter()
            .map(|(channel, ids)| (channel, Announced { truncated: false, ids }))
            .collect();
        for (channel, heard) in rt.handover.take() {
            announced.entry(channel).or_default().absorb(heard);
        }
        receive(&mut client, &mut announced)?;
        for (channel, Announced { truncated, ids }) in announced {
            let Some((mapping, shape)) = channels.joined.get(&channel) else {
                continue;
            };
            let Some(shape) = shape else {
                // A document mapping rebuilds the announced roots, whichever table
                // changed; a TRUNCATE of a watched table rebuilds them all.
                if truncated {
                    channels.since.insert(*mapping, rt.handover.now());
                    channels.to_catch_up.push(*mapping);
                } else if !ids.is_empty() {
                    let ids: Vec<String> = ids.into_iter().collect();
                    let later = documents::rebuild_announced(rt, &mut client, *mapping, &ids)?;
                    if !later.is_empty() {
                        deferred.insert(channel, later.into_iter().collect());
                    }
                }
                continue;
            };
            let mut later = BTreeSet::new();
            if truncated {
                later.extend(truncate::clear(rt, &mut client, *mapping, shape)?);
            }
            // An id a write to its key would refuse is no row's key: its row is
            // skipped (and counted), never written or deleted under that key.
            let (ids, unkeyed): (Vec<String>, Vec<String>) = ids.into_iter().partition(|id| shape.check(id).is_ok());
            if let Some(Err(why)) = unkeyed.first().map(|id| shape.check(id)) {
                full_read::report_unkeyed(rt, *mapping, unkeyed.len() as u64, &why.to_string());
            }
            if !ids.is_empty() {
                let snapshot = rt.queue().snapshot();
                let rows = shape.fetch(&mut client, &ids)?;
                let present: BTreeSet<&str> = rows.iter().map(|r| r.id.as_str()).collect();
                let gone: Vec<String> = ids.iter().filter(|id| !present.contains(id.as_str())).cloned().collect();
                later.extend(apply_pg_rows(rt, *mapping, &snapshot, &rows, &gone, Source::Postgres).later);
            }
            if !later.is_empty() {
                deferred.insert(channel, later);
            }
        }
    }
    Ok(())
}

/// Installs the triggers of the waiting mappings whose schema is loaded and
/// LISTENs on their channels; they then need a catch-up. A mapping whose trigger
/// cannot be installed shows why and stays out until the next connection.
fn join(rt: &Runtime, client: &mut Client, channels: &mut Channels) -> Result<(), Error> {
    let mut still_waiting = Vec::new();
    for i in std::mem::take(&mut channels.waiting) {
        let mapping = rt.mapping(i);
        let m = mapping.def;
        let Some(schema) = rt.schema(i) else {
            let why = mapping.stats.schema_error().unwrap_or_else(|| "not checked yet".into());
            mapping.stats.set_listener(&format!("waiting for the schema: {why}"));
            still_waiting.push(i);
            continue;
        };
        if let Err(e) = triggers::install(client, m, &schema.key_types) {
            let message = format!(
                "cannot install the NOTIFY trigger on {}: {e} (see README for the SQL to run by hand)",
                m.table
            );
            warn(&message);
            mapping.stats.set_listener(&format!("error: {message}"));
            continue;
        }
        client.batch_execute(&format!("LISTEN {}", quote_ident(&m.pg_channel())))?;
        mapping.stats.set_listener("catching up");
        let shape = m.document.is_none().then(|| RowShape::new(m, &schema));
        channels.joined.insert(m.pg_channel(), (i, shape));
        channels.since.insert(i, rt.handover.now());
        channels.to_catch_up.push(i);
    }
    channels.waiting = still_waiting;
    Ok(())
}

/// Reloads (with FLUSH) the mappings that joined since the last catch-up. Runs
/// after a reload that is running (it may have read rows before the changes this
/// catch-up is for): until then the mappings listen and wait their turn. A
/// mapping that such a reload (with FLUSH) covered, listening since before its
/// read until after the mapping joined at `since`, is caught up already.
fn catch_up(rt: &Runtime, mappings: &mut Vec<usize>, since: &BTreeMap<usize, u64>) -> Result<(), Error> {
    let (covered, rest): (Vec<usize>, Vec<usize>) =
        mappings.iter().partition(|&&i| since.get(&i).is_some_and(|&at| rt.handover.covers(i, at)));
    if !covered.is_empty() {
        let names: Vec<&str> = covered.iter().map(|&i| rt.mapping(i).def.name.as_str()).collect();
        notice(&format!("listener caught up on [{}] by the reload it waited for", names.join(", ")));
        for &i in &covered {
            rt.mapping(i).stats.set_listener("listening");
        }
        *mappings = rest;
    }
    if mappings.is_empty() {
        return Ok(());
    }
    let Ok(guard) = reload::begin(rt) else {
        for &i in mappings.iter() {
            rt.mapping(i).stats.set_listener("catching up: waiting for the running reload");
        }
        return Ok(());
    };
    for &i in mappings.iter() {
        rt.mapping(i).stats.set_listener("catching up");
    }
    let rows = reload::run(rt, mappings, true, Source::Postgres)?;
    // Over before it shows `listening`, so a SYNC.RELOAD sent on seeing it runs.
    drop(guard);
    let names: Vec<&str> = mappings.iter().map(|&i| rt.mapping(i).def.name.as_str()).collect();
    notice(&format!("listener caught up on [{}] ({rows} rows)", names.join(", ")));
    for &i in mappings.iter() {
        rt.mapping(i).stats.set_listener("listening");
    }
    mappings.clear();
    Ok(())
}

/// Waits briefly for notifications and adds what has arrived to `out`, by channel.
fn receive(client: &mut Client, out: &mut BTreeMap<String, Announced>) -> Result<(), Error> {
    if client.is_closed() {
        return Err(Error::new(ErrorKind::Unavailable, "listener connection closed"));
    }
    let mut notifications = client.notifications();
    let mut first = notifications.timeout_iter(POLL);
    let mut batch = Vec::new();
    if let Some(n) = first.next()? {
        batch.push(n);
    }
    drop(first);
    let mut rest = notifications.iter();
    while batch.len() < MAX_NOTIFICATIONS_PER_ROUND {
        match rest.next()? {
            Some(n) => batch.push(n),
            None => break,
        }
    }
    for n in batch {
        reload::hear(out, n.channel(), n.payload());
    }
    Ok(())
}
