//! The pipeline that joins Redis and Postgres: the dirty set (queue and journal
//! in step), the workers, apply after a commit, and the state and supervisor that
//! own the threads.

pub mod apply;
pub mod dirty_set;
pub mod runtime;
pub mod schema_checker;
pub mod supervisor;
pub mod worker;
