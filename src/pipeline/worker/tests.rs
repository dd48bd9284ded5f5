//! The worker's logic against in-memory fakes of the queue, apply and Postgres.

use super::sync::{step, BatchRow, PostgresSide, RedisSide};
use crate::model::backoff::SharedBackoff;
use crate::model::backoff::FIRST_RETRY_DELAY;
use crate::model::queue::{Outcome, Rejected};
use crate::pg::error::{Error, ErrorKind};
use crate::pg::writer::RowOutcome;
use std::cell::RefCell;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq)]
struct Row(usize, &'static str);

impl BatchRow for Row {
    fn mapping(&self) -> usize {
        self.0
    }
}

/// A queue whose rows are taken in one batch, and a record of what became of them.
#[derive(Default)]
struct FakeRedis {
    queued: RefCell<Vec<Row>>,
    requeued: RefCell<Vec<(usize, Vec<&'static str>, ErrorKind)>>,
    applied: RefCell<Vec<(&'static str, Outcome)>>,
    released: RefCell<Vec<(&'static str, String)>>,
    apply_panics: bool,
}

impl FakeRedis {
    fn with(rows: &[Row]) -> FakeRedis {
        FakeRedis { queued: RefCell::new(rows.to_vec()), ..Default::default() }
    }

    fn applied(&self) -> Vec<(&'static str, Outcome)> {
        self.applied.borrow().clone()
    }
}

impl RedisSide for FakeRedis {
    type Row = Row;

    fn take(&self, ready: &dyn Fn(usize) -> bool) -> Vec<Row> {
        let (taken, left) = self.queued.take().into_iter().partition(|r| ready(r.0));
        *self.queued.borrow_mut() = left;
        taken
    }

    fn requeue(&self, mapping: usize, rows: Vec<Row>, failure: &Error) {
        self.requeued.borrow_mut().push((mapping, rows.iter().map(|r| r.1).collect(), failure.kind));
        self.queued.borrow_mut().extend(rows);
    }

    fn apply(&self, rows: &[Row], outcomes: &[RowOutcome]) {
        assert_eq!(rows.len(), outcomes.len());
        if self.apply_panics {
            panic!("apply broke");
        }
        let mut applied = self.applied.borrow_mut();
        for (row, outcome) in rows.iter().zip(outcomes) {
            applied.push((row.1, outcome.as_ref().map(|_| ()).map_err(|e| Rejected(e.message.clone()))));
        }
    }

    fn release(&self, rows: &[Row], why: &str) {
        self.released.borrow_mut().extend(rows.iter().map(|r| (r.1, why.to_string())));
    }
}

/// Postgres as a list of rules: which mappings are broken, which rows it refuses
/// (in a multi-row statement, or one by one as the real writer reports them),
/// which rows make the writer panic, and from which write on it is down.
#[derive(Default)]
struct FakePostgres {
    down_from_write: Option<usize>,
    broken_schema: Vec<usize>,
    refused_in_batch: Vec<&'static str>,
    refused_per_row: Vec<&'static str>,
    panics_on: Vec<&'static str>,
    writes: usize,
    releases: usize,
    committed: Vec<&'static str>,
}

impl PostgresSide<Row> for FakePostgres {
    fn write(&mut self, mapping: usize, rows: &[Row]) -> Result<Vec<RowOutcome>, Error> {
        self.writes += 1;
        if self.down_from_write.is_some_and(|n| self.writes >= n) {
            return Err(Error::new(ErrorKind::Unavailable, "connection refused"));
        }
        if self.broken_schema.contains(&mapping) {
            return Err(Error::new(ErrorKind::Schema, "relation does not exist"));
        }
        if let Some(row) = rows.iter().find(|r| self.panics_on.contains(&r.1)) {
            panic!("injected on {}", row.1);
        }
        if rows.iter().any(|r| self.refused_in_batch.contains(&r.1)) {
            return Err(Error::new(ErrorKind::Rejected, "violates check constraint"));
        }
        let outcomes: Vec<RowOutcome> = rows
            .iter()
            .map(|r| match self.refused_per_row.contains(&r.1) {
                true => Err(Error::new(ErrorKind::Rejected, format!("{} refused", r.1))),
                false => Ok(Default::default()),
            })
            .collect();
        self.committed.extend(rows.iter().zip(&outcomes).filter(|(_, o)| o.is_ok()).map(|(r, _)| r.1));
        Ok(outcomes)
    }

    fn release(&mut self) {
        self.releases += 1;
    }
}

fn backoffs(n: usize) -> Vec<SharedBackoff> {
    (0..n).map(|_| SharedBackoff::new(FIRST_RETRY_DELAY)).collect()
}

fn ok(id: &'static str) -> (&'static str, Outcome) {
    (id, Ok(()))
}

#[test]
fn rows_go_back_while_postgres_is_down_and_their_mapping_backs_off() {
    let redis = FakeRedis::with(&[Row(0, "a"), Row(1, "b"), Row(0, "c")]);
    let mut pg = FakePostgres { down_from_write: Some(1), ..Default::default() };
    let backoffs = backoffs(2);
    let before = Instant::now();
    step(&redis, &mut pg, &backoffs);
    assert_eq!(
        *redis.requeued.borrow(),
        [(0, vec!["a", "c"], ErrorKind::Unavailable), (1, vec!["b"], ErrorKind::Unavailable)]
    );
    assert!(redis.applied().is_empty());
    assert!(!backoffs[0].ready(before) && !backoffs[1].ready(before));
    assert!(pg.releases >= 2, "the failed connection is given up");
}

#[test]
fn a_broken_mapping_waits_and_the_others_go_on() {
    let redis = FakeRedis::with(&[Row(0, "a"), Row(1, "b")]);
    let mut pg = FakePostgres { broken_schema: vec![1], ..Default::default() };
    let backoffs = backoffs(2);
    let before = Instant::now();
    step(&redis, &mut pg, &backoffs);
    assert_eq!(redis.applied(), [ok("a")]);
    assert_eq!(*redis.requeued.borrow(), [(1, vec!["b"], ErrorKind::Schema)]);
    assert!(backoffs[0].ready(before));
    assert!(!backoffs[1].ready(before));
}

#[test]
fn a_mapping_backing_off_is_not_taken() {
    let redis = FakeRedis::with(&[Row(0, "a"), Row(1, "b")]);
    let mut pg = FakePostgres::default();
    let backoffs = backoffs(2);
    backoffs[1].failed(Instant::now() + Duration::from_secs(3600), Duration::from_secs(1));
    step(&redis, &mut pg, &backoffs);
    assert_eq!(pg.committed, ["a"]);
    assert_eq!(*redis.queued.borrow(), [Row(1, "b")]);
}

/// A time the last failure's wait is long over.
fn long_ago() -> Instant {
    Instant::now().checked_sub(Duration::from_secs(10)).expect("the clock has run 10 s")
}

#[test]
fn another_failure_doubles_the_wait() {
    let redis = FakeRedis::with(&[Row(0, "a")]);
    let mut pg = FakePostgres { down_from_write: Some(1), ..Default::default() };
    let backoffs = backoffs(1);
    backoffs[0].failed(long_ago(), Duration::from_secs(5));
    let before = Instant::now();
    step(&redis, &mut pg, &backoffs);
    assert_eq!(pg.writes, 1);
    assert!(!backoffs[0].ready(before + 2 * FIRST_RETRY_DELAY - Duration::from_millis(1)));
}

#[test]
fn a_success_resets_the_wait() {
    let redis = FakeRedis::with(&[Row(0, "a")]);
    let mut pg = FakePostgres::default();
    let backoffs = backoffs(1);
    backoffs[0].failed(long_ago(), Duration::from_secs(5));
    step(&redis, &mut pg, &backoffs);
    assert_eq!(pg.committed, ["a"]);
    let now = Instant::now();
    backoffs[0].failed(now, Duration::from_secs(5));
    assert!(backoffs[0].ready(now + FIRST_RETRY_DELAY), "the next failure waits the first delay again");
}

#[test]
fn outcomes_reach_apply_row_by_row() {
    let redis = FakeRedis::with(&[Row(0, "a"), Row(0, "b"), Row(0, "c")]);
    let mut pg = FakePostgres { refused_per_row: vec!["b"], ..Default::default() };
    step(&redis, &mut pg, &backoffs(1));
    assert_eq!(redis.applied(), [ok("a"), ("b", Err(Rejected("b refused".into()))), ok("c")]);
    assert!(redis.requeued.borrow().is_empty());
    assert_eq!(pg.writes, 1);
}

#[test]
fn a_rejected_batch_is_written_row_by_row_and_only_the_bad_row_is_dead_lettered() {
    let redis = FakeRedis::with(&[Row(0, "a"), Row(0, "bad"), Row(0, "c")]);
    let mut pg = FakePostgres { refused_in_batch: vec!["bad"], ..Default::default() };
    let backoffs = backoffs(1);
    let before = Instant::now();
    step(&redis, &mut pg, &backoffs);
    assert_eq!(redis.applied(), [ok("a"), ("bad", Err(Rejected("violates check constraint".into()))), ok("c")]);
    assert_eq!(pg.committed, ["a", "c"]);
    assert!(redis.requeued.borrow().is_empty());
    assert!(backoffs[0].ready(before), "a dead letter is no reason to wait");
}

#[test]
fn a_row_that_makes_the_writer_panic_is_dead_lettered_alone() {
    let redis = FakeRedis::with(&[Row(0, "a"), Row(0, "boom"), Row(0, "c")]);
    let mut pg = FakePostgres { panics_on: vec!["boom"], ..Default::default() };
    step(&redis, &mut pg, &backoffs(1));
    let applied = redis.applied();
    assert_eq!(applied.len(), 3);
    assert_eq!((applied[0].clone(), applied[2].clone()), (ok("a"), ok("c")));
    assert_eq!(applied[1].0, "boom");
    let why = applied[1].1.clone().unwrap_err().0;
    assert!(why.starts_with("pgsync bug: the worker panicked writing this row: injected on boom"), "{why}");
    assert_eq!(pg.committed, ["a", "c"]);
}

#[test]
fn postgres_going_down_while_rows_are_isolated_puts_them_all_back() {
    let redis = FakeRedis::with(&[Row(0, "a"), Row(0, "boom"), Row(0, "c")]);
    let mut pg = FakePostgres { panics_on: vec!["boom"], down_from_write: Some(2), ..Default::default() };
    step(&redis, &mut pg, &backoffs(1));
    assert!(redis.applied().is_empty());
    assert_eq!(*redis.requeued.borrow(), [(0, vec!["a", "boom", "c"], ErrorKind::Unavailable)]);
}

#[test]
fn a_panic_while_applying_releases_the_rows_instead_of_writing_them_again() {
    let redis = FakeRedis { apply_panics: true, ..FakeRedis::with(&[Row(0, "a"), Row(0, "b")]) };
    let mut pg = FakePostgres::default();
    step(&redis, &mut pg, &backoffs(1));
    let released = redis.released.borrow();
    assert_eq!(released.iter().map(|r| r.0).collect::<Vec<_>>(), ["a", "b"]);
    assert!(released[0].1.starts_with("pgsync bug while applying a batch to Redis: apply broke"));
    assert!(redis.requeued.borrow().is_empty());
    assert_eq!(pg.writes, 1);
}
