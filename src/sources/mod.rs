//! What feeds Redis from outside. Postgres → Redis: the listener, `SYNC.RELOAD`,
//! `TRUNCATE` handling, and the apply of rows read from Postgres into their
//! hashes (or JSON documents). Kafka → Redis: a mapping's `"kafka"` source.

pub mod apply_json;
pub mod apply_pg;
pub mod documents;
pub mod full_read;
pub mod kafka;
pub mod listen;
pub mod loader;
pub mod logical;
pub mod reload;
pub mod truncate;
