//! The pipeline that joins Redis and Postgres: capture into the dirty set (queue
//! and journal in step), its recovery after a restart, the workers, apply after a
//! commit, and the state they share. The supervisor that owns the threads sits
//! above, beside `lib.rs`.

pub mod apply;
pub mod capture;
pub mod dirty_set;
pub mod retry;
pub mod runtime;
pub mod schema_checker;
pub mod threads;
pub mod worker;
