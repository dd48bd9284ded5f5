//! One journal log's storage: its records in a boxed slice that keeps room to
//! grow; `mod.rs` holds the logs.

/// A log's records, after a u32 of how many bytes of them are in use, in one
/// boxed slice (16 bytes in the entry where a `Vec` takes 24). Exact when made
/// (most logs hold one record and never grow); an append that does not fit
/// grows it to half again what it needs, so a row written over and over
/// copies its log O(1) times per write amortized, not at every write (which
/// was ~5% of a routed HSET's time: the allocator moves a slice that changes
/// size class).
pub(super) struct Log(Box<[u8]>);

/// Bytes of a [`Log`]'s length header.
const HEADER: usize = 4;

impl Log {
    pub(super) fn new(bytes: &[u8]) -> Log {
        let mut out = Vec::with_capacity(HEADER + bytes.len());
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
        Log(out.into_boxed_slice())
    }

    pub(super) fn len(&self) -> usize {
        self.0.get(..HEADER).and_then(|h| h.try_into().ok()).map_or(0, u32::from_le_bytes) as usize
    }

    pub(super) fn bytes(&self) -> &[u8] {
        self.0.get(HEADER..HEADER + self.len()).unwrap_or_default()
    }

    pub(super) fn append(&mut self, more: &[u8]) {
        let used = HEADER + self.len();
        let needed = used + more.len();
        if needed <= self.0.len() {
            self.0[used..needed].copy_from_slice(more);
        } else {
            let room = needed + needed / 2;
            let mut grown = Vec::with_capacity(room);
            grown.extend_from_slice(&self.0[..used]);
            grown.extend_from_slice(more);
            // In full, so that the box keeps the room (a boxed slice is its length).
            grown.resize(room, 0);
            self.0 = grown.into_boxed_slice();
        }
        self.0[..HEADER].copy_from_slice(&((needed - HEADER) as u32).to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_grows_with_room_and_appends_in_place_when_they_fit() {
        let mut log = Log::new(b"ab");
        assert_eq!(log.0.len(), HEADER + 2, "a new log has no room");
        log.append(b"c");
        assert!(log.0.len() > HEADER + 3, "a grown one has");
        let room = log.0.len();
        log.append(b"d");
        assert_eq!((log.0.len(), log.bytes()), (room, &b"abcd"[..]), "an append that fits stays in place");
    }
}
