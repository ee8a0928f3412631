//! Live frames through a veth: how many frames per second the XDP program gets through
//! when they arrive as real packets, not as `BPF_PROG_TEST_RUN` copies (DESIGN.md §7).
//!
//! The throw-away topology (DESIGN.md §5) gives the sender (its caller namespace), the
//! gateway and a sink (its peer namespace). The program under test is attached in native
//! mode to the gateway's caller-side veth; a native program turns on that veth's NAPI, so
//! it runs on every frame the sender's end transmits. A hit is redirected (devmap) into the
//! gateway's peer-side veth; a redirect into a veth only delivers when the far end has NAPI
//! on (an XDP program or GRO), so the sink's end gets an `XDP_DROP` program, which also
//! keeps the sink's stack out of the measurement. Frames are addressed to a MAC that is not
//! the gateway's, so the ones the program passes end at the stack's first check (`ip_rcv`
//! drops other hosts' frames) and no replies flow back.
//!
//! The generator ([`crate::generator`], live frames) sends a fixed count of one prebuilt
//! frame per phase; the phases, each with its program attached only for its own send, are
//! interleaved round after round:
//! - `generator`: the same frames into a second veth pair inside the sender's namespace
//!   whose far end runs nothing, so the veth refuses them at once: the generator's own
//!   rate (the ceiling of what can be measured);
//! - `drop`: an `XDP_DROP` program on the gateway's veth, counted by the veth's rx packets
//!   (a native program's veth counts each frame its NAPI runs the program on);
//! - `notsip`, `miss`, `hit`: fastpath, counted by its own `STATS` counters, the hit also
//!   by the sink's rx packets.
//!
//! Rate = frames the program processed / wall time of the send. The veth's NAPI runs on
//! the sender's CPU, inside its send: each figure is the generator's cost plus the
//! receiver's, so the ratio to `drop` is the figure that matters.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow, ensure};
use aya::{
    maps::{HashMap, MapData, PerCpuArray},
    programs::XdpMode,
};
use fastpath::stats::Counters;
use fastpath_common::{Counter, RouteKey, maps::RouteValue};
use fastpath_tests::{
    Host, Iface, Topology,
    netns::{enter_netns, in_netns},
};

use crate::{
    frames::Frames,
    generator::{Generator, Sent},
    rawbpf::DropProgram,
};

/// Registered numbers in `ROUTES` during the run: the size of the per-packet headline.
const ROUTES: u32 = 1_000_000;
/// How long to wait, at most, for the counters to settle after a send.
const SETTLE: Duration = Duration::from_secs(1);

pub struct Plan {
    /// Frames per phase and round.
    pub frames: u64,
    /// Interleaved rounds; each runs every phase once.
    pub rounds: u32,
    /// Time limit of one phase's send.
    pub limit: Duration,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Generator,
    Drop,
    Fastpath(Counter),
}

const PHASES: [(&str, Phase); 5] = [
    ("generator", Phase::Generator),
    ("drop", Phase::Drop),
    ("notsip", Phase::Fastpath(Counter::NotSip)),
    ("miss", Phase::Fastpath(Counter::Miss)),
    ("hit", Phase::Fastpath(Counter::Hit)),
];

/// One phase's send in one round.
struct Sample {
    sent: Sent,
    processed: u64,
    /// Frames that reached the sink (the hit only).
    sunk: Option<u64>,
}

impl Sample {
    fn mpps(&self) -> f64 {
        self.processed as f64 / self.sent.secs / 1e6
    }
}

/// Runs the benchmark in the topology `prefix`; its (name, value, unit) results.
pub fn run(prefix: &str, plan: &Plan) -> anyhow::Result<Vec<(String, f64, &'static str)>> {
    // Declared first, dropped last: the namespaces outlive everything that uses them.
    eprintln!("veth: building topology {prefix:?}...");
    let topo = Topology::new(prefix)?;
    topo.resolve_neighbors()?;
    let [gen_tx, gen_rx] = [format!("{prefix}g0"), format!("{prefix}g1")];
    let caller = topo.ns_name(Host::Caller);
    fastpath_tests::netns::run(std::process::Command::new("ip").args([
        "-n", &caller, "link", "add", &gen_tx, "type", "veth", "peer", "name", &gen_rx,
    ]))?;
    for dev in [&gen_tx, &gen_rx] {
        fastpath_tests::netns::run(
            std::process::Command::new("ip").args(["-n", &caller, "link", "set", dev, "up"]),
        )?;
    }
    // A passed frame goes to the stack through GRO when the veth has it on, and UDP GRO
    // checksums the whole datagram before the stack drops it; off, passed frames of every
    // kind cost the same on their way to that drop. (The gateway's caller-side veth only
    // needs GRO as the target of a redirect, which this benchmark does not make.)
    topo.exec(
        Host::Gateway,
        ["ethtool", "-K", &topo.ifname(Iface::GwCaller), "gro", "off"],
    )?;
    crate::check_stop()?;

    // The sink's XDP_DROP stays attached for the whole run (its link fd keeps it there).
    let sink_prog = DropProgram::load()?;
    let _sink_link = in_netns(&topo.ns_name(Host::Peer), || {
        sink_prog.attach_native(fastpath::xdp::ifindex(&topo.ifname(Iface::Peer))?)
    })
    .context("attaching the sink's XDP_DROP")?;
    let (caller_ifindex, gen_ifindex) = in_netns(&caller, || {
        Ok((
            fastpath::xdp::ifindex(&topo.ifname(Iface::Caller))?,
            fastpath::xdp::ifindex(&gen_tx)?,
        ))
    })?;
    let pin = crate::PinDir(format!("/sys/fs/bpf/fp-veth-{}", std::process::id()).into());
    let out = Outlets {
        caller: &caller,
        caller_ifindex,
        gen_ifindex,
    };
    let samples = std::thread::scope(|scope| {
        scope
            .spawn(|| measure(&topo, &pin.0, &out, plan))
            .join()
            .map_err(|_| anyhow!("veth benchmark thread panicked"))
    })??;
    Ok(report(plan, &samples))
}

/// Where the generator sends from: the sender's namespace, and in it the veth to the
/// gateway or the spare pair.
struct Outlets<'a> {
    caller: &'a str,
    caller_ifindex: u32,
    gen_ifindex: u32,
}

impl Outlets<'_> {
    /// Sends `plan.frames` copies out of `ifindex`, from a thread in the sender's
    /// namespace (live frames leave by an interface of the caller's namespace) on `cpu`.
    fn send(
        &self,
        generator: &Generator,
        ifindex: u32,
        plan: &Plan,
        cpu: Option<usize>,
    ) -> anyhow::Result<Sent> {
        in_netns(self.caller, || {
            if let Some(cpu) = cpu {
                crate::pin_to_cpu(cpu);
            }
            generator.send(ifindex, plan.frames, plan.limit)
        })
    }
}

/// Runs in its own thread, moved into the gateway namespace; samples per phase.
fn measure(
    topo: &Topology,
    pin_dir: &Path,
    out: &Outlets,
    plan: &Plan,
) -> anyhow::Result<Vec<Vec<Sample>>> {
    enter_netns(&topo.ns_name(Host::Gateway))?;
    let cpu = crate::pin_to_current_cpu();
    if let Some(cpu) = cpu {
        eprintln!("veth: generator pinned to CPU {cpu}");
    }
    let gw_if = topo.ifname(Iface::GwCaller);
    let gw_ifindex = fastpath::xdp::ifindex(&gw_if)?;
    let egress = fastpath::xdp::ifindex(&topo.ifname(Iface::GwPeer))?;

    let mut ebpf = fastpath::xdp::load(pin_dir, crate::MAX_ROUTES)?;
    fastpath::maps::apply_config(&mut ebpf, &crate::bench_config()?, crate::GENERATION)?;
    fastpath::maps::set_egress(&mut ebpf, &[egress])?;
    fastpath::maps::set_local_addrs(pin_dir, &fastpath::maps::local_addresses()?)?;
    fill_routes(&mut ebpf)?;
    let stats: PerCpuArray<MapData, u64> = PerCpuArray::try_from(
        ebpf.take_map(fastpath_common::maps::STATS)
            .context("STATS map missing")?,
    )?;
    let fastpath = fastpath::xdp::program(&mut ebpf)?;
    let drop_prog = DropProgram::load()?;
    let frames = Frames::build()?;
    let (hit, miss, icmp) = (
        Generator::new(&frames.hit)?,
        Generator::new(&frames.miss)?,
        Generator::new(&frames.icmp)?,
    );

    let gateway_ns = topo.ns_name(Host::Gateway);
    let peer_ns = topo.ns_name(Host::Peer);
    let (peer_if, peer_ns) = (topo.ifname(Iface::Peer), peer_ns.as_str());
    let mut samples: Vec<Vec<Sample>> = PHASES.iter().map(|_| Vec::new()).collect();
    for round in 0..plan.rounds as usize {
        // Rotate the order each round so that no phase always follows the same one.
        for k in 0..PHASES.len() {
            let i = (k + round) % PHASES.len();
            crate::check_stop()?;
            let (name, phase) = PHASES[i];
            let generator = match phase {
                Phase::Fastpath(Counter::NotSip) => &icmp,
                Phase::Fastpath(Counter::Miss) => &miss,
                _ => &hit,
            };
            let send = |ifindex| out.send(generator, ifindex, plan, cpu);
            let sample = match phase {
                Phase::Generator => {
                    let sent = send(out.gen_ifindex)?;
                    Sample {
                        sent,
                        processed: sent.frames,
                        sunk: None,
                    }
                }
                Phase::Drop => {
                    let _link = drop_prog.attach_native(gw_ifindex)?;
                    let count = || rx_packets(&gateway_ns, &gw_if);
                    let before = count()?;
                    let sent = send(out.caller_ifindex)?;
                    Sample {
                        sent,
                        processed: settled(count)? - before,
                        sunk: None,
                    }
                }
                Phase::Fastpath(counter) => {
                    let link = fastpath
                        .attach(&gw_if, XdpMode::Driver)
                        .with_context(|| format!("attaching fastpath natively to {gw_if}"))?;
                    let count =
                        || -> anyhow::Result<u64> { Ok(Counters::read(&stats)?.get(counter)) };
                    let sink = || rx_packets(peer_ns, &peer_if);
                    let (before, sink_before) = (count()?, sink()?);
                    let sent = send(out.caller_ifindex)?;
                    let processed = settled(count)? - before;
                    let sunk = settled(sink)? - sink_before;
                    fastpath.detach(link)?;
                    Sample {
                        sent,
                        processed,
                        sunk: (counter == Counter::Hit).then_some(sunk),
                    }
                }
            };
            ensure!(
                sample.processed > 0,
                "veth {name}: no frame processed ({} sent)",
                sample.sent.frames
            );
            if let Some(sunk) = sample.sunk {
                ensure!(sunk > 0, "veth hit: no frame reached the sink");
            }
            samples[i].push(sample);
        }
    }
    Ok(samples)
}

/// Fills `ROUTES` with the per-packet benchmark's numbers (the hit number among them).
fn fill_routes(ebpf: &mut aya::Ebpf) -> anyhow::Result<()> {
    let keys: Vec<RouteKey> = (0..ROUTES)
        .map(crate::route_key)
        .collect::<Result<_, _>>()?;
    let mut routes: HashMap<_, RouteKey, RouteValue> = HashMap::try_from(
        ebpf.map_mut(fastpath_common::maps::ROUTES)
            .context("ROUTES map missing")?,
    )?;
    let value = RouteValue {
        peer_id: 0,
        generation: crate::GENERATION,
    };
    let start = Instant::now();
    for (i, key) in keys.iter().enumerate() {
        if i % 65536 == 0 {
            crate::check_stop()?;
        }
        routes.insert(key, value, 0).context("filling ROUTES")?;
    }
    eprintln!(
        "veth: ROUTES filled with {ROUTES} numbers in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    fastpath::maps::index_routes(ebpf, keys.iter().map(|&k| (k, 0)))
}

/// A counter's value once it stops moving (frames still in the veth's ring when the send
/// returns are processed a moment later).
fn settled(read: impl Fn() -> anyhow::Result<u64>) -> anyhow::Result<u64> {
    let start = Instant::now();
    let mut last = read()?;
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let now = read()?;
        if now == last || start.elapsed() > SETTLE {
            return Ok(now);
        }
        last = now;
    }
}

/// An interface's received packets, as `ip -s -j link` reports them.
fn rx_packets(ns: &str, dev: &str) -> anyhow::Result<u64> {
    let out = fastpath_tests::netns::run(
        std::process::Command::new("ip").args(["-n", ns, "-s", "-j", "link", "show", "dev", dev]),
    )?;
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("parsing `ip -s -j link show dev {dev}`"))?;
    doc[0]["stats64"]["rx"]["packets"]
        .as_u64()
        .with_context(|| format!("no rx packet count for {dev}"))
}

fn report(plan: &Plan, samples: &[Vec<Sample>]) -> Vec<(String, f64, &'static str)> {
    println!();
    println!(
        "live frames through a veth (native XDP): {} frames per phase x {} interleaved rounds",
        plan.frames, plan.rounds
    );
    println!(
        "{:<10} {:>12} {:>8} {:>8} {:>8} {:>10} {:>12} {:>10}",
        "phase", "median Mpps", "min", "max", "x drop", "ns - drop", "sent Mpps", "processed"
    );
    let drop_index = PHASES
        .iter()
        .position(|(_, phase)| *phase == Phase::Drop)
        .unwrap_or_default();
    let drop = crate::median(
        &samples[drop_index]
            .iter()
            .map(Sample::mpps)
            .collect::<Vec<_>>(),
    );
    let mut results = Vec::new();
    for (i, (name, _)) in PHASES.iter().enumerate() {
        let rates: Vec<f64> = samples[i].iter().map(Sample::mpps).collect();
        let sent_rates: Vec<f64> = samples[i]
            .iter()
            .map(|s| s.sent.frames as f64 / s.sent.secs / 1e6)
            .collect();
        let (processed, sent): (u64, u64) = samples[i]
            .iter()
            .fold((0, 0), |(p, s), x| (p + x.processed, s + x.sent.frames));
        let med = crate::median(&rates);
        println!(
            "{name:<10} {med:>12.3} {:>8.3} {:>8.3} {:>8.2} {:>10.0} {:>12.3} {:>9.1}%",
            crate::minimum(&rates),
            rates.iter().copied().fold(0.0, f64::max),
            med / drop,
            // Wall time per frame beyond the XDP_DROP phase's (1 / Mpps is us per frame).
            1e3 / med - 1e3 / drop,
            crate::median(&sent_rates),
            100.0 * processed as f64 / sent.max(1) as f64,
        );
        if let Some(sunk) = samples[i].iter().map(|s| s.sunk).sum::<Option<u64>>() {
            println!(
                "{:<10} {sunk} frames reached the sink ({:.1}% of the hits)",
                "",
                100.0 * sunk as f64 / processed.max(1) as f64
            );
        }
        results.push((format!("xdp_veth_{name}_mpps"), med, "Mpps"));
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The generator's count is what reaches the other end of the veth, each frame as the
    /// template says even where the receiver rewrote the last one in place, and the veth's
    /// rx counter (what the `drop` phase reads) sees each frame once.
    #[test]
    fn the_generator_sends_the_count_and_the_veth_counts_each_frame_once() -> anyhow::Result<()> {
        const FRAMES: u64 = 1000;
        let topo = Topology::new("xvgen")?;
        let frames = Frames::build()?;
        let generator = Generator::new(&frames.hit)?;
        let (ns, dev) = (topo.ns_name(Host::Gateway), topo.ifname(Iface::GwCaller));
        // The receiving end needs NAPI (an XDP program) to take frames from a peer's
        // `ndo_xdp_xmit`.
        let sink = DropProgram::load()?;
        let _link = in_netns(&ns, || sink.attach_native(fastpath::xdp::ifindex(&dev)?))?;
        let before = rx_packets(&ns, &dev)?;
        let sent = in_netns(&topo.ns_name(Host::Caller), || {
            let ifindex = fastpath::xdp::ifindex(&topo.ifname(Iface::Caller))?;
            generator.send(ifindex, FRAMES, Duration::from_secs(30))
        })?;
        assert_eq!(sent.frames, FRAMES);
        let received = settled(|| rx_packets(&ns, &dev))? - before;
        // Besides ours, at most the caller's own IPv6 housekeeping (router solicitations).
        assert!(
            (FRAMES..FRAMES + 10).contains(&received),
            "{received} frames received for {FRAMES} sent"
        );
        Ok(())
    }
}
