//! How a write reaches the journal, and when a row's journal is rewritten as one
//! record (the queue decides, since it holds the coalesced change).

use super::Pending;
use crate::model::change::Change;

/// How the write being pushed is journaled.
#[derive(Debug, Clone, Copy)]
pub enum Journaled {
    /// A new write, appended to the row's journal.
    Fresh {
        /// Size of the write's record.
        bytes: usize,
    },
    /// A record read back from the journal.
    Recovered {
        /// Size of the record.
        bytes: usize,
    },
}

/// A row's journal rewritten as one record, when its records have grown to more
/// than twice what the coalesced change needs: this keeps the journal's work
/// O(size of the write), amortized, for a row written over and over while
/// Postgres is down. Only for a row not in flight, whose journal then holds its
/// pending change alone.
#[derive(Debug, Clone, PartialEq)]
pub struct Compaction {
    /// The row's whole pending change, acks included: the one record to write.
    pub change: Change,
}

/// Slack before a row's journal is rewritten as one record: small rows never pay for it.
const COMPACTION_SLACK: usize = 256;

/// Slack before the queue's own copy of a row's records is coalesced into
/// one: a row written over and over keeps a few records in memory, not one per
/// write, at the cost of a decode every few writes (amortized by the doubling).
const QUEUE_SLACK: usize = 128;

/// Coalesces the queue's copy of a row's records once it has grown past twice
/// what it was when last coalesced (plus [`QUEUE_SLACK`]), and then decides
/// whether the row's journal is rewritten as one record too (see
/// [`Compaction`]), noting the size of that one record. `in_flight` is asked
/// last: it costs a lookup. Amortized O(size of the write).
pub(super) fn compact(entry: &mut Pending, in_flight: impl FnOnce() -> bool) -> Option<Compaction> {
    if !entry.grown(QUEUE_SLACK) {
        return None;
    }
    let change = entry.change();
    entry.replace(&change, entry.journal_bytes);
    let needed = change.size_bytes() + change.acks.iter().map(|a| a.len()).sum::<usize>();
    if entry.journal_bytes <= 2 * needed + COMPACTION_SLACK || in_flight() {
        return None;
    }
    entry.journal_bytes = needed;
    Some(Compaction { change })
}
