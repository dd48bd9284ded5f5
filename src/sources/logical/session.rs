//! A replication session's fixed facts: its slot and scope, the listening
//! mappings and how each reads a change of its table, and the publication set
//! to their tables; and the slot's lag, read while streaming.

use super::txn::{MappedColumn, Target, Watcher};
use super::{slot_name, status, POLL};
use crate::model::mapping::ValueType;
use crate::pg::error::{Error, ErrorKind};
use crate::pg::reader::RowShape;
use crate::pg::replication::catalog;
use crate::pg::replication::stream::Endpoint;
use crate::pipeline::runtime::Runtime;
use crate::redis::cdc_position as state;
use crate::redis::config;
use crate::redis::redis_io::warn;
use postgres::Client;
use std::collections::HashMap;
use std::sync::atomic::Ordering;

/// What a session needs to know of its mappings.
pub(super) struct Session {
    pub(super) slot: String,
    pub(super) scope: String,
    pub(super) endpoint: Endpoint,
    pub(super) mappings: Vec<usize>,
    pub(super) targets: HashMap<(String, String), Vec<Target>>,
    pub(super) watchers: HashMap<(String, String), Vec<Watcher>>,
    pub(super) shapes: HashMap<usize, RowShape>,
    /// Whether the lag is past `pgsync.cdc-max-lag-bytes` and was warned of.
    lag_warned: std::cell::Cell<bool>,
}

impl Session {
    /// Reads every listening mapping's schema and table and sets the
    /// publication; `None` while a schema is not loaded yet.
    pub(super) fn prepare(rt: &Runtime, client: &mut Client, listening: &[usize]) -> Result<Option<Session>, Error> {
        let Some(slot) = slot_name() else {
            for &i in listening {
                rt.mapping(i).stats.set_listener("waiting: this cluster node owns no slot");
            }
            rt.shutdown.sleep(POLL);
            return Ok(None);
        };
        let mut targets: HashMap<(String, String), Vec<Target>> = HashMap::new();
        let mut watchers: HashMap<(String, String), Vec<Watcher>> = HashMap::new();
        let mut shapes = HashMap::new();
        let mut tables = Vec::new();
        let mut names = Vec::new();
        for &i in listening {
            let m = rt.mapping(i).def;
            let Some(schema) = rt.schema(i) else {
                let why = rt.mapping(i).stats.schema_error().unwrap_or_else(|| "not checked yet".into());
                rt.mapping(i).stats.set_listener(&format!("waiting for the schema: {why}"));
                rt.shutdown.sleep(POLL);
                return Ok(None);
            };
            if let Some(document) = &m.document {
                // A document mapping streams its watched tables, and no longer
                // needs the triggers a trigger-path run installed on them.
                for w in &document.watch {
                    let name = resolve(client, &w.table)?;
                    tables.push(format!("{}.{}", name.namespace, name.name));
                    names.push(name.clone());
                    let watcher = Watcher { mapping: i, column: w.column.clone() };
                    watchers.entry((name.namespace, name.name)).or_default().push(watcher);
                }
                if let Err(e) = catalog::drop_watch_triggers(client, m, document) {
                    warn(&format!("cannot drop the watch triggers of {}: {e}", m.name));
                }
                continue;
            }
            let name = resolve(client, &m.table)?;
            tables.push(format!("{}.{}", name.namespace, name.name));
            names.push(name.clone());
            let target = Target {
                mapping: i,
                key: m.key.clone(),
                key_types: schema.key_types.iter().map(|t| t.printed_by_postgres()).collect(),
                fields: m
                    .field_columns(schema.columns.keys())
                    .into_iter()
                    .map(|(field, column)| MappedColumn { kind: schema.member_kind(&column), field, column })
                    .collect(),
                json: m.value_type == ValueType::Json,
            };
            targets.entry((name.namespace, name.name)).or_default().push(target);
            shapes.insert(i, RowShape::new(m, &schema));
            // Triggers a trigger-path run left would tax every write for nothing.
            if let Err(e) = catalog::drop_triggers(client, &m.table) {
                warn(&format!(
                    "cannot drop the NOTIFY triggers on {}, which logical replication does not need: {e}",
                    m.table
                ));
            }
        }
        tables.sort();
        tables.dedup();
        names.sort_by(|a: &catalog::TableName, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        names.dedup();
        catalog::ensure_publication(client, &slot, &names)?;
        let url = config::POSTGRES_URL.get();
        let taken = crate::pg::conninfo::split(&url, &["sslmode", "sslrootcert"]).map(|c| c.taken).unwrap_or_default();
        let endpoint =
            Endpoint::new(&rt.pg_config, &taken).map_err(|e| Error::new(ErrorKind::Schema, e.to_string()))?;
        status::set_slot(&slot);
        Ok(Some(Session {
            scope: state::fingerprint(&slot, &tables),
            slot,
            endpoint,
            mappings: listening.to_vec(),
            targets,
            watchers,
            shapes,
            lag_warned: Default::default(),
        }))
    }

    pub(super) fn show(&self, rt: &Runtime, listener: &str) {
        for &i in &self.mappings {
            rt.mapping(i).stats.set_listener(listener);
        }
    }

    /// Reads the slot's confirmed position and lag; warns past `pgsync.cdc-max-lag-bytes`.
    pub(super) fn read_lag(&self, client: &mut Client) -> Result<(), Error> {
        let confirmed = catalog::confirmed_flush(client, &self.slot)?;
        let lag = catalog::lag_bytes(client, &self.slot)?;
        status::set_slot_state(confirmed, lag);
        let max = config::CDC_MAX_LAG_BYTES.load(Ordering::Relaxed);
        let over = lag.is_some_and(|lag| lag > max);
        // Once per crossing, not once a second.
        if over && !self.lag_warned.replace(true) {
            warn(&format!(
                "replication slot {} holds {} bytes of WAL, over pgsync.cdc-max-lag-bytes ({max})",
                self.slot,
                lag.unwrap_or_default()
            ));
        }
        if !over {
            self.lag_warned.set(false);
        }
        Ok(())
    }
}

/// The schema and name Postgres gives `table`; an error when it does not exist.
fn resolve(client: &mut Client, table: &str) -> Result<catalog::TableName, Error> {
    catalog::resolve(client, table)?
        .ok_or_else(|| Error::new(ErrorKind::Schema, format!("table {table} does not exist")))
}
