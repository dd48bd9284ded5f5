//! Exactly-once commits of batches that increment. An increment replayed adds
//! twice, and a batch's commit can succeed while its answer is lost: the session
//! is ended, or the network drops, after Postgres committed and before the reply
//! arrived. So such a batch writes a marker row in its own transaction, and when
//! the answer to its COMMIT is lost, the worker asks, on another connection,
//! whether the marker is there: committed (apply it as written) or not (write it
//! again). The table is the module's own, created on first use in the
//! connection's default schema; each worker deletes its previous marker with the
//! next one, so the table holds about one row per worker.

use super::error::Error;
use postgres::GenericClient;
use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// Creates the markers' table if it is missing, and drops markers a crash left.
pub const CREATE_SQL: &str = "CREATE TABLE IF NOT EXISTS pgsync_commits \
     (id bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT now()); \
     DELETE FROM pgsync_commits WHERE at < now() - interval '1 day'";

/// One batch's marker, and the marker of the same worker's previous batch
/// (known committed: deleted in the same statement).
#[derive(Debug, Clone, Copy)]
pub struct Marker {
    /// This batch's id.
    pub id: i64,
    /// The previous marker of the worker, if any.
    pub previous: Option<i64>,
}

impl Marker {
    /// A marker with a fresh random id.
    pub fn new(previous: Option<i64>) -> Marker {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        hasher.write_u128(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos(),
        );
        Marker { id: hasher.finish() as i64, previous }
    }
}

/// Creates the table (see [`CREATE_SQL`]).
pub fn ensure_table(client: &mut impl GenericClient) -> Result<(), Error> {
    client.batch_execute(CREATE_SQL).map_err(Error::from)
}

/// Writes the marker, inside the batch's transaction.
pub fn record(client: &mut impl GenericClient, marker: &Marker) -> Result<(), Error> {
    client
        .execute(
            "WITH gone AS (DELETE FROM pgsync_commits WHERE id = $2) INSERT INTO pgsync_commits (id) VALUES ($1)",
            &[&marker.id, &marker.previous.unwrap_or(marker.id)],
        )
        .map(|_| ())
        .map_err(Error::from)
}

/// Whether the batch with marker `id` committed.
pub fn committed(client: &mut impl GenericClient, id: i64) -> Result<bool, Error> {
    client
        .query_one("SELECT EXISTS (SELECT 1 FROM pgsync_commits WHERE id = $1)", &[&id])
        .map(|row| row.get(0))
        .map_err(Error::from)
}

/// Which of the markers `ids` committed.
pub fn which_committed(client: &mut impl GenericClient, ids: &[i64]) -> Result<HashSet<i64>, Error> {
    let rows = client.query("SELECT id FROM pgsync_commits WHERE id = ANY($1)", &[&ids]).map_err(Error::from)?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// How a batch proves its commit: its marker, and how to ask whether it
/// committed when the answer to COMMIT was lost (`Ok(true)`: it did).
pub struct Proof<'a> {
    /// The batch's marker.
    pub marker: Marker,
    /// Asks Postgres, on another connection, about a marker.
    pub resolve: &'a mut dyn FnMut(i64) -> Result<bool, Error>,
}

#[cfg(test)]
mod tests {
    use super::Marker;

    #[test]
    fn the_readme_shows_the_table_the_module_creates() {
        let create = super::CREATE_SQL.split(';').next().unwrap_or_default();
        assert!(include_str!("../../README.md").contains(create), "README lacks: {create}");
    }

    #[test]
    fn markers_differ() {
        let ids: std::collections::HashSet<i64> = (0..1000).map(|_| Marker::new(None).id).collect();
        assert_eq!(ids.len(), 1000);
    }
}
