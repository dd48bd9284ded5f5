//! Workers: each takes a batch of dirty rows from the queue (bounded in rows and
//! bytes), writes each mapping's rows to Postgres in multi-row statements, and
//! hands the outcomes to apply. Rows of a mapping that cannot be written now
//! (Postgres unavailable, table not usable) go back to the queue, the other
//! mappings' rows go on, and the mapping backs off exponentially up to
//! `pgsync.retry-max-delay-ms`. A row that can never be written (rejected, too
//! large, or one that makes the worker panic) is dead-lettered instead, so it
//! cannot stall its mapping. `sync.rs` holds that logic behind two traits,
//! `live.rs` their real implementations.

mod live;
mod sync;
#[cfg(test)]
mod tests;

use crate::pipeline::retry::{self, Round};
use crate::pipeline::runtime::Runtime;
use std::convert::Infallible;
use std::time::Duration;

/// How long an idle worker waits before looking again (and how finely the
/// per-mapping retry delays are honoured).
const IDLE_WAIT: Duration = Duration::from_millis(100);

/// Body of a worker thread; returns once `keep_going` says it is no longer wanted.
pub fn run(rt: &Runtime, keep_going: impl Fn() -> bool) {
    let redis = live::LiveRedis(rt);
    let mut postgres = live::LivePostgres::new(rt);
    // A mapping's failures back off in `step`, by mapping; a round never fails.
    let round = || -> Result<Round, Infallible> {
        if !keep_going() {
            return Ok(Round::Done(()));
        }
        if rt.is_replica() {
            // A replica writes nothing: its connection goes back to the pool.
            sync::PostgresSide::<live::Row>::release(&mut postgres);
            return Ok(Round::Idle(IDLE_WAIT));
        }
        sync::step(&redis, &mut postgres, &rt.backoffs);
        Ok(Round::Worked)
    };
    retry::until_done(rt.shutdown, round, |never| match never {});
}
