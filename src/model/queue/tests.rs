//! Unit tests of the queue: coalescing, batches, requeue, snapshots.

use super::*;

fn row(id: &str) -> RowKey {
    RowKey { mapping: 0, id: id.into() }
}

/// Pushes a write whose journal record takes 10 bytes.
fn push(q: &Queue, row: RowKey) -> Pushed {
    q.push(&row, Journaled::Fresh { bytes: 10 })
}

const NOW: Duration = Duration::ZERO;

/// Batches of at most `rows` rows and `bytes` bytes, taken without waiting.
fn limits(rows: usize, bytes: usize) -> BatchLimits {
    BatchLimits { rows, bytes, linger: NOW, idle: NOW }
}
const ALL: &dyn Fn(usize) -> bool = &|_| true;

fn take(q: &Queue) -> Vec<(RowKey, Pending)> {
    q.take_batch(limits(10, usize::MAX), ALL)
}

/// A taken row as a batch holds it (its change as the log would decode).
fn entry(pending: Pending) -> Entry {
    let change = crate::model::journal_log::coalesce(&[], pending.version, pending.first_version);
    Entry { change, since: pending.since, journal_bytes: pending.journal_bytes }
}

fn entries(batch: Vec<(RowKey, Pending)>) -> Vec<(RowKey, Entry)> {
    batch.into_iter().map(|(row, pending)| (row, entry(pending))).collect()
}

#[test]
fn writes_to_one_row_coalesce() {
    let q = Queue::default();
    let first = push(&q, row("1"));
    let second = push(&q, row("1"));
    assert!(!second.rewrite, "two small records are not worth rewriting");
    let batch = take(&q);
    assert_eq!(batch.len(), 1);
    assert_eq!((batch[0].1.first_version, batch[0].1.version), (first.version, second.version));
    assert_eq!(batch[0].1.journal_bytes, 20);
}

#[test]
fn a_row_in_flight_is_not_taken_twice() {
    let q = Queue::default();
    push(&q, row("1"));
    let first = take(&q);
    push(&q, row("1"));
    push(&q, row("2"));
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
    push(&q, RowKey { mapping: 1, id: "1".into() });
    push(&q, row("2"));
    let batch = q.take_batch(limits(10, usize::MAX), &|m| m == 0);
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].0, row("2"));
    assert_eq!(take(&q)[0].0.mapping, 1);
}

#[test]
fn requeued_rows_keep_newer_writes_on_top() {
    let q = Queue::default();
    push(&q, row("1"));
    let batch = take(&q);
    push(&q, row("1"));
    assert_eq!(q.unsettled_up_to(1), 1);
    assert_eq!(q.unsettled_up_to(2), 2);
    q.requeue(entries(batch));
    assert_eq!(q.unsettled_up_to(2), 1, "one row, one change");
    let again = take(&q);
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].1.first_version, again[0].1.version), (1, 2), "the log's older records first");
    q.complete([&again[0].0]);
    assert_eq!(q.oldest_unsettled(), None);
}

#[test]
fn requeued_rows_keep_the_size_of_every_record() {
    let q = Queue::default();
    push(&q, row("1"));
    let batch = take(&q);
    push(&q, row("1"));
    q.requeue(entries(batch));
    assert_eq!(take(&q)[0].1.journal_bytes, 20);
}

#[test]
fn the_log_of_a_hot_row_is_rewritten_as_one_record_when_it_outgrows_it() {
    let q = Queue::default();
    let mut pushed = 0;
    while !q.push(&row("1"), Journaled::Fresh { bytes: 40 }).rewrite {
        pushed += 1;
        assert!(pushed < 100, "never rewritten");
    }
    assert!(pushed > 2, "a few small records are not worth rewriting");
    assert!(q.rewritten(&row("1"), 30));
    assert!(!q.push(&row("1"), Journaled::Fresh { bytes: 40 }).rewrite, "grown from the one record again");
    assert_eq!(take(&q)[0].1.journal_bytes, 70, "the one record and the write after it");
    assert!(!q.rewritten(&row("1"), 30), "in flight: nothing pending to rewrite");
}

#[test]
fn a_row_in_flight_is_never_rewritten() {
    let q = Queue::default();
    push(&q, row("1"));
    let _flying = take(&q);
    for _ in 0..100 {
        let pushed = q.push(&row("1"), Journaled::Fresh { bytes: 40 });
        assert!(!pushed.rewrite, "its log also holds the change in flight");
    }
}

#[test]
fn recovered_logs_are_never_rewritten() {
    let q = Queue::default();
    for _ in 0..100 {
        assert!(!q.push(&row("1"), Journaled::Recovered { bytes: 40 }).rewrite);
    }
}

#[test]
fn snapshots_see_rows_changed_after_them() {
    let q = Queue::default();
    push(&q, row("1"));
    let batch = take(&q);
    q.complete([&batch[0].0]);
    let snapshot = q.snapshot();
    assert!(!snapshot.redis_is_newer(&row("1")), "settled before the snapshot");
    push(&q, row("1"));
    let batch = take(&q);
    q.complete([&batch[0].0]);
    assert!(snapshot.redis_is_newer(&row("1")), "changed after the snapshot, even though settled");
    drop(snapshot);
    assert!(!q.snapshot().redis_is_newer(&row("1")));
}

#[test]
fn a_row_that_commits_while_a_reader_reads_counts_as_newer() {
    let q = Queue::default();
    push(&q, row("1"));
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
    push(&q, row("1"));
    push(&q, row("2"));
    push(&q, row("2"));
    push(&q, RowKey { mapping: 1, id: "1".into() });
    let b = q.backlog(0);
    assert_eq!((b.pending, b.in_flight), (2, 0));
    assert!(b.oldest.is_some());
    let batch = q.take_batch(limits(1, usize::MAX), &|m| m == 0);
    let b = q.backlog(0);
    assert_eq!((b.pending, b.in_flight), (1, 1));
    q.requeue(entries(batch));
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
    push(&q, row("1"));
    push(&q, row("2"));
    q.drop_pending();
    assert_eq!(q.oldest_unsettled(), None);
}

#[test]
fn batches_are_bounded_in_bytes_and_a_big_row_goes_alone() {
    let q = Queue::default();
    let sized = |id: &str, bytes: usize| q.push(&row(id), Journaled::Fresh { bytes });
    sized("1", 64);
    sized("2", 64);
    sized("3", 1024);
    sized("4", 34);
    let ids = |batch: Vec<(RowKey, Pending)>| batch.into_iter().map(|(r, _)| r.id).collect::<Vec<_>>();
    // A row counts the bytes of its records in the log.
    assert_eq!(ids(q.take_batch(limits(10, 130), ALL)), ["1", "2"]);
    assert_eq!(ids(q.take_batch(limits(10, 130), ALL)), ["3"], "over the bound on its own");
    assert_eq!(ids(q.take_batch(limits(10, 130), ALL)), ["4"]);
}

#[test]
fn a_row_in_a_batch_cannot_be_handed_off_and_a_handed_off_row_is_not_taken() {
    let q = Queue::default();
    push(&q, row("1"));
    push(&q, row("2"));
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

/// What the queue holds per pending row of figure 6 (`PGSYNC_MEMORY_ROWS` rows,
/// 200,000 by default), whole and by part, printed for `--nocapture`; the
/// budget catches a regression. The row's records are the journal log's
/// (`model::log_map::tests::memory_per_pending_row`), not the queue's.
#[test]
fn memory_per_pending_row() {
    use crate::model::counting_alloc::per_thread::heap_of;
    let rows: usize = std::env::var("PGSYNC_MEMORY_ROWS").ok().and_then(|n| n.parse().ok()).unwrap_or(200_000);
    let key = |id: usize| RowKey { mapping: 0, id: id.to_string().into() };
    let (queue, total) = heap_of(|| {
        let q = Queue::default();
        for id in 0..rows {
            q.push(&key(id), Journaled::Fresh { bytes: 60 });
        }
        q
    });
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
        "{rows} pending rows, bytes per row: queue {:.1} = pending map {:.1} + line {:.1} + unsettled {:.1} \
         (map entry {} B)",
        per_row(total),
        per_row(total - line - unsettled),
        per_row(line),
        per_row(unsettled),
        std::mem::size_of::<(RowKey, Pending)>(),
    );
    assert_eq!(queue.lock().order.len(), rows);
    assert!(per_row(total) < 150.0, "{:.1} B per pending row", per_row(total));
}
