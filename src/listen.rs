//! The listener: one thread, on its own Postgres connection, that installs the
//! NOTIFY triggers, LISTENs on every listening mapping's channel and applies the
//! announced rows to Redis (reading each row, since the payload only names it).
//! After a lost connection it reconnects and catches up with a reload, so no
//! change is silently missed.

use crate::apply::apply_pg_rows;
use crate::notify::Source;
use crate::pg::error::{Error, ErrorKind};
use crate::pg::reader::RowShape;
use crate::pg::sql::quote_ident;
use crate::pg::triggers;
use crate::redis_io::{notice, warn};
use crate::reload;
use crate::runtime::Runtime;
use postgres::fallible_iterator::FallibleIterator;
use postgres::Client;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const POLL: Duration = Duration::from_millis(200);
const MAX_NOTIFICATIONS_PER_ROUND: usize = 5000;
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);

#[derive(Deserialize)]
struct Payload {
    id: String,
}

/// Body of the listener thread; returns on shutdown, or at once when no mapping
/// listens.
pub fn run(rt: &Runtime) {
    let listening: Vec<usize> = (0..rt.mappings.all().len()).filter(|&i| rt.mappings.all()[i].listen).collect();
    if listening.is_empty() {
        return;
    }
    let mut listened_before = false;
    let mut delay = FIRST_RETRY_DELAY;
    while !rt.queue.is_shut_down() {
        let result = connect_and_listen(rt, &listening, &mut listened_before);
        if let Err(e) = result {
            for &i in &listening {
                rt.stats[i].set_listener(&format!("down: {e}"));
            }
            rt.queue.sleep(delay);
            delay = (delay * 2).min(crate::config::millis(&crate::config::RETRY_MAX_DELAY_MS).max(FIRST_RETRY_DELAY));
        } else {
            delay = FIRST_RETRY_DELAY;
        }
    }
}

/// One connection's life, until it fails or the module stops. `listened_before`
/// says whether an earlier connection listened: then this one catches up first.
fn connect_and_listen(rt: &Runtime, listening: &[usize], listened_before: &mut bool) -> Result<(), Error> {
    let mut config = rt.pg_config.clone();
    config.application_name("redis-pgsync-listener");
    let mut client = config.connect(rt.tls.clone())?;
    let mut ready = Vec::new();
    for &i in listening {
        let m = &rt.mappings.all()[i];
        let Some(schema) = rt.schema(i) else {
            rt.stats[i].set_listener("waiting for the schema check");
            return Err(Error::new(ErrorKind::Schema, "schema not checked yet"));
        };
        if let Err(e) = triggers::install(&mut client, m) {
            let message = format!(
                "cannot install the NOTIFY trigger on {}: {e} (see README for the SQL to run by hand)",
                m.table
            );
            warn(&message);
            rt.stats[i].set_listener(&format!("error: {message}"));
            continue;
        }
        client.batch_execute(&format!("LISTEN {}", quote_ident(&m.pg_channel())))?;
        ready.push((i, RowShape::new(m, &schema)));
    }
    if *listened_before {
        for (i, _) in &ready {
            rt.stats[*i].set_listener("catching up");
        }
        let indexes: Vec<usize> = ready.iter().map(|(i, _)| *i).collect();
        match reload::begin(rt) {
            Ok(_guard) => {
                let rows = reload::run(rt, &indexes, true, Source::Postgres)?;
                notice(&format!("listener reconnected and caught up ({rows} rows)"));
            }
            Err(_) => notice("listener reconnected while a reload runs; the reload catches up"),
        }
    }
    for (i, _) in &ready {
        rt.stats[*i].set_listener("listening");
    }
    *listened_before = true;
    let shapes: BTreeMap<String, (usize, RowShape)> =
        ready.into_iter().map(|(i, shape)| (rt.mappings.all()[i].pg_channel(), (i, shape))).collect();
    // Rows skipped because Redis was newer are read again in the next round, so a
    // change to other columns still arrives once Redis's own change has landed.
    let mut deferred: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    while !rt.queue.is_shut_down() {
        let mut announced = receive(&mut client)?;
        for (channel, ids) in std::mem::take(&mut deferred) {
            announced.entry(channel).or_default().extend(ids);
        }
        for (channel, ids) in announced {
            let Some((mapping, shape)) = shapes.get(&channel) else {
                continue;
            };
            let ids: Vec<String> = ids.into_iter().collect();
            let snapshot = rt.queue.snapshot();
            let rows = shape.fetch(&mut client, &ids)?;
            let present: BTreeSet<&str> = rows.iter().map(|r| r.id.as_str()).collect();
            let gone: Vec<String> = ids.iter().filter(|id| !present.contains(id.as_str())).cloned().collect();
            let skipped = apply_pg_rows(rt, *mapping, &snapshot, &rows, &gone, Source::Postgres);
            if !skipped.is_empty() {
                deferred.insert(channel, skipped.into_iter().collect());
            }
        }
    }
    Ok(())
}

/// Waits briefly for notifications and drains what has arrived: channel → ids.
fn receive(client: &mut Client) -> Result<BTreeMap<String, BTreeSet<String>>, Error> {
    if client.is_closed() {
        return Err(Error::new(ErrorKind::Unavailable, "listener connection closed"));
    }
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
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
        match serde_json::from_str::<Payload>(n.payload()) {
            Ok(p) => {
                out.entry(n.channel().to_string()).or_default().insert(p.id);
            }
            Err(e) => warn(&format!("ignored a malformed notification on {}: {e}", n.channel())),
        }
    }
    Ok(out)
}
