//! Reading the mapping file: the JSON as written, each mapping's checks, and
//! the checks across mappings (names, prefixes, Kafka groups, changelogs).

use super::options::{Changelog, Document, Notify, NotifyPayload, OnSet, Store, ValueType, Watch};
use super::{Mapping, MappingError, Mode};
use crate::model::kafka::{KafkaSource, OFFSET_PREFIX};
use crate::model::row_id::KeyShape;
use crate::model::template::{Part, Template};
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

/// Parses and validates a mapping file's JSON text into its mappings, in file order.
pub fn mappings(json: &str) -> Result<Vec<Mapping>, MappingError> {
    let file: MappingFile = serde_json::from_str(json).map_err(|e| MappingError::Json(std::sync::Arc::new(e)))?;
    if file.mappings.is_empty() {
        return Err("invalid mapping file: \"mappings\" is empty".into());
    }
    let mut names = HashSet::new();
    let mut all = Vec::with_capacity(file.mappings.len());
    for raw in file.mappings {
        let m = validate(raw)?;
        if !names.insert(m.name.clone()) {
            return Err(format!("mapping \"{}\" is defined twice", m.name).into());
        }
        all.push(m);
    }
    for m in &all {
        if let Some(stream) = m.changelog.as_ref().map(|c| c.stream.as_str()) {
            if let Some(owner) = all.iter().find(|o| stream.starts_with(&o.key_prefix)) {
                return Err(format!(
                    "mapping \"{}\": changelog stream \"{stream}\" lies under the key prefix of mapping \"{}\"",
                    m.name, owner.name
                )
                .into());
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
                    ).into());
                }
            }
            if a.key_prefix.starts_with(&b.key_prefix) || b.key_prefix.starts_with(&a.key_prefix) {
                return Err(format!(
                    "mappings \"{}\" and \"{}\" have overlapping key prefixes \"{}\" and \"{}\"",
                    a.name, b.name, a.key_prefix, b.key_prefix
                )
                .into());
            }
        }
    }
    Ok(all)
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
    #[serde(default, rename = "type")]
    value_type: ValueType,
    #[serde(default)]
    on_set: Option<OnSet>,
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

/// `"notify"` as written: a channel prefix, or a list of channel templates.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawNotify {
    Prefix(String),
    Channels(Vec<String>),
}

/// Longest mapping name: `pgsync_<name>` must fit Postgres's 63-byte channel names.
const MAX_NAME_LEN: usize = 56;

/// Keys the module keeps for itself; no mapping may cover them.
const OWN_KEYS: &[&str] =
    &["pgsync:{journal}", "pgsync:{deadletter}", "pgsync:deadletter:{", "pgsync:journal:{", OFFSET_PREFIX];

fn validate(raw: RawMapping) -> Result<Mapping, MappingError> {
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
        )
        .into());
    }
    let document = document(&raw).map_err(|e| format!("{who}: {e}"))?;
    json_type(&raw).map_err(|e| format!("{who}: {e}"))?;
    // A document mapping is named after its root table, the first it watches.
    let table = match (&document, &raw.table) {
        (Some(d), None) => d.watch.first().map(|w| w.table.clone()).unwrap_or_default(),
        (None, Some(table)) => table.clone(),
        (Some(_), Some(_)) => {
            return Err(format!("{who}: a document mapping reads through \"query\"; give no \"table\"").into())
        }
        (None, None) => return Err(format!("{who}: \"table\" is missing").into()),
    };
    non_empty("table", &table)?;
    let (key_prefix, key) = key_shape(&raw).map_err(|e| format!("{who}: {e}"))?;
    non_empty("key_prefix", &key_prefix)?;
    if key_prefix.contains(['{', '}']) || key_prefix.starts_with("__") {
        return Err(format!("{who}: key_prefix \"{}\" must not contain braces or start with \"__\"", key_prefix).into());
    }
    if let Some(own) = OWN_KEYS.iter().find(|k| k.starts_with(&key_prefix) || key_prefix.starts_with(**k)) {
        return Err(format!("{who}: key_prefix \"{}\" would cover the module's own key {own}", key_prefix).into());
    }
    let tables = std::iter::once(&table).chain(document.iter().flat_map(|d| d.watch.iter().map(|w| &w.table)));
    if let Some(bad) = tables.into_iter().find(|t| t.split('.').count() > 2 || t.split('.').any(str::is_empty)) {
        return Err(format!("{who}: table \"{bad}\" must be \"table\" or \"schema.table\"").into());
    }
    if let Some(fields) = &raw.fields {
        if fields.contains_key("#") {
            return Err(format!("{who}: the field \"#\" is reserved for the sync operation").into());
        }
        let mut columns = HashSet::new();
        for (field, column) in fields {
            non_empty(&format!("fields.{field}"), column)?;
            if key.columns().contains(column) {
                return Err(format!(
                    "{who}: field \"{field}\" maps to key column \"{column}\", which comes from the key name"
                )
                .into());
            }
            if !columns.insert(column) {
                return Err(format!("{who}: column \"{column}\" is mapped by two fields").into());
            }
        }
    }
    let notify = raw.notify.map(|n| notify_channels(n).map_err(|e| format!("{who}: \"notify\": {e}"))).transpose()?;
    if raw.changelog.as_ref().is_some_and(|c| c.stream.is_empty() || c.maxlen == 0) {
        return Err(format!("{who}: \"changelog\" needs a stream name and a maxlen above 0").into());
    }
    if raw.notify_sharded && !matches!(notify, Some(Notify::Prefix(_))) {
        return Err(format!("{who}: \"notify_sharded\" needs \"notify\" as a channel prefix (a string)").into());
    }
    if raw.ttl == Some(0) {
        return Err(format!("{who}: \"ttl\" is in seconds and must be above 0 (leave it out for no expiry)").into());
    }
    if raw.ttl_on_write && (raw.ttl.is_none() || raw.mode != Mode::WriteBehind) {
        return Err(format!(
            "{who}: \"ttl_on_write\" needs a \"ttl\" and a write-behind mapping (write-through rows get the ttl when their commit is applied)"
        ).into());
    }
    if raw.fill_on_write && raw.mode == Mode::ReadOnly {
        return Err(format!(
            "{who}: \"fill_on_write\" needs a write-behind or write-through mapping (read-only keys take no writes)"
        )
        .into());
    }
    if let Some(kafka) = &raw.kafka {
        kafka.validate(&who)?;
        if !matches!(raw.mode, Mode::WriteBehind | Mode::WriteThrough) {
            return Err(format!(
                "{who}: a \"kafka\" source writes rows to Postgres; use write-behind or write-through"
            )
            .into());
        }
    }
    Ok(Mapping {
        name: raw.name,
        table,
        key_prefix,
        key,
        fields: raw.fields,
        mode: raw.mode,
        value_type: raw.value_type,
        on_set: raw.on_set.unwrap_or_default(),
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
fn document(raw: &RawMapping) -> Result<Option<Document>, MappingError> {
    let given = [("query", raw.query.is_some()), ("ids_query", raw.ids_query.is_some())]
        .into_iter()
        .chain([("watch", raw.watch.is_some()), ("store", raw.store.is_some())]);
    if raw.mode != Mode::Document {
        return match given.into_iter().find(|(_, given)| *given) {
            Some((option, _)) => Err(format!("\"{option}\" is for \"mode\": \"document\" mappings").into()),
            None => Ok(None),
        };
    }
    let refused = [("fields", raw.fields.is_some()), ("ttl", raw.ttl.is_some()), ("key", raw.key.is_some())]
        .into_iter()
        .chain([("read_through", raw.read_through), ("fill_on_write", raw.fill_on_write)]);
    if let Some((option, _)) = refused.into_iter().find(|(_, given)| *given) {
        return Err(format!("\"{option}\" does not apply to a document mapping").into());
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

/// Checks a `"type": "json"` mapping: a table mapping of any mode (documents
/// say how they are kept with `"store"`; `fill_on_write` and Kafka sources
/// write hashes). Write-through stages its writes in JSON documents too.
fn json_type(raw: &RawMapping) -> Result<(), MappingError> {
    let writes = matches!(raw.mode, Mode::WriteBehind | Mode::WriteThrough);
    if raw.on_set.is_some() && (raw.value_type != ValueType::Json || !writes) {
        return Err("\"on_set\" is for \"type\": \"json\" write-behind and write-through mappings".into());
    }
    if raw.on_set == Some(OnSet::Replace) && raw.fields.is_none() {
        return Err(
            "\"on_set\": \"replace\" needs \"fields\": the columns a root JSON.SET sets NULL when it omits them".into(),
        );
    }
    if raw.value_type == ValueType::Hash {
        return Ok(());
    }
    match raw.mode {
        Mode::Document => Err("a document mapping says how its documents are kept with \"store\" \
                               (\"rejson\" for RedisJSON), not \"type\""
            .into()),
        _ if raw.fill_on_write || raw.kafka.is_some() => {
            Err("\"fill_on_write\" and \"kafka\" write hashes; they do not apply to \"type\": \"json\"".into())
        }
        Mode::ReadOnly | Mode::WriteBehind | Mode::WriteThrough => Ok(()),
    }
}

/// The key prefix and key columns: from `"key"` (a template whose leading literal
/// is the prefix), or from `"key_prefix"` and `"primary_key"`, its short form.
fn key_shape(raw: &RawMapping) -> Result<(String, KeyShape), MappingError> {
    match (&raw.key, &raw.key_prefix, &raw.primary_key) {
        (Some(template), None, None) => {
            let parsed = Template::parse(template).map_err(|e| format!("\"key\": {e}"))?;
            let (prefix, rest) = match parsed.parts() {
                [Part::Literal(prefix), rest @ ..] => (prefix.clone(), rest),
                _ => return Err(format!("\"key\" template \"{template}\" must start with a literal prefix").into()),
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
fn notify_channels(raw: RawNotify) -> Result<Notify, MappingError> {
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
