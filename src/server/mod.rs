//! The entry points Redis calls: the command filter, the `SYNC.*` commands,
//! keyspace events of keys arriving by migration, and the status figures of
//! `INFO`. The adapters they use are in `redis/`.

pub mod commands;
pub mod events;
pub mod filter;
pub mod migration;
pub mod read_through;
pub mod slot_keys;
pub mod status;
pub mod value_refusal;
