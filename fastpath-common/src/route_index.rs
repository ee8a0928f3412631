//! `ROUTE_INDEX`: the routes of `ROUTES` in a form the XDP program reads without a call.
//!
//! A hash-map lookup is three or four kernel function calls (hash, bucket walk, key
//! compare), and on CPUs whose kernels mitigate return-stack attacks every return costs
//! several nanoseconds: most of a hit's lookup. An array lookup is inlined by the verifier.
//! So the daemon keeps, beside `ROUTES` (the map of record), an array of buckets, one
//! cache line each, that the program reads first:
//!
//! - a number's key goes through [`mix`], a bijection of `u64`: its low `bits` bits pick
//!   the bucket, the rest (the *tag*) is stored in a slot with the peer id. Bucket and tag
//!   together are the whole mixed key, so a slot that matches *is* the number: no false
//!   positives, no second look in `ROUTES`;
//! - a bucket holds [`SLOTS`] numbers, in its first slots (no empty slot before a used
//!   one, so a lookup stops at the first empty slot); a number that finds its bucket full
//!   stays in
//!   `ROUTES` only, and the bucket's last word marks it overflowed: the program then asks
//!   `ROUTES` for numbers of that bucket it does not find in the slots;
//! - each slot is one `u64`, written by the daemon with one atomic store through a shared
//!   mapping of the array (`BPF_F_MMAPABLE`): the program sees a slot before or after a
//!   change, never half of one.

use crate::{RouteKey, maps::MAX_PEERS};

/// `ROUTE_INDEX`'s map flags: `BPF_F_MMAPABLE` (linux/bpf.h), so that the daemon can map
/// it and change a slot with one atomic store.
pub const MAP_FLAGS: u32 = 1 << 10;

/// Numbers per bucket; the bucket's eighth word is its overflow mark.
pub const SLOTS: usize = 7;
/// One bucket: [`SLOTS`] slots and the overflow mark, 64 bytes (a cache line).
pub type Bucket = [u64; SLOTS + 1];
/// Bits of a slot that hold the peer id (ids are below [`MAX_PEERS`]).
const PEER_BITS: u32 = MAX_PEERS.trailing_zeros();
/// A slot: tag << TAG_SHIFT | peer id << 1 | 1 (0 is an empty slot).
const TAG_SHIFT: u32 = PEER_BITS + 1;
const PEER_MASK: u64 = (1 << PEER_BITS) - 1;
/// Fewest bucket bits: the tag (64 - bits) must fit above the peer id and the used bit.
pub const MIN_BITS: u32 = TAG_SHIFT;
/// Most bucket bits: 2^26 buckets, 4 GiB, for 2^27 routes.
pub const MAX_BITS: u32 = 26;

const _: () = assert!(MAX_PEERS.is_power_of_two());

/// log2 of the bucket count for a capacity of `max_routes`: one bucket per two routes,
/// rounded up to a power of two, so a full table averages two numbers per bucket and a
/// bucket overflows (more than [`SLOTS`]) about once in a thousand.
pub const fn bucket_bits(max_routes: u32) -> u32 {
    let buckets = (max_routes as u64).div_ceil(2);
    // ceil(log2(buckets)); 0 for one bucket.
    let bits = u64::BITS - buckets.saturating_sub(1).leading_zeros();
    if bits < MIN_BITS {
        MIN_BITS
    } else if bits > MAX_BITS {
        MAX_BITS
    } else {
        bits
    }
}

/// Buckets in an index of `bits` bucket bits (the map's `max_entries`).
pub const fn buckets(bits: u32) -> u32 {
    1 << bits
}

/// A bijection of `u64` (the finaliser of SplitMix64: xor-shifts and multiplications by
/// odd constants, each invertible) that spreads sequential numbers over all bits.
#[inline(always)]
pub const fn mix(key: RouteKey) -> u64 {
    let mut x = key.to_bits();
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Where a number lives in an index of `bits` bucket bits: its bucket, and its slot with
/// the peer id left out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Place {
    pub bucket: u32,
    /// The slot's value with peer id 0: tag and used bit.
    tagged: u64,
}

impl Place {
    #[inline(always)]
    pub const fn of(key: RouteKey, bits: u32) -> Self {
        let mixed = mix(key);
        Self {
            bucket: (mixed & ((1 << bits) - 1)) as u32,
            tagged: ((mixed >> bits) << TAG_SHIFT) | 1,
        }
    }

    /// The slot that says this number goes to `peer_id` (below [`MAX_PEERS`]).
    pub const fn slot(self, peer_id: u32) -> u64 {
        self.tagged | ((peer_id as u64 & PEER_MASK) << 1)
    }

    /// Whether `slot` holds this number.
    #[inline(always)]
    pub const fn holds(self, slot: u64) -> bool {
        slot & !(PEER_MASK << 1) == self.tagged
    }
}

/// The peer id in a slot that holds a number.
#[inline(always)]
pub const fn peer_of(slot: u64) -> u32 {
    ((slot >> 1) & PEER_MASK) as u32
}

/// What a bucket says about a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// Registered, to this peer.
    Peer(u32),
    /// Not registered.
    Absent,
    /// Not in the slots of an overflowed bucket: `ROUTES` knows.
    AskRoutes,
}

/// Looks `place` up in `bucket` (the program's and the daemon's one reading of a bucket).
/// The scan stops at the first empty slot: numbers fill a bucket from the front, so a miss
/// reads as many slots as the bucket holds numbers (two on average in a full table), not
/// all seven. A slot emptied under the reader's eyes can only make it stop early, find
/// nothing, and leave the call to the proxy.
#[inline(always)]
pub fn find(bucket: &Bucket, place: Place) -> Found {
    let mut i = 0;
    while i < SLOTS {
        let slot = bucket[i];
        if slot == 0 {
            break;
        }
        if place.holds(slot) {
            return Found::Peer(peer_of(slot));
        }
        i += 1;
    }
    if bucket[SLOTS] != 0 {
        Found::AskRoutes
    } else {
        Found::Absent
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::{collections::HashSet, format, vec::Vec};

    use super::*;
    use crate::normalize_number;

    fn key(n: u64) -> RouteKey {
        normalize_number(format!("1555{n:07}").as_bytes()).unwrap()
    }

    #[test]
    fn a_slot_holds_its_number_and_peer_only() {
        let bits = bucket_bits(1 << 20);
        let keys: Vec<RouteKey> = (0..100_000).map(key).collect();
        let places: HashSet<Place> = keys.iter().map(|&k| Place::of(k, bits)).collect();
        assert_eq!(
            places.len(),
            keys.len(),
            "bucket and tag tell every number apart"
        );
        let a = Place::of(keys[0], bits);
        let b = Place::of(keys[1], bits);
        for peer in [0, 1, 7, MAX_PEERS - 1] {
            let slot = a.slot(peer);
            assert!(slot != 0 && a.holds(slot) && !b.holds(slot));
            assert_eq!(peer_of(slot), peer);
        }
        assert!(!a.holds(0), "an empty slot holds nothing");
    }

    #[test]
    fn find_reads_slots_then_the_overflow_mark() {
        let bits = MIN_BITS;
        let (a, b) = (Place::of(key(1), bits), Place::of(key(2), bits));
        let c = Place::of(key(3), bits);
        let mut bucket: Bucket = [0; SLOTS + 1];
        assert_eq!(find(&bucket, a), Found::Absent);
        bucket[0] = c.slot(1);
        bucket[1] = a.slot(42);
        assert_eq!(find(&bucket, a), Found::Peer(42));
        assert_eq!(find(&bucket, c), Found::Peer(1));
        assert_eq!(find(&bucket, b), Found::Absent);
        bucket[SLOTS] = 1;
        assert_eq!(find(&bucket, a), Found::Peer(42));
        assert_eq!(find(&bucket, b), Found::AskRoutes);
        // Past an empty slot nothing is read: the number is not found (the proxy routes it).
        bucket[0] = 0;
        assert_eq!(find(&bucket, a), Found::AskRoutes);
        bucket[SLOTS] = 0;
        assert_eq!(find(&bucket, a), Found::Absent);
    }

    #[test]
    fn buckets_spread_sequential_numbers() {
        let bits = bucket_bits(1 << 20);
        assert_eq!(bits, 19, "1M routes: 2^19 buckets, 32 MiB");
        let mut load = std::vec![0u8; buckets(bits) as usize];
        for n in 0..1_000_000 {
            let place = Place::of(key(n), bits);
            load[place.bucket as usize] += 1;
        }
        // Two per bucket on average; a clumping hash would overflow many.
        let overflowing = load.iter().filter(|&&l| l as usize > SLOTS).count();
        assert!(overflowing < 2_000, "{overflowing} buckets over {SLOTS}");
    }

    #[test]
    fn bucket_bits_stay_within_bounds() {
        assert_eq!(bucket_bits(1), MIN_BITS);
        assert_eq!(bucket_bits(1 << 14), MIN_BITS);
        assert_eq!(bucket_bits((1 << 14) + 2), MIN_BITS + 1);
        assert_eq!(bucket_bits(10_000_000), 23);
        assert_eq!(bucket_bits(u32::MAX), MAX_BITS);
    }
}
