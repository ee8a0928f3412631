//! The route table both paths read: dialed number → peer, and each peer's address and
//! up/down state.
//!
//! The proxy reads it per request; the kernel's `ROUTES` / `PEERS` maps are written from
//! the same source (the config's static routes through `maps::sync_table`, the registry's
//! through its sync, which writes here and into the maps). So an XDP-less gateway routes
//! registered numbers exactly as the fast path does.
//!
//! - Routes live in a concurrent map: the registry changes one number at a time among up
//!   to a million, and the proxy's workers read while it does; copying the whole table per
//!   change (a snapshot swap) would cost tens of milliseconds each.
//! - Peers are a small list swapped as a snapshot (`arc-swap`): readers never lock, and a
//!   health transition rebuilds only that list. A peer's id (its index) never changes
//!   once given, so a route and a health check can name it by id; a peer no route and no
//!   config uses any more is made inactive (no pings) rather than removed.

use std::{collections::HashSet, net::SocketAddr, sync::Arc};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use fastpath_common::RouteKey;
use rustc_hash::FxBuildHasher;

use crate::config::Config;

/// A peer path: where a registered number's calls go while it is up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    pub address: SocketAddr,
    pub up: bool,
    /// Named in the config file.
    pub configured: bool,
    /// Some registered number routes to it (the registry's sync says so).
    pub registered: bool,
}

impl Peer {
    /// Health checks ping it and the kernel may forward to it.
    pub fn active(&self) -> bool {
        self.configured || self.registered
    }
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

#[derive(Debug, Default)]
pub struct RouteTable {
    routes: DashMap<RouteKey, u32, FxBuildHasher>,
    peers: ArcSwap<Vec<Peer>>,
    /// `peers` by address. A peer keeps its address and id for the table's life, so this
    /// only grows, and a peer is in `peers` before it is here. The proxy asks it for every
    /// response and every request the route table does not route (up to `MAX_PEERS`
    /// peers: not a scan).
    ids: DashMap<SocketAddr, u32, FxBuildHasher>,
}

/// What [`RouteTable::replace_routes`] changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RouteChanges {
    pub added: usize,
    pub changed: usize,
    pub removed: usize,
}

impl RouteTable {
    /// The config's peers (all up: health checks take them down) and static routes.
    pub fn from_config(config: &Config) -> Self {
        let table = Self::default();
        table.apply_config(config);
        table
    }

    /// Makes the table hold the config's peers and static routes (a start, or a reload):
    /// peers keep their ids and states by address, peers the config no longer names are
    /// no longer `configured`, and routes change one by one, so readers never see a
    /// moment without them.
    pub fn apply_config(&self, config: &Config) -> RouteChanges {
        let ids = self.set_config_peers(config);
        self.replace_routes(
            config
                .routes
                .iter()
                .filter_map(|r| Some((r.key, *ids.get(r.peer_id as usize)?))),
        )
    }

    /// Marks exactly the config's peers as configured (adding those the table lacks,
    /// naming them as the config does) and returns their ids, in the config's order.
    pub fn set_config_peers(&self, config: &Config) -> Vec<u32> {
        let ids: Vec<u32> = config
            .peers
            .iter()
            .map(|p| self.peer_id(p.address))
            .collect();
        self.peers.rcu(|peers| {
            let mut next = Vec::clone(peers);
            for (id, peer) in next.iter_mut().enumerate() {
                peer.configured = false;
                if let Some(i) = ids.iter().position(|&c| c as usize == id) {
                    peer.configured = true;
                    // Registry-only peers keep their address as their name.
                    peer.name.clone_from(&config.peers[i].name);
                }
            }
            next
        });
        ids
    }

    pub fn lookup(&self, key: &RouteKey) -> Lookup {
        let Some(id) = self.routes.get(key).map(|id| *id) else {
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

    /// Routes `key` to peer `id` (from [`RouteTable::peer_id`]).
    pub fn set_route(&self, key: RouteKey, id: u32) {
        self.routes.insert(key, id);
    }

    pub fn remove_route(&self, key: &RouteKey) {
        self.routes.remove(key);
    }

    /// Makes the routes exactly `wanted`, writing only the difference: entries that are
    /// already right are not touched, so a reader never misses one.
    pub fn replace_routes(
        &self,
        wanted: impl IntoIterator<Item = (RouteKey, u32)>,
    ) -> RouteChanges {
        let mut changes = RouteChanges::default();
        let mut keep = HashSet::with_hasher(FxBuildHasher);
        for (key, id) in wanted {
            keep.insert(key);
            match self.routes.insert(key, id) {
                None => changes.added += 1,
                Some(old) if old != id => changes.changed += 1,
                Some(_) => {}
            }
        }
        self.routes.retain(|key, _| {
            let wanted = keep.contains(key);
            changes.removed += usize::from(!wanted);
            wanted
        });
        changes
    }

    /// The id of the peer at `address`, adding it (up) if the table has none.
    pub fn peer_id(&self, address: SocketAddr) -> u32 {
        if let Some(id) = self.peer_at(address) {
            return id;
        }
        let mut id = 0;
        self.peers.rcu(|peers| {
            let mut next = Vec::clone(peers);
            id = match next.iter().position(|p| p.address == address) {
                Some(i) => i as u32,
                None => {
                    next.push(Peer {
                        name: address.to_string(),
                        address,
                        up: true,
                        configured: false,
                        registered: false,
                    });
                    next.len() as u32 - 1
                }
            };
            next
        });
        self.ids.insert(address, id);
        id
    }

    /// Marks exactly the peers at `addresses` as used by registered numbers (adding those
    /// the table lacks). Returns whether anything changed.
    pub fn set_registered_peers(&self, addresses: &[SocketAddr]) -> bool {
        for &address in addresses {
            self.peer_id(address);
        }
        let registered = |p: &Peer| addresses.contains(&p.address);
        if self
            .peers
            .load()
            .iter()
            .all(|p| p.registered == registered(p))
        {
            return false;
        }
        self.peers.rcu(|peers| {
            let mut next = Vec::clone(peers);
            for peer in &mut next {
                peer.registered = registered(peer);
            }
            next
        });
        true
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

    pub fn peers(&self) -> Arc<Vec<Peer>> {
        self.peers.load_full()
    }

    /// The peer id `key` routes to, if it is in the table (whatever the peer's state).
    pub fn route(&self, key: &RouteKey) -> Option<u32> {
        self.routes.get(key).map(|id| *id)
    }

    /// Every route (a copy: for the map writer and listings, not for the hot path).
    pub fn routes(&self) -> Vec<(RouteKey, u32)> {
        self.routes.iter().map(|e| (*e.key(), *e.value())).collect()
    }

    pub fn route_count(&self) -> usize {
        self.routes.len()
    }

    /// The peer whose address is `addr`, if any (to attribute a response to a peer).
    pub fn peer_at(&self, addr: SocketAddr) -> Option<u32> {
        self.ids.get(&addr).map(|id| *id)
    }

    /// Whether the peer at `addr` is known and down (a new `PEERS` slot for it must say so).
    pub fn is_down(&self, addr: SocketAddr) -> bool {
        self.peers.load().iter().any(|p| p.address == addr && !p.up)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fastpath_common::normalize_number;

    const PBX: &str = "198.51.100.2:5060";

    fn key(digits: &str) -> RouteKey {
        normalize_number(digits.as_bytes()).unwrap()
    }

    fn table() -> RouteTable {
        let config = Config::parse(&format!(
            "[[peers]]\nname = \"pbx\"\naddress = \"{PBX}\"\n\n\
             [[routes]]\nnumber = \"15550100001\"\npeer = \"pbx\"\n"
        ))
        .unwrap();
        RouteTable::from_config(&config)
    }

    #[test]
    fn peers_are_found_by_address() {
        let table = table();
        assert_eq!(table.peer_at(PBX.parse().unwrap()), Some(0));
        let other: SocketAddr = "198.51.100.3:5060".parse().unwrap();
        assert_eq!(table.peer_at(other), None);
        assert_eq!(table.peer_id(other), 1);
        assert_eq!(table.peer_at(other), Some(1));
        assert_eq!(table.peer_id(other), 1, "the same peer, not a new one");
        assert_eq!(table.peers()[1].address, other);
        assert_eq!(table.peer_at("198.51.100.3:5061".parse().unwrap()), None);
    }

    #[test]
    fn registered_numbers_follow_their_peer_state() {
        let table = table();
        let other = key("15550100002");
        assert!(matches!(
            table.lookup(&key("15550100001")),
            Lookup::Peer { id: 0, .. }
        ));
        assert_eq!(table.lookup(&other), Lookup::Miss);
        assert!(table.set_peer_up(0, false));
        assert!(!table.set_peer_up(0, false), "no change the second time");
        assert_eq!(
            table.lookup(&key("15550100001")),
            Lookup::PeerDown { id: 0 }
        );
        assert!(table.set_peer_up(0, true));
        assert!(matches!(
            table.lookup(&key("15550100001")),
            Lookup::Peer { .. }
        ));
        assert!(!table.set_peer_up(7, false), "unknown peer: no change");
    }

    #[test]
    fn peers_join_without_moving_the_others() {
        let table = table();
        let new: SocketAddr = "198.51.100.9:5060".parse().unwrap();
        let old = table.peers()[0].address;
        assert!(table.set_registered_peers(&[old, new, new]));
        assert!(!table.set_registered_peers(&[old, new]), "no change");
        let peers = table.peers();
        assert_eq!((peers[0].address, peers[1].address), (old, new));
        assert!(peers[1].up && peers[1].active() && !peers[1].configured);
        assert_eq!(table.peer_id(new), 1);
        // The registry stops using it: it stays (its id with it) but goes inactive.
        assert!(table.set_registered_peers(&[]));
        assert!(!table.peers()[1].active());
        assert!(table.peers()[0].active(), "configured peers stay active");
    }

    #[test]
    fn replacing_routes_writes_only_the_difference() {
        let table = table();
        let (one, two) = (key("15550100001"), key("15550100002"));
        let changes = table.replace_routes([(one, 0), (two, 0)]);
        assert_eq!((changes.added, changes.changed, changes.removed), (1, 0, 0));
        let changes = table.replace_routes([(two, 1)]);
        assert_eq!((changes.added, changes.changed, changes.removed), (0, 1, 1));
        assert_eq!(table.lookup(&one), Lookup::Miss);
        assert_eq!(table.routes(), vec![(two, 1)]);
    }

    #[test]
    fn a_reload_keeps_peer_ids_and_states_by_address() {
        let table = table();
        table.set_peer_up(0, false);
        let config = Config::parse(&format!(
            "[[peers]]\nname = \"new\"\naddress = \"198.51.100.3:5060\"\n\n\
             [[peers]]\nname = \"pbx-renamed\"\naddress = \"{PBX}\"\n\n\
             [[routes]]\nnumber = \"15550100002\"\npeer = \"new\"\n"
        ))
        .unwrap();
        let changes = table.apply_config(&config);
        assert_eq!((changes.added, changes.removed), (1, 1));
        let peers = table.peers();
        assert_eq!(peers[0].name, "pbx-renamed");
        assert!(!peers[0].up, "state kept across the reload");
        assert_eq!(
            table.lookup(&key("15550100002")),
            Lookup::Peer {
                id: 1,
                address: "198.51.100.3:5060".parse().unwrap()
            }
        );
        // A peer the config drops goes inactive.
        let config = Config::parse("").unwrap();
        table.apply_config(&config);
        assert!(table.peers().iter().all(|p| !p.active()));
        assert_eq!(table.route_count(), 0);
    }
}
