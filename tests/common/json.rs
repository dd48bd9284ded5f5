//! RedisJSON helpers for the JSON tests: a small write-behind `"type": "json"`
//! table, RedisJSON commands and documents.

use super::*;
use serde_json::Value;

/// `accts(id, name, email, score)` for write-behind JSON documents.
pub const ACCTS_SQL: &str = "CREATE TABLE accts (id integer PRIMARY KEY, name text, email text, score bigint)";

/// Write-behind mapping of `acct:<id>` RedisJSON documents onto `accts`.
pub const ACCTS_MAPPING: &str = r#"{"mappings": [{"name": "accts", "table": "accts", "key_prefix": "acct:",
    "primary_key": "id", "mode": "write-behind", "type": "json",
    "fields": {"name": "name", "email": "email", "score": "score"}}]}"#;

/// `JSON.<command> key args...`, its reply as a Redis value.
pub fn json<C: redis::ConnectionLike>(
    c: &mut C,
    command: &str,
    key: &str,
    args: &[&str],
) -> redis::RedisResult<redis::Value> {
    redis::cmd(&format!("JSON.{command}")).arg(key).arg(args).query(c)
}

/// The document at `key` (`JSON.GET key`), or `None` when the key is absent.
pub fn doc<C: redis::ConnectionLike>(c: &mut C, key: &str) -> Option<Value> {
    let text: Option<String> = redis::cmd("JSON.GET").arg(key).query(c).expect("JSON.GET");
    text.map(|t| serde_json::from_str(&t).expect("a JSON document"))
}

/// One `accts` row: name, email, score.
pub type Acct = (Option<String>, Option<String>, Option<i64>);

/// Every `accts` row by id.
pub fn pg_accts(db: &TestDb) -> BTreeMap<i32, Acct> {
    db.client()
        .query("SELECT id, name, email, score FROM accts", &[])
        .expect("SELECT accts")
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
        .collect()
}
