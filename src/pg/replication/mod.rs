//! Postgres's logical replication, as the listener uses it in `pgsync.cdc`
//! logical mode: whether the server allows it, the publication and the slot
//! (`catalog`), the stream itself (`stream`), and the decoding of its messages
//! (`pgoutput`). See docs/logical.md.

pub mod catalog;
pub mod pgoutput;
pub mod stream;

#[cfg(test)]
mod tests;

use std::sync::atomic::AtomicBool;

/// Prefix of the logical message that marks the module's own transactions.
pub const OWN_WRITES_PREFIX: &str = "pgsync";

/// Whether the module's writing transactions carry their mark (logical mode):
/// the stream then knows them and does not apply them again.
pub static MARK_OWN_WRITES: AtomicBool = AtomicBool::new(false);

/// The statement that marks a transaction as the module's own (a transactional
/// logical message: decoded with the transaction, costs one small WAL record).
pub const MARK_SQL: &str = "SELECT pg_logical_emit_message(true, 'pgsync', '')";
