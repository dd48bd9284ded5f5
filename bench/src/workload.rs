//! Tables, mappings and commands shared by the phases.

/// Schema of the run's database: the write-behind `items` and `scores` tables
/// and the seed scenario's `users` table (as in `examples/schema.sql`).
pub const SCHEMA_SQL: &str = concat!(
    "CREATE TABLE items (id integer PRIMARY KEY, name text, score bigint, tag text);\n",
    "CREATE TABLE scores (id text PRIMARY KEY, score bigint);\n",
    "CREATE TABLE accts (id text PRIMARY KEY, score bigint);\n",
    include_str!("../../examples/schema.sql")
);

/// Write-behind mapping of `items:<id>` hashes onto `items`.
pub const ITEMS_MAPPING: &str = r#"{"mappings": [{"name": "items", "table": "items", "key_prefix": "items:",
    "primary_key": "id", "mode": "write-behind", "fields": {"name": "name", "score": "score", "tag": "tag"}}]}"#;

/// Write-behind mapping of `scores:<id>` hashes onto `scores`, for load from
/// `valkey-benchmark -r`: its keys' 12-digit zero-padded numbers are canonical
/// ids of a `text` key column (an `integer` one would refuse the leading zeros).
pub const SCORES_MAPPING: &str = r#"{"mappings": [{"name": "scores", "table": "scores", "key_prefix": "scores:",
    "primary_key": "id", "mode": "write-behind", "fields": {"score": "score"}}]}"#;

/// Write-behind mapping of `acct:<id>` RedisJSON documents onto `accts` (the
/// member `score`), for figure 10's load: keys as in [`SCORES_MAPPING`].
pub const ACCTS_MAPPING: &str = r#"{"mappings": [{"name": "accts", "table": "accts", "key_prefix": "acct:",
    "primary_key": "id", "mode": "write-behind", "type": "json", "fields": {"score": "score"}}]}"#;

/// Write-through mapping of `users:<id>` onto `users` (`examples/pgsync.json`).
pub const USERS_MAPPING: &str = include_str!("../../examples/pgsync.json");

/// Empties `items` (a new relfilenode: no dead tuples carried between runs).
pub const RESET_ITEMS: &str = "TRUNCATE items";

/// Multi-row upsert of `items` rows given as `text[]` columns, the same shape as
/// the module's statement (`unnest` of text arrays, cast to the column types).
pub const RAW_UPSERT: &str = "INSERT INTO items (id, name, score, tag) \
     SELECT u.id::integer, u.name, u.score::bigint, u.tag \
     FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS u(id, name, score, tag) \
     ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, score = EXCLUDED.score, tag = EXCLUDED.tag";

/// One `items` row as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Primary key.
    pub id: u64,
    /// `name` column.
    pub name: String,
    /// `score` column.
    pub score: u64,
    /// `tag` column.
    pub tag: String,
}

impl Item {
    /// The row written by change number `seq` to row `id`.
    pub fn new(id: u64, seq: u64) -> Item {
        Item { id, name: format!("item-{id}"), score: seq, tag: format!("tag-{}", seq % 97) }
    }

    /// The hash of row `id`: `items:<id>`.
    pub fn key(id: u64) -> String {
        format!("items:{id}")
    }

    /// `HSET items:<id> name .. score .. tag ..`.
    pub fn hset(&self) -> redis::Cmd {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(Self::key(self.id)).arg("name").arg(&self.name).arg("score").arg(self.score).arg("tag").arg(&self.tag);
        cmd
    }
}

/// Sends `items` to Postgres as one [`RAW_UPSERT`] on `client` with `statement`.
pub fn raw_upsert(
    client: &mut postgres::Client,
    statement: &postgres::Statement,
    items: &[Item],
) -> Result<u64, postgres::Error> {
    let ids: Vec<String> = items.iter().map(|i| i.id.to_string()).collect();
    let names: Vec<&str> = items.iter().map(|i| i.name.as_str()).collect();
    let scores: Vec<String> = items.iter().map(|i| i.score.to_string()).collect();
    let tags: Vec<&str> = items.iter().map(|i| i.tag.as_str()).collect();
    client.execute(statement, &[&ids, &names, &scores, &tags])
}

/// `count(*)` and `sum(score)` of `items`, to check a run's end state.
pub fn items_digest(client: &mut postgres::Client) -> Result<(i64, i64), postgres::Error> {
    let row = client.query_one("SELECT count(*), COALESCE(sum(score), 0)::bigint FROM items", &[])?;
    Ok((row.get(0), row.get(1)))
}
