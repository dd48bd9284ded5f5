//! The mapping file: which Postgres table each Redis key prefix mirrors, how hash
//! fields map to columns, and how a Redis key name resolves to a mapped row.

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
}

impl Mode {
    /// The name used in the mapping file and in `SYNC.STATUS`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::WriteThrough => "write-through",
            Mode::WriteBehind => "write-behind",
            Mode::ReadOnly => "read-only",
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
    table: String,
    key_prefix: String,
    primary_key: String,
    #[serde(default)]
    fields: Option<BTreeMap<String, String>>,
    mode: Mode,
    #[serde(default)]
    listen: bool,
    #[serde(default)]
    notify: Option<String>,
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
    /// Redis key prefix; the row with primary key `42` lives in `<prefix>42`.
    pub key_prefix: String,
    /// Primary-key column; its value is the key suffix.
    pub primary_key: String,
    /// Hash field → column. `None` means every column under its own name.
    pub fields: Option<BTreeMap<String, String>>,
    /// Direction of the sync.
    pub mode: Mode,
    /// Whether Postgres changes are pushed into Redis.
    pub listen: bool,
    /// Pub/sub channel prefix for change notifications (`<notify>:<id>`).
    pub notify: Option<String>,
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
}

impl Mapping {
    /// The column a hash field is stored in, or `None` when the field is not mapped
    /// (unmapped fields stay in Redis and never reach SQL).
    pub fn column_for<'a>(&'a self, field: &'a str) -> Option<&'a str> {
        match &self.fields {
            Some(map) => map.get(field).map(String::as_str),
            None if field == self.primary_key => None,
            None => Some(field),
        }
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
                    table_columns.filter(|c| **c != self.primary_key).map(|c| (c.clone(), c.clone())).collect();
                cols.sort();
                cols
            }
        }
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
                if a.key_prefix.starts_with(&b.key_prefix) || b.key_prefix.starts_with(&a.key_prefix) {
                    return Err(format!(
                        "mappings \"{}\" and \"{}\" have overlapping key prefixes \"{}\" and \"{}\"",
                        a.name, b.name, a.key_prefix, b.key_prefix
                    ));
                }
            }
        }
        Ok(Mappings { all })
    }

    /// Reads and parses a mapping file.
    pub fn load(path: &str) -> Result<Mappings, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read mapping file {path}: {e}"))?;
        Self::parse(&text).map_err(|e| format!("{path}: {e}"))
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
const OWN_KEYS: &[&str] = &["pgsync:{journal}", "pgsync:{deadletter}", "pgsync:deadletter:{", "pgsync:journal:{"];

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
    non_empty("table", &raw.table)?;
    non_empty("key_prefix", &raw.key_prefix)?;
    non_empty("primary_key", &raw.primary_key)?;
    if raw.key_prefix.contains(['{', '}']) || raw.key_prefix.starts_with("__") {
        return Err(format!("{who}: key_prefix \"{}\" must not contain braces or start with \"__\"", raw.key_prefix));
    }
    if let Some(own) = OWN_KEYS.iter().find(|k| k.starts_with(&raw.key_prefix)) {
        return Err(format!("{who}: key_prefix \"{}\" would cover the module's own key {own}", raw.key_prefix));
    }
    if raw.table.split('.').count() > 2 || raw.table.split('.').any(str::is_empty) {
        return Err(format!("{who}: table \"{}\" must be \"table\" or \"schema.table\"", raw.table));
    }
    if let Some(fields) = &raw.fields {
        if fields.contains_key("#") {
            return Err(format!("{who}: the field \"#\" is reserved for the sync operation"));
        }
        let mut columns = HashSet::new();
        for (field, column) in fields {
            non_empty(&format!("fields.{field}"), column)?;
            if column == &raw.primary_key {
                return Err(format!(
                    "{who}: field \"{field}\" maps to the primary key column, which comes from the key name"
                ));
            }
            if !columns.insert(column) {
                return Err(format!("{who}: column \"{column}\" is mapped by two fields"));
            }
        }
    }
    if raw.notify.as_deref().is_some_and(|n| n.is_empty()) {
        return Err(format!("{who}: \"notify\" must not be empty"));
    }
    if raw.changelog.as_ref().is_some_and(|c| c.stream.is_empty() || c.maxlen == 0) {
        return Err(format!("{who}: \"changelog\" needs a stream name and a maxlen above 0"));
    }
    if raw.notify_sharded && raw.notify.is_none() {
        return Err(format!("{who}: \"notify_sharded\" needs \"notify\" (the channel prefix)"));
    }
    if raw.ttl == Some(0) {
        return Err(format!("{who}: \"ttl\" is in seconds and must be above 0 (leave it out for no expiry)"));
    }
    if raw.ttl_on_write && (raw.ttl.is_none() || raw.mode != Mode::WriteBehind) {
        return Err(format!(
            "{who}: \"ttl_on_write\" needs a \"ttl\" and a write-behind mapping (write-through rows get the ttl when their commit is applied)"
        ));
    }
    Ok(Mapping {
        name: raw.name,
        table: raw.table,
        key_prefix: raw.key_prefix,
        primary_key: raw.primary_key,
        fields: raw.fields,
        mode: raw.mode,
        // A read-only mapping exists to follow Postgres.
        listen: raw.listen || raw.mode == Mode::ReadOnly,
        notify: raw.notify,
        notify_reload: raw.notify_reload,
        notify_sharded: raw.notify_sharded,
        changelog: raw.changelog,
        ttl: raw.ttl.map(Duration::from_secs),
        ttl_on_write: raw.ttl_on_write,
    })
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

    #[test]
    fn ttl_options_are_checked_at_load() {
        let one = |extra: &str, mode: &str| {
            Mappings::parse(&format!(
                r#"{{"mappings": [{{"name": "u", "table": "u", "key_prefix": "u:", "primary_key": "id", "mode": "{mode}"{extra}}}]}}"#
            ))
        };
        let m = one(r#", "ttl": 60, "ttl_on_write": true"#, "write-behind").unwrap();
        assert_eq!((m.all()[0].ttl, m.all()[0].ttl_on_write), (Some(Duration::from_secs(60)), true));
        assert!(one(r#", "ttl": 0"#, "write-behind").unwrap_err().contains("above 0"));
        assert!(one(r#", "ttl": -1"#, "write-behind").is_err());
        assert!(one(r#", "ttl_on_write": true"#, "write-behind").unwrap_err().contains("needs a \"ttl\""));
        assert!(one(r#", "ttl": 5, "ttl_on_write": true"#, "write-through").unwrap_err().contains("write-behind"));
        assert_eq!(one("", "write-through").unwrap().all()[0].ttl, None);
    }
}
