//! Shared by the XDP integration tests: the program loaded with its maps pinned in a
//! directory of its own (removed again on drop), `BPF_PROG_TEST_RUN` with a real `xdp_md`,
//! and counter deltas.
#![allow(dead_code, reason = "each test binary uses a different part")]

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context, Result, bail};
use aya::{
    Ebpf,
    maps::{Map, MapData, PerCpuArray},
    programs::{TestRun, TestRunOptions},
};
use fastpath::{config::Config, stats::Counters};
use fastpath_common::{Counter, RouteKey, maps::STATS, normalize_number};
use fastpath_tests::{
    FrameSpec,
    netns::{CALLER_V4, CALLER_V6, GW_CALLER_V4, GW_CALLER_V6},
};

pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

/// Registered numbers: the first goes to the IPv4 peer, the second to the IPv6 peer.
pub const V4_NUMBER: &str = "15550100001";
pub const V6_NUMBER: &str = "442079460000";
/// Registered too: a leading zero must survive normalization (`0044…` is not `44…`).
pub const ZERO_NUMBER: &str = "0044207946001";
/// Registered to a peer on the caller's side of the gateway: out the way it came in (XDP_TX).
pub const TX_NUMBER: &str = "15550100009";
/// A valid number nobody registered.
pub const UNREGISTERED: &str = "15550100002";

/// SIP ports the program watches: the usual one and one the peer does not listen on, so
/// that a rewrite to the peer's port 5060 changes the port (and its checksum word).
pub const SIP_PORT: u16 = 5060;
pub const ALT_SIP_PORT: u16 = 5080;
/// The caller's source port.
pub const CALLER_PORT: u16 = 5062;

pub const CONFIG: &str = r#"
[xdp]
sip_ports = [5060, 5080]

[[peers]]
name = "v4-pbx"
address = "198.51.100.2:5060"

[[peers]]
name = "v6-pbx"
address = "[2001:db8:e::2]:5060"

[[peers]]
name = "caller-side-pbx"
address = "192.0.2.2:5060"

[[routes]]
number = "+1 (555) 010-0001"
peer = "v4-pbx"

[[routes]]
number = "+44 20 7946 0000"
peer = "v6-pbx"

[[routes]]
number = "0044 20 7946 001"
peer = "v4-pbx"

[[routes]]
number = "1-555-010-0009"
peer = "caller-side-pbx"
"#;

pub fn config() -> Config {
    Config::parse(CONFIG).expect("the test config parses")
}

/// A directory under /sys/fs/bpf for one test's pinned maps, removed on drop.
pub struct PinDir(PathBuf);

impl PinDir {
    pub fn new(name: &str) -> Result<Self> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let path = PathBuf::from(format!(
            "/sys/fs/bpf/fp-test-{name}-{}-{seq}",
            std::process::id()
        ));
        if path.exists() {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("removing stale {}", path.display()))?;
        }
        Ok(Self(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if self.0.exists()
            && let Err(e) = std::fs::remove_dir_all(&self.0)
        {
            eprintln!("cannot remove {}: {e}", self.0.display());
        }
    }
}

/// `struct xdp_md` as `BPF_PROG_TEST_RUN` takes it in `ctx_in`.
#[derive(Clone, Copy, Debug, Default)]
pub struct XdpMd {
    pub ingress_ifindex: u32,
    pub rx_queue_index: u32,
}

impl XdpMd {
    /// data = 0 (no metadata), data_end = the frame's length (the kernel insists),
    /// data_meta = 0, egress_ifindex = 0.
    fn bytes(&self, frame_len: usize) -> [u8; 24] {
        let words = [
            0,
            frame_len as u32,
            0,
            self.ingress_ifindex,
            self.rx_queue_index,
            0,
        ];
        let mut out = [0u8; 24];
        for (chunk, word) in out.chunks_exact_mut(4).zip(words) {
            chunk.copy_from_slice(&word.to_ne_bytes());
        }
        out
    }
}

/// What one run of the program did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub action: u32,
    pub frame: Vec<u8>,
}

/// The XDP program loaded with its maps pinned in a fresh [`PinDir`].
pub struct Harness {
    // Fields drop in order: the program and map fds first, then the pins.
    pub ebpf: Ebpf,
    stats: PerCpuArray<MapData, u64>,
    pin: PinDir,
}

impl Harness {
    /// Loads the program and writes [`CONFIG`] into its maps.
    pub fn new(name: &str) -> Result<Self> {
        Self::with_config(name, &config())
    }

    pub fn with_config(name: &str, config: &Config) -> Result<Self> {
        Self::load(PinDir::new(name)?, config, 1024)
    }

    /// The program loaded again over the same pins, as a restart with a route capacity of
    /// `max_routes` would.
    pub fn reloaded(self, config: &Config, max_routes: u32) -> Result<Self> {
        let Self { ebpf, stats, pin } = self;
        drop((ebpf, stats));
        Self::load(pin, config, max_routes)
    }

    fn load(pin: PinDir, config: &Config, max_routes: u32) -> Result<Self> {
        let mut ebpf = fastpath::xdp::load(pin.path(), max_routes)?;
        fastpath::maps::apply_config(&mut ebpf, config, 1)?;
        // The test frames' destination (the topology's gateway) is this gateway's address,
        // wherever the test runs; the daemon lists its interfaces' addresses instead.
        fastpath::maps::set_local_addrs(pin.path(), &[gw_v4(0).ip(), gw_v6(0).ip()])?;
        let stats = fastpath::maps::open_pinned(pin.path(), STATS)?;
        let stats = PerCpuArray::try_from(Map::PerCpuArray(stats))?;
        Ok(Self { ebpf, stats, pin })
    }

    pub fn pin_dir(&self) -> &Path {
        self.pin.path()
    }

    pub fn set_egress(&mut self, ifindexes: &[u32]) -> Result<()> {
        fastpath::maps::set_egress(&mut self.ebpf, ifindexes)
    }

    pub fn counters(&self) -> Result<Counters> {
        Counters::read(&self.stats)
    }

    /// One `BPF_PROG_TEST_RUN`; with `md`, the run sees that ingress interface (which must
    /// exist in the calling thread's network namespace).
    pub fn run(&mut self, frame: &[u8], md: Option<XdpMd>) -> Result<Outcome> {
        let ctx = md.map(|md| md.bytes(frame.len()));
        let mut out = vec![0u8; frame.len() + 256];
        let result = fastpath::xdp::program(&mut self.ebpf)?
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: ctx.as_ref().map(|c| c.as_slice()),
                ..Default::default()
            })
            .with_context(|| format!("BPF_PROG_TEST_RUN of a {}-byte frame", frame.len()))?;
        out.truncate(result.data_size_out as usize);
        Ok(Outcome {
            action: result.return_value,
            frame: out,
        })
    }

    /// Runs `frame` and returns the outcome with the one counter that moved.
    pub fn run_counted(&mut self, frame: &[u8], md: Option<XdpMd>) -> Result<(Outcome, Counter)> {
        let before = self.counters()?;
        let outcome = self.run(frame, md)?;
        let after = self.counters()?;
        Ok((outcome, single_delta(&before, &after)?))
    }

    /// Runs `frame`, which must come back as XDP_PASS byte for byte, with exactly
    /// `expected` counted.
    pub fn assert_pass(&mut self, what: &str, frame: &[u8], md: Option<XdpMd>, expected: Counter) {
        let (outcome, moved) = self
            .run_counted(frame, md)
            .unwrap_or_else(|e| panic!("{what}: {e:#}"));
        assert_eq!(outcome.action, XDP_PASS, "{what}: action");
        assert!(
            outcome.frame == frame,
            "{what}: frame changed\n in: {frame:02x?}\nout: {:02x?}",
            outcome.frame
        );
        assert_eq!(moved, expected, "{what}: counter");
    }
}

/// The only counter that differs between two readings, which must differ by exactly 1.
pub fn single_delta(before: &Counters, after: &Counters) -> Result<Counter> {
    let moved: Vec<(Counter, u64)> = Counter::ALL
        .iter()
        .map(|&c| (c, after.get(c).wrapping_sub(before.get(c))))
        .filter(|&(_, d)| d != 0)
        .collect();
    match moved.as_slice() {
        [(c, 1)] => Ok(*c),
        other => bail!("expected exactly one counter to move by 1, got {other:?}"),
    }
}

pub fn key(number: &str) -> RouteKey {
    normalize_number(number.as_bytes()).expect("a valid test number")
}

/// A SIP request with a plausible header section after the request line.
pub fn sip_request(method: &str, uri: &str) -> Vec<u8> {
    format!(
        "{method} {uri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.2:5062;branch=z9hG4bK-fp-1\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:caller@192.0.2.2>;tag=1\r\n\
         To: <{uri}>\r\n\
         Call-ID: fp-test-1@192.0.2.2\r\n\
         CSeq: 1 {method}\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// The caller's INVITE for `number`, addressed to the gateway.
pub fn invite(number: &str) -> Vec<u8> {
    sip_request("INVITE", &format!("sip:+{number}@{GW_CALLER_V4}"))
}

pub fn caller_v4() -> SocketAddr {
    SocketAddr::new(CALLER_V4.into(), CALLER_PORT)
}

pub fn caller_v6() -> SocketAddr {
    SocketAddr::new(CALLER_V6.into(), CALLER_PORT)
}

pub fn gw_v4(port: u16) -> SocketAddr {
    SocketAddr::new(GW_CALLER_V4.into(), port)
}

pub fn gw_v6(port: u16) -> SocketAddr {
    SocketAddr::new(GW_CALLER_V6.into(), port)
}

/// A UDP/IPv4 frame from the caller to the gateway's SIP port.
pub fn v4_frame(payload: &[u8]) -> FrameSpec {
    FrameSpec::udp(caller_v4(), gw_v4(SIP_PORT), payload)
}

pub fn v6_frame(payload: &[u8]) -> FrameSpec {
    FrameSpec::udp(caller_v6(), gw_v6(SIP_PORT), payload)
}

pub fn build(spec: &FrameSpec) -> Vec<u8> {
    spec.build().expect("frame builds")
}

/// Recomputes the IPv4 header checksum of an untagged frame after a field was patched.
pub fn fix_ipv4_checksum(frame: &mut [u8]) {
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    frame[24] = 0;
    frame[25] = 0;
    let mut sum = 0u32;
    for word in frame[14..14 + ihl].chunks_exact(2) {
        sum += u32::from(u16::from_be_bytes([word[0], word[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    frame[24..26].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

/// A MAC address as `ip` and sysfs print it.
pub fn parse_mac(text: &str) -> Result<[u8; 6]> {
    let bytes: Vec<u8> = text
        .trim()
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("bad MAC {text:?}"))?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("bad MAC {text:?}"))
}

/// SplitMix64: a small, seedable, reproducible generator (no dependency, no version churn).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0); the modulo bias is irrelevant here.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u32) -> bool {
        self.below(100) < percent as usize
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }
}
