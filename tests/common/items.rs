//! A small write-behind table for convergence and failure tests.

use super::*;

/// `items(id, name, score, tag)` with a CHECK that tests can violate and drop.
pub const ITEMS_SQL: &str = "CREATE TABLE items (id integer PRIMARY KEY, name text, score bigint \
     CONSTRAINT score_not_huge CHECK (score < 1000000000000), tag text)";

/// Write-behind mapping of `items:<id>` hashes.
pub const ITEMS_MAPPING: &str = r#"{"mappings": [{"name": "items", "table": "items", "key_prefix": "items:",
    "primary_key": "id", "mode": "write-behind", "fields": {"name": "name", "score": "score", "tag": "tag"}}]}"#;

/// Postgres rows of `items` as id → (name, score, tag) text.
pub fn pg_items(db: &TestDb) -> BTreeMap<i32, [Option<String>; 3]> {
    db.client()
        .query("SELECT id, name, score::text, tag FROM items", &[])
        .expect("read items")
        .iter()
        .map(|r| (r.get(0), [r.get(1), r.get(2), r.get(3)]))
        .collect()
}

/// Redis hashes `items:1..=n` in the same shape (missing keys left out).
pub fn redis_items(c: &mut redis::Connection, n: i32) -> BTreeMap<i32, [Option<String>; 3]> {
    let mut out = BTreeMap::new();
    for id in 1..=n {
        let h = hgetall(c, &format!("items:{id}"));
        if !h.is_empty() {
            out.insert(id, [h.get("name").cloned(), h.get("score").cloned(), h.get("tag").cloned()]);
        }
    }
    out
}

/// Asserts Postgres equals Redis for `items:1..=n`.
pub fn assert_converged(db: &TestDb, c: &mut redis::Connection, n: i32) {
    let pg = pg_items(db);
    let redis = redis_items(c, n);
    let differing: Vec<_> = (1..=n).filter(|id| pg.get(id) != redis.get(id)).take(5).collect();
    assert!(
        differing.is_empty(),
        "Postgres differs from Redis for ids {differing:?}: e.g. pg {:?} redis {:?}",
        differing.first().and_then(|id| pg.get(id)),
        differing.first().and_then(|id| redis.get(id))
    );
}
