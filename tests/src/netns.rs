//! The test network (DESIGN.md §5): four namespaces joined through a gateway.
//!
//! ```text
//!  {p}-caller          {p}-gw                         {p}-peer
//!  {p}c0 ───────── {p}gc       {p}gp ─────────────── {p}p0
//!  192.0.2.2        192.0.2.1   198.51.100.1          198.51.100.2
//!  2001:db8:c::2    2001:db8:c::1  2001:db8:e::1      2001:db8:e::2
//!                     {p}gt
//!                     203.0.113.1, 2001:db8:f::1 ─── {p}t0  203.0.113.2, 2001:db8:f::2
//!                                                    {p}-carrier
//! ```
//!
//! Nothing here ever lives in, or sends from, the root namespace: the veths are created
//! directly inside their namespaces, and no namespace has a default route, so test
//! traffic cannot leave the machine even though the addresses look routable.

use std::ffi::OsStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, bail, ensure};

use crate::process::ChildGuard;

pub const CALLER_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
pub const GW_CALLER_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const GW_PEER_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const PEER_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
pub const GW_CARRIER_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
pub const CARRIER_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);

pub const CALLER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 2);
pub const GW_CALLER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 1);
pub const GW_PEER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xe, 0, 0, 0, 0, 1);
pub const PEER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xe, 0, 0, 0, 0, 2);
pub const GW_CARRIER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xf, 0, 0, 0, 0, 1);
pub const CARRIER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xf, 0, 0, 0, 0, 2);

pub const CALLER_NET_V4: &str = "192.0.2.0/24";
pub const PEER_NET_V4: &str = "198.51.100.0/24";
pub const CARRIER_NET_V4: &str = "203.0.113.0/24";
pub const CALLER_NET_V6: &str = "2001:db8:c::/64";
pub const PEER_NET_V6: &str = "2001:db8:e::/64";
pub const CARRIER_NET_V6: &str = "2001:db8:f::/64";

/// The usual SIP port, used by the peer's and the carrier's UAS in tests.
pub const SIP_PORT: u16 = 5060;

/// The nftables table that [`Topology::gw_forward_drop_from_caller`] installs.
pub const NFT_TABLE: &str = "fastpath_test";

/// Longest prefix: `{p}-carrier` and `{p}c0` stay well inside IFNAMSIZ (15).
pub const MAX_PREFIX_LEN: usize = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    Caller,
    Gateway,
    Peer,
    Carrier,
}

impl Host {
    pub const ALL: [Host; 4] = [Host::Caller, Host::Gateway, Host::Peer, Host::Carrier];

    fn suffix(self) -> &'static str {
        match self {
            Host::Caller => "caller",
            Host::Gateway => "gw",
            Host::Peer => "peer",
            Host::Carrier => "carrier",
        }
    }
}

/// One end of one of the three veth pairs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Iface {
    /// `{p}c0`, in the caller namespace.
    Caller,
    /// `{p}gc`, the gateway's caller-facing end (where the XDP program sits).
    GwCaller,
    /// `{p}gp`, the gateway's peer-facing end.
    GwPeer,
    /// `{p}p0`, in the peer namespace.
    Peer,
    /// `{p}gt`, the gateway's carrier-facing end.
    GwCarrier,
    /// `{p}t0`, in the carrier namespace.
    Carrier,
}

impl Iface {
    pub const ALL: [Iface; 6] = [
        Iface::Caller,
        Iface::GwCaller,
        Iface::GwPeer,
        Iface::Peer,
        Iface::GwCarrier,
        Iface::Carrier,
    ];

    /// The namespace this end lives in.
    pub fn host(self) -> Host {
        match self {
            Iface::Caller => Host::Caller,
            Iface::GwCaller | Iface::GwPeer | Iface::GwCarrier => Host::Gateway,
            Iface::Peer => Host::Peer,
            Iface::Carrier => Host::Carrier,
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Iface::Caller => "c0",
            Iface::GwCaller => "gc",
            Iface::GwPeer => "gp",
            Iface::Peer => "p0",
            Iface::GwCarrier => "gt",
            Iface::Carrier => "t0",
        }
    }

    /// Addresses (v4 /24, v6 /64) assigned to this end.
    fn addrs(self) -> (Ipv4Addr, Ipv6Addr) {
        match self {
            Iface::Caller => (CALLER_V4, CALLER_V6),
            Iface::GwCaller => (GW_CALLER_V4, GW_CALLER_V6),
            Iface::GwPeer => (GW_PEER_V4, GW_PEER_V6),
            Iface::Peer => (PEER_V4, PEER_V6),
            Iface::GwCarrier => (GW_CARRIER_V4, GW_CARRIER_V6),
            Iface::Carrier => (CARRIER_V4, CARRIER_V6),
        }
    }
}

/// The veth pairs, (namespace-side end, gateway end).
const PAIRS: [(Iface, Iface); 3] = [
    (Iface::Caller, Iface::GwCaller),
    (Iface::Peer, Iface::GwPeer),
    (Iface::Carrier, Iface::GwCarrier),
];

/// RAII guard for the topology above. Dropping it deletes the namespaces, which
/// takes the veths with them. Processes are not killed here: each has its own guard
/// (declare the topology first so that it drops last).
#[derive(Debug)]
pub struct Topology {
    prefix: String,
}

impl Topology {
    /// Builds the topology, first removing leftovers of an earlier run with the same
    /// prefix. On failure, whatever was built is torn down again.
    pub fn new(prefix: &str) -> Result<Self> {
        ensure!(
            !prefix.is_empty()
                && prefix.len() <= MAX_PREFIX_LEN
                && prefix.bytes().all(|b| b.is_ascii_alphanumeric()),
            "topology prefix {prefix:?} must be 1..={MAX_PREFIX_LEN} ASCII letters or digits"
        );
        let topo = Topology {
            prefix: prefix.to_owned(),
        };
        topo.delete_namespaces();
        // From here on, an early return drops `topo`, which cleans up.
        topo.build()
            .with_context(|| format!("building topology {prefix:?}"))?;
        Ok(topo)
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn ns_name(&self, host: Host) -> String {
        format!("{}-{}", self.prefix, host.suffix())
    }

    pub fn ifname(&self, iface: Iface) -> String {
        format!("{}{}", self.prefix, iface.suffix())
    }

    /// `ip netns exec NS args...`, not yet run, for callers that want to set up
    /// stdio or the working directory themselves.
    pub fn command<I, S>(&self, host: Host, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec"])
            .arg(self.ns_name(host))
            .args(args);
        cmd
    }

    /// Runs `args` inside `host`'s namespace to completion; an error (with stderr) if
    /// it exits non-zero.
    pub fn exec<I, S>(&self, host: Host, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run(&mut self.command(host, args))
    }

    /// Starts `args` inside `host`'s namespace under a [`ChildGuard`], stdin closed.
    /// `ip netns exec` execs the command in place, so the guard's pid is the
    /// command's own.
    pub fn spawn<I, S>(&self, host: Host, args: I) -> Result<ChildGuard>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        ChildGuard::spawn(self.command(host, args).stdin(Stdio::null()))
    }

    /// A UDP socket bound to `addr` inside `host`'s namespace, for tests that send and
    /// receive raw SIP. A socket belongs to the namespace it was made in, so a short-lived
    /// thread enters the namespace (setns affects only the calling thread), makes it, and
    /// hands it back.
    pub fn udp_socket(
        &self,
        host: Host,
        addr: std::net::SocketAddr,
    ) -> Result<std::net::UdpSocket> {
        in_netns(&self.ns_name(host), || {
            std::net::UdpSocket::bind(addr).with_context(|| format!("binding {addr}"))
        })
    }

    /// Adds another address to the carrier's interface (e.g. 203.0.113.3 for a second
    /// trunk); it goes with the namespace.
    pub fn add_carrier_address(&self, addr: std::net::IpAddr) -> Result<()> {
        let dev = self.ifname(Iface::Carrier);
        let cidr = if addr.is_ipv4() {
            format!("{addr}/24")
        } else {
            format!("{addr}/64")
        };
        let mut args = vec!["addr", "add", cidr.as_str(), "dev", dev.as_str()];
        if addr.is_ipv6() {
            args.push("nodad");
        }
        self.ip(Host::Carrier, &args)
    }

    /// Makes the gateway's kernel drop everything forwarded from the caller side, so
    /// that caller→peer traffic can only get through by XDP. Forwarding the other
    /// way (responses) stays allowed.
    pub fn gw_forward_drop_from_caller(&self) -> Result<()> {
        let iif = self.ifname(Iface::GwCaller);
        for cmd in [
            format!("add table inet {NFT_TABLE}"),
            format!(
                "add chain inet {NFT_TABLE} forward \
                 {{ type filter hook forward priority 0; policy accept; }}"
            ),
            format!("add rule inet {NFT_TABLE} forward iifname \"{iif}\" counter drop"),
        ] {
            // nft joins its arguments and parses them as one command line.
            self.exec(Host::Gateway, ["nft", cmd.as_str()])?;
        }
        Ok(())
    }

    /// Removes what [`Topology::gw_forward_drop_from_caller`] installed.
    pub fn gw_forward_allow_all(&self) -> Result<()> {
        let listed = self.exec(Host::Gateway, ["nft", "list", "tables"])?;
        if String::from_utf8_lossy(&listed.stdout).contains(&format!("inet {NFT_TABLE}")) {
            self.exec(Host::Gateway, ["nft", "delete", "table", "inet", NFT_TABLE])?;
        }
        Ok(())
    }

    /// Pings every neighbour of the gateway once from the gateway, so that its
    /// neighbour table is filled before `bpf_fib_lookup` needs it (the XDP program
    /// cannot resolve a neighbour itself and would pass the packet).
    pub fn resolve_neighbors(&self) -> Result<()> {
        let targets: [IpAddr; 6] = [
            CALLER_V4.into(),
            PEER_V4.into(),
            CARRIER_V4.into(),
            CALLER_V6.into(),
            PEER_V6.into(),
            CARRIER_V6.into(),
        ];
        for target in targets {
            let target = target.to_string();
            // A few tries: the very first packet can race the link coming up.
            let ok = (0..3).any(|_| {
                self.exec(Host::Gateway, ["ping", "-c1", "-W1", "-q", target.as_str()])
                    .is_ok()
            });
            ensure!(ok, "gateway cannot reach {target}");
        }
        Ok(())
    }

    fn build(&self) -> Result<()> {
        for host in Host::ALL {
            let ns = self.ns_name(host);
            run(Command::new("ip").args(["netns", "add", &ns]))?;
            self.ip(host, &["link", "set", "lo", "up"])?;
            // Interfaces created after this skip DAD, so link-local addresses are
            // usable at once and neighbour discovery does not stall for a second.
            self.sysctl(host, "net.ipv6.conf.default.accept_dad", "0")?;
            self.sysctl(host, "net.ipv6.conf.all.accept_dad", "0")?;
        }
        for (outer, gw) in PAIRS {
            // Created directly in the namespaces: the ends never exist in the root one.
            let (a, b) = (self.ifname(outer), self.ifname(gw));
            let (na, nb) = (self.ns_name(outer.host()), self.ns_name(gw.host()));
            run(Command::new("ip").args([
                "link", "add", &a, "netns", &na, "type", "veth", "peer", "name", &b, "netns", &nb,
            ]))?;
        }
        for iface in Iface::ALL {
            let (host, dev) = (iface.host(), self.ifname(iface));
            let (v4, v6) = iface.addrs();
            self.ip(host, &["addr", "add", &format!("{v4}/24"), "dev", &dev])?;
            self.ip(
                host,
                &["addr", "add", &format!("{v6}/64"), "dev", &dev, "nodad"],
            )?;
            self.ip(host, &["link", "set", &dev, "up"])?;
            // XDP_TX / XDP_REDIRECT into a veth only delivers if the receiving end
            // has an XDP program or GRO (its NAPI is off otherwise).
            // Checksums are computed in full before a packet leaves, as a real NIC's peer
            // would send them: with offload a veth carries only the pseudo-header sum,
            // which XDP (seeing no skb) cannot tell from a complete one.
            self.exec(host, ["ethtool", "-K", &dev, "gro", "on", "tx", "off"])
                .context("ethtool missing? apt-get install -y ethtool")?;
        }
        self.sysctl(Host::Gateway, "net.ipv4.ip_forward", "1")?;
        self.sysctl(Host::Gateway, "net.ipv6.conf.all.forwarding", "1")?;

        // Specific routes only, never a default route (DESIGN.md §5).
        let routes = [
            (
                Iface::Caller,
                GW_CALLER_V4,
                GW_CALLER_V6,
                [PEER_NET_V4, CARRIER_NET_V4],
                [PEER_NET_V6, CARRIER_NET_V6],
            ),
            (
                Iface::Peer,
                GW_PEER_V4,
                GW_PEER_V6,
                [CALLER_NET_V4, CARRIER_NET_V4],
                [CALLER_NET_V6, CARRIER_NET_V6],
            ),
            (
                Iface::Carrier,
                GW_CARRIER_V4,
                GW_CARRIER_V6,
                [CALLER_NET_V4, PEER_NET_V4],
                [CALLER_NET_V6, PEER_NET_V6],
            ),
        ];
        for (iface, via4, via6, nets4, nets6) in routes {
            let (via4, via6) = (via4.to_string(), via6.to_string());
            for net in nets4 {
                self.ip(iface.host(), &["-4", "route", "add", net, "via", &via4])?;
            }
            for net in nets6 {
                self.ip(iface.host(), &["-6", "route", "add", net, "via", &via6])?;
            }
        }
        Ok(())
    }

    /// `ip -n NS args...` (configuration only; runs from the root namespace).
    fn ip(&self, host: Host, args: &[&str]) -> Result<()> {
        run(Command::new("ip")
            .arg("-n")
            .arg(self.ns_name(host))
            .args(args))
        .map(drop)
    }

    fn sysctl(&self, host: Host, key: &str, value: &str) -> Result<()> {
        self.exec(host, ["sysctl", "-q", "-w", &format!("{key}={value}")])
            .map(drop)
    }

    /// Best effort: deletes whichever of our namespaces exist.
    fn delete_namespaces(&self) {
        for host in Host::ALL {
            let ns = self.ns_name(host);
            if !Path::new("/run/netns").join(&ns).exists() {
                continue;
            }
            if let Err(e) = run(Command::new("ip").args(["netns", "del", &ns])) {
                eprintln!("fastpath-tests: {e:#}");
            }
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.delete_namespaces();
    }
}

/// Runs `cmd` to completion, capturing output; an error carrying stderr unless it
/// exits 0.
/// Moves the calling thread (only) into the network namespace `/run/netns/{name}`.
pub fn enter_netns(name: &str) -> Result<()> {
    use std::os::fd::AsRawFd;
    let path = Path::new("/run/netns").join(name);
    let ns = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: a valid namespace fd; CLONE_NEWNET moves only this thread.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!(
            "setns {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Runs `f` on a new thread in the network namespace `/run/netns/{name}`; the calling
/// thread (and the rest of the process) stays where it is. What `f` binds or connects
/// lives in that namespace.
pub fn in_netns<T: Send>(name: &str, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|scope| {
        let handle = scope.spawn(move || -> Result<T> {
            enter_netns(name)?;
            f()
        });
        match handle.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

pub fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_ifnamsiz() {
        let t = Topology {
            prefix: "abcde".into(),
        };
        for iface in Iface::ALL {
            assert!(t.ifname(iface).len() <= 15);
        }
        assert_eq!(t.ns_name(Host::Carrier), "abcde-carrier");
        assert_eq!(t.ifname(Iface::GwCaller), "abcdegc");
        // Never built: forget it so that its drop cannot touch real namespaces.
        std::mem::forget(t);
    }

    #[test]
    fn rejects_bad_prefixes() {
        for bad in ["", "toolong", "a-b", "a b"] {
            assert!(Topology::new(bad).is_err(), "{bad:?}");
        }
    }
}
