//! The listener: one thread, on its own Postgres connection, that installs the
//! NOTIFY triggers, LISTENs on every listening mapping's channel and applies the
//! announced rows to Redis (reading each row, since the payload only names it).
//! A TRUNCATE clears the mapping's cached rows first, then the rows announced
//! after it are applied. After a lost connection it reconnects and catches up with
//! a reload, so no change is silently missed.

use crate::apply::apply_pg_rows;
use crate::notify::Source;
use crate::pg::error::{Error, ErrorKind};
use crate::pg::reader::RowShape;
use crate::pg::sql::quote_ident;
use crate::pg::triggers;
use crate::redis_io::{notice, warn};
use crate::reload;
use crate::runtime::Runtime;
use crate::truncate;
use postgres::fallible_iterator::FallibleIterator;
use postgres::Client;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const POLL: Duration = Duration::from_millis(200);
const MAX_NOTIFICATIONS_PER_ROUND: usize = 5000;
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);

/// A notification's payload (see `pg::triggers`).
#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Payload {
    Upsert { id: String },
    Delete { id: String },
    Truncate,
}

/// What one round heard on a channel: whether the table was truncated, and the
/// rows announced after the last TRUNCATE (earlier ones are gone with it).
#[derive(Default)]
struct Announced {
    truncated: bool,
    ids: BTreeSet<String>,
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
        // Deferred rows come first, so a TRUNCATE heard in this round supersedes them.
        let mut announced: BTreeMap<String, Announced> = std::mem::take(&mut deferred)
            .into_iter()
            .map(|(channel, ids)| (channel, Announced { truncated: false, ids }))
            .collect();
        receive(&mut client, &mut announced)?;
        for (channel, Announced { truncated, ids }) in announced {
            let Some((mapping, shape)) = shapes.get(&channel) else {
                continue;
            };
            let mut later = BTreeSet::new();
            if truncated {
                later.extend(truncate::clear(rt, &mut client, *mapping, shape)?);
            }
            if !ids.is_empty() {
                let ids: Vec<String> = ids.into_iter().collect();
                let snapshot = rt.queue.snapshot();
                let rows = shape.fetch(&mut client, &ids)?;
                let present: BTreeSet<&str> = rows.iter().map(|r| r.id.as_str()).collect();
                let gone: Vec<String> = ids.iter().filter(|id| !present.contains(id.as_str())).cloned().collect();
                later.extend(apply_pg_rows(rt, *mapping, &snapshot, &rows, &gone, Source::Postgres));
            }
            if !later.is_empty() {
                deferred.insert(channel, later);
            }
        }
    }
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
        match serde_json::from_str::<Payload>(n.payload()) {
            Ok(Payload::Upsert { id } | Payload::Delete { id }) => {
                out.entry(n.channel().to_string()).or_default().ids.insert(id);
            }
            Ok(Payload::Truncate) => {
                let announced = out.entry(n.channel().to_string()).or_default();
                announced.truncated = true;
                announced.ids.clear();
            }
            Err(e) => warn(&format!("ignored a malformed notification on {}: {e}", n.channel())),
        }
    }
    Ok(())
}
