//! The XDP outcome counters, summed over CPUs.

use std::{fmt, path::Path};

use aya::maps::{Map, MapData, PerCpuArray};
use fastpath_common::{Counter, maps};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters([u64; Counter::COUNT as usize]);

impl Counters {
    pub fn get(&self, counter: Counter) -> u64 {
        self.0[counter as usize]
    }

    pub fn read(map: &PerCpuArray<MapData, u64>) -> anyhow::Result<Self> {
        let mut out = Self::default();
        for counter in Counter::ALL {
            out.0[counter as usize] = map.get(&(counter as u32), 0)?.iter().sum();
        }
        Ok(out)
    }

    pub fn read_pinned(pin_dir: &Path) -> anyhow::Result<Self> {
        let data = crate::maps::open_pinned(pin_dir, maps::STATS)?;
        Self::read(&PerCpuArray::try_from(Map::PerCpuArray(data))?)
    }

    /// A table of each counter, its total and its rate since `before`, `secs` earlier.
    pub fn rates_since(&self, before: &Counters, secs: f64) -> String {
        let mut out = format!("{:<18}{:>14}{:>14}\n", "counter", "total", "per second");
        for counter in Counter::ALL {
            let rate = self.get(counter).saturating_sub(before.get(counter)) as f64 / secs;
            out += &format!(
                "{:<18}{:>14}{:>14.1}\n",
                counter.name(),
                self.get(counter),
                rate
            );
        }
        out
    }

    /// `{"hit": 3, "miss": 1, ...}`
    pub fn to_json(&self) -> String {
        let fields: Vec<String> = Counter::ALL
            .iter()
            .map(|c| format!("\"{}\":{}", c.name(), self.get(*c)))
            .collect();
        format!("{{{}}}", fields.join(","))
    }
}

impl fmt::Display for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for counter in Counter::ALL {
            writeln!(f, "{:<18}{:>14}", counter.name(), self.get(counter))?;
        }
        Ok(())
    }
}

/// What the fast path sent to one peer, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerTraffic {
    pub peer_id: u32,
    pub packets: u64,
    pub bytes: u64,
}

impl PeerTraffic {
    /// Every peer slot that has seen traffic, from the pinned `PEER_STATS` map.
    pub fn read_pinned(pin_dir: &Path) -> anyhow::Result<Vec<PeerTraffic>> {
        let data = crate::maps::open_pinned(pin_dir, maps::PEER_STATS)?;
        let map: PerCpuArray<_, maps::PeerCounters> =
            PerCpuArray::try_from(Map::PerCpuArray(data))?;
        let mut out = Vec::new();
        for peer_id in 0..maps::MAX_PEERS {
            let per_cpu = map.get(&peer_id, 0)?;
            let traffic = per_cpu.iter().fold(
                PeerTraffic {
                    peer_id,
                    ..Default::default()
                },
                |sum, c| PeerTraffic {
                    packets: sum.packets + c.packets,
                    bytes: sum.bytes + c.bytes,
                    ..sum
                },
            );
            if traffic.packets != 0 {
                out.push(traffic);
            }
        }
        Ok(out)
    }
}

/// `fastpath stats --watch`: the counters and their rates every `interval`, redrawn in
/// place on a terminal; `count` refreshes, or until interrupted.
pub fn watch(
    pin_dir: &Path,
    interval: std::time::Duration,
    count: Option<u64>,
) -> anyhow::Result<()> {
    use std::io::{IsTerminal, Write};
    let terminal = std::io::stdout().is_terminal();
    let mut before = Counters::read_pinned(pin_dir)?;
    let mut at = std::time::Instant::now();
    let mut shown = 0;
    while count.is_none_or(|n| shown < n) {
        std::thread::sleep(interval);
        let now = Counters::read_pinned(pin_dir)?;
        let secs = at.elapsed().as_secs_f64();
        at = std::time::Instant::now();
        let mut out = String::new();
        if terminal {
            out += "\x1b[2J\x1b[H"; // clear, home
        }
        out += &now.rates_since(&before, secs);
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(out.as_bytes())?;
        stdout.flush()?;
        before = now;
        shown += 1;
    }
    Ok(())
}

type RoutesMap = aya::maps::HashMap<MapData, fastpath_common::RouteKey, maps::RouteValue>;
type PeersMap = aya::maps::Array<MapData, maps::PeerValue>;

/// The pinned `ROUTES` and `PEERS` maps.
fn route_maps(pin_dir: &Path) -> anyhow::Result<(RoutesMap, PeersMap)> {
    let routes = crate::maps::open_pinned(pin_dir, maps::ROUTES)?;
    let peers = crate::maps::open_pinned(pin_dir, maps::PEERS)?;
    Ok((
        aya::maps::HashMap::try_from(Map::HashMap(routes))?,
        aya::maps::Array::try_from(Map::Array(peers))?,
    ))
}

/// A `ROUTES` entry as `fastpath routes` prints it.
fn map_route_line(
    key: fastpath_common::RouteKey,
    value: maps::RouteValue,
    peers: &PeersMap,
) -> String {
    let peer = peers
        .get(&value.peer_id, 0)
        .ok()
        .and_then(|p| Some((crate::maps::peer_address(&p)?, p.state == maps::PEER_UP)));
    route_line(key, value.peer_id, peer)
}

/// `+15550100001 -> 198.51.100.2:5060 (up)`: one line of `fastpath routes`, whether it
/// comes from the pinned maps or from the daemon's route table.
pub(crate) fn route_line(
    key: fastpath_common::RouteKey,
    peer_id: u32,
    peer: Option<(std::net::SocketAddr, bool)>,
) -> String {
    match peer {
        Some((address, up)) => format!("+{key} -> {address} ({})", if up { "up" } else { "down" }),
        None => format!("+{key} -> peer #{peer_id} (no such peer)"),
    }
}

/// `fastpath routes list`
pub fn list_routes(pin_dir: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    let (routes, peers) = route_maps(pin_dir)?;
    let mut stdout = std::io::stdout().lock();
    for entry in routes.iter() {
        let (key, value) = entry?;
        writeln!(stdout, "{}", map_route_line(key, value, &peers))?;
    }
    Ok(())
}

/// `fastpath routes get NUMBER`: exits non-zero when the number is not registered.
pub fn get_route(pin_dir: &Path, number: &str) -> anyhow::Result<()> {
    let key = fastpath_common::normalize_number(number.as_bytes())
        .map_err(|e| anyhow::anyhow!("'{number}' is not a number: {e}"))?;
    let (routes, peers) = route_maps(pin_dir)?;
    match routes.get(&key, 0) {
        Ok(value) => {
            println!("{}", map_route_line(key, value, &peers));
            Ok(())
        }
        Err(aya::maps::MapError::KeyNotFound) => anyhow::bail!("{number}: not registered"),
        Err(e) => Err(e.into()),
    }
}

/// `fastpath status`: what the loaded fast path is doing, from its pins: the interfaces it
/// is attached to (by pinned link), its program, route occupancy, peers, and the counters
/// with their rates over one second.
pub fn status(pin_dir: &Path) -> anyhow::Result<()> {
    let before = Counters::read_pinned(pin_dir)?;
    let started = std::time::Instant::now();
    println!("fast path: pins in {}", pin_dir.display());
    let mut links: Vec<String> = std::fs::read_dir(pin_dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let iface = name.strip_prefix("link-")?.to_owned();
            let link = aya::programs::links::PinnedLink::from_pin(e.path()).ok()?;
            let info = aya::programs::links::FdLink::from(link).info().ok()?;
            Some(format!(
                "{iface} (link {}, program {})",
                info.id(),
                info.program_id()
            ))
        })
        .collect();
    links.sort();
    if links.is_empty() {
        println!("attached: nowhere (no pinned links)");
    } else {
        println!("attached: {}", links.join(", "));
    }
    let (routes, peers) = route_maps(pin_dir)?;
    let capacity = crate::maps::open_pinned(pin_dir, maps::ROUTES)?
        .info()?
        .max_entries();
    println!("routes: {} of {capacity}", routes.keys().count());
    let index = crate::route_index::RouteIndex::map_pinned(pin_dir)?.occupancy();
    println!(
        "route index: {} KiB, {} routes in slots, {} overflowed buckets (their other \
         numbers cost a route map lookup)",
        index.bytes / 1024,
        index.numbers,
        index.overflowed
    );
    let mut shown = 0;
    for id in 0..maps::MAX_PEERS {
        let Ok(peer) = peers.get(&id, 0) else {
            continue;
        };
        if peer.family == 0 {
            continue;
        }
        let state = if peer.state == maps::PEER_UP {
            "up"
        } else {
            "down"
        };
        println!("peer #{id}: {} {state}", crate::metrics::peer_label(&peer));
        shown += 1;
    }
    if shown == 0 {
        println!("peers: none");
    }
    std::thread::sleep(std::time::Duration::from_secs(1).saturating_sub(started.elapsed()));
    let now = Counters::read_pinned(pin_dir)?;
    let secs = started.elapsed().as_secs_f64();
    print!("{}", now.rates_since(&before, secs));
    Ok(())
}
