//! The mapping file: which Postgres table each Redis key prefix mirrors, how hash
//! fields map to columns, and how a Redis key name resolves to a mapped row.

use crate::model::kafka::{KafkaSource, OFFSET_PREFIX};
use crate::model::row_id::KeyShape;
use crate::model::template::{Part, Template};
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MappingFile {
    mappings: Vec<RawMapping>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMapping {
    name: String,
    #[serde(default)]
    table: Option<String>,
    #[serde(default)]
    key_prefix: Option<String>,
    #[serde(default)]
    primary_key: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    fields: Option<BTreeMap<String, String>>,
    mode: Mode,
    #[serde(default)]
    listen: bool,
    #[serde(default)]
    notify: Option<RawNotify>,
    #[serde(default)]
    notify_payload: NotifyPayload,
    #[serde(default)]
    notify_reload: bool,
    #[serde(default)]
    notify_sharded: bool,
    #[serde(default)]
    changelog: Option<Changelog>,
    #[serde(default)]
    ttl: Option<u64>,
    #[serde(default)]
    ttl_on_write: bool,
    #[serde(default)]
    query: Option<String>,
    #[serde(default)]
    ids_query: Option<String>,
    #[serde(default)]
    watch: Option<Vec<Watch>>,
    #[serde(default)]
    store: Option<Store>,
    #[serde(default)]
    read_through: bool,
    #[serde(default)]
    fill_on_write: bool,
    #[serde(default)]
    kafka: Option<KafkaSource>,
}

/// A table whose changes rebuild a document mapping's documents.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Watch {
    /// The table, `table` or `schema.table`.
    pub table: String,
    /// Its column holding the root id of the document a row belongs to.
    pub column: String,
}

/// How a document is kept in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Store {
    /// The JSON text in a string key (`SET`).
    Json,
    /// A hash of the document's top-level keys (strings as they are, other
    /// values as JSON text; `null` leaves the field out).
    Hash,
    /// A RedisJSON / valkey-json value (`JSON.SET key $ ...`).
    Rejson,
}

impl Store {
    /// The type `SCAN ... TYPE` names the keys of this store.
    pub fn redis_type(self) -> &'static str {
        match self {
            Store::Json => "string",
            Store::Hash => "hash",
            Store::Rejson => "ReJSON-RL",
        }
    }
}

/// What a document mapping builds its documents from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// SQL taking the root ids (`$1`, `text[]`) and returning `(id, document)` rows.
    pub query: String,
    /// SQL returning every root id, for `SYNC.RELOAD`.
    pub ids_query: String,
    /// Tables whose changes rebuild a document.
    pub watch: Vec<Watch>,
    /// How documents are kept in Redis.
    pub store: Store,
}

/// `"notify"` as written: a channel prefix, or a list of channel templates.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawNotify {
    Prefix(String),
    Channels(Vec<String>),
}

/// Where a mapping publishes its change events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notify {
    /// `"notify": "sync:users"`: one channel per row, `<prefix>:<id>`.
    Prefix(String),
    /// `"notify": ["purchase_orders", "purchase_orders:{event}"]`: each template,
    /// filled from the row's key columns and hash fields, is one channel.
    Channels(Vec<Template>),
}

/// What a change event's message holds (`"notify_payload"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyPayload {
    /// The JSON event: key, id, op, source, fields, time.
    #[default]
    Json,
    /// The row's id alone, as subscribers of a plain fan-out expect.
    Id,
}

/// Where change events are also appended, for consumers that were away.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Changelog {
    /// Stream key.
    pub stream: String,
    /// Approximate cap on the stream's length (`MAXLEN ~`).
    #[serde(default = "default_changelog_maxlen")]
    pub maxlen: u64,
}

fn default_changelog_maxlen() -> u64 {
    100_000
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
        self.document.as_ref().map_or("hash", |d| d.store.redis_type())
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
    pub fn parse(json: &str) -> Result<Mappings, String> {
        let file: MappingFile = serde_json::from_str(json).map_err(|e| format!("invalid mapping file: {e}"))?;
        if file.mappings.is_empty() {
            return Err("invalid mapping file: \"mappings\" is empty".into());
        }
        let mut names = HashSet::new();
        let mut all = Vec::with_capacity(file.mappings.len());
        for raw in file.mappings {
            let m = validate(raw)?;
            if !names.insert(m.name.clone()) {
                return Err(format!("mapping \"{}\" is defined twice", m.name));
            }
            all.push(m);
        }
        for m in &all {
            if let Some(stream) = m.changelog.as_ref().map(|c| c.stream.as_str()) {
                if let Some(owner) = all.iter().find(|o| stream.starts_with(&o.key_prefix)) {
                    return Err(format!(
                        "mapping \"{}\": changelog stream \"{stream}\" lies under the key prefix of mapping \"{}\"",
                        m.name, owner.name
                    ));
                }
            }
        }
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                if let (Some(x), Some(y)) = (&a.kafka, &b.kafka) {
                    if (&x.group, &x.topic) == (&y.group, &y.topic) {
                        return Err(format!(
                            "mappings \"{}\" and \"{}\" consume topic \"{}\" with one group \"{}\"; give each its own group",
                            a.name, b.name, x.topic, x.group
                        ));
                    }
                }
                if a.key_prefix.starts_with(&b.key_prefix) || b.key_prefix.starts_with(&a.key_prefix) {
                    return Err(format!(
                        "mappings \"{}\" and \"{}\" have overlapping key prefixes \"{}\" and \"{}\"",
                        a.name, b.name, a.key_prefix, b.key_prefix
                    ));
                }
            }
        }
        let any_read_through = all.iter().any(|m| m.read_through);
        Ok(Mappings { all, any_read_through })
    }

    /// Reads and parses a mapping file.
    pub fn load(path: &str) -> Result<Mappings, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read mapping file {path}: {e}"))?;
        Self::parse(&text).map_err(|e| format!("{path}: {e}"))
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

/// Longest mapping name: `pgsync_<name>` must fit Postgres's 63-byte channel names.
const MAX_NAME_LEN: usize = 56;

/// Keys the module keeps for itself; no mapping may cover them.
const OWN_KEYS: &[&str] =
    &["pgsync:{journal}", "pgsync:{deadletter}", "pgsync:deadletter:{", "pgsync:journal:{", OFFSET_PREFIX];

fn validate(raw: RawMapping) -> Result<Mapping, String> {
    let who = format!("mapping \"{}\"", raw.name);
    let non_empty = |what: &str, v: &str| {
        if v.trim().is_empty() {
            Err(format!("{who}: \"{what}\" must not be empty"))
        } else {
            Ok(())
        }
    };
    non_empty("name", &raw.name)?;
    let valid_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if !raw.name.chars().all(valid_char) || raw.name.len() > MAX_NAME_LEN {
        return Err(format!(
            "{who}: the name may hold only letters, digits, _ and -, at most {MAX_NAME_LEN} of them \
             (it names the Postgres NOTIFY channel)"
        ));
    }
    let document = document(&raw).map_err(|e| format!("{who}: {e}"))?;
    // A document mapping is named after its root table, the first it watches.
    let table = match (&document, &raw.table) {
        (Some(d), None) => d.watch.first().map(|w| w.table.clone()).unwrap_or_default(),
        (None, Some(table)) => table.clone(),
        (Some(_), Some(_)) => {
            return Err(format!("{who}: a document mapping reads through \"query\"; give no \"table\""))
        }
        (None, None) => return Err(format!("{who}: \"table\" is missing")),
    };
    non_empty("table", &table)?;
    let (key_prefix, key) = key_shape(&raw).map_err(|e| format!("{who}: {e}"))?;
    non_empty("key_prefix", &key_prefix)?;
    if key_prefix.contains(['{', '}']) || key_prefix.starts_with("__") {
        return Err(format!("{who}: key_prefix \"{}\" must not contain braces or start with \"__\"", key_prefix));
    }
    if let Some(own) = OWN_KEYS.iter().find(|k| k.starts_with(&key_prefix) || key_prefix.starts_with(**k)) {
        return Err(format!("{who}: key_prefix \"{}\" would cover the module's own key {own}", key_prefix));
    }
    let tables = std::iter::once(&table).chain(document.iter().flat_map(|d| d.watch.iter().map(|w| &w.table)));
    if let Some(bad) = tables.into_iter().find(|t| t.split('.').count() > 2 || t.split('.').any(str::is_empty)) {
        return Err(format!("{who}: table \"{bad}\" must be \"table\" or \"schema.table\""));
    }
    if let Some(fields) = &raw.fields {
        if fields.contains_key("#") {
            return Err(format!("{who}: the field \"#\" is reserved for the sync operation"));
        }
        let mut columns = HashSet::new();
        for (field, column) in fields {
            non_empty(&format!("fields.{field}"), column)?;
            if key.columns().contains(column) {
                return Err(format!(
                    "{who}: field \"{field}\" maps to key column \"{column}\", which comes from the key name"
                ));
            }
            if !columns.insert(column) {
                return Err(format!("{who}: column \"{column}\" is mapped by two fields"));
            }
        }
    }
    let notify = raw.notify.map(|n| notify_channels(n).map_err(|e| format!("{who}: \"notify\": {e}"))).transpose()?;
    if raw.changelog.as_ref().is_some_and(|c| c.stream.is_empty() || c.maxlen == 0) {
        return Err(format!("{who}: \"changelog\" needs a stream name and a maxlen above 0"));
    }
    if raw.notify_sharded && !matches!(notify, Some(Notify::Prefix(_))) {
        return Err(format!("{who}: \"notify_sharded\" needs \"notify\" as a channel prefix (a string)"));
    }
    if raw.ttl == Some(0) {
        return Err(format!("{who}: \"ttl\" is in seconds and must be above 0 (leave it out for no expiry)"));
    }
    if raw.ttl_on_write && (raw.ttl.is_none() || raw.mode != Mode::WriteBehind) {
        return Err(format!(
            "{who}: \"ttl_on_write\" needs a \"ttl\" and a write-behind mapping (write-through rows get the ttl when their commit is applied)"
        ));
    }
    if raw.fill_on_write && raw.mode == Mode::ReadOnly {
        return Err(format!(
            "{who}: \"fill_on_write\" needs a write-behind or write-through mapping (read-only keys take no writes)"
        ));
    }
    if let Some(kafka) = &raw.kafka {
        kafka.validate(&who)?;
        if !matches!(raw.mode, Mode::WriteBehind | Mode::WriteThrough) {
            return Err(format!(
                "{who}: a \"kafka\" source writes rows to Postgres; use write-behind or write-through"
            ));
        }
    }
    Ok(Mapping {
        name: raw.name,
        table,
        key_prefix,
        key,
        fields: raw.fields,
        mode: raw.mode,
        // A read-only or document mapping exists to follow Postgres.
        listen: raw.listen || matches!(raw.mode, Mode::ReadOnly | Mode::Document),
        notify,
        notify_payload: raw.notify_payload,
        notify_reload: raw.notify_reload,
        notify_sharded: raw.notify_sharded,
        changelog: raw.changelog,
        ttl: raw.ttl.map(Duration::from_secs),
        ttl_on_write: raw.ttl_on_write,
        document,
        read_through: raw.read_through,
        fill_on_write: raw.fill_on_write,
        kafka: raw.kafka,
    })
}

/// The document options of a `"mode": "document"` mapping (`None` for others,
/// which may not use them).
fn document(raw: &RawMapping) -> Result<Option<Document>, String> {
    let given = [("query", raw.query.is_some()), ("ids_query", raw.ids_query.is_some())]
        .into_iter()
        .chain([("watch", raw.watch.is_some()), ("store", raw.store.is_some())]);
    if raw.mode != Mode::Document {
        return match given.into_iter().find(|(_, given)| *given) {
            Some((option, _)) => Err(format!("\"{option}\" is for \"mode\": \"document\" mappings")),
            None => Ok(None),
        };
    }
    let refused = [("fields", raw.fields.is_some()), ("ttl", raw.ttl.is_some()), ("key", raw.key.is_some())]
        .into_iter()
        .chain([("read_through", raw.read_through), ("fill_on_write", raw.fill_on_write)]);
    if let Some((option, _)) = refused.into_iter().find(|(_, given)| *given) {
        return Err(format!("\"{option}\" does not apply to a document mapping"));
    }
    let text = |what: &str, v: &Option<String>| match v.as_deref().map(str::trim) {
        Some(sql) if !sql.is_empty() && !sql.contains(';') => Ok(sql.to_string()),
        _ => Err(format!("a document mapping needs \"{what}\": one SQL query, without \";\"")),
    };
    let watch = raw.watch.clone().unwrap_or_default();
    if watch.is_empty() || watch.iter().any(|w| w.table.trim().is_empty() || w.column.trim().is_empty()) {
        return Err("a document mapping needs \"watch\": [{\"table\": ..., \"column\": ...}, ...]".into());
    }
    Ok(Some(Document {
        query: text("query", &raw.query)?,
        ids_query: text("ids_query", &raw.ids_query)?,
        watch,
        store: raw.store.ok_or("a document mapping needs \"store\": \"json\", \"hash\" or \"rejson\"")?,
    }))
}

/// The key prefix and key columns: from `"key"` (a template whose leading literal
/// is the prefix), or from `"key_prefix"` and `"primary_key"`, its short form.
fn key_shape(raw: &RawMapping) -> Result<(String, KeyShape), String> {
    match (&raw.key, &raw.key_prefix, &raw.primary_key) {
        (Some(template), None, None) => {
            let parsed = Template::parse(template).map_err(|e| format!("\"key\": {e}"))?;
            let (prefix, rest) = match parsed.parts() {
                [Part::Literal(prefix), rest @ ..] => (prefix.clone(), rest),
                _ => return Err(format!("\"key\" template \"{template}\" must start with a literal prefix")),
            };
            let shape = KeyShape::from_parts(rest).map_err(|e| format!("\"key\" template \"{template}\" {e}"))?;
            Ok((prefix, shape))
        }
        (None, Some(prefix), None) if raw.mode == Mode::Document => Ok((prefix.clone(), KeyShape::single("id"))),
        (None, Some(prefix), Some(column)) if !column.trim().is_empty() => {
            Ok((prefix.clone(), KeyShape::single(column)))
        }
        (None, Some(_), Some(_)) => Err("\"primary_key\" must not be empty".into()),
        _ => Err("give either \"key\" (a template such as \"brands_categories_{brand_id}_{category_id}\") \
                  or both \"key_prefix\" and \"primary_key\""
            .into()),
    }
}

/// Checks and parses `"notify"`: a non-empty prefix, or a non-empty list of
/// channel templates.
fn notify_channels(raw: RawNotify) -> Result<Notify, String> {
    match raw {
        RawNotify::Prefix(p) if p.is_empty() => Err("must not be empty".into()),
        RawNotify::Prefix(p) => Ok(Notify::Prefix(p)),
        RawNotify::Channels(list) if list.is_empty() || list.iter().any(String::is_empty) => {
            Err("the list of channels must not be empty, nor hold an empty channel".into())
        }
        RawNotify::Channels(list) => {
            Ok(Notify::Channels(list.iter().map(|c| Template::parse(c)).collect::<Result<_, _>>()?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USERS: &str = r#"{"mappings": [{"name": "users", "table": "users", "key_prefix": "users:",
        "primary_key": "id", "mode": "write-through",
        "fields": {"pwhash": "password_hash", "score": "score"}}]}"#;

    #[test]
    fn resolves_main_and_temp_keys() {
        let m = Mappings::parse(USERS).unwrap();
        let t = m.resolve(b"__{users:42}").unwrap();
        assert_eq!((t.mapping, t.role, t.id), (0, KeyRole::Temp, &b"42"[..]));
        let k = m.resolve(b"users:7").unwrap();
        assert_eq!((k.role, k.id), (KeyRole::Main, &b"7"[..]));
        assert!(m.resolve(b"orders:1").is_none());
        assert!(m.resolve(b"__{orders:1}").is_none());
    }

    #[test]
    fn unmapped_fields_have_no_column() {
        let m = Mappings::parse(USERS).unwrap();
        let users = &m.all()[0];
        assert_eq!(users.column_for("pwhash"), Some("password_hash"));
        assert_eq!(users.column_for("nickname"), None);
        assert_eq!(users.temp_key("1"), "__{users:1}");
        assert_eq!(users.ack_stream("1", "ab"), "{users:1}ab");
    }

    #[test]
    fn malformed_files_name_the_problem() {
        let err = Mappings::parse("{").unwrap_err();
        assert!(err.contains("invalid mapping file"), "{err}");
        let err = Mappings::parse(r#"{"mappings": [{"name": "u", "table": "u", "key_prefix": "u:", "primary_key": "id", "mode": "sideways"}]}"#).unwrap_err();
        assert!(err.contains("sideways"), "{err}");
        let err = Mappings::parse(r#"{"mappings": [{"name": "u", "table": "u", "key_prefix": "u:", "primary_key": "id", "mode": "write-behind", "colour": 1}]}"#).unwrap_err();
        assert!(err.contains("colour"), "{err}");
        let two = r#"{"mappings": [
            {"name": "a", "table": "a", "key_prefix": "a:", "primary_key": "id", "mode": "write-behind"},
            {"name": "b", "table": "b", "key_prefix": "a:b", "primary_key": "id", "mode": "write-behind"}]}"#;
        assert!(Mappings::parse(two).unwrap_err().contains("overlapping"));
    }

    /// A file of one mapping `u` in `mode`, with `extra` options.
    fn one_mapping(extra: &str, mode: &str) -> Result<Mappings, String> {
        Mappings::parse(&format!(
            r#"{{"mappings": [{{"name": "u", "table": "u", "key_prefix": "u:", "primary_key": "id", "mode": "{mode}"{extra}}}]}}"#
        ))
    }

    #[test]
    fn ttl_options_are_checked_at_load() {
        let one = one_mapping;
        let m = one(r#", "ttl": 60, "ttl_on_write": true"#, "write-behind").unwrap();
        assert_eq!((m.all()[0].ttl, m.all()[0].ttl_on_write), (Some(Duration::from_secs(60)), true));
        assert!(one(r#", "ttl": 0"#, "write-behind").unwrap_err().contains("above 0"));
        assert!(one(r#", "ttl": -1"#, "write-behind").is_err());
        assert!(one(r#", "ttl_on_write": true"#, "write-behind").unwrap_err().contains("needs a \"ttl\""));
        assert!(one(r#", "ttl": 5, "ttl_on_write": true"#, "write-through").unwrap_err().contains("write-behind"));
        assert_eq!(one("", "write-through").unwrap().all()[0].ttl, None);
    }

    #[test]
    fn notify_is_a_prefix_or_a_list_of_channel_templates() {
        let one = |extra: &str| {
            Mappings::parse(&format!(
                r#"{{"mappings": [{{"name": "o", "table": "o", "key_prefix": "o:", "primary_key": "id", "mode": "write-behind"{extra}}}]}}"#
            ))
        };
        let m = one(r#", "notify": "sync:o""#).unwrap();
        assert_eq!(m.all()[0].notify, Some(Notify::Prefix("sync:o".into())));
        assert_eq!(m.all()[0].notify_payload, NotifyPayload::Json);
        let m = one(r#", "notify": ["orders", "orders:{event}"], "notify_payload": "id""#).unwrap();
        let Some(Notify::Channels(channels)) = &m.all()[0].notify else { panic!("channels") };
        assert_eq!(channels[1].names().collect::<Vec<_>>(), ["event"]);
        assert_eq!(m.all()[0].notify_payload, NotifyPayload::Id);
        assert!(one(r#", "notify": ["orders:{event"]"#).unwrap_err().contains("\"notify\""));
        assert!(one(r#", "notify": []"#).unwrap_err().contains("must not be empty"));
        assert!(one(r#", "notify": """#).unwrap_err().contains("must not be empty"));
        assert!(one(r#", "notify_payload": "xml""#).is_err());
    }

    #[test]
    fn a_key_template_names_the_prefix_and_the_key_columns() {
        let one = |key: &str| {
            Mappings::parse(&format!(
                r#"{{"mappings": [{{"name": "bc", "table": "bc", {key}, "mode": "write-behind"}}]}}"#
            ))
        };
        let m = one(r#""key": "brands_categories_{brand_id}_{category_id}""#).unwrap();
        let bc = &m.all()[0];
        assert_eq!(bc.key_prefix, "brands_categories_");
        assert_eq!(bc.key.columns(), ["brand_id", "category_id"]);
        assert_eq!(bc.key_value("acme_7", "category_id"), Some("7"));
        assert_eq!(bc.temp_key("acme_7"), "__{brands_categories_acme_7}");
        let r = m.resolve(b"brands_categories_acme_7").unwrap();
        assert_eq!(r.id, b"acme_7");
        assert!(one(r#""key": "{a}_{b}""#).unwrap_err().contains("literal prefix"));
        assert!(one(r#""key": "bc:{a}""#).is_ok());
        assert!(one(r#""key": "bc:{a}", "primary_key": "a""#).unwrap_err().contains("either"));
        assert!(one(r#""key_prefix": "bc:""#).unwrap_err().contains("either"));
        let fields = r#""key": "bc:{a}_{b}", "fields": {"x": "b"}"#;
        assert!(one(fields).unwrap_err().contains("key column \"b\""));
    }

    #[test]
    fn document_mappings_need_their_queries_and_nothing_of_a_table() {
        let one = |extra: &str| {
            Mappings::parse(&format!(
                r#"{{"mappings": [{{"name": "customers", "mode": "document", "key_prefix": "customer:"{extra}}}]}}"#
            ))
        };
        let full = r#", "query": "SELECT id, doc FROM docs($1::int[])", "ids_query": "SELECT id FROM customer",
            "watch": [{"table": "customer", "column": "id"}], "store": "hash""#;
        let m = one(full).unwrap();
        let customers = &m.all()[0];
        assert_eq!((customers.mode, customers.listen, customers.table.as_str()), (Mode::Document, true, "customer"));
        assert_eq!(customers.redis_type(), "hash");
        assert_eq!(customers.document.as_ref().unwrap().store, Store::Hash);
        assert!(one(&full.replace("\"store\": \"hash\"", "\"store\": \"xml\"")).is_err());
        assert!(one(&full.replace(", \"store\": \"hash\"", "")).unwrap_err().contains("\"store\""));
        assert!(one(&full.replace("FROM customer\"", "FROM customer; DROP TABLE x\""))
            .unwrap_err()
            .contains("\"ids_query\""));
        assert!(one(&full.replace("[{\"table\": \"customer\", \"column\": \"id\"}]", "[]"))
            .unwrap_err()
            .contains("\"watch\""));
        assert!(one(&format!("{full}, \"table\": \"customer\"")).unwrap_err().contains("give no \"table\""));
        assert!(one(&format!("{full}, \"fields\": {{}}")).unwrap_err().contains("\"fields\" does not apply"));
        assert!(one(&format!("{full}, \"read_through\": true"))
            .unwrap_err()
            .contains("\"read_through\" does not apply"));
        let table = r#"{"mappings": [{"name": "u", "table": "u", "key_prefix": "u:", "primary_key": "id",
            "mode": "read-only", "query": "SELECT 1"}]}"#;
        assert!(Mappings::parse(table).unwrap_err().contains("\"query\" is for \"mode\": \"document\""));
    }

    #[test]
    fn cache_options_are_checked_at_load() {
        let one = one_mapping;
        let m = one(r#", "read_through": true, "fill_on_write": true"#, "write-behind").unwrap();
        assert!(m.any_read_through() && m.all()[0].read_through && m.all()[0].fill_on_write);
        assert!(one(r#", "read_through": true"#, "read-only").unwrap().any_read_through());
        assert!(!one("", "read-only").unwrap().any_read_through());
        assert!(one(r#", "fill_on_write": true"#, "read-only").unwrap_err().contains("fill_on_write"));
        assert!(one(r#", "read_through": "yes""#, "write-behind").is_err());
    }
}
