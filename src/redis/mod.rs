//! The Redis side's adapters: calls into Redis (`redis_io`), keys and hashes,
//! cluster slots, the journal's logs, acks, notifications, dead letters, clients
//! blocked until their rows settle, read-through's loads, ACL checks and the
//! `pgsync.*` configs. Nothing here imports the pipeline, the sources or the
//! entry points above it.

pub mod ack;
pub mod acl;
pub mod aux_type;
pub mod blocked;
pub mod cdc_position;
pub mod client_call;
pub mod cluster;
pub mod config;
pub mod deadletter;
pub mod direct_write;
pub mod event_loop;
pub mod eviction;
pub mod hash_key;
pub mod journal;
pub mod json_doc;
pub mod keyscan;
pub mod notify;
pub mod read_through;
pub mod redis_io;
pub mod redis_lock;
pub mod replies;
pub mod ttl;
pub mod waiters;
