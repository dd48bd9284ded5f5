//! The mapping file: which Postgres table each Redis key prefix mirrors, how hash
//! fields map to columns, and how a Redis key name resolves to a mapped row.

mod options;
mod parse;
#[cfg(test)]
mod tests;

pub use options::{Changelog, Document, Notify, NotifyPayload, OnSet, Store, ValueType};
// A document's watched tables are named only by the mapping file's parser and by tests.
#[cfg(test)]
pub use options::Watch;

use crate::model::kafka::{KafkaOptionError, KafkaSource};
use crate::model::row_id::KeyShape;
use crate::model::template::TemplateError;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// How changes flow for one mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Writers write `__{prefix<id>}`; the row is committed before `prefix<id>` changes.
    WriteThrough,
    /// Writers write `prefix<id>` directly; the row follows asynchronously.
    WriteBehind,
    /// Postgres → Redis only; Redis writes are never sent to Postgres.
    ReadOnly,
    /// Postgres → Redis only: one document per root id, built by a query.
    Document,
}

impl Mode {
    /// The name used in the mapping file and in `SYNC.STATUS`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::WriteThrough => "write-through",
            Mode::WriteBehind => "write-behind",
            Mode::ReadOnly => "read-only",
            Mode::Document => "document",
        }
    }
}

/// Why a mapping file cannot be used. Its text is what the module logs when it
/// refuses to load, and what `SYNC.RELOAD` answers.
#[derive(Debug, Clone)]
pub enum MappingError {
    /// The file cannot be read (shared: `io::Error` is not `Clone`).
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::sync::Arc<std::io::Error>,
    },
    /// The text is not a mapping file's JSON (shared, as above).
    Json(std::sync::Arc<serde_json::Error>),
    /// A mapping breaks a rule; the text names the mapping and the option.
    Invalid(String),
    /// A `"notify"` channel template cannot be read.
    Template(TemplateError),
    /// A `"kafka"` option is wrong.
    Kafka(KafkaOptionError),
    /// An error in the file at `path`.
    In {
        /// The file.
        path: String,
        /// The error.
        error: Box<MappingError>,
    },
}

impl fmt::Display for MappingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MappingError::Read { path, source } => write!(f, "cannot read mapping file {path}: {source}"),
            MappingError::Json(e) => write!(f, "invalid mapping file: {e}"),
            MappingError::Invalid(why) => f.write_str(why),
            MappingError::Template(e) => e.fmt(f),
            MappingError::Kafka(e) => e.fmt(f),
            MappingError::In { path, error } => write!(f, "{path}: {error}"),
        }
    }
}

impl std::error::Error for MappingError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MappingError::Read { source, .. } => Some(source.as_ref()),
            MappingError::Json(e) => Some(e.as_ref()),
            MappingError::Invalid(_) => None,
            MappingError::Template(e) => Some(e),
            MappingError::Kafka(e) => Some(e),
            MappingError::In { error, .. } => Some(error.as_ref()),
        }
    }
}

/// The validators spell a broken rule as text (it is only ever shown).
impl From<String> for MappingError {
    fn from(why: String) -> MappingError {
        MappingError::Invalid(why)
    }
}

/// A channel template's error is the mapping file's.
impl From<TemplateError> for MappingError {
    fn from(e: TemplateError) -> MappingError {
        MappingError::Template(e)
    }
}

/// A Kafka source's option error is the mapping file's.
impl From<KafkaOptionError> for MappingError {
    fn from(e: KafkaOptionError) -> MappingError {
        MappingError::Kafka(e)
    }
}

/// The same, for a fixed text.
impl From<&str> for MappingError {
    fn from(why: &str) -> MappingError {
        MappingError::Invalid(why.to_string())
    }
}

/// One validated mapping between a Redis key prefix and a Postgres table.
#[derive(Debug, Clone)]
pub struct Mapping {
    /// Name used by commands (`SYNC.STATUS users`).
    pub name: String,
    /// Postgres table, optionally schema-qualified (`public.users`).
    pub table: String,
    /// Redis key prefix; the row with primary key `42` lives in `<prefix>42`
    /// (with a `"key"` template, the literal text before its first column).
    pub key_prefix: String,
    /// The key columns, as the id after the prefix spells them.
    pub key: KeyShape,
    /// Hash field → column. `None` means every column under its own name.
    pub fields: Option<BTreeMap<String, String>>,
    /// Direction of the sync.
    pub mode: Mode,
    /// What the row keys are: hashes, or RedisJSON documents.
    pub value_type: ValueType,
    /// For JSON rows: what a root `JSON.SET` does to the columns it omits.
    pub on_set: OnSet,
    /// Whether Postgres changes are pushed into Redis.
    pub listen: bool,
    /// Pub/sub channels for change notifications.
    pub notify: Option<Notify>,
    /// What each notification's message holds.
    pub notify_payload: NotifyPayload,
    /// Whether `SYNC.RELOAD` publishes an event per loaded row too.
    pub notify_reload: bool,
    /// Whether events go out with sharded pub/sub (`SPUBLISH <notify>:{<key>}`,
    /// a channel in the row's own cluster slot) instead of `PUBLISH <notify>:<id>`.
    pub notify_sharded: bool,
    /// Stream that also receives every change event.
    pub changelog: Option<Changelog>,
    /// Expiry of the row hashes the module writes (`"ttl"`, seconds): a cache
    /// event only, it never deletes a row.
    pub ttl: Option<Duration>,
    /// Whether writers' own writes refresh the expiry too (write-behind).
    pub ttl_on_write: bool,
    /// For a document mapping, how its documents are built and stored.
    pub document: Option<Document>,
    /// Whether a read of a row Redis does not hold loads it from Postgres first.
    pub read_through: bool,
    /// Whether a write to a key Redis did not hold loads the row's other fields
    /// once the write has landed in Postgres.
    pub fill_on_write: bool,
    /// A Kafka topic consumed into this mapping's keys (`"kafka"`).
    pub kafka: Option<KafkaSource>,
}

impl Mapping {
    /// The column a hash field is stored in, or `None` when the field is not mapped
    /// (unmapped fields stay in Redis and never reach SQL).
    pub fn column_for<'a>(&'a self, field: &'a str) -> Option<&'a str> {
        match &self.fields {
            Some(map) => map.get(field).map(String::as_str),
            None if self.is_key_column(field) => None,
            None => Some(field),
        }
    }

    /// The value of key column `column` in the row with this id, or `None` when
    /// `column` is no key column.
    pub fn key_value<'i>(&self, id: &'i str, column: &str) -> Option<&'i str> {
        let at = self.key.columns().iter().position(|c| c == column)?;
        self.key.split(id).ok()?.get(at).copied()
    }

    /// Whether `column` is one of the key columns, which the key name carries.
    pub fn is_key_column(&self, column: &str) -> bool {
        self.key.columns().iter().any(|c| c == column)
    }

    /// The Redis key holding the row with this id.
    pub fn main_key(&self, id: &str) -> String {
        format!("{}{}", self.key_prefix, id)
    }

    /// The temporary key write-through writers use for this id (rgsync's convention).
    pub fn temp_key(&self, id: &str) -> String {
        format!("__{{{}{}}}", self.key_prefix, id)
    }

    /// The key a row's writers write, whose journal log holds its unsynced
    /// writes: the staging key (write-through) or the row's own key.
    pub fn written_key(&self, id: &str) -> String {
        match self.mode {
            Mode::WriteThrough => self.temp_key(id),
            Mode::WriteBehind | Mode::ReadOnly | Mode::Document => self.main_key(id),
        }
    }

    /// The Postgres NOTIFY channel of this mapping's triggers.
    pub fn pg_channel(&self) -> String {
        format!("pgsync_{}", self.name)
    }

    /// Hash field → column pairs for the given table columns: the `fields` map, or
    /// every non-key column under its own name.
    pub fn field_columns<'a>(&'a self, table_columns: impl Iterator<Item = &'a String>) -> Vec<(String, String)> {
        match &self.fields {
            Some(map) => map.iter().map(|(f, c)| (f.clone(), c.clone())).collect(),
            None => {
                let mut cols: Vec<(String, String)> =
                    table_columns.filter(|c| !self.is_key_column(c)).map(|c| (c.clone(), c.clone())).collect();
                cols.sort();
                cols
            }
        }
    }

    /// The type of the mapping's keys as `SCAN ... TYPE` names it.
    pub fn redis_type(&self) -> &'static str {
        match (&self.document, self.value_type) {
            (Some(d), _) => d.store.redis_type(),
            (None, ValueType::Hash) => "hash",
            (None, ValueType::Json) => Store::Rejson.redis_type(),
        }
    }

    /// Whether the mapping's keys are RedisJSON values, so the server needs
    /// the JSON module's commands.
    pub fn needs_json_module(&self) -> bool {
        self.value_type == ValueType::Json || self.document.as_ref().is_some_and(|d| d.store == Store::Rejson)
    }

    /// The stream that receives the outcome of a change tagged with `uuid`.
    pub fn ack_stream(&self, id: &str, uuid: &str) -> String {
        format!("{{{}{}}}{}", self.key_prefix, id, uuid)
    }
}

/// Which of a mapping's keys a Redis key name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRole {
    /// `prefix<id>`: the cached row.
    Main,
    /// `__{prefix<id>}`: the write-through staging hash.
    Temp,
}

/// A Redis key resolved against the mappings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedKey<'a> {
    /// Index of the mapping in [`Mappings::all`].
    pub mapping: usize,
    /// Whether the key is the row's main or temporary key.
    pub role: KeyRole,
    /// The key suffix, i.e. the primary-key value as text. May be invalid (see
    /// [`check_id`]); the caller decides how to report it.
    pub id: &'a [u8],
}

/// All mappings of the loaded file.
#[derive(Debug, Clone, Default)]
pub struct Mappings {
    all: Vec<Mapping>,
    any_read_through: bool,
}

impl Mappings {
    /// Parses and validates a mapping file's JSON text.
    pub fn parse(json: &str) -> Result<Mappings, MappingError> {
        let all = parse::mappings(json)?;
        let any_read_through = all.iter().any(|m| m.read_through);
        Ok(Mappings { all, any_read_through })
    }

    /// Reads and parses a mapping file.
    pub fn load(path: &str) -> Result<Mappings, MappingError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| MappingError::Read { path: path.to_string(), source: std::sync::Arc::new(source) })?;
        Self::parse(&text).map_err(|e| MappingError::In { path: path.to_string(), error: Box::new(e) })
    }

    /// Whether any mapping reads through, so the command filter need not look
    /// at reads otherwise.
    pub fn any_read_through(&self) -> bool {
        self.any_read_through
    }

    /// Every mapping, in file order.
    pub fn all(&self) -> &[Mapping] {
        &self.all
    }

    /// The mapping with this name and its index.
    pub fn by_name(&self, name: &str) -> Option<(usize, &Mapping)> {
        self.all.iter().enumerate().find(|(_, m)| m.name == name)
    }

    /// Resolves a Redis key name to a mapped row, if it belongs to a mapping.
    pub fn resolve<'k>(&self, key: &'k [u8]) -> Option<ResolvedKey<'k>> {
        let (role, inner) = match key.strip_prefix(b"__{").and_then(|k| k.strip_suffix(b"}")) {
            Some(inner) => (KeyRole::Temp, inner),
            None => (KeyRole::Main, key),
        };
        self.all.iter().enumerate().find_map(|(mapping, m)| {
            inner.strip_prefix(m.key_prefix.as_bytes()).map(|id| ResolvedKey { mapping, role, id })
        })
    }
}
