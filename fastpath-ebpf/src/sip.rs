//! From a dialed number to the peer that owns it.

use fastpath_common::{Counter, RouteKey, maps::PeerValue};

use crate::maps::{PEERS, ROUTES};

/// The peer registered for `key`, if it is up and reachable in the packet's address family
/// (a transparent rewrite cannot change family; the proxy can).
#[inline(always)]
pub(crate) fn peer_for(key: &RouteKey, family: u8) -> Result<PeerValue, Counter> {
    // SAFETY: the value is copied out before any map update could free it.
    let route = unsafe { ROUTES.get(key) }.ok_or(Counter::Miss)?;
    let peer = PEERS.get(route.peer_id).ok_or(Counter::PeerUnavailable)?;
    if !peer.is_up(family) {
        return Err(Counter::PeerUnavailable);
    }
    Ok(*peer)
}
