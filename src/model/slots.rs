//! The cluster slots this node serves, read from its own line of `CLUSTER NODES`:
//! the slots it owns, and those it is moving out (`[slot->-node]`, MIGRATING) or
//! in (`[slot-<-node]`, IMPORTING). Pure: the Redis side (`redis/cluster.rs`)
//! feeds it the text and asks it about slots.

/// Number of hash slots in a Redis Cluster.
pub const SLOTS: usize = 16384;

/// The cluster slot of a key, as Redis computes it: CRC16 (XMODEM) of the key,
/// or of its hash tag (the bytes between the first `{` and the first `}` after
/// it, when there are any), modulo 16384.
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|b| *b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        rest.iter().position(|b| *b == b'}').filter(|close| *close > 0).map(|close| &rest[..close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(key)) % SLOTS as u16
}

/// A set of slots, one bit each.
#[derive(Clone, PartialEq, Eq)]
struct SlotSet([u64; SLOTS / 64]);

impl Default for SlotSet {
    fn default() -> Self {
        SlotSet([0; SLOTS / 64])
    }
}

impl SlotSet {
    fn insert(&mut self, slot: u16) {
        if let Some(word) = self.0.get_mut(usize::from(slot) / 64) {
            *word |= 1 << (slot % 64);
        }
    }

    fn contains(&self, slot: u16) -> bool {
        self.0.get(usize::from(slot) / 64).is_some_and(|word| word & (1 << (slot % 64)) != 0)
    }

    fn count(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }
}

/// Where a slot stands for this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState {
    /// Owned, and not being moved: the node reads and writes its keys freely.
    Stable,
    /// Owned, and being moved to another node (MIGRATING): its keys leave one
    /// `MIGRATE` at a time; a missing key may already be on the other node.
    Leaving,
    /// Being moved here (IMPORTING): not ours until the move ends.
    Arriving,
    /// Another node's slot.
    Elsewhere,
}

/// The slots of one node; see the module docs.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SlotTable {
    owned: SlotSet,
    leaving: SlotSet,
    arriving: SlotSet,
}

impl SlotTable {
    /// The table of the node whose `CLUSTER NODES` line carries the `myself`
    /// flag; an empty table when there is none (a node not in a cluster yet).
    pub fn from_cluster_nodes(text: &str) -> SlotTable {
        let mut table = SlotTable::default();
        let mine =
            text.lines().find(|line| line.split(' ').nth(2).is_some_and(|f| f.split(',').any(|f| f == "myself")));
        // Fields: id addr flags master ping pong epoch link-state slot...
        for token in mine.into_iter().flat_map(|line| line.split(' ').skip(8)) {
            table.add_token(token);
        }
        table
    }

    fn add_token(&mut self, token: &str) {
        if let Some(open) = token.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            if let Some((slot, _)) = open.split_once("->-") {
                if let Ok(slot) = slot.parse() {
                    self.leaving.insert(slot);
                }
            } else if let Some((slot, _)) = open.split_once("-<-") {
                if let Ok(slot) = slot.parse() {
                    self.arriving.insert(slot);
                }
            }
            return;
        }
        let (first, last) = token.split_once('-').unwrap_or((token, token));
        if let (Ok(first), Ok(last)) = (first.parse::<u16>(), last.parse::<u16>()) {
            for slot in first..=last.min(SLOTS as u16 - 1) {
                self.owned.insert(slot);
            }
        }
    }

    /// Where `slot` stands.
    pub fn state(&self, slot: u16) -> SlotState {
        match (self.owned.contains(slot), self.leaving.contains(slot), self.arriving.contains(slot)) {
            (true, false, _) => SlotState::Stable,
            (true, true, _) => SlotState::Leaving,
            (false, _, true) => SlotState::Arriving,
            (false, _, false) => SlotState::Elsewhere,
        }
    }

    /// The lowest slot owned and not being moved, if any.
    pub fn first_stable(&self) -> Option<u16> {
        (0..SLOTS as u16).find(|slot| self.state(*slot) == SlotState::Stable)
    }

    /// The slots owned (being moved out or not), lowest first.
    pub fn owned(&self) -> impl Iterator<Item = u16> + '_ {
        (0..SLOTS as u16).filter(|slot| self.owned.contains(*slot))
    }

    /// Number of slots owned.
    pub fn owned_count(&self) -> usize {
        self.owned.count()
    }

    /// The owned slots as ranges (`0-5460,10923`), then the ones being moved
    /// (`leaving:5461`, `arriving:12`), for `SYNC.STATUS`.
    pub fn describe(&self) -> String {
        let ranges = |set: &SlotSet| {
            let mut out: Vec<String> = Vec::new();
            let mut slot = 0usize;
            while slot < SLOTS {
                if !set.contains(slot as u16) {
                    slot += 1;
                    continue;
                }
                let first = slot;
                while slot + 1 < SLOTS && set.contains(slot as u16 + 1) {
                    slot += 1;
                }
                out.push(if first == slot { first.to_string() } else { format!("{first}-{slot}") });
                slot += 1;
            }
            out.join(",")
        };
        let mut text = ranges(&self.owned);
        for (name, set) in [("leaving", &self.leaving), ("arriving", &self.arriving)] {
            if set.count() > 0 {
                text.push_str(&format!(" {name}:{}", ranges(set)));
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_slots_match_redis() {
        // Values from `CLUSTER KEYSLOT` on Redis.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"123456789"), 12739);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"), "an empty tag hashes the whole key");
        assert_ne!(key_slot(b"foo{}{bar}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b"__{users:42}"), key_slot(b"users:42"));
    }

    const NODES: &str = "\
07c3 127.0.0.1:30002@40002 master - 0 1426238316232 2 connected 5461-10922 [5460-<-e7d1]
e7d1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460 12000 [5460->-07c3] [16383-<-07c3]
67ed 127.0.0.1:30004@40004 slave e7d1 0 1426238317741 1 connected
";

    #[test]
    fn the_myself_line_gives_owned_leaving_and_arriving_slots() {
        let table = SlotTable::from_cluster_nodes(NODES);
        assert_eq!(table.state(0), SlotState::Stable);
        assert_eq!(table.state(5459), SlotState::Stable);
        assert_eq!(table.state(5460), SlotState::Leaving);
        assert_eq!(table.state(5461), SlotState::Elsewhere, "another node's range");
        assert_eq!(table.state(12000), SlotState::Stable);
        assert_eq!(table.state(16383), SlotState::Arriving);
        assert_eq!(table.owned_count(), 5462);
        assert_eq!(table.first_stable(), Some(0));
        assert_eq!(table.describe(), "0-5460,12000 leaving:5460 arriving:16383");
        let owned: Vec<u16> = table.owned().collect();
        assert_eq!(
            (owned.len(), owned[0], owned[5460], owned[5461]),
            (5462, 0, 5460, 12000),
            "leaving counts, arriving not"
        );
    }

    #[test]
    fn a_replica_or_a_lone_node_owns_nothing() {
        let replica = NODES.replace("myself,master", "master").replace("slave e7d1", "myself,slave e7d1");
        let table = SlotTable::from_cluster_nodes(&replica);
        assert_eq!(table.owned_count(), 0);
        assert_eq!(table.first_stable(), None);
        assert_eq!(SlotTable::from_cluster_nodes("").state(3), SlotState::Elsewhere);
    }
}
