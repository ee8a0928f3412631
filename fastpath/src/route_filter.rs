//! `ROUTE_FILTER`, the Bloom filter the XDP program reads before `ROUTES`, and the
//! daemon's copy of it (see `fastpath_common::maps::filter_probes`).
//!
//! The daemon is the map's only writer and keeps one rule: a key's bits are in the map
//! before the key is in `ROUTES`, so the program never takes a registered number for an
//! unregistered one. Bits are cleared only by [`RouteFilter::rebuild`], from every key
//! `ROUTES` holds: each word it writes keeps the bits of those keys.

use std::{io, os::fd::BorrowedFd};

use fastpath_common::{
    RouteKey,
    maps::{FILTER_WORDS, filter_probes},
};

use crate::sync::batch;

/// The filter's words as the daemon last wrote them.
pub struct RouteFilter {
    words: Vec<u64>,
}

impl RouteFilter {
    /// All bits clear: a map just created.
    pub fn empty() -> Self {
        Self {
            words: vec![0; FILTER_WORDS as usize],
        }
    }

    /// The words `map` holds (a pinned filter an earlier daemon left).
    pub fn read(map: BorrowedFd<'_>) -> io::Result<Self> {
        let mut filter = Self::empty();
        for (index, word) in batch::lookup_all::<u32, u64>(map)? {
            if let Some(slot) = filter.words.get_mut(index as usize) {
                *slot = word;
            }
        }
        Ok(filter)
    }

    /// Sets the bits of `keys`, writing the words that change to `map` in one batch.
    pub fn add(
        &mut self,
        map: BorrowedFd<'_>,
        keys: impl IntoIterator<Item = RouteKey>,
    ) -> io::Result<()> {
        let mut changed = Vec::new();
        for key in keys {
            for (index, mask) in filter_probes(key) {
                let word = &mut self.words[index as usize];
                if *word & mask == 0 {
                    *word |= mask;
                    changed.push(index);
                }
            }
        }
        changed.sort_unstable();
        changed.dedup();
        self.write(map, &changed)
    }

    /// Makes the filter hold the bits of `keys` and no others; `keys` must include every
    /// key in `ROUTES` (stale bits of removed keys go).
    pub fn rebuild(
        &mut self,
        map: BorrowedFd<'_>,
        keys: impl IntoIterator<Item = RouteKey>,
    ) -> io::Result<()> {
        let mut words = vec![0u64; FILTER_WORDS as usize];
        for key in keys {
            for (index, mask) in filter_probes(key) {
                words[index as usize] |= mask;
            }
        }
        let changed: Vec<u32> = (0..FILTER_WORDS)
            .filter(|&i| words[i as usize] != self.words[i as usize])
            .collect();
        self.words = words;
        self.write(map, &changed)
    }

    /// Whether both bits of `key` are set.
    pub fn may_hold(&self, key: RouteKey) -> bool {
        filter_probes(key)
            .iter()
            .all(|&(index, mask)| self.words[index as usize] & mask != 0)
    }

    fn write(&self, map: BorrowedFd<'_>, indexes: &[u32]) -> io::Result<()> {
        if indexes.is_empty() {
            return Ok(());
        }
        let values: Vec<u64> = indexes.iter().map(|&i| self.words[i as usize]).collect();
        batch::update(map, indexes, &values)
    }
}
