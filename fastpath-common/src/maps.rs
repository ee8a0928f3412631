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
pub const ROUTE_INDEX: &str = "ROUTE_INDEX";
/// The XDP program's read-only global holding `ROUTE_INDEX`'s size (log2 of its buckets).
pub const INDEX_BITS: &str = "INDEX_BITS";

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
