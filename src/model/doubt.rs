//! Changes whose first part may be in Postgres already: after a crash or a
//! promotion, a row's journal log can hold records that a batch wrote and
//! committed just before, when nothing had cleared them yet. The batch marked the
//! log before committing (its commit marker and the length of the log it wrote),
//! so the recovered change carries a [`Doubt`] per mark; once a worker learns
//! which markers committed, the increments of the committed prefix are taken out
//! of the change (sets and removals are idempotent and stay). Pure.

use crate::model::change::{Change, Delta, FieldChange, Fields};
use std::collections::HashSet;

/// One mark on a recovered log: a batch that may have committed its prefix.
#[derive(Debug, Clone, PartialEq)]
pub struct Doubt {
    /// The batch's commit marker.
    pub marker: i64,
    /// The length of the log prefix that batch wrote.
    pub prefix: usize,
    /// The increments of that prefix, coalesced: field → delta.
    pub increments: Vec<(Vec<u8>, Delta)>,
}

/// The increments a coalesced change adds (its fields that are still increments).
pub fn increments_of(fields: &Fields) -> Vec<(Vec<u8>, Delta)> {
    fields
        .iter()
        .filter_map(|(name, change)| match change {
            FieldChange::Add { delta, .. } => Some((name.clone(), *delta)),
            _ => None,
        })
        .collect()
}

/// `change` without what Postgres already holds: the increments of the longest
/// prefix whose marker is `committed` are taken out of the fields that are
/// still increments (a field set since is written whole, and stays).
pub fn without_committed(change: &Change, doubts: &[Doubt], committed: &HashSet<i64>) -> Change {
    let mut out = change.clone();
    let Some(done) = doubts.iter().filter(|d| committed.contains(&d.marker)).max_by_key(|d| d.prefix) else {
        return out;
    };
    for (name, landed) in &done.increments {
        if let Some(FieldChange::Add { delta, .. }) = out.fields.get_mut(name) {
            *delta = delta.minus(*landed);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::change::{RowOp, Write};

    fn change(fields: Vec<(&str, FieldChange)>) -> Change {
        let fields = fields.into_iter().map(|(f, c)| (f.as_bytes().to_vec(), c)).collect();
        Change::new(Write { op: RowOp::Upsert, fields, acks: Vec::new() }, 1)
    }

    fn add(d: i128) -> FieldChange {
        FieldChange::Add { delta: Delta::Int(d), redis_after: Vec::new() }
    }

    #[test]
    fn the_committed_prefix_is_taken_out_of_increments_only() {
        let queued = change(vec![("n", add(8)), ("name", FieldChange::Set(b"x".to_vec())), ("m", add(1))]);
        let doubts = vec![
            Doubt { marker: 1, prefix: 10, increments: vec![(b"n".to_vec(), Delta::Int(5))] },
            Doubt {
                marker: 2,
                prefix: 20,
                increments: vec![(b"n".to_vec(), Delta::Int(7)), (b"name".to_vec(), Delta::Int(1))],
            },
        ];
        let none = without_committed(&queued, &doubts, &HashSet::new());
        assert_eq!(none, queued, "nothing committed: all of it goes");
        let first = without_committed(&queued, &doubts, &HashSet::from([1]));
        assert!(matches!(first.fields.get(b"n"), Some(FieldChange::Add { delta: Delta::Int(3), .. })));
        assert_eq!(first.fields.get(b"name"), Some(&FieldChange::Set(b"x".to_vec())), "a set stays");
        let both = without_committed(&queued, &doubts, &HashSet::from([1, 2]));
        assert!(matches!(both.fields.get(b"n"), Some(FieldChange::Add { delta: Delta::Int(1), .. })), "longest prefix");
        assert!(matches!(both.fields.get(b"m"), Some(FieldChange::Add { delta: Delta::Int(1), .. })));
    }

    #[test]
    fn only_fields_still_incremented_count() {
        let fields: Fields = vec![(b"a".to_vec(), add(2)), (b"b".to_vec(), FieldChange::Remove)].into_iter().collect();
        assert_eq!(increments_of(&fields), vec![(b"a".to_vec(), Delta::Int(2))]);
    }
}
