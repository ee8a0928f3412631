//! From a dialed number to the peer that owns it.

use fastpath_common::{
    Counter, RouteKey,
    maps::{Config, FAMILY_IPV4, FAMILY_IPV6, LOCAL_ONLY, LocalAddr, PeerValue},
    route_index::{self, Found, Place},
};

use crate::{
    maps::{LAST_LOCAL, LOCAL_ADDRS, PEERS, ROUTE_INDEX, ROUTES, index_bits},
    ref_at::{word, words},
};

/// A peer's slot in `PEERS` and what it holds.
pub(crate) struct Peer {
    pub(crate) id: u32,
    /// Host byte order.
    pub(crate) port: u16,
    /// The address as it lies in `PeerValue` and goes into the packet: IPv4 in the first
    /// word, the rest zero.
    pub(crate) addr: [u32; 4],
}

/// The peer registered for `key`, if it is up and reachable in the packet's address family
/// (a transparent rewrite cannot change family; the proxy can).
#[inline(always)]
pub(crate) fn peer_for(key: &RouteKey, family: u8) -> Result<Peer, Counter> {
    let id = route(key)?;
    stop_after!("stop-after-route");
    // The fields are read from the map value, not the value copied: `PeerValue` is bytes
    // (alignment 1), which LLVM copies one at a time.
    let value: &PeerValue = PEERS.get(id).ok_or(Counter::PeerUnavailable)?;
    if !value.is_up(family) {
        return Err(Counter::PeerUnavailable);
    }
    Ok(Peer {
        id,
        port: value.port,
        addr: words(&value.addr),
    })
}

/// The peer id registered for `key`: from `ROUTE_INDEX` (an inlined array read), and
/// from `ROUTES` (a hash-map lookup, three or four kernel calls) only for a number of an
/// overflowed bucket.
#[inline(always)]
fn route(key: &RouteKey) -> Result<u32, Counter> {
    let found = if cfg!(feature = "ablate-route-index") {
        Found::AskRoutes
    } else {
        let place = Place::of(*key, index_bits());
        let bucket = ROUTE_INDEX.get(place.bucket).ok_or(Counter::Miss)?;
        route_index::find(bucket, place)
    };
    match found {
        Found::Peer(id) => Ok(id),
        Found::Absent => Err(Counter::Miss),
        // SAFETY: the value is copied out before any map update could free it.
        Found::AskRoutes => unsafe { ROUTES.get(key) }
            .map(|route| route.peer_id)
            .ok_or(Counter::Miss),
    }
}

/// `Ok` unless the daemon asked for local destinations only and `dst` is not one of the
/// gateway's addresses: then the request is transit traffic, and the kernel routes it.
#[inline(always)]
pub(crate) fn addressed_to_us(policy: LocalPolicy, dst: Destination) -> Result<(), Counter> {
    if cfg!(feature = "ablate-local-check") {
        return Ok(());
    }
    if !policy.local_only {
        return Ok(());
    }
    // A hash lookup costs ~50 ns here, and a gateway sees the same few addresses over and
    // over: each CPU remembers the last one found, for as long as the set is unchanged.
    let last = LAST_LOCAL.get_ptr_mut(0).ok_or(Counter::NotLocal)?;
    // SAFETY: this CPU's slot; nothing else runs on it during this program run.
    let last = unsafe { &mut *last };
    // Whole aligned words: a `LocalAddr` (bytes, alignment 1) took two byte-wise memset
    // calls to build and byte loads to compare, 33 ns of a hit (`cargo xtask ablation`).
    if last.epoch == policy.epoch && last.family == dst.family && last.words == dst.words {
        return Ok(());
    }
    let key = LocalAddr {
        // SAFETY: four u32 are sixteen bytes, any bit pattern valid.
        addr: unsafe { core::mem::transmute::<[u32; 4], [u8; 16]>(dst.words) },
        family: dst.family as u8,
        _pad: [0; 3],
    };
    // SAFETY: the value is only tested for presence.
    if unsafe { LOCAL_ADDRS.get(&key) }.is_none() {
        return Err(Counter::NotLocal);
    }
    *last = LastLocal {
        words: dst.words,
        family: dst.family,
        epoch: policy.epoch,
    };
    Ok(())
}

/// What `CONFIG` says about local destinations.
#[derive(Clone, Copy)]
pub(crate) struct LocalPolicy {
    local_only: bool,
    /// `Config::local_epoch`.
    epoch: u32,
}

impl LocalPolicy {
    #[inline(always)]
    pub(crate) fn of(config: &Config) -> Self {
        Self {
            local_only: config.flags & LOCAL_ONLY != 0,
            epoch: config.local_epoch,
        }
    }
}

/// A packet's destination address as whole words, in the byte order of the packet.
pub(crate) struct Destination {
    words: [u32; 4],
    family: u32,
}

impl Destination {
    /// From the packet's destination address.
    #[inline(always)]
    pub(crate) fn v4(addr: &[u8; 4]) -> Self {
        Self {
            words: [word(addr, 0), 0, 0, 0],
            family: FAMILY_IPV4 as u32,
        }
    }

    /// From the packet's destination address.
    #[inline(always)]
    pub(crate) fn v6(addr: &[u8; 16]) -> Self {
        Self {
            words: words(addr),
            family: FAMILY_IPV6 as u32,
        }
    }
}

/// The last destination this CPU found in `LOCAL_ADDRS`, and in which epoch.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct LastLocal {
    words: [u32; 4],
    family: u32,
    epoch: u32,
}
