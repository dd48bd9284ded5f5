//! A mapping's Kafka source (`"kafka"` in the mapping file): its options as the
//! operator writes them, how one record becomes a hash write or a delete, and
//! where each partition's consumed offset is kept in Redis. Pure: the consumer
//! thread (`sources/kafka/`) does the I/O.

use crate::model::row_id::{check_id, IdError};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The `"kafka"` object of a mapping.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSource {
    /// Bootstrap brokers, `host:port`, comma-separated.
    pub brokers: String,
    /// The topic to consume.
    pub topic: String,
    /// Names this consumer's offsets (the Redis offset keys carry it), so two
    /// mappings may read one topic independently.
    pub group: String,
    /// How a record's value is read; only `json` today.
    #[serde(default)]
    pub format: Format,
    /// The JSON field holding the row id (a record that lacks it is
    /// dead-lettered); without this option the record key is the id.
    #[serde(default)]
    pub id_field: Option<String>,
    /// The partitions to consume; all of the topic's when absent.
    #[serde(default)]
    pub partitions: Option<Vec<i32>>,
    /// SASL credentials, passed to the client.
    #[serde(default)]
    pub sasl: Option<Sasl>,
    /// TLS to the brokers; plain TCP when absent.
    #[serde(default)]
    pub tls: Option<KafkaTls>,
}

/// TLS settings (`"tls": {}` trusts the system's certificates).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaTls {
    /// PEM file of the certificates that may sign the brokers' certificates;
    /// the system's trusted certificates when absent.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// PEM file of the client certificate (chain), for brokers that ask for one.
    #[serde(default)]
    pub cert_file: Option<String>,
    /// PEM file of the client certificate's private key.
    #[serde(default)]
    pub key_file: Option<String>,
}

/// The record formats the source reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A JSON object per record: its keys are hash fields.
    #[default]
    Json,
}

/// SASL settings.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sasl {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: SaslMechanism,
    /// The user name.
    pub username: String,
    /// The password (never shown by `SYNC.STATUS` or the log).
    pub password: String,
}

/// Leaves the password out, wherever a mapping is printed.
impl std::fmt::Debug for Sasl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sasl")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// The SASL mechanisms the client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SaslMechanism {
    /// RFC 4616.
    #[serde(rename = "PLAIN")]
    Plain,
    /// RFC 7677.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// SCRAM with SHA-512.
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

/// A `"kafka"` option a mapping cannot have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaOptionError {
    /// The mapping, as the mapping file's errors name it.
    pub who: String,
    /// Which option, and how.
    pub option: KafkaOption,
}

/// The option a [`KafkaOptionError`] is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KafkaOption {
    /// `"brokers"` lists none.
    NoBrokers,
    /// A broker without a port (the broker).
    BrokerNotHostPort(String),
    /// `"topic"` is no Kafka topic name (the topic).
    Topic(String),
    /// `"group"` is empty or holds braces or `:`.
    Group,
    /// `"id_field"` is empty.
    IdField,
    /// Only one of `"cert_file"` and `"key_file"`.
    HalfClientCertificate,
    /// `"partitions"` is empty, negative or repeats.
    Partitions,
}

impl fmt::Display for KafkaOptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = &self.who;
        match &self.option {
            KafkaOption::NoBrokers => write!(f, "{who}: kafka \"brokers\" needs at least one host:port"),
            KafkaOption::BrokerNotHostPort(bad) => write!(f, "{who}: kafka broker \"{bad}\" must be host:port"),
            KafkaOption::Topic(topic) => write!(
                f,
                "{who}: kafka \"topic\" \"{topic}\" is not a Kafka topic name (letters, digits, '.', '_', '-')"
            ),
            KafkaOption::Group => write!(
                f,
                "{who}: kafka \"group\" must be a non-empty name without braces or ':' (it is part of the offset keys)"
            ),
            KafkaOption::IdField => {
                write!(f, "{who}: kafka \"id_field\" must not be empty (leave it out to use the record key)")
            }
            KafkaOption::HalfClientCertificate => {
                write!(f, "{who}: kafka tls \"cert_file\" and \"key_file\" go together")
            }
            KafkaOption::Partitions => {
                write!(f, "{who}: kafka \"partitions\" must list distinct partition numbers (0 and up)")
            }
        }
    }
}

impl std::error::Error for KafkaOptionError {}

impl KafkaSource {
    /// Checks the options; `who` names the mapping in the message.
    pub fn validate(&self, who: &str) -> Result<(), KafkaOptionError> {
        let refuse = |option| Err(KafkaOptionError { who: who.to_string(), option });
        if self.broker_list().is_empty() {
            return refuse(KafkaOption::NoBrokers);
        }
        if let Some(bad) = self.broker_list().into_iter().find(|b| !b.contains(':')) {
            return refuse(KafkaOption::BrokerNotHostPort(bad));
        }
        let topic_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if self.topic.is_empty() || self.topic.len() > 249 || !self.topic.chars().all(topic_char) {
            return refuse(KafkaOption::Topic(self.topic.clone()));
        }
        if self.group.trim().is_empty() || self.group.contains(['{', '}', ':']) {
            return refuse(KafkaOption::Group);
        }
        if self.id_field.as_deref().is_some_and(str::is_empty) {
            return refuse(KafkaOption::IdField);
        }
        if let Some(tls) = &self.tls {
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                return refuse(KafkaOption::HalfClientCertificate);
            }
        }
        if let Some(partitions) = &self.partitions {
            let mut seen = std::collections::BTreeSet::new();
            if partitions.is_empty() || partitions.iter().any(|p| *p < 0 || !seen.insert(*p)) {
                return refuse(KafkaOption::Partitions);
            }
        }
        Ok(())
    }

    /// The bootstrap brokers, trimmed.
    pub fn broker_list(&self) -> Vec<String> {
        self.brokers.split(',').map(str::trim).filter(|b| !b.is_empty()).map(String::from).collect()
    }

    /// The Redis key holding the next offset to consume from `partition`.
    pub fn offset_key(&self, partition: i32) -> String {
        format!("{OFFSET_PREFIX}{}:{}:{partition}", self.group, self.topic)
    }

    /// The same on a cluster node: with the hash tag `tag` of a slot the node
    /// owns, so that each primary keeps its own offsets.
    pub fn offset_key_in(&self, tag: &str, partition: i32) -> String {
        format!("{OFFSET_PREFIX}{{{tag}}}:{}:{}:{partition}", self.group, self.topic)
    }
}

/// The offset key `key` of a cluster node moved under the hash tag `tag`
/// (`pgsync:kafka:{<old>}:<rest>` → `pgsync:kafka:{<tag>}:<rest>`); `None` when
/// `key` is no cluster node's offset key.
pub fn retagged_offset_key(key: &[u8], tag: &[u8]) -> Option<Vec<u8>> {
    let rest = key.strip_prefix(OFFSET_PREFIX.as_bytes())?.strip_prefix(b"{")?;
    let close = rest.iter().position(|b| *b == b'}')?;
    let suffix = rest[close + 1..].strip_prefix(b":")?;
    Some([OFFSET_PREFIX.as_bytes(), b"{", tag, b"}:", suffix].concat())
}

/// Every offset key starts with this; no mapping's key prefix may cover it.
pub const OFFSET_PREFIX: &str = "pgsync:kafka:";

/// What one record asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// Set these fields (`None`: a JSON null, the field is removed).
    Upsert {
        /// The row id.
        id: String,
        /// Field and value; the id field itself is not stored (the key names it).
        fields: Vec<(String, Option<Vec<u8>>)>,
    },
    /// A tombstone: delete the key and the row.
    Delete {
        /// The row id.
        id: String,
    },
}

impl Decoded {
    /// The row id the record names.
    pub fn id(&self) -> &str {
        match self {
            Decoded::Upsert { id, .. } | Decoded::Delete { id } => id,
        }
    }
}

/// Why a record cannot be read as a row (it is dead-lettered with this text).
#[derive(Debug)]
pub enum DecodeError {
    /// The id comes from the record key, and there is none.
    NoKey,
    /// The record key cannot be a row's id.
    Key(IdError),
    /// The value does not parse.
    NotJson(serde_json::Error),
    /// The value is JSON but not an object.
    NotObject,
    /// The id field is missing or null (its name).
    NoIdField(String),
    /// The id field holds neither a string nor a number (its name).
    IdNotScalar(String),
    /// The id field's value cannot be a row's id.
    Id(IdError),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::NoKey => f.write_str("the record has no key to take the id from"),
            DecodeError::Key(e) => write!(f, "record key: {e}"),
            DecodeError::NotJson(e) => write!(f, "the record is not valid JSON: {e}"),
            DecodeError::NotObject => f.write_str("the record is not a JSON object"),
            DecodeError::NoIdField(name) => write!(f, "the record has no id field \"{name}\""),
            DecodeError::IdNotScalar(name) => write!(f, "the id field \"{name}\" is neither a string nor a number"),
            DecodeError::Id(e) => write!(f, "id: {e}"),
        }
    }
}

impl std::error::Error for DecodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DecodeError::Key(e) | DecodeError::Id(e) => Some(e),
            DecodeError::NotJson(e) => Some(e),
            _ => None,
        }
    }
}

/// Reads one record. `Err` says why it cannot be applied (it is dead-lettered).
pub fn decode(source: &KafkaSource, key: Option<&[u8]>, value: Option<&[u8]>) -> Result<Decoded, DecodeError> {
    let record_key_id = || -> Result<String, DecodeError> {
        let key = key.ok_or(DecodeError::NoKey)?;
        check_id(key).map(String::from).map_err(DecodeError::Key)
    };
    let Some(value) = value else {
        return Ok(Decoded::Delete { id: record_key_id()? });
    };
    let json: serde_json::Value = serde_json::from_slice(value).map_err(DecodeError::NotJson)?;
    let serde_json::Value::Object(object) = json else {
        return Err(DecodeError::NotObject);
    };
    let id = match &source.id_field {
        None => record_key_id()?,
        Some(name) => match object.get(name) {
            None | Some(serde_json::Value::Null) => return Err(DecodeError::NoIdField(name.clone())),
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            Some(_) => return Err(DecodeError::IdNotScalar(name.clone())),
        },
    };
    let id = check_id(id.as_bytes()).map_err(DecodeError::Id)?.to_string();
    let fields = object
        .into_iter()
        .filter(|(name, _)| Some(name) != source.id_field.as_ref())
        .map(|(name, value)| {
            let value = match value {
                serde_json::Value::Null => None,
                serde_json::Value::String(s) => Some(s.into_bytes()),
                // Numbers, booleans, nested objects and arrays: their JSON text.
                other => Some(other.to_string().into_bytes()),
            };
            (name, value)
        })
        .collect();
    Ok(Decoded::Upsert { id, fields })
}

/// Where a dead-lettered record came from, with its raw bytes, so `SYNC.FAILED`
/// shows it and `SYNC.RETRY` can apply it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaOrigin {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The record's offset.
    pub offset: i64,
    /// The record key (non-UTF-8 bytes shown lossily).
    pub key: Option<String>,
    /// The record value as received (lossily as text); `None` for a tombstone.
    pub payload: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(id_field: Option<&str>) -> KafkaSource {
        KafkaSource {
            brokers: "127.0.0.1:9092".into(),
            topic: "users".into(),
            group: "pgsync".into(),
            format: Format::Json,
            id_field: id_field.map(String::from),
            partitions: None,
            sasl: None,
            tls: None,
        }
    }

    #[test]
    fn a_json_object_becomes_fields_with_nested_values_as_json_text() {
        let decoded = decode(
            &source(Some("id")),
            None,
            Some(br#"{"id": 42, "name": "ana", "tags": [1,2], "gone": null, "ok": true}"#),
        )
        .unwrap();
        let Decoded::Upsert { id, mut fields } = decoded else { panic!("not an upsert") };
        fields.sort();
        assert_eq!(id, "42");
        assert_eq!(
            fields,
            vec![
                ("gone".to_string(), None),
                ("name".to_string(), Some(b"ana".to_vec())),
                ("ok".to_string(), Some(b"true".to_vec())),
                ("tags".to_string(), Some(b"[1,2]".to_vec())),
            ]
        );
    }

    #[test]
    fn the_record_key_is_the_id_without_an_id_field_and_a_tombstone_deletes() {
        let decoded = decode(&source(None), Some(b"7"), Some(br#"{"a": "b"}"#)).unwrap();
        assert_eq!(decoded.id(), "7");
        assert_eq!(decode(&source(Some("id")), Some(b"9"), None).unwrap(), Decoded::Delete { id: "9".into() });
        assert!(matches!(decode(&source(None), None, None), Err(DecodeError::NoKey)));
    }

    #[test]
    fn bad_records_say_why() {
        let s = source(Some("id"));
        let why = |value: &[u8]| decode(&s, None, Some(value)).unwrap_err().to_string();
        assert!(why(b"{not json").contains("not valid JSON"));
        assert!(why(b"[1]").contains("not a JSON object"));
        assert!(why(br#"{"name": "x"}"#).contains("no id field"));
        assert!(why(br#"{"id": {"a": 1}}"#).contains("neither"));
        assert!(why(br#"{"id": "a{b"}"#).contains("brace"));
        assert!(why(br#"{"id": ""}"#).contains("no id"));
    }

    #[test]
    fn options_are_checked() {
        assert!(source(None).validate("m").is_ok());
        let bad = |f: &dyn Fn(&mut KafkaSource)| {
            let mut s = source(None);
            f(&mut s);
            s.validate("m").unwrap_err().to_string()
        };
        assert!(bad(&|s| s.brokers = " , ".into()).contains("brokers"));
        assert!(bad(&|s| s.brokers = "localhost".into()).contains("host:port"));
        assert!(bad(&|s| s.topic = "a b".into()).contains("topic"));
        assert!(bad(&|s| s.group = "{x}".into()).contains("group"));
        assert!(bad(&|s| s.partitions = Some(vec![0, 0])).contains("partitions"));
        assert!(bad(&|s| s.id_field = Some(String::new())).contains("id_field"));
        let half = KafkaTls { cert_file: Some("c.pem".into()), ..KafkaTls::default() };
        assert!(bad(&|s| s.tls = Some(half.clone())).contains("go together"));
        assert_eq!(source(None).offset_key(2), "pgsync:kafka:pgsync:users:2");
        assert_eq!(source(None).offset_key_in("06S", 2), "pgsync:kafka:{06S}:pgsync:users:2");
        let moved = retagged_offset_key(b"pgsync:kafka:{06S}:g:a:b:2", b"Qi");
        assert_eq!(moved.as_deref(), Some(b"pgsync:kafka:{Qi}:g:a:b:2".as_slice()));
        assert_eq!(retagged_offset_key(b"pgsync:kafka:g:users:2", b"Qi"), None, "a single server's key");
    }

    #[test]
    fn sasl_names_its_mechanism_as_kafka_does() {
        let parse = |text: &str| serde_json::from_str::<Sasl>(text);
        let scram = parse(r#"{"mechanism": "SCRAM-SHA-512", "username": "u", "password": "p"}"#).unwrap();
        assert_eq!(scram.mechanism, SaslMechanism::ScramSha512);
        assert_eq!(parse(r#"{"mechanism": "PLAIN", "username": "u", "password": "p"}"#).unwrap().username, "u");
        assert!(parse(r#"{"mechanism": "GSSAPI", "username": "u", "password": "p"}"#).is_err());
        assert!(parse(r#"{"mechanism": "PLAIN", "username": "u"}"#).is_err(), "a password is needed");
        let printed = format!("{:?}", parse(r#"{"mechanism": "PLAIN", "username": "u", "password": "s3cret"}"#));
        assert!(printed.contains("Plain") && !printed.contains("s3cret"), "{printed}");
    }
}
