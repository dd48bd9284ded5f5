//! Unit tests of the queue: coalescing, batches, requeue, snapshots.

use super::*;
use crate::model::change::{FieldChange, RowOp};

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

/// Batches of at most `rows` rows and `bytes` bytes, taken without waiting.
fn limits(rows: usize, bytes: usize) -> BatchLimits {
    BatchLimits { rows, bytes, linger: NOW, idle: NOW }
}
const ALL: &dyn Fn(usize) -> bool = &|_| true;

fn take(q: &Queue) -> Vec<(RowKey, Entry)> {
    q.take_batch(limits(10, usize::MAX), ALL)
}

#[test]
fn writes_to_one_row_coalesce() {
    let q = Queue::default();
    push(&q, row("1"), upsert());
    let second = push(&q, row("1"), write(RowOp::Upsert, &["ack"]));
    assert_eq!(second.compaction, None, "two small records are not worth rewriting");
    let batch = take(&q);
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].1.change.version, second.version);
    assert_eq!(batch[0].1.journal_bytes, 20);
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
    let batch = q.take_batch(limits(10, usize::MAX), &|m| m == 0);
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
fn requeued_rows_keep_the_size_of_every_record() {
    let q = Queue::default();
    push(&q, row("1"), upsert());
    let batch = take(&q);
    push(&q, row("1"), upsert());
    q.requeue(batch);
    assert_eq!(take(&q)[0].1.journal_bytes, 20);
}

fn one_field() -> Write {
    Write {
        op: RowOp::Upsert,
        fields: [(b"f".to_vec(), FieldChange::Set(b"v".to_vec()))].into_iter().collect(),
        acks: Vec::new(),
    }
}

#[test]
fn records_of_a_hot_row_are_rewritten_as_one_when_they_outgrow_its_change() {
    let q = Queue::default();
    let mut pushed = 0;
    let compaction = loop {
        pushed += 1;
        if let Some(c) = q.push(row("1"), one_field(), Journaled::Fresh { bytes: 40 }).compaction {
            break c;
        }
        assert!(pushed < 100, "never compacted");
    };
    assert!(pushed > 2, "a few small records are not worth rewriting");
    assert_eq!(compaction.change.fields.len(), 1);
    assert_eq!(take(&q)[0].1.journal_bytes, 2, "the one record left");
}

#[test]
fn a_row_in_flight_is_never_compacted() {
    let q = Queue::default();
    push(&q, row("1"), one_field());
    let _flying = take(&q);
    for _ in 0..100 {
        let pushed = q.push(row("1"), one_field(), Journaled::Fresh { bytes: 40 });
        assert_eq!(pushed.compaction, None, "its journal also holds the change in flight");
    }
}

#[test]
fn recovered_records_are_never_compacted() {
    let q = Queue::default();
    for _ in 0..100 {
        let pushed = q.push(row("1"), one_field(), Journaled::Recovered { bytes: 40 });
        assert_eq!(pushed.compaction, None);
    }
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
    let batch = q.take_batch(limits(1, usize::MAX), &|m| m == 0);
    let b = q.backlog(0);
    assert_eq!((b.pending, b.in_flight), (1, 1));
    q.requeue(batch);
    assert_eq!(q.backlog(0).pending, 2);
    let batch = q.take_batch(limits(10, usize::MAX), &|m| m == 0);
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
    // A row counts its journal record: 25 bytes of framing and headers, and the value.
    assert_eq!(ids(q.take_batch(limits(10, 130), ALL)), ["1", "2"]);
    assert_eq!(ids(q.take_batch(limits(10, 130), ALL)), ["3"], "over the bound on its own");
    assert_eq!(ids(q.take_batch(limits(10, 130), ALL)), ["4"]);
}

#[test]
fn a_row_in_a_batch_cannot_be_handed_off_and_a_handed_off_row_is_not_taken() {
    let q = Queue::default();
    push(&q, row("1"), upsert());
    push(&q, row("2"), upsert());
    let batch = q.take_batch(limits(1, usize::MAX), ALL);
    assert_eq!(batch[0].0, row("1"));
    assert!(matches!(q.hand_off(&row("1")), HandOff::InFlight));
    let HandOff::Taken(Some(entry)) = q.hand_off(&row("2")) else { panic!("row 2 was queued") };
    assert!(take(&q).is_empty(), "a handed-off row is no longer queued");
    assert_eq!(q.unsettled_up_to(u64::MAX), 1, "only the row in flight is unsettled");
    q.take_back(row("2"), entry);
    assert_eq!(take(&q).len(), 1, "taken back, it is queued again");
    assert!(matches!(q.hand_off(&row("3")), HandOff::Taken(None)));
}

#[test]
fn a_rejected_change_goes_under_the_write_queued_since() {
    let q = Queue::default();
    let set = |f: &str, v: &str| (f.as_bytes().to_vec(), FieldChange::Set(v.as_bytes().to_vec()));
    let fields = |pairs: Vec<(Vec<u8>, FieldChange)>| pairs.into_iter().collect();
    push(
        &q,
        row("1"),
        Write { op: RowOp::Upsert, fields: fields(vec![set("a", "old"), set("b", "1")]), acks: vec!["x".into()] },
    );
    let batch = take(&q);
    let rejected = batch[0].1.change.clone();
    assert_eq!(q.carry_under(&row("1"), &rejected, |_| 0), None, "nothing queued since");
    let newer =
        push(&q, row("1"), Write { op: RowOp::Upsert, fields: fields(vec![set("a", "new")]), acks: vec!["y".into()] });
    let merged = q.carry_under(&row("1"), &rejected, |_| 77).expect("queued");
    assert_eq!(merged.fields.get(b"a"), Some(&FieldChange::Set(b"new".to_vec())), "the newer value wins");
    assert_eq!(merged.fields.get(b"b"), Some(&FieldChange::Set(b"1".to_vec())), "the rejected field rides along");
    assert_eq!(merged.acks, ["y"], "the rejected change's acks were answered already");
    assert_eq!((merged.first_version, merged.version), (newer.version, newer.version));
    q.complete([&batch[0].0]);
    assert_eq!(q.unsettled_up_to(newer.version), 1, "the queued change is still waited for");
    let taken = take(&q);
    assert_eq!((&taken[0].1.change, taken[0].1.journal_bytes), (&merged, 77), "the log holds the merged change");
}

/// The write of `HSET items:<id> name item-<id> score <id> tag tag-<id % 97>`,
/// figure 6's row, as capture makes it.
fn figure_six_write(id: usize) -> Write {
    let fields = [("name", format!("item-{id}")), ("score", id.to_string()), ("tag", format!("tag-{}", id % 97))]
        .into_iter()
        .map(|(name, value)| (name.as_bytes().to_vec(), FieldChange::Set(value.into_bytes())))
        .collect();
    Write { op: RowOp::Upsert, fields, acks: Vec::new() }
}

/// What the queue holds per pending row of figure 6 (`PGSYNC_MEMORY_ROWS` rows,
/// 200,000 by default), whole and by part, printed for `--nocapture`; the
/// budget catches a regression. The writes' decoded fields are freed by the
/// push (the queue keeps their encoded records), so their heap is added back.
#[test]
fn memory_per_pending_row() {
    use crate::model::counting_alloc::per_thread::heap_of;
    let rows: usize = std::env::var("PGSYNC_MEMORY_ROWS").ok().and_then(|n| n.parse().ok()).unwrap_or(200_000);
    let key = |id: usize| RowKey { mapping: 0, id: id.to_string().into() };
    let (writes, fields) = heap_of(|| (0..rows).map(figure_six_write).collect::<Vec<_>>());
    let fields = fields - (writes.capacity() * std::mem::size_of::<Write>()) as isize;
    let (queue, total) = heap_of(|| {
        let q = Queue::default();
        for (id, write) in writes.into_iter().enumerate() {
            q.push(key(id), write, Journaled::Fresh { bytes: 60 });
        }
        q
    });
    // The writes' vector and their decoded fields were freed inside.
    let total = total + (rows * std::mem::size_of::<Write>()) as isize + fields;
    let (_, line) = heap_of(|| {
        let mut line = Line::default();
        (0..rows).for_each(|id| line.push_back(row_map::Hashed::of(&key(id))));
        line
    });
    let (_, unsettled) = heap_of(|| {
        let mut unsettled = Unsettled::default();
        (1..=rows as u64).for_each(|version| unsettled.add(version));
        unsettled
    });
    let per_row = |bytes: isize| bytes as f64 / rows as f64;
    println!(
        "{rows} pending rows, bytes per row: queue {:.1} = pending map and records {:.1} + line {:.1} + \
         unsettled {:.1} (map entry {} B); the writes' decoded fields, freed by the push: {:.1}",
        per_row(total),
        per_row(total - line - unsettled),
        per_row(line),
        per_row(unsettled),
        std::mem::size_of::<(RowKey, pending::Pending)>(),
        per_row(fields),
    );
    assert_eq!(queue.lock().order.len(), rows);
    assert!(per_row(total) < 260.0, "{:.1} B per pending row", per_row(total));
}
