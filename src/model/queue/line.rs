//! The queue's line of rows waiting for a worker, kept in chunks: a single
//! `VecDeque` of a million rows doubles by copying every one of them at once
//! (tens of milliseconds on the main thread); chunks grow one at a time.
//!
//! A row stands in line as the hash of its key, 8 bytes where the key takes 32:
//! `take` finds the row in the pending map by that hash. Two pending rows whose
//! 64-bit hashes are equal (a chance of about 3 in 10^8 with a million rows
//! pending) may then be taken in each other's turn: each still has a place.

use super::row_map::Hashed;
use std::collections::VecDeque;

/// Rows per chunk.
const CHUNK: usize = 4096;

/// A FIFO of rows, with a front for rows put back.
#[derive(Default)]
pub(super) struct Line {
    chunks: VecDeque<VecDeque<Hashed>>,
    len: usize,
}

impl Line {
    pub(super) fn push_back(&mut self, row: Hashed) {
        if self.chunks.back().is_none_or(|c| c.len() >= CHUNK) {
            self.chunks.push_back(VecDeque::with_capacity(CHUNK));
        }
        if let Some(chunk) = self.chunks.back_mut() {
            chunk.push_back(row);
            self.len += 1;
        }
    }

    pub(super) fn push_front(&mut self, row: Hashed) {
        if self.chunks.front().is_none_or(|c| c.len() >= CHUNK) {
            self.chunks.push_front(VecDeque::with_capacity(CHUNK));
        }
        if let Some(chunk) = self.chunks.front_mut() {
            chunk.push_front(row);
            self.len += 1;
        }
    }

    pub(super) fn pop_front(&mut self) -> Option<Hashed> {
        let chunk = self.chunks.front_mut()?;
        let row = chunk.pop_front();
        if chunk.is_empty() {
            self.chunks.pop_front();
        }
        if row.is_some() {
            self.len -= 1;
        }
        row
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(super) fn clear(&mut self) {
        self.chunks.clear();
        self.len = 0;
    }

    /// Gives back the room of chunks a drained line no longer needs.
    pub(super) fn shrink(&mut self) {
        self.chunks.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::queue::RowKey;

    fn row(i: usize) -> Hashed {
        Hashed::of(&RowKey { mapping: 0, id: i.to_string().into() })
    }

    #[test]
    fn keeps_its_order_across_chunks() {
        let mut line = Line::default();
        for i in 0..3 * CHUNK {
            line.push_back(row(i));
        }
        line.push_front(row(usize::MAX));
        assert_eq!(line.len(), 3 * CHUNK + 1);
        assert_eq!(line.pop_front(), Some(row(usize::MAX)));
        for i in 0..3 * CHUNK {
            assert_eq!(line.pop_front(), Some(row(i)));
        }
        assert!(line.is_empty() && line.pop_front().is_none());
    }
}
