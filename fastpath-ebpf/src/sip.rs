//! From a dialed number to the peer that owns it.

use fastpath_common::{Counter, RouteKey, maps::PeerValue};

use crate::maps::{PEERS, ROUTES};

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
