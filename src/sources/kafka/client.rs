//! The broker side of a Kafka source, over `rskafka` (why that crate:
//! docs/kafka.md): connect with the configured brokers and SASL settings, find
//! the partitions, fetch records from an offset, read a partition's bounds.
//! Every call is bounded in time, so a broker that stops answering turns into
//! an error the consumer reports and retries, never a thread stuck for good.

use super::error::KafkaError;
use crate::model::kafka::{KafkaSource, SaslMechanism};
use rskafka::client::error::{Error, ProtocolError};
use rskafka::client::partition::{OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder, Credentials, SaslConfig};
use rskafka::BackoffConfig;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// The longest any one call to the broker may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a fetch waits on the broker for records when there are none.
pub const FETCH_WAIT_MS: i32 = 500;

/// The most bytes one fetch asks for per partition.
const FETCH_MAX_BYTES: i32 = 4 * 1024 * 1024;

/// One record as fetched.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// Its offset in the partition.
    pub offset: i64,
    /// The record key.
    pub key: Option<Vec<u8>>,
    /// The record value; `None` is a tombstone.
    pub value: Option<Vec<u8>>,
}

/// Why a fetch failed.
#[derive(Debug)]
pub enum FetchError {
    /// The offset is outside the partition's log (retention removed it, or the
    /// topic was made again).
    OutOfRange,
    /// Anything else: the broker is unreachable, slow, or refused.
    Other(KafkaError),
}

/// A connected source: the client and one handle per consumed partition.
pub struct Broker {
    partitions: BTreeMap<i32, PartitionClient>,
}

/// Runs `call` within [`CALL_TIMEOUT`], naming `what` in the error.
async fn bounded<T>(call: &'static str, future: impl Future<Output = Result<T, Error>>) -> Result<T, KafkaError> {
    match tokio::time::timeout(CALL_TIMEOUT, future).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(source)) => Err(KafkaError::Broker { call, source }),
        Err(_) => Err(KafkaError::Timeout { call, after: CALL_TIMEOUT }),
    }
}

impl Broker {
    /// Connects and opens the source's partitions (the configured ones, or all
    /// of the topic's).
    pub async fn connect(source: &KafkaSource, tls: Option<Arc<rustls::ClientConfig>>) -> Result<Broker, KafkaError> {
        // The client's own retries end quickly: the consumer's backoff (shown in
        // SYNC.STATUS) is the one that waits for a broker to come back.
        let backoff = BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            base: 2.0,
            deadline: Some(Duration::from_secs(3)),
        };
        let mut builder = ClientBuilder::new(source.broker_list()).client_id("redis-pgsync").backoff_config(backoff);
        if let Some(tls) = tls {
            builder = builder.tls_config(tls);
        }
        if let Some(sasl) = &source.sasl {
            let credentials = Credentials::new(sasl.username.clone(), sasl.password.clone());
            builder = builder.sasl_config(match sasl.mechanism {
                SaslMechanism::Plain => SaslConfig::Plain(credentials),
                SaslMechanism::ScramSha256 => SaslConfig::ScramSha256(credentials),
                SaslMechanism::ScramSha512 => SaslConfig::ScramSha512(credentials),
            });
        }
        let client: Client = bounded("connect", builder.build()).await?;
        let topics = bounded("list topics", client.list_topics()).await?;
        let Some(topic) = topics.into_iter().find(|t| t.name == source.topic) else {
            return Err(KafkaError::NoTopic(source.topic.clone()));
        };
        let wanted: Vec<i32> = match &source.partitions {
            Some(list) => list.clone(),
            None => topic.partitions.iter().copied().collect(),
        };
        if let Some(missing) = wanted.iter().find(|p| !topic.partitions.contains(p)) {
            return Err(KafkaError::NoPartition { topic: source.topic.clone(), partition: *missing });
        }
        let mut partitions = BTreeMap::new();
        for partition in wanted {
            let handle = client.partition_client(source.topic.clone(), partition, UnknownTopicHandling::Error);
            partitions.insert(partition, bounded("open partition", handle).await?);
        }
        Ok(Broker { partitions })
    }

    /// The partitions consumed.
    pub fn partitions(&self) -> Vec<i32> {
        self.partitions.keys().copied().collect()
    }

    fn partition(&self, partition: i32) -> Result<&PartitionClient, KafkaError> {
        self.partitions.get(&partition).ok_or(KafkaError::NotConsumed(partition))
    }

    /// Records from `offset` on (up to a few MB), and the partition's end.
    pub async fn fetch(&self, partition: i32, offset: i64) -> Result<(Vec<Fetched>, i64), FetchError> {
        let client = self.partition(partition).map_err(FetchError::Other)?;
        let call = client.fetch_records(offset, 1..FETCH_MAX_BYTES, FETCH_WAIT_MS);
        let (records, end) = match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(fetched)) => fetched,
            Ok(Err(Error::ServerError { protocol_error: ProtocolError::OffsetOutOfRange, .. })) => {
                return Err(FetchError::OutOfRange)
            }
            Ok(Err(source)) => return Err(FetchError::Other(KafkaError::Broker { call: "fetch", source })),
            Err(_) => return Err(FetchError::Other(KafkaError::Timeout { call: "fetch", after: CALL_TIMEOUT })),
        };
        // A position past the log's end (a broker that lost its log, a topic made
        // again) is out of range too, though some brokers answer it with nothing.
        if end < offset {
            return Err(FetchError::OutOfRange);
        }
        let records = records
            .into_iter()
            .filter(|r| r.offset >= offset)
            .map(|r| Fetched { offset: r.offset, key: r.record.key, value: r.record.value })
            .collect();
        Ok((records, end))
    }

    /// The first offset still in the partition's log.
    pub async fn earliest(&self, partition: i32) -> Result<i64, KafkaError> {
        let client = self.partition(partition)?;
        bounded("earliest offset", client.get_offset(OffsetAt::Earliest)).await
    }
}
