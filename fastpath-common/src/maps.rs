//! Layouts of the BPF maps the daemon writes and the XDP program reads.
//!
//! All values are `#[repr(C)]` without implicit padding so that they are `Pod` on the host
//! (behind the `user` feature) and byte-identical on both sides.

/// Where the daemon pins the maps (and, with `--keep-attached`, the links) so that a
/// restart or upgrade adopts them instead of starting from empty.
pub const PIN_DIR: &str = "/sys/fs/bpf/fastpath";

/// Map names as they appear in the eBPF object and under [`PIN_DIR`].
pub const ROUTES: &str = "ROUTES";
pub const PEERS: &str = "PEERS";
pub const STATS: &str = "STATS";
pub const CONFIG: &str = "CONFIG";
pub const EGRESS: &str = "EGRESS";
pub const PEER_STATS: &str = "PEER_STATS";
pub const LOCAL_ADDRS: &str = "LOCAL_ADDRS";
pub const ROUTE_FILTER: &str = "ROUTE_FILTER";
/// The XDP program's read-only global holding `ROUTE_FILTER`'s size (log2 of its bits).
pub const FILTER_BITS_LOG2: &str = "FILTER_BITS_LOG2";

/// Default capacity of `ROUTES` (the daemon may resize it before load).
pub const DEFAULT_MAX_ROUTES: u32 = 1 << 20;
/// Capacity of `PEERS`, indexed by peer id.
pub const MAX_PEERS: u32 = 4096;
/// Capacity of `EGRESS`, the devmap of interfaces the fast path may send out of.
pub const MAX_EGRESS: u32 = 64;
/// Capacity of `LOCAL_ADDRS`, the gateway's own addresses.
pub const MAX_LOCAL_ADDRS: u32 = 1024;
/// SIP ports the program inspects; a port of 0 is an unused slot.
pub const MAX_SIP_PORTS: usize = 8;
/// Used when the `CONFIG` slot holds no port at all (a freshly created map).
pub const DEFAULT_SIP_PORT: u16 = 5060;

/// `ROUTE_FILTER` is a Bloom filter over the keys in `ROUTES`, sized when the program is
/// loaded from the route capacity (`xdp.max_routes`): a power of two of bits, at least
/// this many per route, so that at capacity about one unregistered number in twenty still
/// reaches the hash map (two probes: (1 - e^(-2/8))^2 ≈ 5 %). The XDP program reads it
/// before `ROUTES`: an array lookup is a few instructions, a hash-map lookup three or four
/// kernel calls, which is most of a miss.
pub const FILTER_BITS_PER_ROUTE: u64 = 8;
/// Smallest filter: 2^16 bits (8 KiB).
pub const FILTER_MIN_BITS_LOG2: u32 = 16;
/// Largest filter: 2^32 bits (512 MiB), for 512M routes; bit indexes fit a `u32`.
pub const FILTER_MAX_BITS_LOG2: u32 = 32;

/// The filter's size (log2 of its bits) for a capacity of `max_routes` routes. The XDP
/// program gets it as a read-only global, the map as its `max_entries`.
pub const fn filter_bits_log2(max_routes: u32) -> u32 {
    let bits = max_routes as u64 * FILTER_BITS_PER_ROUTE;
    // ceil(log2(bits)); `bits` is at least 8 when max_routes is at least 1.
    let log2 = u64::BITS - bits.saturating_sub(1).leading_zeros();
    if log2 < FILTER_MIN_BITS_LOG2 {
        FILTER_MIN_BITS_LOG2
    } else if log2 > FILTER_MAX_BITS_LOG2 {
        FILTER_MAX_BITS_LOG2
    } else {
        log2
    }
}

/// The filter's `u64` words (the map's `max_entries`) at a size of 2^`bits_log2` bits.
pub const fn filter_words(bits_log2: u32) -> u32 {
    1 << (bits_log2 - 6)
}

/// The two bits of `key` in a `ROUTE_FILTER` of 2^`bits_log2` bits, as (word index, mask).
/// The daemon sets both before it writes the key to `ROUTES`, so a key in `ROUTES` always
/// has them; a number without both is not registered. Bits are cleared only when the
/// daemon rebuilds the filter from what `ROUTES` holds.
#[inline(always)]
pub const fn filter_probes(key: crate::RouteKey, bits_log2: u32) -> [(u32, u64); 2] {
    // Two multiplicative hashes; each bit index is the top `bits_log2` bits of a product.
    let first = key.to_bits().wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let second = (first ^ (first >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    [
        filter_probe(first, bits_log2),
        filter_probe(second, bits_log2),
    ]
}

#[inline(always)]
const fn filter_probe(hash: u64, bits_log2: u32) -> (u32, u64) {
    let bit = (hash >> (64 - bits_log2)) as u32;
    (bit >> 6, 1 << (bit & 63))
}

/// `ROUTES` value: which peer a registered number goes to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct RouteValue {
    /// Index into `PEERS`: moving a peer or marking it down is one write, not one per number.
    pub peer_id: u32,
    /// Bumped by the daemon on each sync so that reconcile can tell stale entries.
    pub generation: u32,
}

/// `PEERS` value: where a peer path ends.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct PeerValue {
    /// IPv4 in the first 4 bytes, or IPv6; network byte order.
    pub addr: [u8; 16],
    /// Host byte order.
    pub port: u16,
    /// [`FAMILY_IPV4`] or [`FAMILY_IPV6`]; 0 = empty slot.
    pub family: u8,
    /// [`PEER_UP`] or not.
    pub state: u8,
}

pub const FAMILY_IPV4: u8 = 4;
pub const FAMILY_IPV6: u8 = 6;
pub const PEER_UP: u8 = 1;
pub const PEER_DOWN: u8 = 0;

impl PeerValue {
    pub const fn is_up(&self, family: u8) -> bool {
        self.state == PEER_UP && self.family == family
    }
}

/// `PEER_STATS` value (per CPU, indexed by peer id): what the fast path sent to a peer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct PeerCounters {
    pub packets: u64,
    /// Whole frames, as sent.
    pub bytes: u64,
}

/// `LOCAL_ADDRS` key: one of the gateway's own addresses.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct LocalAddr {
    /// IPv4 in the first 4 bytes (the rest zero), or IPv6; network byte order.
    pub addr: [u8; 16],
    /// [`FAMILY_IPV4`] or [`FAMILY_IPV6`].
    pub family: u8,
    pub _pad: [u8; 3],
}

impl LocalAddr {
    pub const fn v4(addr: [u8; 4]) -> Self {
        let mut bytes = [0; 16];
        bytes[0] = addr[0];
        bytes[1] = addr[1];
        bytes[2] = addr[2];
        bytes[3] = addr[3];
        Self {
            addr: bytes,
            family: FAMILY_IPV4,
            _pad: [0; 3],
        }
    }

    pub const fn v6(addr: [u8; 16]) -> Self {
        Self {
            addr,
            family: FAMILY_IPV6,
            _pad: [0; 3],
        }
    }
}

/// [`Config::flags`]: take only requests addressed to the gateway itself (`LOCAL_ADDRS`).
pub const LOCAL_ONLY: u32 = 1;

/// `CONFIG[0]`: settings the program reads per packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Config {
    /// UDP destination ports that carry SIP (host byte order, 0 = unused).
    pub sip_ports: [u16; MAX_SIP_PORTS],
    /// [`LOCAL_ONLY`] or 0.
    pub flags: u32,
    /// Bumped whenever `LOCAL_ADDRS` changes: the program's per-CPU memory of the last
    /// local destination it looked up is only good for the epoch it was made in.
    pub local_epoch: u32,
}

impl Config {
    /// Whether `port` is a SIP port; an all-empty config means [`DEFAULT_SIP_PORT`].
    #[inline(always)]
    pub fn is_sip_port(&self, port: u16) -> bool {
        if port == 0 {
            return false;
        }
        let mut any = false;
        let mut i = 0;
        while i < MAX_SIP_PORTS {
            if self.sip_ports[i] == port {
                return true;
            }
            any |= self.sip_ports[i] != 0;
            i += 1;
        }
        !any && port == DEFAULT_SIP_PORT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_means_5060() {
        let empty = Config {
            sip_ports: [0; MAX_SIP_PORTS],
            flags: 0,
            local_epoch: 0,
        };
        assert!(empty.is_sip_port(5060));
        assert!(!empty.is_sip_port(5061));
        assert!(!empty.is_sip_port(0));
        let mut custom = empty;
        custom.sip_ports[3] = 5080;
        assert!(custom.is_sip_port(5080));
        assert!(!custom.is_sip_port(5060));
    }
}

#[cfg(test)]
mod filter_tests {
    extern crate std;
    use std::{collections::HashSet, format};

    use super::*;
    use crate::normalize_number;

    #[test]
    fn probes_stay_in_the_filter_and_spread() {
        for bits_log2 in [FILTER_MIN_BITS_LOG2, 23, FILTER_MAX_BITS_LOG2] {
            let mut words = HashSet::new();
            for n in 0..10_000u64 {
                let key = normalize_number(format!("1555{n:07}").as_bytes()).unwrap();
                for (word, mask) in filter_probes(key, bits_log2) {
                    assert!(word < filter_words(bits_log2), "{key}: word {word}");
                    assert_eq!(mask.count_ones(), 1);
                    words.insert(word);
                }
            }
            // 20k probes: nearly all in distinct words when there are many more words than
            // probes, and nearly every word hit when there are fewer (1024 at the minimum),
            // if the hash spreads sequential numbers (a clumping one would fill a few).
            let expected = if bits_log2 == FILTER_MIN_BITS_LOG2 {
                1_000
            } else {
                18_000
            };
            assert!(
                words.len() > expected,
                "2^{bits_log2} bits: {} words",
                words.len()
            );
        }
    }

    #[test]
    fn the_filter_has_eight_bits_per_route_within_its_bounds() {
        assert_eq!(filter_bits_log2(1), FILTER_MIN_BITS_LOG2);
        assert_eq!(filter_bits_log2(DEFAULT_MAX_ROUTES), 23, "1M routes: 1 MiB");
        assert_eq!(filter_bits_log2(DEFAULT_MAX_ROUTES + 1), 24);
        assert_eq!(filter_bits_log2(10_000_000), 27, "10M routes: 16 MiB");
        assert_eq!(filter_bits_log2(u32::MAX), FILTER_MAX_BITS_LOG2);
        for max_routes in [1, 1000, 8192, 8193, 1 << 20, 3_000_000, 1 << 29, u32::MAX] {
            let bits_log2 = filter_bits_log2(max_routes);
            let bits = 1u64 << bits_log2;
            assert!(
                bits >= u64::from(max_routes) * FILTER_BITS_PER_ROUTE
                    || bits_log2 == FILTER_MAX_BITS_LOG2,
                "{max_routes}"
            );
            assert!(
                bits < 2 * u64::from(max_routes) * FILTER_BITS_PER_ROUTE
                    || bits_log2 == FILTER_MIN_BITS_LOG2,
                "{max_routes}: no bigger than needed"
            );
            assert_eq!(u64::from(filter_words(bits_log2)) * 64, bits);
        }
    }
}
