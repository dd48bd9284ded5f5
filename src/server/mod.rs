//! The Redis side: the command filter and `SYNC.*` commands, capture and the
//! key-API writes, the journal's keys, acks, notifications, dead letters, waiters,
//! ACL checks, configs and the status figures.

pub mod ack;
pub mod acl;
pub mod blocked;
pub mod capture;
pub mod client_call;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod deadletter;
pub mod direct_write;
pub mod eviction;
pub mod filter;
pub mod hash_key;
pub mod journal;
pub mod keyscan;
pub mod migration;
pub mod notify;
pub mod read_through;
pub mod redis_io;
pub mod redis_lock;
pub mod replies;
pub mod slot_keys;
pub mod status;
pub mod ttl;
pub mod value_refusal;
pub mod waiters;
