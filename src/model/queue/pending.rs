//! What the queue keeps of a pending row: its versions, when its oldest write
//! was captured, and how many bytes at the end of the row's journal log are its
//! records. The records themselves live only in the log (`model/journal_log.rs`):
//! a push costs the queue no copy of the write, and a worker decodes the log
//! when it takes the row.

use super::entry::{Entry, Stamp};
use crate::model::queue::row_map::Captured;

/// A row's queued change, as a position in its journal log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// Version of the newest write merged in.
    pub version: u64,
    /// Version of the oldest (what `SYNC.WAIT` waits for).
    pub first_version: u64,
    /// Capture time of the oldest write merged in (for lag).
    pub since: Stamp,
    /// Bytes at the end of the row's log that hold the change: the records of
    /// the writes merged in, or the one record they were rewritten as.
    pub journal_bytes: usize,
    /// `journal_bytes` when the log was last rewritten as one record (or held
    /// its first): rewriting it again pays once it has grown past twice that.
    pub(super) coalesced: usize,
}

impl Captured for Pending {
    fn since(&self) -> Stamp {
        self.since
    }
}

impl Pending {
    /// A row's first write, of `journal_bytes` in the log.
    pub(super) fn new(version: u64, journal_bytes: usize) -> Pending {
        Pending { version, first_version: version, since: Stamp::now(), journal_bytes, coalesced: journal_bytes }
    }

    /// A taken change, queued again (a failed batch).
    pub(super) fn of(entry: &Entry) -> Pending {
        let bytes = entry.journal_bytes;
        let change = &entry.change;
        Pending {
            version: change.version,
            first_version: change.first_version,
            since: entry.since,
            journal_bytes: bytes,
            coalesced: bytes,
        }
    }

    /// Adds a newer write of `journal_bytes`.
    pub(super) fn append(&mut self, version: u64, journal_bytes: usize) {
        self.version = self.version.max(version);
        self.journal_bytes += journal_bytes;
    }

    /// Puts a newer queued change on top of this one (a failed batch's change
    /// under what was captured meanwhile).
    pub(super) fn then(&mut self, newer: Pending) {
        self.version = self.version.max(newer.version);
        self.journal_bytes += newer.journal_bytes;
        self.coalesced += newer.coalesced;
    }

    /// The log now holds the change as one record of `journal_bytes`.
    pub(super) fn rewritten(&mut self, journal_bytes: usize) {
        self.journal_bytes = journal_bytes;
        self.coalesced = journal_bytes;
    }

    /// Whether the log's records have grown enough since they were last
    /// rewritten as one for rewriting them again to pay (see `compaction.rs`).
    pub(super) fn grown(&self, slack: usize) -> bool {
        self.journal_bytes > 2 * self.coalesced + slack
    }
}
