//! Read-through: a read of a row that Redis does not hold (never loaded, expired,
//! evicted) loads it from Postgres, for mappings with `"read_through": true`.
//! The command filter routes reads of missing keys to `SYNC.READ` ([`probe`]),
//! which blocks the reading client while the loader thread
//! (`sources::loader`) reads the rows in batches; [`loads`] holds what is being
//! loaded and who waits, and [`answer`] what each client gets.

pub mod command;
pub mod probe;
