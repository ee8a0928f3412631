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
