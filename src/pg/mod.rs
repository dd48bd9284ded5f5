//! Everything that talks SQL: error classification, schema checks, statement
//! building and batch writing. No Redis types here.

pub mod error;
pub mod schema;
pub mod sql;
pub mod writer;
