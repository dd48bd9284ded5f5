//! The option groups of a mapping: documents (what they are built from and how
//! they are stored), change events (channels, payload, changelog stream).

use crate::model::template::Template;
use serde::Deserialize;

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

/// What a table mapping's keys are (`"type"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    /// A hash of the mapped fields, each value as Postgres prints it.
    #[default]
    Hash,
    /// A RedisJSON document whose top-level members are the mapped fields,
    /// typed after their columns (`model::json_row`).
    Json,
}

/// What a root `JSON.SET` of a `"type": "json"` write-behind row does to the
/// mapped columns it does not name (`"on_set"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnSet {
    /// They keep their values, as with `HSET`.
    #[default]
    Merge,
    /// They become NULL: the document is the whole row.
    Replace,
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
