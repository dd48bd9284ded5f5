//! Unit tests of the queue: coalescing, batches, requeue, snapshots.

use super::*;
use crate::change::{FieldChange, RowOp};

fn row(id: &str) -> RowKey {
    RowKey { mapping: 0, id: id.into() }
}

fn write(op: RowOp, acks: &[&str]) -> Write {
    Write { op, fields: Default::default(), acks: acks.iter().map(|a| a.to_string()).collect() }
}

/// Pushes a write whose journal record is small.
fn push(q: &Queue, row: RowKey, write: Write) -> Pushed {
    q.push(row, write, Journaled::Fresh { bytes: 10 })
}

fn upsert() -> Write {
    write(RowOp::Upsert, &[])
}

const NOW: Duration = Duration::ZERO;
const ALL: &dyn Fn(usize) -> bool = &|_| true;

fn take(q: &Queue) -> Vec<(RowKey, Entry)> {
    q.take_batch(10, usize::MAX, NOW, NOW, ALL)
}

#[test]
fn writes_to_one_row_coalesce() {
    let q = Queue::default();
    let first = push(&q, row("1"), upsert());
    let second = push(&q, row("1"), write(RowOp::Upsert, &["ack"]));
    assert_eq!(second.compaction, None, "two small records are not worth rewriting");
    let batch = take(&q);
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].1.change.version, second.version);
    assert_eq!(batch[0].1.records.ids, vec![first.version, second.version]);
}

#[test]
fn a_row_in_flight_is_not_taken_twice() {
    let q = Queue::default();
    push(&q, row("1"), upsert());
    let first = take(&q);
    push(&q, row("1"), upsert());
    push(&q, row("2"), upsert());
    let second = take(&q);
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].0, row("2"));
    q.complete([&first[0].0]);
    let third = take(&q);
    assert_eq!(third[0].0, row("1"));
}

#[test]
fn rows_of_a_mapping_that_is_not_ready_wait_their_turn() {
    let q = Queue::default();
    push(&q, RowKey { mapping: 1, id: "1".into() }, upsert());
    push(&q, row("2"), upsert());
    let batch = q.take_batch(10, usize::MAX, NOW, NOW, &|m| m == 0);
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].0, row("2"));
    assert_eq!(take(&q)[0].0.mapping, 1);
}

#[test]
fn requeued_rows_keep_newer_writes_on_top() {
    let q = Queue::default();
    push(&q, row("1"), write(RowOp::Upsert, &["a"]));
    let batch = take(&q);
    push(&q, row("1"), write(RowOp::Delete, &["b"]));
    assert_eq!(q.unsettled_up_to(1), 1);
    assert_eq!(q.unsettled_up_to(2), 2);
    q.requeue(batch);
    assert_eq!(q.unsettled_up_to(2), 1, "one row, one change");
    let again = take(&q);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].1.change.op, RowOp::Delete);
    assert_eq!(again[0].1.change.acks, vec!["a".to_string(), "b".to_string()]);
    assert_eq!(again[0].1.change.first_version, 1);
    q.complete([&again[0].0]);
    assert_eq!(q.oldest_unsettled(), None);
}

#[test]
fn a_write_during_a_flight_keeps_its_own_record() {
    let q = Queue::default();
    let gone = push(&q, row("1"), write(RowOp::Delete, &["gone"]));
    let flying = take(&q);
    assert_eq!(flying[0].1.records.ids, vec![gone.version]);
    let back = push(&q, row("1"), write(RowOp::Upsert, &["back"]));
    q.complete([&flying[0].0]);
    let next = take(&q);
    assert_eq!(next[0].1.records.ids, vec![back.version], "settling the delete leaves the newer record");
}

#[test]
fn requeued_rows_keep_every_record() {
    let q = Queue::default();
    let a = push(&q, row("1"), upsert());
    let batch = take(&q);
    let b = push(&q, row("1"), upsert());
    q.requeue(batch);
    assert_eq!(take(&q)[0].1.records.ids, vec![a.version, b.version]);
}

#[test]
fn records_of_a_hot_row_are_rewritten_as_one_when_they_outgrow_its_change() {
    let q = Queue::default();
    let one_field = || Write {
        op: RowOp::Upsert,
        fields: [(b"f".to_vec(), FieldChange::Set(b"v".to_vec()))].into_iter().collect(),
        acks: Vec::new(),
    };
    let mut ids = Vec::new();
    let compaction = loop {
        let pushed = q.push(row("1"), one_field(), Journaled::Fresh { bytes: 40 });
        ids.push(pushed.version);
        if let Some(c) = pushed.compaction {
            break c;
        }
        assert!(ids.len() < 100, "never compacted");
    };
    let last = *ids.last().expect("pushed");
    assert_eq!(compaction.replaced, ids[..ids.len() - 1].to_vec());
    assert_eq!(compaction.change.fields.len(), 1);
    assert_eq!(take(&q)[0].1.records.ids, vec![last]);
}

#[test]
fn recovered_records_keep_their_ids_and_versions_move_past_them() {
    let q = Queue::default();
    q.advance_versions(1_000);
    q.push(row("1"), upsert(), Journaled::Recovered { id: 700, bytes: 10 });
    let fresh = push(&q, row("1"), upsert());
    assert!(fresh.version > 1_000);
    assert_eq!(take(&q)[0].1.records.ids, vec![700, fresh.version]);
}

#[test]
fn snapshots_see_rows_changed_after_them() {
    let q = Queue::default();
    push(&q, row("1"), upsert());
    let batch = take(&q);
    q.complete([&batch[0].0]);
    let snapshot = q.snapshot();
    assert!(!snapshot.redis_is_newer(&row("1")), "settled before the snapshot");
    push(&q, row("1"), upsert());
    let batch = take(&q);
    q.complete([&batch[0].0]);
    assert!(snapshot.redis_is_newer(&row("1")), "changed after the snapshot, even though settled");
    drop(snapshot);
    assert!(!q.snapshot().redis_is_newer(&row("1")));
}

#[test]
fn a_row_that_commits_while_a_reader_reads_counts_as_newer() {
    let q = Queue::default();
    push(&q, row("1"), upsert());
    let batch = take(&q);
    let snapshot = q.snapshot();
    // The commit may land after the reader's read: its row must not be
    // overwritten with what the reader saw.
    q.complete([&batch[0].0]);
    assert!(snapshot.redis_is_newer(&row("1")));
}

#[test]
fn backlog_counts_pending_and_in_flight_rows_per_mapping() {
    let q = Queue::default();
    push(&q, row("1"), upsert());
    push(&q, row("2"), upsert());
    push(&q, row("2"), upsert());
    push(&q, RowKey { mapping: 1, id: "1".into() }, upsert());
    let b = q.backlog(0);
    assert_eq!((b.pending, b.in_flight), (2, 0));
    assert!(b.oldest.is_some());
    let batch = q.take_batch(1, usize::MAX, NOW, NOW, &|m| m == 0);
    let b = q.backlog(0);
    assert_eq!((b.pending, b.in_flight), (1, 1));
    q.requeue(batch);
    assert_eq!(q.backlog(0).pending, 2);
    let batch = q.take_batch(10, usize::MAX, NOW, NOW, &|m| m == 0);
    q.complete(batch.iter().map(|(r, _)| r));
    assert_eq!(q.backlog(0), Backlog::default());
    assert_eq!(q.backlog(1).pending, 1);
    q.drop_pending();
    assert_eq!(q.backlog(1), Backlog::default());
}

#[test]
fn dropped_rows_are_settled_for_waiters() {
    let q = Queue::default();
    push(&q, row("1"), upsert());
    push(&q, row("2"), upsert());
    q.drop_pending();
    assert_eq!(q.oldest_unsettled(), None);
}

#[test]
fn batches_are_bounded_in_bytes_and_a_big_row_goes_alone() {
    let q = Queue::default();
    let sized = |n: usize| {
        let fields = [(b"f".to_vec(), FieldChange::Set(vec![b'x'; n]))].into_iter().collect();
        Write { op: RowOp::Upsert, fields, acks: Vec::new() }
    };
    push(&q, row("1"), sized(39));
    push(&q, row("2"), sized(39));
    push(&q, row("3"), sized(999));
    push(&q, row("4"), sized(9));
    let ids = |batch: Vec<(RowKey, Entry)>| batch.into_iter().map(|(r, _)| r.id).collect::<Vec<_>>();
    assert_eq!(ids(q.take_batch(10, 100, NOW, NOW, ALL)), ["1", "2"]);
    assert_eq!(ids(q.take_batch(10, 100, NOW, NOW, ALL)), ["3"], "over the bound on its own");
    assert_eq!(ids(q.take_batch(10, 100, NOW, NOW, ALL)), ["4"]);
}
