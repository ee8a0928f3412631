//! The daemon's side of `ROUTE_INDEX`, the routes the XDP program reads without a call
//! (see `fastpath_common::route_index`).
//!
//! The array is mapped into the daemon (`BPF_F_MMAPABLE`) and each slot written with one
//! atomic store, so the program reads a slot as it was before or after a change. Every
//! writer of `ROUTES` keeps the index with it, in an order that never lets the program
//! forward a number `ROUTES` no longer routes there: a route is written to `ROUTES`, then
//! to the index; it leaves the index, then `ROUTES`. A number whose bucket is full lives in
//! `ROUTES` only, and its bucket's overflow mark sends the program there.

use std::{
    io,
    os::fd::{AsFd, AsRawFd},
    path::Path,
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use anyhow::Context;
use aya::maps::MapData;
use fastpath_common::{
    RouteKey,
    route_index::{Bucket, Found, Place, SLOTS, find},
};

/// `ROUTE_INDEX` mapped into this process; the daemon is its only writer.
pub struct RouteIndex {
    words: NonNull<AtomicU64>,
    buckets: usize,
    /// log2 of `buckets`: the size the program was loaded with.
    bits: u32,
}

// SAFETY: the mapping is plain shared memory accessed only through atomics; writers take
// `&mut self`, so one thread writes at a time.
unsafe impl Send for RouteIndex {}
unsafe impl Sync for RouteIndex {}

/// How full the index is, for `fastpath status` and `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Occupancy {
    /// Numbers in the slots.
    pub numbers: u64,
    /// Buckets marked overflowed: their other numbers cost a `ROUTES` lookup.
    pub overflowed: u64,
    pub bytes: u64,
}

impl RouteIndex {
    /// Maps `map`, an array of [`Bucket`]s created with `BPF_F_MMAPABLE`.
    pub fn map(map: &MapData) -> io::Result<Self> {
        let entries = map.info().map_err(io::Error::other)?.max_entries();
        if !entries.is_power_of_two() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("ROUTE_INDEX has {entries} buckets, not a power of two"),
            ));
        }
        let buckets = entries as usize;
        let len = buckets * size_of::<Bucket>();
        // SAFETY: a shared mapping of the map's values (page-aligned, `len` bytes, which
        // the kernel checks against the map's size); unmapped in `Drop`.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            words: NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap gave null"))?,
            buckets,
            bits: entries.trailing_zeros(),
        })
    }

    /// The index a loaded program uses, by its pin (`fastpath status`, `/metrics`).
    pub fn map_pinned(pin_dir: &Path) -> anyhow::Result<Self> {
        let map = crate::maps::open_pinned(pin_dir, fastpath_common::maps::ROUTE_INDEX)?;
        Self::map(&map).context("mapping ROUTE_INDEX")
    }

    fn word(&self, index: usize) -> &AtomicU64 {
        assert!(index < self.buckets * (SLOTS + 1));
        // SAFETY: in bounds (checked), aligned (page-aligned base, u64 words), and only
        // ever accessed atomically.
        unsafe { self.words.add(index).as_ref() }
    }

    /// Bucket `index` as it is now, word by word.
    fn load(&self, index: u32) -> Bucket {
        let start = index as usize * (SLOTS + 1);
        let mut bucket = Bucket::default();
        for (i, value) in bucket.iter_mut().enumerate() {
            *value = self.word(start + i).load(Ordering::Acquire);
        }
        bucket
    }

    /// What the program would find for `key`.
    pub fn find(&self, key: RouteKey) -> Found {
        let place = Place::of(key, self.bits);
        find(&self.load(place.bucket), place)
    }

    /// Routes `key` to `peer_id` (already in `ROUTES`). Returns false when its bucket is
    /// full: then the key is served from `ROUTES`, which the bucket's mark now says.
    pub fn insert(&mut self, key: RouteKey, peer_id: u32) -> bool {
        let place = Place::of(key, self.bits);
        let mut bucket = self.load(place.bucket);
        let used = used(&bucket);
        let fits = match bucket[..used].iter().position(|&s| place.holds(s)) {
            Some(i) => {
                bucket[i] = place.slot(peer_id);
                true
            }
            None if used < SLOTS => {
                bucket[used] = place.slot(peer_id);
                true
            }
            None => {
                bucket[SLOTS] = 1;
                false
            }
        };
        self.store(place.bucket, &bucket);
        fits
    }

    /// Takes `key` out (before it leaves `ROUTES`); the numbers after it move up a slot.
    /// A bucket's overflow mark stays until the next [`RouteIndex::rebuild`]: it only
    /// costs lookups.
    pub fn remove(&mut self, key: RouteKey) {
        let place = Place::of(key, self.bits);
        let old = self.load(place.bucket);
        let mut bucket = Bucket::default();
        let kept = old[..used(&old)].iter().filter(|&&s| !place.holds(s));
        for (slot, &value) in bucket.iter_mut().zip(kept) {
            *slot = value;
        }
        bucket[SLOTS] = old[SLOTS];
        self.store(place.bucket, &bucket);
    }

    /// Makes the index hold exactly `routes` (all of `ROUTES`): stale slots and marks go.
    pub fn rebuild(&mut self, routes: impl IntoIterator<Item = (RouteKey, u32)>) {
        let mut wanted = vec![Bucket::default(); self.buckets];
        for (key, peer_id) in routes {
            let place = Place::of(key, self.bits);
            let bucket = &mut wanted[place.bucket as usize];
            match used(bucket) {
                SLOTS => bucket[SLOTS] = 1,
                free => bucket[free] = place.slot(peer_id),
            }
        }
        for (index, bucket) in wanted.iter().enumerate() {
            self.store(index as u32, bucket);
        }
    }

    /// Writes the words of bucket `index` that differ from `bucket`, one atomic store each,
    /// front to back. Every slot value the program can read on the way is a number with
    /// its peer before or after the change; at worst a lookup meets a slot emptied or
    /// moved under it, finds nothing, and leaves the call to the proxy. It never finds a
    /// number at a peer it no longer has.
    fn store(&mut self, index: u32, bucket: &Bucket) {
        let start = index as usize * (SLOTS + 1);
        for (i, &value) in bucket.iter().enumerate() {
            let word = self.word(start + i);
            if word.load(Ordering::Relaxed) != value {
                word.store(value, Ordering::Release);
            }
        }
    }

    pub fn occupancy(&self) -> Occupancy {
        let mut occupancy = Occupancy {
            bytes: (self.buckets * size_of::<Bucket>()) as u64,
            ..Occupancy::default()
        };
        for index in 0..self.buckets as u32 {
            let bucket = self.load(index);
            occupancy.numbers += used(&bucket) as u64;
            occupancy.overflowed += u64::from(bucket[SLOTS] != 0);
        }
        occupancy
    }
}

/// Slots in use: numbers fill a bucket from the front.
fn used(bucket: &Bucket) -> usize {
    bucket[..SLOTS]
        .iter()
        .position(|&s| s == 0)
        .unwrap_or(SLOTS)
}

impl Drop for RouteIndex {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, of this length, unmapped once.
        unsafe {
            libc::munmap(
                self.words.as_ptr().cast(),
                self.buckets * size_of::<Bucket>(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use aya::maps::{Array, IterableMap};
    use fastpath_common::{normalize_number, route_index::MIN_BITS};

    use super::*;

    fn key(n: u64) -> RouteKey {
        normalize_number(format!("1555{n:07}").as_bytes()).unwrap()
    }

    fn index() -> RouteIndex {
        let map: Array<MapData, Bucket> =
            Array::create(1 << MIN_BITS, fastpath_common::route_index::MAP_FLAGS)
                .expect("needs root");
        RouteIndex::map(map.map()).unwrap()
    }

    /// Keys that share one bucket: more than a bucket holds.
    fn crowd(bits: u32) -> Vec<RouteKey> {
        let first = Place::of(key(0), bits).bucket;
        (0..)
            .map(key)
            .filter(|&k| Place::of(k, bits).bucket == first)
            .take(SLOTS + 2)
            .collect()
    }

    #[test]
    fn insert_move_remove_and_overflow() {
        let mut index = index();
        assert_eq!(index.find(key(1)), Found::Absent);
        assert!(index.insert(key(1), 3));
        assert_eq!(index.find(key(1)), Found::Peer(3));
        assert!(index.insert(key(1), 4), "a new peer replaces the slot");
        assert_eq!(index.find(key(1)), Found::Peer(4));
        assert_eq!(index.occupancy().numbers, 1);
        index.remove(key(1));
        assert_eq!(index.find(key(1)), Found::Absent);
        assert_eq!(index.occupancy().numbers, 0);

        let crowd = crowd(MIN_BITS);
        for (peer, &k) in crowd.iter().enumerate() {
            assert_eq!(index.insert(k, peer as u32), peer < SLOTS, "{peer}");
        }
        for (peer, &k) in crowd.iter().enumerate() {
            let expected = if peer < SLOTS {
                Found::Peer(peer as u32)
            } else {
                Found::AskRoutes
            };
            assert_eq!(index.find(k), expected);
        }
        assert_eq!(index.occupancy().overflowed, 1);
        // Out of the middle: the last number moves into the freed slot and stays found.
        index.remove(crowd[2]);
        assert_eq!(index.find(crowd[2]), Found::AskRoutes, "the mark stays");
        for (peer, &k) in crowd
            .iter()
            .enumerate()
            .take(SLOTS)
            .filter(|&(p, _)| p != 2)
        {
            assert_eq!(index.find(k), Found::Peer(peer as u32));
        }
        assert_eq!(index.occupancy().numbers, SLOTS as u64 - 1);
        // A rebuild from the routes now wanted clears the mark and the stale slots.
        index.rebuild(crowd[..2].iter().map(|&k| (k, 9)));
        assert_eq!(index.find(crowd[0]), Found::Peer(9));
        assert_eq!(index.find(crowd[2]), Found::Absent);
        let occupancy = index.occupancy();
        assert_eq!((occupancy.numbers, occupancy.overflowed), (2, 0));
    }
}
