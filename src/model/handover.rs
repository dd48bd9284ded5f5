//! What a reload hands the listener: the changes announced while it ran, and the
//! catch-ups it made unnecessary.
//!
//! A reload of a listening mapping whose triggers are in place LISTENs on the
//! mapping's channel before it reads the table, and stops listening once it has
//! written it. Every change committed before its read is in the rows it wrote;
//! every change after its LISTEN is announced to it, and the listener applies
//! those rows again after it (so a row read before a change is never left
//! stale). A mapping that joined the listener before that reload stopped
//! listening therefore needs no catch-up of its own, as long as the reload had
//! FLUSH (which removes the keys of rows deleted while nobody listened): the
//! listener then skips it instead of reading the whole table a second time.

use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A notification's payload (see `pg::triggers`).
#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Payload {
    Upsert { id: String },
    Delete { id: String },
    Truncate,
}

/// What one round heard on a channel: whether the table was truncated, and the
/// rows announced after the last TRUNCATE (earlier ones are gone with it).
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Announced {
    /// Whether the table was truncated (the rows announced before it are gone).
    pub(crate) truncated: bool,
    /// The ids of the rows announced (after the last TRUNCATE).
    pub(crate) ids: BTreeSet<String>,
}

impl Announced {
    /// Adds what was heard after `self`: a TRUNCATE among it supersedes the rows
    /// announced before it.
    pub(crate) fn absorb(&mut self, later: Announced) {
        if later.truncated {
            *self = later;
        } else {
            self.ids.extend(later.ids);
        }
    }
}

/// Adds one notification to `out`, by channel; a malformed payload is refused.
pub(crate) fn hear(
    out: &mut BTreeMap<String, Announced>,
    channel: &str,
    payload: &str,
) -> Result<(), serde_json::Error> {
    match serde_json::from_str::<Payload>(payload)? {
        Payload::Upsert { id } | Payload::Delete { id } => {
            out.entry(channel.to_string()).or_default().ids.insert(id);
        }
        Payload::Truncate => {
            let announced = out.entry(channel.to_string()).or_default();
            announced.truncated = true;
            announced.ids.clear();
        }
    }
    Ok(())
}

/// Shared by the reloads and the listener; one per module.
pub struct Handover {
    /// Orders joins and reload ends: each [`Handover::now`] is later than the last.
    clock: AtomicU64,
    /// Per mapping: when the last reload with FLUSH that listened to it stopped
    /// listening (0: none yet).
    covered: Vec<AtomicU64>,
    /// Changes announced to reloads and not yet taken by the listener, by channel.
    heard: Mutex<BTreeMap<String, Announced>>,
}

impl Handover {
    /// A handover for `mappings` mappings, with nothing to hand over yet.
    pub fn new(mappings: usize) -> Handover {
        Handover {
            clock: AtomicU64::new(0),
            covered: (0..mappings).map(|_| AtomicU64::new(0)).collect(),
            heard: Mutex::new(BTreeMap::new()),
        }
    }

    /// A point in time, later than every point given before: the listener takes
    /// one after its LISTEN on a mapping's channel, a reload one before its
    /// UNLISTEN.
    pub fn now(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Gives the listener what a reload heard (before [`Handover::cover`], so a
    /// catch-up skipped for that reload finds its changes waiting).
    pub(crate) fn hand_over(&self, heard: BTreeMap<String, Announced>) {
        let mut waiting = self.heard.lock().unwrap_or_else(|p| p.into_inner());
        for (channel, announced) in heard {
            waiting.entry(channel).or_default().absorb(announced);
        }
    }

    /// Takes every change handed over so far.
    pub(crate) fn take(&self) -> BTreeMap<String, Announced> {
        std::mem::take(&mut *self.heard.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Records that a reload with FLUSH of `mapping`, listening since before its
    /// read, stopped listening after `stopped` (from [`Handover::now`]).
    pub fn cover(&self, mapping: usize, stopped: u64) {
        if let Some(covered) = self.covered.get(mapping) {
            covered.fetch_max(stopped, Ordering::SeqCst);
        }
    }

    /// Whether a reload made the catch-up of `mapping`, which joined the listener
    /// at `joined` (from [`Handover::now`]), unnecessary: it was still listening then.
    pub fn covers(&self, mapping: usize, joined: u64) -> bool {
        self.covered.get(mapping).is_some_and(|covered| covered.load(Ordering::SeqCst) > joined)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_reload_still_listening_when_the_mapping_joined_covers_its_catch_up() {
        let handover = Handover::new(2);
        let before = handover.now();
        handover.cover(0, handover.now());
        let joined = handover.now();
        assert!(!handover.covers(0, joined), "the reload stopped listening before the join");
        assert!(handover.covers(0, before), "the reload stopped listening after the join");
        assert!(!handover.covers(1, before), "another mapping's reload covers nothing");
        handover.cover(0, handover.now());
        assert!(handover.covers(0, joined));
        assert!(!handover.covers(7, 0), "an unknown mapping is never covered");
    }

    fn heard(notifications: &[(&str, &str)]) -> BTreeMap<String, Announced> {
        let mut out = BTreeMap::new();
        for (channel, payload) in notifications {
            hear(&mut out, channel, payload).unwrap();
        }
        out
    }

    #[test]
    fn what_reloads_heard_adds_up_until_the_listener_takes_it_and_a_truncate_supersedes_earlier_rows() {
        let handover = Handover::new(1);
        handover.hand_over(heard(&[("a", r#"{"op":"upsert","id":"1"}"#), ("b", r#"{"op":"delete","id":"9"}"#)]));
        handover.hand_over(heard(&[("a", r#"{"op":"truncate"}"#), ("a", r#"{"op":"upsert","id":"2"}"#)]));
        handover.hand_over(heard(&[("b", r#"{"op":"upsert","id":"8"}"#)]));
        let taken = handover.take();
        let expected = heard(&[
            ("a", r#"{"op":"truncate"}"#),
            ("a", r#"{"op":"upsert","id":"2"}"#),
            ("b", r#"{"op":"delete","id":"9"}"#),
            ("b", r#"{"op":"upsert","id":"8"}"#),
        ]);
        assert_eq!(taken, expected);
        assert!(handover.take().is_empty(), "taken once");
    }
}
