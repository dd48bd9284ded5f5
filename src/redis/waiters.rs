//! Clients blocked in `SYNC.HSET` and `SYNC.JSONSET` (until their row settles) and `SYNC.WAIT` (until
//! every change captured before the call has settled). They wait here, not in a
//! thread each: apply answers them as rows settle, Redis answers them at their
//! deadline through [`timed_out`], and one that disconnects is forgotten.
//!
//! Everything here runs under the Redis lock (commands, apply, server events and
//! Redis's callbacks), so a command's check of the queue and its registration
//! cannot miss a settle in between, and a client is answered exactly once.

use crate::model::queue::{Outcome, Queue, RowKey};
use crate::redis::blocked::{Blocked, Reply};
use crate::redis::replies;
use redis_module::{Context, RedisError};
use std::collections::{BTreeSet, HashMap};
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::Duration;

/// What a client waits for.
enum Awaits {
    /// `SYNC.HSET`, `SYNC.JSONSET`: its row's change; answered with `reply`
    /// (HSET's count, JSON.SET's OK) or Postgres's error.
    Row { row: RowKey, reply: Reply, timeout: Option<Duration> },
    /// `SYNC.WAIT`: every change up to the waiter's version; answered with the
    /// number of rows still pending in `queue`.
    Everything { queue: &'static Queue },
}

struct Waiter {
    client: Blocked,
    version: u64,
    awaits: Awaits,
}

#[derive(Default)]
struct Registry {
    by_client: HashMap<usize, Waiter>,
    by_row: HashMap<RowKey, Vec<usize>>,
    /// `SYNC.WAIT` clients in version order: they are answered oldest first.
    everything: BTreeSet<(u64, usize)>,
}

impl Registry {
    fn insert(&mut self, waiter: Waiter) {
        let id = waiter.client.id();
        match &waiter.awaits {
            Awaits::Row { row, .. } => self.by_row.entry(row.clone()).or_default().push(id),
            Awaits::Everything { .. } => {
                self.everything.insert((waiter.version, id));
            }
        }
        self.by_client.insert(id, waiter);
    }

    fn remove(&mut self, id: usize) -> Option<Waiter> {
        let waiter = self.by_client.remove(&id)?;
        match &waiter.awaits {
            Awaits::Row { row, .. } => {
                if let Some(ids) = self.by_row.get_mut(row) {
                    ids.retain(|i| *i != id);
                    if ids.is_empty() {
                        self.by_row.remove(row);
                    }
                }
            }
            Awaits::Everything { .. } => {
                self.everything.remove(&(waiter.version, id));
            }
        }
        Some(waiter)
    }
}

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(Default::default);

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

/// Blocks the calling client until the change `version` of `row` settles; it then
/// gets `reply`, or Postgres's error, or after `timeout` an error saying the change
/// is still queued.
pub fn wait_for_row(
    ctx: &Context,
    row: RowKey,
    version: u64,
    reply: Reply,
    timeout: Option<Duration>,
) -> Result<(), RedisError> {
    let client = Blocked::new(ctx, timeout)?;
    registry().insert(Waiter { client, version, awaits: Awaits::Row { row, reply, timeout } });
    Ok(())
}

/// Blocks the calling client until every change up to `version` settles (then it
/// gets 0), or until `timeout` (then it gets the number of rows still pending in
/// `queue`).
pub fn wait_for_all(
    ctx: &Context,
    queue: &'static Queue,
    version: u64,
    timeout: Option<Duration>,
) -> Result<(), RedisError> {
    let client = Blocked::new(ctx, timeout)?;
    registry().insert(Waiter { client, version, awaits: Awaits::Everything { queue } });
    Ok(())
}

/// Answers the clients waiting for changes of `row` up to `version`.
pub fn settle(row: &RowKey, version: u64, outcome: &Outcome) {
    answer(row, version, outcome.as_ref().err().map(|e| replies::rejected_text(&e.0)));
}

/// Answers the clients waiting for changes of `row` up to `version` with an error.
pub fn fail(row: &RowKey, version: u64, message: &str) {
    answer(row, version, Some(message.to_string()));
}

/// Answers the waiters of `row` up to `version`: with the error reply `error`,
/// or with success when there is none.
fn answer(row: &RowKey, version: u64, error: Option<String>) {
    let ready: Vec<Waiter> = {
        let mut all = registry();
        let ids: Vec<usize> = all
            .by_row
            .get(row)
            .map(|ids| ids.iter().copied().filter(|id| all.by_client.get(id).is_some_and(|w| w.version <= version)))
            .into_iter()
            .flatten()
            .collect();
        ids.into_iter().filter_map(|id| all.remove(id)).collect()
    };
    for w in ready {
        let reply = match (&error, &w.awaits) {
            (None, Awaits::Row { reply, .. }) => reply.clone(),
            (None, Awaits::Everything { .. }) => Reply::Integer(0),
            (Some(e), _) => Reply::Error(e.clone()),
        };
        w.client.reply(reply);
    }
}

/// Answers the `SYNC.WAIT` clients whose changes have all settled; called after
/// the queue settled rows (apply) or dropped them.
pub fn settle_waits(queue: &Queue) {
    let oldest = queue.oldest_unsettled();
    let ready: Vec<Waiter> = {
        let mut all = registry();
        let ids: Vec<usize> = all
            .everything
            .iter()
            .take_while(|(version, _)| oldest.is_none_or(|oldest| *version < oldest))
            .map(|(_, id)| *id)
            .collect();
        ids.into_iter().filter_map(|id| all.remove(id)).collect()
    };
    for w in ready {
        w.client.reply(Reply::Integer(0));
    }
}

/// Answers every waiting client now (shutdown, demotion to replica): `SYNC.HSET`
/// clients with `message`, `SYNC.WAIT` clients with what is still pending.
pub fn fail_all(message: &str, queue: &Queue) {
    let all: Vec<Waiter> = {
        let mut registry = registry();
        let ids: Vec<usize> = registry.by_client.keys().copied().collect();
        ids.into_iter().filter_map(|id| registry.remove(id)).collect()
    };
    for w in all {
        let reply = match w.awaits {
            Awaits::Row { .. } => Reply::Error(message.to_string()),
            Awaits::Everything { .. } => Reply::Integer(pending(queue, w.version)),
        };
        w.client.reply(reply);
    }
}

fn pending(queue: &Queue, version: u64) -> i64 {
    i64::try_from(queue.unsettled_up_to(version)).unwrap_or(i64::MAX)
}

/// The reply of a client whose deadline passed (or that `CLIENT UNBLOCK` freed);
/// forgets it. Called by Redis through [`crate::redis::blocked`].
pub(crate) fn timed_out(id: usize) -> Reply {
    let Some(w) = registry().remove(id) else {
        return Reply::Error(replies::TIMED_OUT.into());
    };
    match w.awaits {
        Awaits::Row { timeout, .. } => {
            let after = timeout.map(|t| format!(" after {} ms", t.as_millis())).unwrap_or_default();
            Reply::Error(replies::not_committed_text(&after))
        }
        Awaits::Everything { queue } => Reply::Integer(pending(queue, w.version)),
    }
    // `w.client` drops here: Redis needs the handle unblocked even after a timeout.
}

/// Forgets a client that disconnected while it waited. Called by Redis through
/// [`crate::redis::blocked`].
pub(crate) fn disconnected(id: usize) {
    drop(registry().remove(id));
}
