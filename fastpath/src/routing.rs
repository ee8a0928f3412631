//! The route table both paths read: dialed number → peer, and each peer's address and
//! up/down state.
//!
//! The proxy reads it per request and the map writer mirrors it into `ROUTES` / `PEERS`.
//! Routes and peers are two separately swapped snapshots (`arc-swap`): readers never
//! lock, a health transition swaps only the small peer list, and a route sync (today the
//! config's static routes, later the registry) swaps the route map without copying peers.

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use arc_swap::ArcSwap;
use fastpath_common::RouteKey;

use crate::config::Config;

/// A peer path: where a registered number's calls go while it is up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    pub address: SocketAddr,
    pub up: bool,
}

/// Where a dialed number goes, as far as the route table knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Registered to a peer that is up.
    Peer { id: u32, address: SocketAddr },
    /// Registered, but its peer is down (or gone): the standard route takes it.
    PeerDown { id: u32 },
    /// Not registered.
    Miss,
}

#[derive(Debug)]
pub struct RouteTable {
    routes: ArcSwap<HashMap<RouteKey, u32>>,
    peers: ArcSwap<Vec<Peer>>,
}

impl RouteTable {
    pub fn new(routes: HashMap<RouteKey, u32>, peers: Vec<Peer>) -> Self {
        Self {
            routes: ArcSwap::from_pointee(routes),
            peers: ArcSwap::from_pointee(peers),
        }
    }

    /// The config's static routes; every peer starts up (health checks take them down).
    pub fn from_config(config: &Config) -> Self {
        let routes = config.routes.iter().map(|r| (r.key, r.peer_id)).collect();
        let peers = config
            .peers
            .iter()
            .map(|p| Peer {
                name: p.name.clone(),
                address: p.address,
                up: true,
            })
            .collect();
        Self::new(routes, peers)
    }

    pub fn lookup(&self, key: &RouteKey) -> Lookup {
        let Some(&id) = self.routes.load().get(key) else {
            return Lookup::Miss;
        };
        match self.peers.load().get(id as usize) {
            Some(peer) if peer.up => Lookup::Peer {
                id,
                address: peer.address,
            },
            _ => Lookup::PeerDown { id },
        }
    }

    /// Replaces every route at once.
    pub fn replace_routes(&self, routes: HashMap<RouteKey, u32>) {
        self.routes.store(Arc::new(routes));
    }

    /// Sets one peer's state; returns whether it changed.
    pub fn set_peer_up(&self, id: u32, up: bool) -> bool {
        let mut changed = false;
        self.peers.rcu(|peers| {
            let mut next = Vec::clone(peers);
            changed = match next.get_mut(id as usize) {
                Some(peer) if peer.up != up => {
                    peer.up = up;
                    true
                }
                _ => false,
            };
            next
        });
        changed
    }

    /// Adds the peers at `addresses` that the table does not have yet (up, named by their
    /// address), so that health checks cover them; ids of existing peers do not change.
    /// Returns how many were added.
    pub fn ensure_peers(&self, addresses: &[SocketAddr]) -> usize {
        let mut added = 0;
        self.peers.rcu(|peers| {
            let mut next = Vec::clone(peers);
            added = 0;
            for &address in addresses {
                if !next.iter().any(|p| p.address == address) {
                    next.push(Peer {
                        name: address.to_string(),
                        address,
                        up: true,
                    });
                    added += 1;
                }
            }
            next
        });
        added
    }

    pub fn peers(&self) -> Arc<Vec<Peer>> {
        self.peers.load_full()
    }

    pub fn routes(&self) -> Arc<HashMap<RouteKey, u32>> {
        self.routes.load_full()
    }

    /// The peer whose address is `addr`, if any (to attribute a response to a peer).
    pub fn peer_at(&self, addr: SocketAddr) -> Option<u32> {
        self.peers
            .load()
            .iter()
            .position(|p| p.address == addr)
            .map(|i| i as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fastpath_common::normalize_number;

    fn table() -> RouteTable {
        let key = normalize_number(b"15550100001").unwrap();
        RouteTable::new(
            HashMap::from([(key, 0)]),
            vec![Peer {
                name: "pbx".into(),
                address: "198.51.100.2:5060".parse().unwrap(),
                up: true,
            }],
        )
    }

    #[test]
    fn registered_numbers_follow_their_peer_state() {
        let table = table();
        let key = normalize_number(b"15550100001").unwrap();
        let other = normalize_number(b"15550100002").unwrap();
        assert!(matches!(table.lookup(&key), Lookup::Peer { id: 0, .. }));
        assert_eq!(table.lookup(&other), Lookup::Miss);
        assert!(table.set_peer_up(0, false));
        assert!(!table.set_peer_up(0, false), "no change the second time");
        assert_eq!(table.lookup(&key), Lookup::PeerDown { id: 0 });
        assert!(table.set_peer_up(0, true));
        assert!(matches!(table.lookup(&key), Lookup::Peer { .. }));
        assert!(!table.set_peer_up(7, false), "unknown peer: no change");
    }

    #[test]
    fn peers_join_without_moving_the_others() {
        let table = table();
        let new: SocketAddr = "198.51.100.9:5060".parse().unwrap();
        let old = table.peers()[0].address;
        assert_eq!(table.ensure_peers(&[old, new, new]), 1);
        assert_eq!(table.ensure_peers(&[new]), 0);
        let peers = table.peers();
        assert_eq!((peers[0].address, peers[1].address), (old, new));
        assert!(peers[1].up);
    }

    #[test]
    fn replacing_routes_is_seen_at_once() {
        let table = table();
        let key = normalize_number(b"15550100001").unwrap();
        table.replace_routes(HashMap::new());
        assert_eq!(table.lookup(&key), Lookup::Miss);
    }
}
