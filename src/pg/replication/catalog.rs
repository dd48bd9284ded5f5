//! What logical replication needs from Postgres, asked on an ordinary
//! connection: whether the server and the role allow it, which tables a
//! publication holds, and the state of the module's slot. Names are quoted
//! identifiers or bound parameters.

use crate::model::mapping::{Document, Mapping};
use crate::pg::error::Error;
use crate::pg::sql::{quote_ident, quote_table};
use crate::pg::triggers::watch_triggers;
use postgres::Client;

/// A listened table as Postgres names it in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    /// Its schema.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// Why logical replication cannot serve these tables, or `None` when it can:
/// `wal_level` must be `logical`, the role needs `REPLICATION` (or superuser),
/// and each table needs a replica identity (a primary key, by default), or
/// Postgres would refuse its updates and deletes once it is published; each
/// document mapping's watched `(table, column)` must be in the table's replica
/// identity (or the identity FULL).
pub fn unusable(client: &mut Client, tables: &[&str], watched: &[(&str, &str)]) -> Result<Option<String>, Error> {
    let level: String = client.query_one("SHOW wal_level", &[])?.get(0);
    if level != "logical" {
        return Ok(Some(format!("wal_level is {level}, not logical")));
    }
    let may: bool =
        client.query_one("SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user", &[])?.get(0);
    if !may {
        return Ok(Some("the role has neither REPLICATION nor superuser".into()));
    }
    for table in tables {
        let row = client.query_opt(
            "SELECT c.relreplident::text, EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) \
             FROM pg_class c WHERE c.oid = to_regclass($1)",
            &[&quote_table(table)],
        )?;
        let Some(row) = row else { return Ok(Some(format!("table {table} does not exist"))) };
        let (identity, primary): (String, bool) = (row.get(0), row.get(1));
        if identity == "n" || (identity == "d" && !primary) {
            return Ok(Some(format!("table {table} has no replica identity (no primary key)")));
        }
    }
    for (table, column) in watched {
        // A delete carries only the replica identity's columns: the watched one
        // must be among them, or the stream could not say whose document to rebuild.
        let row = client.query_opt(
            "SELECT c.relreplident = 'f' OR EXISTS (SELECT 1 FROM pg_index i \
               JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
               WHERE i.indrelid = c.oid AND a.attname = $2 \
               AND ((c.relreplident = 'd' AND i.indisprimary) OR (c.relreplident = 'i' AND i.indisreplident))) \
             FROM pg_class c WHERE c.oid = to_regclass($1)",
            &[&quote_table(table), column],
        )?;
        let Some(row) = row else { return Ok(Some(format!("watched table {table} does not exist"))) };
        if !row.get::<_, bool>(0) {
            return Ok(Some(format!(
                "watched column {column} of table {table} is not in its replica identity, so a delete \
                 would not name its document (ALTER TABLE {table} REPLICA IDENTITY FULL)"
            )));
        }
    }
    Ok(None)
}

/// Waits until the transactions `xids` (as the stream names them) are visible
/// to new snapshots. The stream may deliver a COMMIT a moment before other
/// sessions see it, and a document rebuilt in that moment would be read
/// without it. One query per try: the stream's xids lack the epoch, which is
/// taken from the snapshot's next xid (one less for an xid above the counter,
/// which wrapped since).
pub fn wait_visible(client: &mut Client, xids: &[u32]) -> Result<(), Error> {
    if xids.is_empty() {
        return Ok(());
    }
    let xids: Vec<i64> = xids.iter().map(|&x| i64::from(x)).collect();
    for _ in 0..1000 {
        let visible: Option<bool> = client
            .query_one(
                "WITH s AS (SELECT snap, pg_snapshot_xmax(snap)::text::bigint AS next \
                   FROM (SELECT pg_current_snapshot() AS snap) c) \
                 SELECT bool_and(pg_visible_in_snapshot(((((next >> 32) \
                   - CASE WHEN x > (next & 4294967295) AND next >> 32 > 0 THEN 1 ELSE 0 END) << 32) | x) \
                   ::text::xid8, snap)) FROM s, unnest($1::bigint[]) AS x",
                &[&xids],
            )?
            .get(0);
        if visible != Some(false) {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    Ok(())
}

/// The schema and name Postgres gives `table` (as the mapping spells it).
pub fn resolve(client: &mut Client, table: &str) -> Result<Option<TableName>, Error> {
    let row = client.query_opt(
        "SELECT n.nspname::text, c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.oid = to_regclass($1)",
        &[&quote_table(table)],
    )?;
    Ok(row.map(|r| TableName { namespace: r.get(0), name: r.get(1) }))
}

/// Creates the publication for `tables`, or sets its tables to them.
pub fn ensure_publication(client: &mut Client, name: &str, tables: &[TableName]) -> Result<(), Error> {
    let list: Vec<String> =
        tables.iter().map(|t| format!("{}.{}", quote_ident(&t.namespace), quote_ident(&t.name))).collect();
    let exists = client.query_opt("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&name])?.is_some();
    let verb = if exists { "ALTER PUBLICATION" } else { "CREATE PUBLICATION" };
    let sets = if exists { "SET TABLE" } else { "FOR TABLE" };
    client.batch_execute(&format!("{verb} {} {sets} {}", quote_ident(name), list.join(", ")))?;
    Ok(())
}

/// The slot's confirmed position (what Postgres keeps WAL from), if the slot exists.
pub fn confirmed_flush(client: &mut Client, slot: &str) -> Result<Option<u64>, Error> {
    let row = client.query_opt(
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database()",
        &[&slot],
    )?;
    Ok(row.and_then(|r| r.get::<_, Option<String>>(0)).and_then(|text| parse_lsn(&text)))
}

/// Bytes of WAL Postgres keeps for the slot (current position minus confirmed).
pub fn lag_bytes(client: &mut Client, slot: &str) -> Result<Option<i64>, Error> {
    let row = client.query_opt(
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint FROM pg_replication_slots \
         WHERE slot_name = $1",
        &[&slot],
    )?;
    Ok(row.and_then(|r| r.get::<_, Option<i64>>(0)))
}

/// Drops the slot and the publication named `name` when the slot exists and no
/// session holds it: the WAL Postgres keeps for it is released. Returns whether
/// a slot was dropped.
pub fn release(client: &mut Client, name: &str) -> Result<bool, Error> {
    let dropped = client.execute(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
         WHERE slot_name = $1 AND database = current_database() AND NOT active",
        &[&name],
    )?;
    if dropped > 0 {
        client.batch_execute(&format!("DROP PUBLICATION IF EXISTS {}", quote_ident(name)))?;
    }
    Ok(dropped > 0)
}

/// Removes the module's NOTIFY triggers from `table` (left by the trigger
/// path): the logical stream needs none.
pub fn drop_triggers(client: &mut Client, table: &str) -> Result<(), Error> {
    let table = quote_table(table);
    client.batch_execute(&format!(
        "DROP TRIGGER IF EXISTS pgsync_notify ON {table}; DROP TRIGGER IF EXISTS pgsync_truncate ON {table}"
    ))?;
    Ok(())
}

/// Drops a document mapping's watch triggers (`triggers::watch_triggers`).
pub fn drop_watch_triggers(client: &mut Client, mapping: &Mapping, document: &Document) -> Result<(), Error> {
    for trigger in watch_triggers(mapping, document) {
        client.batch_execute(&format!(
            "DROP TRIGGER IF EXISTS {} ON {}",
            quote_ident(&trigger.name),
            quote_table(&trigger.table)
        ))?;
    }
    Ok(())
}

/// Drops the slot (a session of ours that still holds it is ended first).
pub fn drop_slot(client: &mut Client, slot: &str) -> Result<(), Error> {
    client.execute(
        "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL",
        &[&slot],
    )?;
    // A terminated walsender lets go of the slot a moment later.
    for _ in 0..50 {
        match client.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        ) {
            Ok(_) => return Ok(()),
            Err(e) if e.code() == Some(&postgres::error::SqlState::OBJECT_IN_USE) => {
                std::thread::sleep(std::time::Duration::from_millis(100))
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::new(crate::pg::error::ErrorKind::Unavailable, format!("replication slot {slot} stays in use")))
}

/// Parses an LSN as Postgres prints it (`16/B374D848`).
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (high, low) = text.split_once('/')?;
    Some((u64::from_str_radix(high, 16).ok()? << 32) | u64::from_str_radix(low, 16).ok()?)
}

/// Prints an LSN as Postgres does.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}
