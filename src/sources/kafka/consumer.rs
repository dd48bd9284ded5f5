//! The consumer thread of one Kafka source. Each round fetches every consumed
//! partition at once (a fetch waits briefly on the broker when there is
//! nothing new) and applies what came in `apply`'s locked batches. The
//! positions it consumes from are read from Redis, never from the broker: at
//! start, after a promotion, and whenever a batch finds its offset key changed
//! under it. The broker being down is a state, not an end: the source reports
//! it in `SYNC.STATUS`, backs off and connects again. On a replica the source
//! is idle; after a promotion it resumes from the offsets it replicated.

use super::apply::{self, Applied};
use super::client::{Broker, FetchError, Fetched};
use super::error::KafkaError;
use super::offsets;
use super::status::{self, SourceStatus, State};
use super::tls;
use crate::model::kafka::KafkaSource;
use crate::model::stats::MappingStats;
use crate::pipeline::retry::{self, Round};
use crate::pipeline::runtime::Runtime;
use crate::redis::redis_io::{notice, warn};
use std::collections::BTreeMap;
use std::time::Duration;

/// The most records written under one Redis lock.
const RECORDS_PER_LOCK: usize = 1000;

/// How often an idle source (replica, loading) looks again.
const IDLE_POLL: Duration = Duration::from_millis(200);

/// Where the consumer stands in one partition.
#[derive(Debug, Clone, Copy)]
struct Position {
    /// The next offset to fetch.
    next: i64,
    /// What the partition's offset key holds (`None`: nothing yet).
    stored: Option<i64>,
}

/// The thread body of mapping `mapping`'s source; returns at shutdown.
pub fn run(rt: &'static Runtime, mapping: usize) {
    let m = rt.mapping(mapping).def;
    let (Some(source), Some(status)) = (m.kafka.as_ref(), status::of(rt, mapping)) else { return };
    let tokio = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(tokio) => tokio,
        Err(e) => return status.set_state(State::Down(format!("cannot start the client runtime: {e}"))),
    };
    status.set_state(State::Connecting);
    let mut consumer = Consumer { rt, mapping, source, status, broker: None, positions: BTreeMap::new() };
    let round = || -> Result<Round, KafkaError> {
        if rt.is_replica() {
            consumer.forget_positions();
            status.set_state(State::Replica);
            return Ok(Round::Idle(IDLE_POLL));
        }
        let wrote = tokio.block_on(consumer.round())?;
        Ok(if wrote { Round::Worked } else { Round::Idle(IDLE_POLL) })
    };
    let failed = |e: KafkaError| {
        if !matches!(status.state(), State::Down(_)) {
            warn(&format!("{}: Kafka source down: {e}", m.name));
        }
        status.set_state(State::Down(e.to_string()));
    };
    retry::until_done(rt.shutdown, round, failed);
}

/// What became of a partition's fetched records.
enum Batches {
    /// All written.
    Written,
    /// Written up to a record whose slot is moving between cluster nodes.
    Held,
    /// A batch was not written (see [`Applied`]): read the positions again.
    Stopped,
}

struct Consumer {
    rt: &'static Runtime,
    mapping: usize,
    source: &'static KafkaSource,
    status: &'static SourceStatus,
    broker: Option<Broker>,
    positions: BTreeMap<i32, Position>,
}

impl Consumer {
    fn forget_positions(&mut self) {
        self.positions.clear();
        self.status.clear_positions();
    }

    /// One round: connect if needed, read the positions if needed, fetch and
    /// apply. `Ok(false)`: this server does not write now, or a partition waits
    /// for a slot move (pause before the next round); `Err`: the broker failed.
    async fn round(&mut self) -> Result<bool, KafkaError> {
        let broker = match self.broker.take() {
            Some(broker) => broker,
            None => self.connect().await?,
        };
        let outcome = self.round_with(&broker).await;
        // After a failure the next round connects again.
        if outcome.is_ok() {
            self.broker = Some(broker);
        }
        outcome
    }

    async fn connect(&mut self) -> Result<Broker, KafkaError> {
        let name = &self.rt.mapping(self.mapping).def.name;
        // The files are read again: a renewed certificate needs no restart.
        let tls =
            self.source.tls.as_ref().map(|t| tls::client_config(&format!("mapping \"{name}\""), t)).transpose()?;
        let broker = Broker::connect(self.source, tls).await?;
        notice(&format!(
            "{name}: Kafka source connected to topic {} (partitions {:?})",
            self.source.topic,
            broker.partitions()
        ));
        // Positions are read again after every connection: Redis is the truth.
        self.forget_positions();
        Ok(broker)
    }

    async fn round_with(&mut self, broker: &Broker) -> Result<bool, KafkaError> {
        if self.positions.is_empty() && !self.load_positions(broker).await? {
            return Ok(false);
        }
        let fetches = self.positions.iter().map(|(p, pos)| async move { (*p, broker.fetch(*p, pos.next).await) });
        let fetched = futures::future::join_all(fetches).await;
        self.status.set_state(State::Up);
        let mut held = false;
        for (partition, result) in fetched {
            match result {
                Ok((records, end)) => {
                    self.status.set_end(partition, end);
                    match self.apply(partition, &records) {
                        Batches::Written => {}
                        Batches::Held => held = true,
                        Batches::Stopped => {
                            // Read the positions again before anything else is written.
                            self.forget_positions();
                            return Ok(!self.rt.is_replica());
                        }
                    }
                }
                Err(FetchError::OutOfRange) => {
                    let earliest = broker.earliest(partition).await?;
                    let Some(pos) = self.positions.get_mut(&partition) else { continue };
                    warn(&format!(
                        "{}: Kafka offset {} of {}/{partition} is outside the partition's log; going on from {earliest}",
                        self.rt.mapping(self.mapping).def.name,
                        pos.next,
                        self.source.topic
                    ));
                    pos.next = earliest;
                    self.status.set_next(partition, earliest);
                }
                Err(FetchError::Other(e)) => return Err(e),
            }
        }
        // A partition held by a slot move is fetched again after a pause, not
        // at once in a loop.
        Ok(!held)
    }

    /// Reads the stored offsets; a partition never consumed starts at its log's
    /// start. `Ok(false)`: this server does not write now.
    async fn load_positions(&mut self, broker: &Broker) -> Result<bool, KafkaError> {
        let partitions = broker.partitions();
        let Some(stored) = offsets::read_offsets(self.rt, self.source, &partitions) else { return Ok(false) };
        let mut positions = BTreeMap::new();
        for (partition, stored) in partitions.into_iter().zip(stored) {
            let next = match stored {
                Some(next) => next,
                None => broker.earliest(partition).await?,
            };
            self.status.set_next(partition, next);
            positions.insert(partition, Position { next, stored });
        }
        self.positions = positions;
        Ok(true)
    }

    /// Applies a partition's fetched records in locked batches.
    fn apply(&mut self, partition: i32, records: &[Fetched]) -> Batches {
        for chunk in records.chunks(RECORDS_PER_LOCK) {
            let (Some(pos), Some(last)) = (self.positions.get_mut(&partition), chunk.last()) else {
                return Batches::Written;
            };
            match apply::apply_records(self.rt, self.mapping, partition, pos.stored, chunk, last.offset + 1) {
                Applied::Done { applied, dead, skipped, next, held } => {
                    *pos = Position { next, stored: Some(next) };
                    self.status.set_next(partition, next);
                    MappingStats::bump(&self.status.applied, applied);
                    MappingStats::bump(&self.status.dead_lettered, dead);
                    MappingStats::bump(&self.status.skipped, skipped);
                    if held {
                        return Batches::Held;
                    }
                }
                Applied::Stale | Applied::Idle => return Batches::Stopped,
            }
        }
        Batches::Written
    }
}
