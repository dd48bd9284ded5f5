//! Counters per mapping and the Postgres connection state, as shown by
//! `SYNC.STATUS` and `INFO pgsync`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

/// Counters of one mapping.
#[derive(Default)]
pub struct MappingStats {
    /// Rows committed to Postgres.
    pub synced: AtomicU64,
    /// Changes rejected (by Postgres, or before SQL for a bad key or value).
    pub failed: AtomicU64,
    /// Batches put back to wait because Postgres was unavailable.
    pub retries: AtomicU64,
    /// Dead-letter entries dropped because the list was full (`pgsync.deadletter-max`).
    pub dead_letters_dropped: AtomicU64,
    /// Writes refused at capture (a key that can be no row's key, a bad `#`),
    /// and rows read from Postgres whose key such a write would refuse.
    pub refused: AtomicU64,
    /// Whether a row read from Postgres was refused its key and logged: that is
    /// logged once per mapping, so a flood of them cannot flood the log.
    pub unkeyed_logged: AtomicBool,
    /// Notification channels skipped because the row lacked a field they name.
    pub notify_skipped: AtomicU64,
    /// Reads of read-through keys that Redis held.
    pub read_hits: AtomicU64,
    /// Reads of read-through keys that Redis did not hold.
    pub read_misses: AtomicU64,
    /// Misses answered from the negative cache, without a query.
    pub read_negative_hits: AtomicU64,
    /// Queries the loader ran (each reads a batch of rows).
    pub read_loads: AtomicU64,
    /// Rows the loader read (and, on a primary, wrote).
    pub read_rows_loaded: AtomicU64,
    /// Loads that failed (Postgres unreachable or refusing the query).
    pub read_errors: AtomicU64,
    /// Rows (documents) read from Postgres by `SYNC.RELOAD` and the listener's
    /// catch-ups.
    pub reload_rows_read: AtomicU64,
    /// How long the loader's queries took.
    pub read_latency: crate::model::latency::Latency,
    last_error: Mutex<Option<LastError>>,
    schema_error: Mutex<Option<String>>,
    listener: Mutex<Option<String>>,
}

/// A mapping's latest error, with the row it was about when a row was
/// rejected: that row landing later clears it, decided on the id, not the text.
#[derive(Clone)]
struct LastError {
    text: String,
    row: Option<String>,
}

fn read<T: Clone>(slot: &Mutex<Option<T>>) -> Option<T> {
    slot.lock().map(|s| s.clone()).unwrap_or_else(|p| p.into_inner().clone())
}

fn write<T>(slot: &Mutex<Option<T>>, value: Option<T>) {
    match slot.lock() {
        Ok(mut s) => *s = value,
        Err(p) => *p.into_inner() = value,
    }
}

impl MappingStats {
    /// Adds one to a counter.
    pub fn bump(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Remembers the latest error of this mapping.
    pub fn set_last_error(&self, message: &str) {
        write(&self.last_error, Some(LastError { text: message.to_string(), row: None }));
    }

    /// Remembers the rejection of row `id` as the latest error.
    pub fn set_row_rejected(&self, id: &str, message: &str) {
        write(&self.last_error, Some(LastError { text: message.to_string(), row: Some(id.to_string()) }));
    }

    /// Forgets the latest error if it is row `id`'s rejection (the row has
    /// landed since).
    pub fn clear_row_rejected(&self, id: &str) {
        let mut slot = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_some_and(|e| e.row.as_deref() == Some(id)) {
            *slot = None;
        }
    }

    /// The latest error of this mapping, if any.
    pub fn last_error(&self) -> Option<String> {
        read(&self.last_error).map(|e| e.text)
    }

    /// Records the outcome of the latest schema check (`None` = schema is fine).
    pub fn set_schema_error(&self, message: Option<String>) {
        write(&self.schema_error, message);
    }

    /// Records the listener's state for this mapping (`listening`, `down: ...`).
    pub fn set_listener(&self, state: &str) {
        write(&self.listener, Some(state.to_string()));
    }

    /// The listener's state for this mapping, if it listens.
    pub fn listener(&self) -> Option<String> {
        read(&self.listener)
    }

    /// The schema problem of this mapping, if any.
    pub fn schema_error(&self) -> Option<String> {
        read(&self.schema_error)
    }
}

/// Whether Postgres answered the last attempt, and the error if it did not.
#[derive(Default)]
pub struct PostgresState {
    up: AtomicBool,
    seen: AtomicBool,
    error: Mutex<Option<String>>,
}

impl PostgresState {
    /// Records a successful round trip.
    pub fn mark_up(&self) {
        self.seen.store(true, Ordering::Relaxed);
        if !self.up.swap(true, Ordering::Relaxed) {
            write(&self.error, None);
        }
    }

    /// Records a failure to reach Postgres.
    pub fn mark_down(&self, message: &str) {
        self.seen.store(true, Ordering::Relaxed);
        self.up.store(false, Ordering::Relaxed);
        write(&self.error, Some(message.to_string()));
    }

    /// Whether Postgres answered the last attempt.
    pub fn reachability(&self) -> Reachability {
        match (self.seen.load(Ordering::Relaxed), self.up.load(Ordering::Relaxed)) {
            (false, _) => Reachability::Connecting,
            (true, true) => Reachability::Up,
            (true, false) => Reachability::Down,
        }
    }

    /// `up`, `down`, or `connecting` before the first attempt finished.
    pub fn describe(&self) -> &'static str {
        match self.reachability() {
            Reachability::Connecting => "connecting",
            Reachability::Up => "up",
            Reachability::Down => "down",
        }
    }

    /// The last connection error, if Postgres is down.
    pub fn error(&self) -> Option<String> {
        read(&self.error)
    }
}

/// Whether Postgres can be reached, as far as the module knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reachability {
    /// No attempt has finished yet.
    Connecting,
    /// The last attempt reached it.
    Up,
    /// The last attempt failed.
    Down,
}

/// One figure of `SYNC.STATUS` and `INFO`: its value (the name goes beside it).
pub enum Figure {
    /// A counter.
    Int(i64),
    /// A word or message.
    Text(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_landed_row_clears_only_its_own_rejection() {
        let stats = MappingStats::default();
        stats.set_row_rejected("7", "users: row 7 rejected: boom");
        stats.clear_row_rejected("70");
        assert_eq!(stats.last_error().as_deref(), Some("users: row 7 rejected: boom"), "another row, same prefix");
        stats.clear_row_rejected("7");
        assert_eq!(stats.last_error(), None);
        stats.set_last_error("users: row 7 rejected: looks alike, but is no rejection");
        stats.clear_row_rejected("7");
        assert!(stats.last_error().is_some(), "decided on the row, not the text");
    }
}
