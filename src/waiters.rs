//! Clients blocked in `SYNC.HSET`: registered by the command (on the main thread,
//! right after the change is queued) and answered by apply when their row settles,
//! so no thread waits on their behalf.

use crate::queue::{Outcome, RowKey};
use redis_module::{BlockedClient, RedisError, RedisResult, RedisValue, ThreadSafeContext};
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, MutexGuard};

struct Waiter {
    version: u64,
    client: BlockedClient,
    reply: i64,
}

static WAITERS: LazyLock<Mutex<HashMap<RowKey, Vec<Waiter>>>> = LazyLock::new(Default::default);

fn waiters() -> MutexGuard<'static, HashMap<RowKey, Vec<Waiter>>> {
    WAITERS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Blocks `client` until the change `version` of `row` settles; then it gets
/// `reply`, or Postgres's error.
pub fn add(row: RowKey, version: u64, client: BlockedClient, reply: i64) {
    waiters().entry(row).or_default().push(Waiter { version, client, reply });
}

/// The error of clients whose row this server stopped syncing: it became a
/// replica, and the new primary syncs the row.
pub const DEMOTED: &str = "ERR this server became a replica; the new primary syncs the row";

/// Answers the clients waiting for changes of `row` up to `version`.
pub fn settle(row: &RowKey, version: u64, outcome: &Outcome) {
    answer(row, version, |reply| match outcome {
        Ok(()) => Ok(RedisValue::Integer(reply)),
        Err(e) => Err(RedisError::String(format!("ERR Postgres rejected the row: {e}"))),
    });
}

/// Answers the clients waiting for changes of `row` up to `version` with an error.
pub fn fail(row: &RowKey, version: u64, message: &str) {
    answer(row, version, |_| Err(RedisError::String(message.to_string())));
}

fn answer(row: &RowKey, version: u64, reply: impl Fn(i64) -> RedisResult) {
    let ready = {
        let mut all = waiters();
        let Some(list) = all.get_mut(row) else { return };
        let (ready, rest): (Vec<Waiter>, Vec<Waiter>) = list.drain(..).partition(|w| w.version <= version);
        if rest.is_empty() {
            all.remove(row);
        } else {
            *list = rest;
        }
        ready
    };
    for w in ready {
        ThreadSafeContext::with_blocked_client(w.client).reply(reply(w.reply));
    }
}

/// Answers every waiting client with an error (shutdown, demotion to replica).
pub fn fail_all(message: &str) {
    let all: Vec<Waiter> = waiters().drain().flat_map(|(_, list)| list).collect();
    for w in all {
        ThreadSafeContext::with_blocked_client(w.client).reply(Err(RedisError::String(message.to_string())));
    }
}
