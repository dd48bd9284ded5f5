//! Everything that talks SQL: error classification, schema checks, statement
//! building, batch writing, reading rows back and the NOTIFY triggers. No Redis
//! types here.

pub mod auth;
pub mod commit_marker;
pub mod connect;
pub mod connect_error;
pub mod conninfo;
pub mod documents;
pub mod error;
pub mod prepared;
pub mod reader;
pub mod replication;
pub mod schema;
pub mod sql;
pub mod tls;
pub mod triggers;
pub mod writer;

#[cfg(test)]
mod cleartext_tests;
#[cfg(test)]
mod redaction_property;
