//! Typed handles on the maps the XDP program reads; the daemon is their only writer.

use std::collections::HashSet;

use anyhow::Context;
use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, xdp::DevMapHash},
};
use fastpath_common::{
    RouteKey,
    maps::{
        self, FAMILY_IPV4, FAMILY_IPV6, MAX_PEERS, MAX_SIP_PORTS, PEER_UP, PeerValue, RouteValue,
    },
};

use crate::{
    config::Config,
    route_index::RouteIndex,
    routing::{Peer, RouteTable},
};

/// What a sync changed, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub routes: usize,
    pub removed: usize,
    pub peers: usize,
}

/// Makes `CONFIG`, `PEERS` and `ROUTES` say exactly what `config` says: entries that are
/// not in it (left by an earlier run, or written behind our back) are removed.
pub fn apply_config(
    ebpf: &mut Ebpf,
    config: &Config,
    generation: u32,
) -> anyhow::Result<SyncReport> {
    write_settings(ebpf, config)?;
    sync_table(ebpf, &RouteTable::from_config(config), generation)
}

/// Makes `PEERS` and `ROUTES` mirror the route table the proxy reads (peer states too), so
/// the two paths decide alike. The order keeps every packet right while it runs: new peer
/// slots first, then routes, then stale routes out, and only then unused slots cleared (a
/// route meeting an empty slot passes to the proxy, which already reads the new table).
pub fn sync_table(
    ebpf: &mut Ebpf,
    table: &RouteTable,
    generation: u32,
) -> anyhow::Result<SyncReport> {
    let table_peers = table.peers();
    let table_routes = table.routes();
    let mut peers: Array<_, PeerValue> = Array::try_from(map(ebpf, maps::PEERS)?)?;
    let wanted_peer = |id: u32| match table_peers.get(id as usize) {
        Some(peer) if peer.active() => peer_value(peer),
        _ => EMPTY_PEER,
    };
    for id in 0..MAX_PEERS {
        let value = wanted_peer(id);
        if value != EMPTY_PEER && peers.get(&id, 0)? != value {
            peers
                .set(id, value, 0)
                .with_context(|| format!("writing PEERS[{id}]"))?;
        }
    }

    let mut routes: HashMap<_, RouteKey, RouteValue> = HashMap::try_from(map(ebpf, maps::ROUTES)?)?;
    for &(key, peer_id) in &table_routes {
        let value = RouteValue {
            peer_id,
            generation,
        };
        if routes.get(&key, 0).ok() != Some(value) {
            routes
                .insert(key, value, 0)
                .with_context(|| format!("writing route {key} (ROUTES full?)"))?;
        }
    }
    // The index after `ROUTES` gains a route and before it loses one (`route_index`).
    index_routes(ebpf, table_routes.iter().copied())?;
    let mut routes: HashMap<_, RouteKey, RouteValue> = HashMap::try_from(map(ebpf, maps::ROUTES)?)?;
    let wanted: HashSet<RouteKey> = table_routes.iter().map(|&(k, _)| k).collect();
    let stale: Vec<RouteKey> = routes
        .keys()
        .filter_map(Result::ok)
        .filter(|k| !wanted.contains(k))
        .collect();
    for key in &stale {
        routes.remove(key).context("removing a stale route")?;
    }
    let mut peers: Array<_, PeerValue> = Array::try_from(map(ebpf, maps::PEERS)?)?;
    for id in 0..MAX_PEERS {
        if wanted_peer(id) == EMPTY_PEER && peers.get(&id, 0)? != EMPTY_PEER {
            peers
                .set(id, EMPTY_PEER, 0)
                .with_context(|| format!("clearing PEERS[{id}]"))?;
        }
    }
    Ok(SyncReport {
        routes: table_routes.len(),
        removed: stale.len(),
        peers: table_peers.iter().filter(|p| p.active()).count(),
    })
}

/// Writes `CONFIG` (the SIP ports). With a registry, this is all the config file sets
/// directly; `sync` owns `PEERS` and `ROUTES`.
pub fn write_settings(ebpf: &mut Ebpf, config: &Config) -> anyhow::Result<()> {
    let mut ports = [0u16; MAX_SIP_PORTS];
    ports[..config.sip_ports.len()].copy_from_slice(&config.sip_ports);
    let mut settings: Array<_, maps::Config> = Array::try_from(map(ebpf, maps::CONFIG)?)?;
    let flags = if config.local_only {
        maps::LOCAL_ONLY
    } else {
        0
    };
    // A new epoch: the program looks local addresses up afresh (see `set_local_addrs`).
    let local_epoch = settings
        .get(&0, 0)
        .map_or(0, |c| c.local_epoch.wrapping_add(1));
    settings
        .set(
            0,
            maps::Config {
                sip_ports: ports,
                flags,
                local_epoch,
            },
            0,
        )
        .context("writing CONFIG")
}

/// Lets the program redirect to each of these interfaces.
pub fn set_egress(ebpf: &mut Ebpf, ifindexes: &[u32]) -> anyhow::Result<()> {
    let mut egress = DevMapHash::try_from(map(ebpf, maps::EGRESS)?)?;
    let stale: Vec<u32> = egress
        .keys()
        .filter_map(Result::ok)
        .filter(|i| !ifindexes.contains(i))
        .collect();
    for ifindex in stale {
        egress.remove(ifindex)?;
    }
    for &ifindex in ifindexes {
        egress
            .insert(ifindex, ifindex, None, 0)
            .context("writing EGRESS")?;
    }
    Ok(())
}

pub const EMPTY_PEER: PeerValue = PeerValue {
    addr: [0; 16],
    port: 0,
    family: 0,
    state: 0,
};

fn peer_value(peer: &Peer) -> PeerValue {
    PeerValue {
        state: if peer.up { PEER_UP } else { maps::PEER_DOWN },
        ..peer_value_for(peer.address)
    }
}

/// The `PEERS` slot for a peer at `address`, marked up.
pub fn peer_value_for(address: std::net::SocketAddr) -> PeerValue {
    let mut addr = [0u8; 16];
    let family = match address.ip() {
        std::net::IpAddr::V4(ip) => {
            addr[..4].copy_from_slice(&ip.octets());
            FAMILY_IPV4
        }
        std::net::IpAddr::V6(ip) => {
            addr = ip.octets();
            FAMILY_IPV6
        }
    };
    PeerValue {
        addr,
        port: address.port(),
        family,
        state: PEER_UP,
    }
}

/// Makes the loaded program's `ROUTE_INDEX` hold exactly `routes` (number, peer id), which
/// must all be in `ROUTES` already: what every writer of `ROUTES` but the registry sync
/// (which keeps its own mapping, see `sync::RouteMaps`) does after writing it.
pub fn index_routes(
    ebpf: &mut Ebpf,
    routes: impl IntoIterator<Item = (RouteKey, u32)>,
) -> anyhow::Result<()> {
    let map: &MapData = match map(ebpf, maps::ROUTE_INDEX)? {
        aya::maps::Map::Array(data) => data,
        _ => anyhow::bail!("ROUTE_INDEX is not an array"),
    };
    RouteIndex::map(map)
        .context("mapping ROUTE_INDEX")?
        .rebuild(routes);
    Ok(())
}

fn map<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut aya::maps::Map> {
    ebpf.map_mut(name)
        .with_context(|| format!("map {name} missing from the eBPF object"))
}

/// A pinned map opened by name, for commands that run beside the daemon.
pub fn open_pinned(pin_dir: &std::path::Path, name: &str) -> anyhow::Result<MapData> {
    let path = pin_dir.join(name);
    MapData::from_pin(&path)
        .with_context(|| format!("cannot open {} (is `fastpath run` loaded?)", path.display()))
}

/// Makes `LOCAL_ADDRS` hold exactly `addrs`, the gateway's own addresses, by its pin (the
/// daemon refreshes it as interfaces change).
pub fn set_local_addrs(
    pin_dir: &std::path::Path,
    addrs: &[std::net::IpAddr],
) -> anyhow::Result<()> {
    use std::net::IpAddr;

    let map = aya::maps::Map::HashMap(open_pinned(pin_dir, maps::LOCAL_ADDRS)?);
    let mut local: HashMap<_, maps::LocalAddr, u8> = HashMap::try_from(map)?;
    let wanted: HashSet<maps::LocalAddr> = addrs
        .iter()
        .map(|addr| match addr {
            IpAddr::V4(v4) => maps::LocalAddr::v4(v4.octets()),
            IpAddr::V6(v6) => maps::LocalAddr::v6(v6.octets()),
        })
        .collect();
    let stale: Vec<maps::LocalAddr> = local
        .keys()
        .filter_map(Result::ok)
        .filter(|k| !wanted.contains(k))
        .collect();
    let added: Vec<&maps::LocalAddr> = wanted.iter().filter(|k| local.get(k, 0).is_err()).collect();
    if stale.is_empty() && added.is_empty() {
        return Ok(());
    }
    for key in &stale {
        local
            .remove(key)
            .context("removing a stale local address")?;
    }
    for key in added {
        local
            .insert(key, 1, 0)
            .context("writing LOCAL_ADDRS (more than 1024 addresses?)")?;
    }
    // The program remembers addresses it found; a new epoch makes it look them up again.
    let map = aya::maps::Map::Array(open_pinned(pin_dir, maps::CONFIG)?);
    let mut settings: Array<_, maps::Config> = Array::try_from(map)?;
    let mut current = settings.get(&0, 0).context("reading CONFIG")?;
    current.local_epoch = current.local_epoch.wrapping_add(1);
    settings.set(0, current, 0).context("writing CONFIG")?;
    Ok(())
}

/// Every address of every interface in this network namespace.
pub fn local_addresses() -> anyhow::Result<Vec<std::net::IpAddr>> {
    Ok(if_addrs::get_if_addrs()
        .context("listing interface addresses")?
        .into_iter()
        .map(|iface| iface.ip())
        .collect())
}

/// Sets the up/down state of the `PEERS` slot of the peer at `address` (health checks call
/// this), so that the XDP program passes a down peer's calls on to the proxy. Slots are
/// found by address: with a registry, its sync numbers them.
pub fn set_peer_state(
    pin_dir: &std::path::Path,
    address: std::net::SocketAddr,
    up: bool,
) -> anyhow::Result<()> {
    let data = open_pinned(pin_dir, maps::PEERS)?;
    let mut peers: Array<_, PeerValue> = Array::try_from(aya::maps::Map::Array(data))?;
    let wanted = peer_value_for(address);
    for id in 0..MAX_PEERS {
        let mut value = peers.get(&id, 0)?;
        if (value.addr, value.port, value.family) == (wanted.addr, wanted.port, wanted.family) {
            value.state = if up { PEER_UP } else { maps::PEER_DOWN };
            peers
                .set(id, value, 0)
                .with_context(|| format!("writing PEERS[{id}]"))?;
        }
    }
    Ok(())
}

/// Where a `PEERS` slot points (the inverse of [`peer_value_for`]); `None` for an empty
/// slot.
pub fn peer_address(peer: &PeerValue) -> Option<std::net::SocketAddr> {
    let ip = match peer.family {
        FAMILY_IPV4 => {
            std::net::IpAddr::from([peer.addr[0], peer.addr[1], peer.addr[2], peer.addr[3]])
        }
        FAMILY_IPV6 => std::net::IpAddr::from(peer.addr),
        _ => return None,
    };
    Some(std::net::SocketAddr::new(ip, peer.port))
}
