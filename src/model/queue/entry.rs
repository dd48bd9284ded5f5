//! A row's key, its change as a batch takes it, and what the queue keeps of
//! it while the batch writes it.

use crate::model::change::Change;
use crate::model::queue::row_map::Captured;
use compact_str::CompactString;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// Identifies a mapped row: mapping index and primary-key text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RowKey {
    /// Index into the mappings.
    pub mapping: usize,
    /// Primary-key value as it appears in the Redis key; kept inline up to 24
    /// bytes, so a row's lookup compares it without a cache miss and capture
    /// makes it without an allocation.
    pub id: CompactString,
}

/// A row's change as a batch takes it (decoded from the row's journal log,
/// `model/journal_log.rs`), when its oldest write was captured, and the
/// journal bytes that hold it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The coalesced change.
    pub change: Change,
    /// Capture time of the oldest write merged in (for lag).
    pub since: Stamp,
    /// Bytes of the row's log that hold the change (the records of the writes
    /// merged in): what the row is queued with again should the batch fail.
    pub journal_bytes: usize,
}

/// Where capture times count from: the first capture time taken.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// A capture time, to the millisecond: 8 bytes in every queued row where an
/// `Instant` takes 16, and the key the row maps keep their oldest times by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp(u64);

impl Stamp {
    /// Now.
    pub fn now() -> Stamp {
        Stamp(EPOCH.elapsed().as_millis() as u64)
    }

    /// The stamp of `instant` (one before the first stamp counts as it).
    #[cfg(test)]
    pub fn of(instant: Instant) -> Stamp {
        Stamp(instant.saturating_duration_since(*EPOCH).as_millis() as u64)
    }

    /// The time this stamp stands for (the start of its millisecond).
    pub fn instant(self) -> Instant {
        *EPOCH + Duration::from_millis(self.0)
    }
}

/// How a settled row ended: committed, or rejected.
pub type Outcome = Result<(), Rejected>;

/// Why a settled row did not commit: the text its waiting clients and ack
/// streams are shown (Postgres's message, or the module's own refusal before
/// any SQL). The model holds the text, as it imports neither error type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected(pub String);

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Rejected {}

/// What the queue keeps of a row while its batch is being written: the worker
/// holds the change itself, and the journal its records.
#[derive(Debug, Clone)]
pub(super) struct Flight {
    pub(super) since: Stamp,
    pub(super) first_version: u64,
}

impl Captured for Flight {
    fn since(&self) -> Stamp {
        self.since
    }
}
