//! Unit tests of the logs: ops and totals, marks, the slot index, walks, memory.

use super::*;

#[test]
fn ops_change_one_log_and_the_totals() {
    let mut logs = LogMap::default();
    assert!(logs.apply(Op::Append, b"a", b"1"));
    assert!(logs.apply(Op::Append, b"a", b"2"));
    assert_eq!(logs.get(b"a"), Some(&b"12"[..]));
    assert_eq!(logs.size(), (1, 3));
    logs.apply(Op::Set, b"a", b"345");
    logs.apply(Op::Set, b"b", b"6");
    assert_eq!(logs.get(b"a"), Some(&b"345"[..]));
    assert_eq!(logs.size(), (2, 6));
    assert!(logs.apply(Op::Del, b"a", b""));
    assert!(!logs.apply(Op::Del, b"a", b""), "nothing to delete: nothing to replicate");
    assert_eq!(logs.size(), (1, 2));
}

#[test]
fn the_slot_index_follows_the_logs_and_survives_a_clear() {
    let mut logs = LogMap::default();
    logs.apply(Op::Append, b"users:1", b"1");
    logs.index_slots();
    logs.apply(Op::Set, b"__{users:2}", b"2");
    logs.apply(Op::Append, b"users:2", b"3");
    let in_slot = |logs: &LogMap, key: &[u8]| {
        let mut keys: Vec<Vec<u8>> = logs.keys_in_slot(key_slot(key)).cloned().collect();
        keys.sort();
        keys
    };
    assert_eq!(in_slot(&logs, b"users:1"), vec![b"users:1".to_vec()], "indexed when the index began");
    assert_eq!(in_slot(&logs, b"users:2"), vec![b"__{users:2}".to_vec(), b"users:2".to_vec()]);
    logs.apply(Op::Del, b"users:2", b"");
    assert_eq!(in_slot(&logs, b"users:2"), vec![b"__{users:2}".to_vec()]);
    logs.clear();
    assert!(in_slot(&logs, b"users:1").is_empty());
    logs.apply(Op::Append, b"users:1", b"4");
    assert_eq!(in_slot(&logs, b"users:1"), vec![b"users:1".to_vec()], "still indexing after a clear");
    assert_eq!(LogMap::default().keys_in_slot(key_slot(b"users:1")).count(), 0, "no index outside a cluster");
}

#[test]
fn a_growing_log_keeps_room_and_every_byte() {
    let mut logs = LogMap::default();
    let mut expected = Vec::new();
    for i in 0..200u8 {
        let record = vec![i; usize::from(i % 7)];
        logs.apply(Op::Append, b"hot", &record);
        expected.extend_from_slice(&record);
        assert_eq!(logs.get(b"hot"), Some(&expected[..]));
    }
    assert_eq!(logs.size(), (1, 3 + expected.len()));
    logs.apply(Op::Set, b"hot", b"one");
    assert_eq!(logs.get(b"hot"), Some(&b"one"[..]), "a rewrite is exact again");
}

#[test]
fn marks_live_until_the_log_is_replaced_or_removed() {
    let mut logs = LogMap::default();
    assert!(!logs.apply(Op::Mark, b"a", &mark_bytes(7, 1)), "no log, no mark");
    logs.apply(Op::Append, b"a", b"12");
    assert!(logs.apply(Op::Mark, b"a", &mark_bytes(7, 2)));
    logs.apply(Op::Append, b"a", b"3");
    assert!(logs.apply(Op::Mark, b"a", &mark_bytes(-8, 3)));
    assert_eq!(logs.marks(b"a"), vec![(7, 2), (-8, 3)]);
    logs.apply(Op::Set, b"a", b"4");
    assert!(logs.marks(b"a").is_empty());
    logs.apply(Op::Mark, b"a", &mark_bytes(9, 1));
    logs.apply(Op::Del, b"a", b"");
    assert_eq!(logs.mark_count(), 0);
    assert!(!logs.apply(Op::Mark, b"a", b"short"), "a cut mark is ignored");
}

#[test]
fn a_drained_map_finds_the_logs_left_and_gives_its_memory_back() {
    let mut logs = LogMap::default();
    for i in 0..100_000u32 {
        logs.apply(Op::Set, &i.to_le_bytes(), b"x");
    }
    let capacity = |logs: &LogMap| logs.shards.iter().map(|shard| shard.at.capacity()).sum::<usize>();
    let full = capacity(&logs);
    for i in 10..100_000u32 {
        assert!(logs.apply(Op::Del, &i.to_le_bytes(), b""));
    }
    assert!(capacity(&logs) < full / 3, "{} of {full}", capacity(&logs));
    for i in 0..10u32 {
        assert_eq!(logs.get(&i.to_le_bytes()), Some(&b"x"[..]));
    }
    assert_eq!(logs.size(), (10, 50));
}

/// What the logs hold per pending row of figure 6 (`PGSYNC_MEMORY_ROWS`
/// rows, 200,000 by default: key `items:<id>`, one 60-byte record), printed
/// for `--nocapture`; the budget catches a regression.
#[test]
fn memory_per_pending_row() {
    use crate::model::counting_alloc::per_thread::heap_of;
    let rows: usize = std::env::var("PGSYNC_MEMORY_ROWS").ok().and_then(|n| n.parse().ok()).unwrap_or(200_000);
    let record = [7u8; 60];
    let (logs, bytes) = heap_of(|| {
        let mut logs = LogMap::default();
        (0..rows).for_each(|id| {
            logs.apply(Op::Append, format!("items:{id}").as_bytes(), &record);
        });
        logs
    });
    let per_row = bytes as f64 / rows as f64;
    println!(
        "{rows} logs, bytes per row: {per_row:.1}, of which the records {} (map entry {} B)",
        record.len(),
        std::mem::size_of::<(LogKey, Log)>()
    );
    assert_eq!(logs.size().0, rows);
    assert!(per_row < 150.0, "{per_row:.1} B per log");
}

#[test]
fn a_walk_from_the_end_of_each_shard_misses_no_log_when_others_are_removed() {
    let mut logs = LogMap::default();
    for i in 0..2000u32 {
        logs.apply(Op::Set, &i.to_le_bytes(), b"x");
    }
    let mut seen = std::collections::HashSet::new();
    for shard in (0..SHARDS).rev() {
        let mut position = logs.shard_len(shard);
        while let Some(index) = position.min(logs.shard_len(shard)).checked_sub(1) {
            let key = logs.key_at(shard, index).map(<[u8]>::to_vec).unwrap_or_default();
            seen.insert(key.clone());
            position = index;
            // Each step removes some log, seen or not, as settles do.
            let other = u32::from_le_bytes(key[..4].try_into().unwrap_or_default()) / 2;
            logs.apply(Op::Del, &other.to_le_bytes(), b"");
        }
    }
    for shard in 0..SHARDS {
        for index in 0..logs.shard_len(shard) {
            let key = logs.key_at(shard, index).map(<[u8]>::to_vec).unwrap_or_default();
            assert!(seen.contains(&key), "log {key:?} missed");
            assert!(logs.get(&key).is_some(), "log {key:?} moved and lost");
        }
    }
}
