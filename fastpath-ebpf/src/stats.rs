//! Per-CPU outcome counters; the daemon sums them across CPUs.

use fastpath_common::Counter;

use crate::maps::{PEER_STATS, STATS};

#[inline(always)]
pub(crate) fn count(counter: Counter) {
    if cfg!(feature = "ablate-outcome-stats") {
        return;
    }
    if let Some(slot) = STATS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, so no other writer; the pointer comes from the map.
        unsafe { *slot += 1 };
    }
}

/// One frame of `bytes` sent to peer `peer_id`.
#[inline(always)]
pub(crate) fn count_peer(peer_id: u32, bytes: usize) {
    if cfg!(feature = "ablate-peer-stats") {
        return;
    }
    if let Some(slot) = PEER_STATS.get_ptr_mut(peer_id) {
        // SAFETY: per-CPU slot, so no other writer; the pointer comes from the map.
        let slot = unsafe { &mut *slot };
        slot.packets += 1;
        slot.bytes += bytes as u64;
    }
}
