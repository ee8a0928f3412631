//! The maps shared with the daemon, pinned by name under `/sys/fs/bpf/fastpath/`.

use crate::{forward::CachedHop, sip::LastLocal};
use aya_ebpf::{
    macros::map,
    maps::{Array, DevMapHash, HashMap, PerCpuArray},
};
use fastpath_common::{
    Counter, RouteKey, Window,
    maps::{
        Config, DEFAULT_MAX_ROUTES, LocalAddr, MAX_EGRESS, MAX_LOCAL_ADDRS, MAX_PEERS,
        PeerCounters, PeerValue, RouteValue,
    },
    route_index::{Bucket, MAP_FLAGS, bucket_bits, buckets},
};

/// Registered numbers → peer. The daemon is the only writer.
#[map]
pub(crate) static ROUTES: HashMap<RouteKey, RouteValue> = HashMap::pinned(DEFAULT_MAX_ROUTES, 0);

/// The routes of `ROUTES` in buckets the program reads without a call (see
/// `fastpath_common::route_index`), 2^`INDEX_BITS` of them: the loader sizes both from the
/// route capacity. Mappable, so that the daemon changes a slot with one atomic store.
#[map]
pub(crate) static ROUTE_INDEX: Array<Bucket> =
    Array::pinned(buckets(bucket_bits(DEFAULT_MAX_ROUTES)), MAP_FLAGS);

/// `ROUTE_INDEX`'s size; a read-only global (`.rodata`), so the verifier sees the value
/// the loader wrote.
#[unsafe(no_mangle)]
static INDEX_BITS: u32 = bucket_bits(DEFAULT_MAX_ROUTES);

/// The size the loader gave `ROUTE_INDEX`, as log2 of its buckets.
#[inline(always)]
pub(crate) fn index_bits() -> u32 {
    // A volatile read: the compiler must not fold the default in.
    unsafe { core::ptr::read_volatile(&INDEX_BITS) }
}

/// Peer id → address and health.
#[map]
pub(crate) static PEERS: Array<PeerValue> = Array::pinned(MAX_PEERS, 0);

/// The gateway's own addresses, kept by the daemon (see `Config::flags`).
#[map]
pub(crate) static LOCAL_ADDRS: HashMap<LocalAddr, u8> = HashMap::pinned(MAX_LOCAL_ADDRS, 0);

/// Per CPU: the last local destination found (see `sip::addressed_to_us`).
#[map]
pub(crate) static LAST_LOCAL: PerCpuArray<LastLocal> = PerCpuArray::with_max_entries(1, 0);

/// One slot: the SIP ports and flags.
#[map]
pub(crate) static CONFIG: Array<Config> = Array::pinned(1, 0);

/// Interfaces the fast path may redirect to, keyed by ifindex.
#[map]
pub(crate) static EGRESS: DevMapHash = DevMapHash::pinned(MAX_EGRESS, 0);

#[map]
pub(crate) static STATS: PerCpuArray<u64> = PerCpuArray::pinned(Counter::COUNT, 0);

/// Packets and bytes sent to each peer, by peer id.
#[map]
pub(crate) static PEER_STATS: PerCpuArray<PeerCounters> = PerCpuArray::pinned(MAX_PEERS, 0);

/// Per-CPU FIB answers by peer id (see `forward::CachedHop`); rebuilt by a new program.
#[map]
pub(crate) static NEXT_HOPS: PerCpuArray<CachedHop> = PerCpuArray::with_max_entries(MAX_PEERS, 0);

/// Per-CPU copy of the start of the UDP payload, where the classifier reads it.
#[map]
pub(crate) static SCAN_WINDOW: PerCpuArray<Window> = PerCpuArray::with_max_entries(1, 0);
