//! Statements prepared once per connection, by their SQL text. The batch upserts
//! are CTEs over `unnest`: sent as text, Postgres parses and plans one on every
//! batch, which is most of a small batch's round trip (`SYNC.HSET`'s latency).

use super::error::Error;
use postgres::types::Type;
use postgres::{GenericClient, Statement};
use std::collections::HashMap;

/// Most statements kept per connection: column shapes are few in practice, and
/// a client writing ever new shapes must not grow the cache without bound.
const MAX_STATEMENTS: usize = 256;

/// The prepared statements of one connection; cleared whenever the connection
/// is replaced, or a statement fails (the table may have changed under it).
#[derive(Default)]
pub struct Prepared(HashMap<String, Statement>);

impl Prepared {
    /// The statement for `sql`, whose parameters are all `text[]`, prepared on
    /// `client` the first time it is asked for.
    pub fn get(&mut self, client: &mut impl GenericClient, sql: &str, params: usize) -> Result<Statement, Error> {
        if let Some(statement) = self.0.get(sql) {
            return Ok(statement.clone());
        }
        let statement = client.prepare_typed(sql, &vec![Type::TEXT_ARRAY; params])?;
        if self.0.len() >= MAX_STATEMENTS {
            self.0.clear();
        }
        self.0.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }

    /// Forgets every statement (a new connection, or one that failed).
    pub fn clear(&mut self) {
        self.0.clear();
    }
}
