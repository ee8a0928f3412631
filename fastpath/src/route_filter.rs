//! `ROUTE_FILTER`, the Bloom filter the XDP program reads before `ROUTES`, and the
//! daemon's copy of it (see `fastpath_common::maps::filter_probes`).
//!
//! The daemon is the map's only writer and keeps one rule: a key's bits are in the map
//! before the key is in `ROUTES`, so the program never takes a registered number for an
//! unregistered one. Bits are cleared only by [`RouteFilter::rebuild`], from every key
//! `ROUTES` holds: each word it writes keeps the bits of those keys.

use std::{
    io,
    os::fd::{AsFd, BorrowedFd},
    path::Path,
};

use anyhow::Context;

use fastpath_common::{
    RouteKey,
    maps::{filter_probes, filter_words},
};

use crate::sync::batch;

/// The filter's words as the daemon last wrote them.
pub struct RouteFilter {
    words: Vec<u64>,
    /// 2^`bits_log2` bits: the size the program was loaded with.
    bits_log2: u32,
}

impl RouteFilter {
    /// All bits clear: a map just created, of 2^`bits_log2` bits.
    pub fn empty(bits_log2: u32) -> Self {
        Self {
            words: vec![0; filter_words(bits_log2) as usize],
            bits_log2,
        }
    }

    /// The words `map` holds (a pinned filter an earlier daemon left); its size is the
    /// map's (the loader sizes map and program together, see `xdp::load`).
    pub fn read(map: BorrowedFd<'_>) -> io::Result<Self> {
        let entries = batch::lookup_all::<u32, u64>(map)?;
        // An array map yields every index; its size is a power of two of words.
        let words = u32::try_from(entries.len()).unwrap_or(0);
        if !words.is_power_of_two() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("ROUTE_FILTER has {words} words, not a power of two"),
            ));
        }
        let mut filter = Self::empty(words.trailing_zeros() + 6);
        for (index, word) in entries {
            if let Some(slot) = filter.words.get_mut(index as usize) {
                *slot = word;
            }
        }
        Ok(filter)
    }

    /// The filter a loaded program uses, by its pin (`fastpath status`, `/metrics`).
    pub fn read_pinned(pin_dir: &Path) -> anyhow::Result<Self> {
        let map = crate::maps::open_pinned(pin_dir, fastpath_common::maps::ROUTE_FILTER)?;
        Self::read(map.fd().as_fd()).context("reading ROUTE_FILTER")
    }

    /// The share of bits set.
    pub fn fill(&self) -> f64 {
        let set: u64 = self.words.iter().map(|w| u64::from(w.count_ones())).sum();
        set as f64 / (self.words.len() as f64 * 64.0)
    }

    /// About the share of unregistered numbers that pass the filter and cost a hash-map
    /// lookup: both of a number's bits set by chance, the fill squared.
    pub fn false_positive_rate(&self) -> f64 {
        self.fill().powi(2)
    }

    /// The filter's size in bytes.
    pub fn bytes(&self) -> usize {
        self.words.len() * 8
    }

    /// Sets the bits of `keys`, writing the words that change to `map` in one batch.
    pub fn add(
        &mut self,
        map: BorrowedFd<'_>,
        keys: impl IntoIterator<Item = RouteKey>,
    ) -> io::Result<()> {
        let mut changed = Vec::new();
        for key in keys {
            for (index, mask) in filter_probes(key, self.bits_log2) {
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
        let mut words = vec![0u64; self.words.len()];
        for key in keys {
            for (index, mask) in filter_probes(key, self.bits_log2) {
                words[index as usize] |= mask;
            }
        }
        let changed: Vec<u32> = (0..words.len() as u32)
            .filter(|&i| words[i as usize] != self.words[i as usize])
            .collect();
        self.words = words;
        self.write(map, &changed)
    }

    /// Whether both bits of `key` are set.
    pub fn may_hold(&self, key: RouteKey) -> bool {
        filter_probes(key, self.bits_log2)
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
