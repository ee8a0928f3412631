//! Per-CPU outcome counters; the daemon sums them across CPUs.

use fastpath_common::Counter;

use crate::maps::STATS;

#[inline(always)]
pub(crate) fn count(counter: Counter) {
    if let Some(slot) = STATS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, so no other writer; the pointer comes from the map.
        unsafe { *slot += 1 };
    }
}
