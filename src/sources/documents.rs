//! Document mappings, Postgres → Redis: the documents of a batch of root ids are
//! read with one run of the mapping's `query` (no lock held), then written under
//! one short Redis lock; a root without a document has its key deleted. The
//! listener rebuilds the roots its triggers announce; `SYNC.RELOAD` streams every
//! root id from `ids_query` and rebuilds them a chunk at a time. In a cluster a
//! node writes only the documents whose keys it owns, as for table rows.

use crate::model::mapping::{Document, Mapping, Mappings, Store};
use crate::model::stats::MappingStats;
use crate::pg::documents;
use crate::pg::error::{Error, ErrorKind};
use crate::pipeline::runtime::Runtime;
use crate::redis::cluster::{self, Place};
use crate::redis::notify::{self, now_ms, Event, EventOp, Source};
use crate::redis::redis_io::{call, own_writes, warn, CallError};
use crate::redis::redis_lock::with_redis_lock;
use crate::sources::full_read;
use postgres::GenericClient;
use redis_module::{Context, RedisValue};
use std::collections::HashSet;
use std::sync::atomic::Ordering;

/// Root ids per query run and per Redis lock during a reload.
const CHUNK: i32 = 1000;

/// Rebuilds the documents of `ids` (roots announced by the triggers): one query,
/// then a short lock per [`DOCS_PER_LOCK`] documents. When the query fails for
/// the batch (the user's function raised), each root is rebuilt alone, so one
/// root the query cannot build keeps no other waiting; the first such error is
/// returned. Returns the roots to rebuild later: their key's slot is moving
/// between cluster nodes.
pub fn refresh(
    rt: &Runtime,
    client: &mut impl GenericClient,
    mapping: usize,
    ids: &[String],
    source: Source,
) -> Result<Vec<String>, Error> {
    let m = rt.mapping(mapping).def;
    let Some(document) = &m.document else { return Ok(Vec::new()) };
    let docs = match documents::fetch(client, document, ids) {
        Ok(docs) => docs,
        Err(e) if e.kind != ErrorKind::Unavailable && ids.len() > 1 => {
            let (mut first, mut later) = (None, Vec::new());
            for id in ids {
                match refresh(rt, client, mapping, std::slice::from_ref(id), source) {
                    Err(e) if e.kind == ErrorKind::Unavailable => return Err(e),
                    Err(e) => first = first.or(Some(e)),
                    Ok(moving) => later.extend(moving),
                }
            }
            return first.map_or(Ok(later), Err);
        }
        Err(e) => return Err(e),
    };
    let present: HashSet<&str> = docs.iter().map(|(id, _)| id.as_str()).collect();
    let gone: Vec<&String> = ids.iter().filter(|id| !present.contains(id.as_str())).collect();
    Ok(apply(rt, mapping, document, &docs, &gone, source).later)
}

/// Rebuilds the roots a listener heard of. A failure of the user's query is
/// reported on the mapping and its documents wait for the next change (the
/// other mappings go on); only a lost connection is an error. Returns the roots
/// to rebuild later (their slot is moving between cluster nodes).
pub fn rebuild_announced(
    rt: &Runtime,
    client: &mut impl GenericClient,
    mapping: usize,
    ids: &[String],
) -> Result<Vec<String>, Error> {
    reported(rt, mapping, refresh(rt, client, mapping, ids, Source::Postgres))
}

/// Rebuilds every document of `mapping` (with FLUSH) for a listener that heard
/// a watched table was truncated; failures as in [`rebuild_announced`].
pub fn rebuild_all(rt: &Runtime, client: &mut postgres::Client, mapping: usize) -> Result<(), Error> {
    reported(rt, mapping, reload(rt, client, mapping, true, Source::Postgres).map(drop))
}

/// `result`, with a failure other than a lost connection reported on the
/// mapping and taken as done.
fn reported<T: Default>(rt: &Runtime, mapping: usize, result: Result<T, Error>) -> Result<T, Error> {
    match result {
        Err(e) if e.kind != ErrorKind::Unavailable => {
            let message = format!("{}: documents not rebuilt: {e}", rt.mapping(mapping).def.name);
            warn(&message);
            rt.mapping(mapping).stats.set_last_error(&message);
            Ok(T::default())
        }
        other => other,
    }
}

/// Rebuilds every document of `mapping` from `ids_query`, a chunk of root ids at
/// a time; with `flush`, then deletes the mapping's keys whose root has no
/// document. Returns the number of documents read (on a cluster node, written:
/// those of its own keys; a document whose slot is moving is left to the
/// listener, as a table reload leaves such rows).
pub fn reload(
    rt: &Runtime,
    conn: &mut postgres::Client,
    mapping: usize,
    flush: bool,
    source: Source,
) -> Result<u64, Error> {
    let m = rt.mapping(mapping).def;
    let Some(document) = &m.document else { return Ok(0) };
    let snapshot = rt.queue().snapshot();
    let mut loaded = HashSet::new();
    let mut written = 0u64;
    documents::stream_ids(conn, document, CHUNK, |tx, ids| {
        let docs = documents::fetch(tx, document, &ids)?;
        // Ids whose root vanished between the two reads are left to FLUSH and
        // to the listener, which hears of the delete.
        let applied = apply(rt, mapping, document, &docs, &[], source);
        // Counted as a table reload counts: the documents read, or on a
        // cluster node the ones it wrote.
        written += if cluster::enabled() { applied.written } else { docs.len() as u64 };
        rt.reload_rows.fetch_add(docs.len() as u64, Ordering::Relaxed);
        MappingStats::bump(&rt.mapping(mapping).stats.reload_rows_read, docs.len() as u64);
        if flush {
            loaded.extend(docs.into_iter().map(|(id, _)| id));
        }
        Ok(())
    })?;
    if flush {
        full_read::flush_missing(rt, mapping, &loaded, &snapshot);
    }
    Ok(written)
}

/// A mapping whose keys are RedisJSON values on a server without RedisJSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoJsonModule {
    /// The mapping.
    pub mapping: String,
    /// The option that asks for RedisJSON.
    pub option: &'static str,
    /// What to write instead.
    pub otherwise: &'static str,
}

impl std::fmt::Display for NoJsonModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let NoJsonModule { mapping, option, otherwise } = self;
        write!(
            f,
            "mapping \"{mapping}\": {option} needs the JSON.SET command: load the RedisJSON or valkey-json module \
             before pgsync, or {otherwise}"
        )
    }
}

impl std::error::Error for NoJsonModule {}

/// Refuses, at load, a mapping whose keys are RedisJSON values (`"store":
/// "rejson"`, `"type": "json"`) on a server without the `JSON.SET` command
/// (RedisJSON or valkey-json, which must load before pgsync).
pub fn check_stores(ctx: &Context, mappings: &Mappings) -> Result<(), NoJsonModule> {
    let Some(m) = mappings.all().iter().find(|m| m.needs_json_module()) else { return Ok(()) };
    let found = match ctx.call("COMMAND", &["INFO", "JSON.SET"]) {
        Ok(RedisValue::Array(info)) => info.first().is_some_and(|i| !matches!(i, RedisValue::Null)),
        _ => false,
    };
    let (option, otherwise) = match m.document {
        Some(_) => ("\"store\": \"rejson\"", "use \"store\": \"json\""),
        None => ("\"type\": \"json\"", "leave \"type\" out for hashes"),
    };
    match found {
        true => Ok(()),
        false => Err(NoJsonModule { mapping: m.name.clone(), option, otherwise }),
    }
}

/// Documents written per Redis lock: each is a command call or two (a hash is
/// replaced whole), and a document can be large, so fewer than the 1000 rows of
/// a table reload.
const DOCS_PER_LOCK: usize = 100;

/// What [`apply`] did with the documents it was given.
#[derive(Default)]
struct Applied {
    /// Documents written.
    written: u64,
    /// Roots whose key's slot is moving between cluster nodes: rebuilt later.
    later: Vec<String>,
}

/// Writes `docs` and deletes the keys of `gone`, as the module's own writes, each
/// announced as a change event; at most [`DOCS_PER_LOCK`] documents per Redis lock.
/// Keys another cluster node owns are left to it.
fn apply(
    rt: &Runtime,
    mapping: usize,
    document: &Document,
    docs: &[(String, String)],
    gone: &[&String],
    source: Source,
) -> Applied {
    let no_docs: &[(String, String)] = &[];
    let steps =
        docs.chunks(DOCS_PER_LOCK).map(|d| (d, &[][..])).chain(gone.chunks(DOCS_PER_LOCK).map(|g| (no_docs, g)));
    let writer = Writer { m: rt.mapping(mapping).def, stats: rt.mapping(mapping).stats, store: document.store, source };
    let mut applied = Applied::default();
    for (docs, gone) in steps {
        with_redis_lock(|ctx| own_writes(|| writer.write_and_delete(ctx, docs, gone, &mut applied)));
    }
    applied
}

/// What every step of [`apply`] writes with: the mapping, its figures, how its
/// documents are stored, and the change events' source.
struct Writer<'a> {
    m: &'a Mapping,
    stats: &'a MappingStats,
    store: Store,
    source: Source,
}

/// Whether this node writes `key` now; a key whose slot is moving is noted in
/// `applied.later`. Under the Redis lock.
fn mine(ctx: &Context, id: &str, key: &str, applied: &mut Applied) -> bool {
    match cluster::place(ctx, key.as_bytes()) {
        Place::Mine => true,
        Place::Moving => {
            applied.later.push(id.to_string());
            false
        }
        Place::Elsewhere => false,
    }
}

impl Writer<'_> {
    /// One step of [`apply`], under the Redis lock.
    fn write_and_delete(&self, ctx: &Context, docs: &[(String, String)], gone: &[&String], applied: &mut Applied) {
        let (m, stats, source) = (self.m, self.stats, self.source);
        for (id, doc) in docs {
            let key = m.main_key(id);
            if !mine(ctx, id, &key, applied) {
                continue;
            }
            match write(ctx, &key, self.store, doc) {
                Ok(fields) => {
                    applied.written += 1;
                    let event = Event { key: &key, id, op: EventOp::Upsert, source, fields, time: now_ms() };
                    notify::send(ctx, m, stats, &event);
                }
                Err(e) => refuse(stats, &format!("{}: document {key} not written: {e}", m.name)),
            }
        }
        for id in gone {
            let key = m.main_key(id);
            if !mine(ctx, id, &key, applied) {
                continue;
            }
            if let Err(e) = call(ctx, "DEL", &[key.as_bytes()]) {
                warn(&format!("{}: cannot delete {key}: {e}", m.name));
                continue;
            }
            let event = Event { key: &key, id, op: EventOp::Delete, source, fields: Vec::new(), time: now_ms() };
            notify::send(ctx, m, stats, &event);
        }
    }
}

/// Logs and counts (in `refused`) a document Redis could not take.
fn refuse(stats: &MappingStats, message: &str) {
    warn(message);
    stats.set_last_error(message);
    MappingStats::bump(&stats.refused, 1);
}

/// Why a document cannot be written into its key.
#[derive(Debug)]
enum DocRefused {
    /// The `"hash"` store's document is not JSON.
    NotJson(serde_json::Error),
    /// The `"hash"` store's document is JSON but no object.
    NotObject,
    /// Redis refused the write.
    Call(CallError),
}

impl std::fmt::Display for DocRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DocRefused::NotJson(e) => write!(f, "not JSON: {e}"),
            DocRefused::NotObject => f.write_str("the \"hash\" store needs a JSON object"),
            DocRefused::Call(why) => why.fmt(f),
        }
    }
}

impl std::error::Error for DocRefused {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DocRefused::NotJson(e) => Some(e),
            DocRefused::Call(e) => Some(e),
            DocRefused::NotObject => None,
        }
    }
}

/// Writes one document as its store keeps it; returns the fields written (a
/// hash's top-level keys, none for the other stores).
fn write(ctx: &Context, key: &str, store: Store, doc: &str) -> Result<Vec<String>, DocRefused> {
    let call = |command: &str, args: &[&[u8]]| call(ctx, command, args).map_err(DocRefused::Call);
    match store {
        Store::Json => call("SET", &[key.as_bytes(), doc.as_bytes()]).map(|_| Vec::new()),
        Store::Rejson => call("JSON.SET", &[key.as_bytes(), b"$", doc.as_bytes()]).map(|_| Vec::new()),
        Store::Hash => {
            let pairs = hash_fields(doc)?;
            // The document replaces the hash: fields it no longer has go.
            call("DEL", &[key.as_bytes()])?;
            if pairs.is_empty() {
                return Ok(Vec::new());
            }
            let mut args: Vec<&[u8]> = vec![key.as_bytes()];
            for (f, v) in &pairs {
                args.extend([f.as_bytes(), v.as_bytes()]);
            }
            call("HSET", &args)?;
            Ok(pairs.into_iter().map(|(f, _)| f).collect())
        }
    }
}

/// A document's top-level keys as hash fields: strings as they are, other
/// values as JSON text, `null` left out. Only a JSON object has fields.
fn hash_fields(doc: &str) -> Result<Vec<(String, String)>, DocRefused> {
    let value: serde_json::Value = serde_json::from_str(doc).map_err(DocRefused::NotJson)?;
    let serde_json::Value::Object(object) = value else {
        return Err(DocRefused::NotObject);
    };
    Ok(object
        .into_iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_holds_the_top_level_keys() {
        let fields =
            hash_fields(r#"{"name": "Ann", "age": 41, "addresses": [{"city": "Oslo"}], "fax": null}"#).unwrap();
        assert_eq!(
            fields,
            [
                ("addresses".to_string(), r#"[{"city":"Oslo"}]"#.to_string()),
                ("age".into(), "41".into()),
                ("name".into(), "Ann".into())
            ]
        );
        assert!(matches!(hash_fields("[1]"), Err(DocRefused::NotObject)));
        assert!(matches!(hash_fields("{"), Err(DocRefused::NotJson(_))));
        assert!(hash_fields("{").unwrap_err().to_string().starts_with("not JSON: "));
    }
}
