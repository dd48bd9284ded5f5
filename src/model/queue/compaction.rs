//! How a write reaches the journal, and when a row's journal log is rewritten as
//! one record.

/// How the write being pushed is journaled.
#[derive(Debug, Clone, Copy)]
pub enum Journaled {
    /// A new write, appended to the row's journal.
    Fresh {
        /// Size of the write's record in the log.
        bytes: usize,
    },
    /// A log read back from the journal (a restart, a promotion, a hand-off).
    Recovered {
        /// Size of the log.
        bytes: usize,
    },
}

/// Slack before a row's journal log is rewritten as one record: small rows never
/// pay for it.
pub(super) const COMPACTION_SLACK: usize = 256;
