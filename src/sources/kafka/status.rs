//! What each Kafka source shows in `SYNC.STATUS` and `INFO pgsync`: its state
//! (connecting, up, down with the error, idle on a replica), and per partition
//! the next offset to consume and the lag behind the partition's end. Written by
//! the source's thread, read by the main thread; a mutex per source.

use crate::model::stats::{Figure, MappingStats};
use crate::pipeline::runtime::Runtime;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, MutexGuard, OnceLock};

/// One source's figures.
#[derive(Default)]
pub struct SourceStatus {
    inner: Mutex<Inner>,
    /// Records written into Redis (upserts and deletes).
    pub applied: AtomicU64,
    /// Records sent to the dead-letter list.
    pub dead_lettered: AtomicU64,
    /// Records stepped over on a cluster node: another node owns their keys.
    pub skipped: AtomicU64,
}

#[derive(Default)]
struct Inner {
    state: State,
    partitions: BTreeMap<i32, Position>,
}

/// Where a source stands, shown as the `kafka` figure.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum State {
    /// Its thread has not started yet.
    #[default]
    Starting,
    /// Connecting to the brokers.
    Connecting,
    /// Consuming.
    Up,
    /// On a replica, which consumes nothing.
    Replica,
    /// The brokers cannot be reached or refused: why.
    Down(String),
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            State::Starting => f.write_str("starting"),
            State::Connecting => f.write_str("connecting"),
            State::Up => f.write_str("up"),
            State::Replica => f.write_str("idle: replica"),
            State::Down(why) => write!(f, "down: {why}"),
        }
    }
}

/// Where a partition stands.
#[derive(Default, Clone, Copy)]
struct Position {
    next: Option<i64>,
    end: Option<i64>,
}

/// Every mapping's source status, by mapping index (`None`: no Kafka source).
static STATUSES: OnceLock<Vec<Option<SourceStatus>>> = OnceLock::new();

/// The status of mapping `mapping`'s source, if it has one.
pub fn of(rt: &Runtime, mapping: usize) -> Option<&'static SourceStatus> {
    let all = STATUSES
        .get_or_init(|| rt.mappings.all().iter().map(|m| m.kafka.as_ref().map(|_| SourceStatus::default())).collect());
    all.get(mapping).and_then(Option::as_ref)
}

impl SourceStatus {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets where the source stands.
    pub fn set_state(&self, state: State) {
        self.lock().state = state;
    }

    /// Where the source stands.
    pub fn state(&self) -> State {
        self.lock().state.clone()
    }

    /// Records the next offset to consume from `partition`.
    pub fn set_next(&self, partition: i32, next: i64) {
        self.lock().partitions.entry(partition).or_default().next = Some(next);
    }

    /// Records the partition's end (the offset the next produced record gets).
    pub fn set_end(&self, partition: i32, end: i64) {
        self.lock().partitions.entry(partition).or_default().end = Some(end);
    }

    /// Forgets the positions (on a replica, or before they are read again).
    pub fn clear_positions(&self) {
        self.lock().partitions.clear();
    }

    /// `partition=value` pairs, space-separated.
    fn listed(&self, value: impl Fn(&Position) -> Option<i64>) -> String {
        let inner = self.lock();
        let pairs = inner.partitions.iter().filter_map(|(p, pos)| value(pos).map(|v| format!("{p}={v}")));
        pairs.collect::<Vec<_>>().join(" ")
    }

    fn lag(pos: &Position) -> Option<i64> {
        Some((pos.end? - pos.next?).max(0))
    }

    /// The figures shown for the source, in display order.
    pub fn figures(&self) -> Vec<(&'static str, Figure)> {
        let total_lag: i64 = self.lock().partitions.values().filter_map(Self::lag).sum();
        vec![
            ("kafka", Figure::Text(self.state().to_string())),
            ("kafka_offsets", Figure::Text(self.listed(|p| p.next))),
            ("kafka_lag", Figure::Int(total_lag)),
            ("kafka_partition_lag", Figure::Text(self.listed(Self::lag))),
            ("kafka_applied", Figure::Int(MappingStats::get(&self.applied) as i64)),
            ("kafka_dead_lettered", Figure::Int(MappingStats::get(&self.dead_lettered) as i64)),
            ("kafka_skipped", Figure::Int(MappingStats::get(&self.skipped) as i64)),
        ]
    }
}

/// The source figures of mapping `mapping` (none when it has no Kafka source).
pub fn figures(rt: &Runtime, mapping: usize) -> Vec<(&'static str, Figure)> {
    of(rt, mapping).map(SourceStatus::figures).unwrap_or_default()
}
