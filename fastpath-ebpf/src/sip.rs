//! From a dialed number to the peer that owns it.

use fastpath_common::{
    Counter, RouteKey,
    maps::{LOCAL_ONLY, LocalAddr, PeerValue},
};

use crate::maps::{CONFIG, LAST_LOCAL, LOCAL_ADDRS, PEERS, ROUTES};

/// A peer's slot in `PEERS` and what it holds.
pub(crate) struct Peer {
    pub(crate) id: u32,
    pub(crate) value: PeerValue,
}

/// The peer registered for `key`, if it is up and reachable in the packet's address family
/// (a transparent rewrite cannot change family; the proxy can).
#[inline(always)]
pub(crate) fn peer_for(key: &RouteKey, family: u8) -> Result<Peer, Counter> {
    // SAFETY: the value is copied out before any map update could free it.
    let route = unsafe { ROUTES.get(key) }.ok_or(Counter::Miss)?;
    let id = route.peer_id;
    let value = *PEERS.get(id).ok_or(Counter::PeerUnavailable)?;
    if !value.is_up(family) {
        return Err(Counter::PeerUnavailable);
    }
    Ok(Peer { id, value })
}

/// `Ok` unless the daemon asked for local destinations only and `dst` is not one of the
/// gateway's addresses: then the request is transit traffic, and the kernel routes it.
#[inline(always)]
pub(crate) fn addressed_to_us(dst: &LocalAddr) -> Result<(), Counter> {
    if cfg!(feature = "ablate-local-check") {
        return Ok(());
    }
    let Some(config) = CONFIG.get(0) else {
        return Ok(());
    };
    if config.flags & LOCAL_ONLY == 0 {
        return Ok(());
    }
    // A hash lookup costs ~50 ns here, and a gateway sees the same few addresses over and
    // over: each CPU remembers the last one found, for as long as the set is unchanged.
    let last = LAST_LOCAL.get_ptr_mut(0).ok_or(Counter::NotLocal)?;
    // SAFETY: this CPU's slot; nothing else runs on it during this program run.
    let last = unsafe { &mut *last };
    if last.epoch == config.local_epoch && last.addr == *dst {
        return Ok(());
    }
    // SAFETY: the value is only tested for presence.
    if unsafe { LOCAL_ADDRS.get(dst) }.is_none() {
        return Err(Counter::NotLocal);
    }
    *last = LastLocal {
        addr: *dst,
        epoch: config.local_epoch,
    };
    Ok(())
}

/// The last destination this CPU found in `LOCAL_ADDRS`, and in which epoch.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct LastLocal {
    addr: LocalAddr,
    epoch: u32,
}
