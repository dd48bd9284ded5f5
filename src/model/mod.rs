//! The pure core: changes and how they coalesce, what a command means, row ids,
//! the journal's record format, the queue of dirty rows, mappings, backoff and
//! counters. No Redis or Postgres types: everything here is unit-tested alone.

pub mod backoff;
pub mod change;
pub mod counting_alloc;
pub mod doubt;
pub mod fault;
pub mod field_map;
pub mod guard;
pub mod handover;
pub mod intent;
pub mod journal_codec;
pub mod journal_log;
pub mod json_intent;
pub mod json_path_set;
pub mod json_row;
pub mod kafka;
pub mod key_text;
pub mod latency;
pub mod log_map;
pub mod mapping;
pub mod migrate_args;
pub mod negative_cache;
pub mod queue;
pub mod read_command;
pub mod row_id;
pub mod shutdown;
pub mod slots;
pub mod stats;
pub mod template;
pub mod value_check;
