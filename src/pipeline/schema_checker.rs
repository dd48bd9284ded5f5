//! The schema checker: one thread that loads each mapping's table definition and
//! checks it against the mapping, until every table is fine, then re-checks the
//! ones the workers invalidate (after a 42xxx error), and those capture asks to
//! refresh (a key refused for an enum label the schema may not know yet).

use crate::model::stats::Reachability;
use crate::pg::error::Error;
use crate::pg::{documents, schema};
use crate::pipeline::retry::{self, Round};
use crate::pipeline::runtime::Runtime;
use crate::redis::redis_io::{notice, warn};
use std::convert::Infallible;
use std::time::Duration;

/// Body of the checker thread; returns on shutdown. Errors go to the log and to
/// `SYNC.STATUS`. Also gives the queue's unused memory back.
pub fn run(rt: &Runtime) {
    let round = || -> Result<Round, Infallible> {
        check(rt);
        // Once a second is often enough to give back a drained backlog's memory,
        // and keeps the shrinking off the main thread and the workers' path.
        rt.queue().release_memory();
        Ok(Round::Idle(Duration::from_secs(1)))
    };
    retry::until_done(rt.shutdown, round, |never| match never {});
}

/// Loads the schemas still missing or asked to be read again.
fn check(rt: &Runtime) {
    let missing: Vec<usize> =
        rt.each_mapping().map(|m| m.index).filter(|&i| rt.take_stale_schema(i) || rt.schema(i).is_none()).collect();
    if !missing.is_empty() {
        match rt.pool.get() {
            Ok(mut conn) => {
                rt.postgres.mark_up();
                for i in missing {
                    let mapping = rt.mapping(i).def;
                    let loaded = match &mapping.document {
                        Some(document) => documents::check(&mut *conn, mapping, document),
                        None => schema::load(&mut conn, mapping),
                    };
                    match loaded {
                        Ok(schema) => {
                            if rt.mapping(i).stats.schema_error().is_some() {
                                notice(&format!("mapping \"{}\": schema is fine now", mapping.name));
                            }
                            rt.mapping(i).stats.set_schema_error(None);
                            rt.set_schema(i, schema);
                        }
                        Err(e) => report_schema_error(rt, i, &e),
                    }
                }
            }
            Err(e) => {
                let e = Error::from(e);
                if rt.postgres.reachability() != Reachability::Down {
                    warn(&format!("Postgres unreachable, will keep retrying: {e}"));
                }
                rt.postgres.mark_down(&e.message);
            }
        }
    }
}

fn report_schema_error(rt: &Runtime, mapping: usize, e: &Error) {
    if rt.mapping(mapping).stats.schema_error().as_deref() != Some(e.message.as_str()) {
        warn(&format!("schema check failed: {e}"));
    }
    rt.mapping(mapping).stats.set_schema_error(Some(e.message.clone()));
    rt.mapping(mapping).stats.set_last_error(&e.message);
}
