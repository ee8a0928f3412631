//! `fastpath-bench`: what the XDP fast path costs per packet, measured with
//! `BPF_PROG_TEST_RUN` against an `XDP_DROP` baseline, with 1k, 100k and 1M registered
//! numbers.
//!
//! The program runs inside the gateway namespace of a throw-away test topology
//! (DESIGN.md §5), so that `bpf_fib_lookup` finds the peer and a hit really ends in
//! `XDP_REDIRECT`. The benchmark sends nothing (the topology's neighbour resolution pings
//! inside the namespaces): test runs only execute the program on a copy of the frame.
//!
//! Times are the kernel's own (`duration` of `BPF_PROG_TEST_RUN`: the mean per repetition,
//! truncated to whole ns per call), so syscall and copy costs are not included, but the
//! test harness's per-repetition overhead is: hence the `XDP_DROP` program, measured the
//! same way on the same frame, as the floor. Paths are sampled interleaved, round after
//! round, and reported as the median (and minimum) over rounds.
//!
//! With `repeat`, the kernel runs the program over and over on the same buffer, so a hit's
//! rewrite carries over (DESIGN.md §4): the frame already points at the peer after the
//! first run, and its TTL drops by one each time. Hits therefore start at TTL 255 and each
//! call repeats at most 254 times; the `STATS` counters are read around every sample and
//! must show exactly one expected outcome per timed run, or the benchmark fails.

mod frames;
mod generator;
mod jit;
mod proxy;
mod rawbpf;
mod sync;
mod veth;

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow, bail, ensure};
use aya::{
    maps::{HashMap, MapData, PerCpuArray},
    programs::{TestRun, TestRunOptions, Xdp, XdpMode},
};
use clap::Parser;
use fastpath::{config::Config, stats::Counters};
use fastpath_common::{Counter, RouteKey, maps::RouteValue, normalize_number};
use fastpath_tests::{
    Host, Iface, Topology,
    netns::{PEER_V4, PEER_V6},
    packet,
};

use crate::{frames::Frames, rawbpf::DropProgram};

/// Capacity of `ROUTES` (the daemon's default): room for the largest size below.
const MAX_ROUTES: u32 = 1 << 20;
/// Table sizes, filled one after the other (each size keeps the previous entries).
const SIZES: [(&str, u32); 3] = [("1k", 1_000), ("100k", 100_000), ("1m", 1_000_000)];
const PEER_PORT: u16 = 5060;
const GENERATION: u32 = 1;
/// The IPv6 peer's id: the second peer of [`bench_config`].
const PEER6_ID: u32 = 1;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;

#[derive(Parser, Debug)]
#[command(about = "ns/packet of the fastpath XDP program under BPF_PROG_TEST_RUN")]
struct Args {
    /// Also write the results as {"results":[{"name","value","unit"}, ...]}.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Repetitions per BPF_PROG_TEST_RUN call. A hit decrements the reused buffer's TTL
    /// (255 at the start) on each repetition, hence at most 254.
    #[arg(long, value_name = "N", default_value_t = 200,
          value_parser = clap::value_parser!(u32).range(1..=254))]
    repeat: u32,
    /// BPF_PROG_TEST_RUN calls per sample (one sample = calls x repeat packets).
    #[arg(long, value_name = "N", default_value_t = 500,
          value_parser = clap::value_parser!(u32).range(1..))]
    calls: u32,
    /// Interleaved rounds per table size; each round takes one sample of every path.
    #[arg(long, value_name = "N", default_value_t = 31,
          value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Skip the XDP per-packet benchmark.
    #[arg(long)]
    skip_xdp: bool,
    /// Skip the live-frame throughput benchmark through a veth (`xdp_veth_*_mpps`).
    #[arg(long)]
    skip_veth: bool,
    /// Frames the veth benchmark's generator sends per phase and round.
    #[arg(long, value_name = "N", default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    veth_frames: u64,
    /// Interleaved rounds of the veth benchmark (the median of each phase is reported).
    #[arg(long, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=50))]
    veth_rounds: u32,
    /// Time limit of one phase's send in the veth benchmark, in seconds.
    #[arg(long, value_name = "S", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=120))]
    veth_limit: u64,
    /// Skip the userspace proxy throughput benchmark (`proxy_invites_per_s`).
    #[arg(long)]
    skip_proxy: bool,
    /// Interleaved rounds of the proxy benchmark (best of each target is reported).
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=10))]
    proxy_rounds: u32,
    /// Skip Kamailio in the proxy benchmark.
    #[arg(long)]
    skip_kamailio: bool,
    /// Name prefix of the proxy benchmark's topology (namespaces and interfaces), so that
    /// runs beside other users of the box never share names.
    #[arg(long, value_name = "PREFIX", default_value = "pxb")]
    proxy_prefix: String,
    /// Skip the registry → ROUTES cache-sync benchmarks.
    #[arg(long)]
    skip_sync: bool,
    /// Only the cache-sync benchmarks (no topology, no traffic).
    #[arg(long)]
    sync_only: bool,
    /// Only this table size (1k, 100k or 1m).
    #[arg(long, value_name = "LABEL")]
    only_size: Option<String>,
    /// A directory of other builds of the XDP program (`cargo xtask ablation`): each file is
    /// measured on the hit beside the daemon's object, in the same rounds.
    #[arg(long, value_name = "DIR")]
    variants: Option<PathBuf>,
    /// Write the JIT's machine code of the daemon's program here once it is loaded
    /// (`cargo xtask profile`).
    #[arg(long, value_name = "DIR")]
    jit_dump: Option<PathBuf>,
}

/// Removes the benchmark's pin directory (maps pinned by `fastpath::xdp::load`).
struct PinDir(PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        match std::fs::remove_dir_all(&self.0) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => eprintln!("fastpath-bench: cannot remove {}: {e}", self.0.display()),
        }
    }
}

/// Set by SIGINT / SIGTERM: the benchmark stops at the next sample and cleans up.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn check_stop() -> anyhow::Result<()> {
    if STOP.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

/// `head` + the pid in base 36 (3 digits): side-by-side runs get their own namespaces.
fn topology_prefix(head: &str) -> String {
    let mut n = std::process::id() % 36u32.pow(3);
    let mut digits = [b'0'; 3];
    for d in digits.iter_mut().rev() {
        *d = b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize];
        n /= 36;
    }
    format!("{head}{}", String::from_utf8_lossy(&digits))
}

/// The spare veth pair (both ends in the gateway namespace, left down, so no packet ever
/// reaches them) that keeps both programs attached during the benchmark; see `bench`.
fn spare_ifnames(topo: &Topology) -> [String; 2] {
    [
        format!("{}x0", topo.prefix()),
        format!("{}x1", topo.prefix()),
    ]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(signal, on_signal as *const () as libc::sighandler_t) };
    }
    let started = Instant::now();
    let mut results = Vec::new();
    if !args.skip_xdp && !args.sync_only {
        results.extend(xdp_bench(&args)?);
    }
    if !args.skip_veth && !args.sync_only {
        check_stop()?;
        let plan = veth::Plan {
            frames: args.veth_frames,
            rounds: args.veth_rounds,
            limit: Duration::from_secs(args.veth_limit),
        };
        for (name, value, unit) in veth::run(&topology_prefix("xv"), &plan)? {
            results.push(serde_json::json!({"name": name, "value": value, "unit": unit}));
        }
    }
    if !args.skip_proxy && !args.sync_only {
        check_stop()?;
        for (name, value, unit) in proxy::run(
            &args.proxy_prefix,
            proxy::Plan::FULL,
            !args.skip_kamailio,
            args.proxy_rounds,
        )? {
            // Ratios need their decimals; counts and times do not.
            let decimals = if unit == "x" { 2 } else { 0 };
            println!("{name:<40} {value:>14.decimals$} {unit}");
            results.push(serde_json::json!({"name": name, "value": value, "unit": unit}));
        }
    }
    if !args.skip_sync {
        check_stop()?;
        results.extend(sync::run()?);
    }
    if let Some(path) = &args.json {
        let doc = serde_json::json!({ "results": results });
        std::fs::write(path, format!("{doc:#}\n"))
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The XDP per-packet benchmark; its JSON rows.
fn xdp_bench(args: &Args) -> anyhow::Result<Vec<serde_json::Value>> {
    // Declared first, dropped last: the namespaces outlive everything that uses them.
    let prefix = topology_prefix("fb");
    eprintln!("building topology {prefix:?}...");
    let topo = Topology::new(&prefix)?;
    topo.resolve_neighbors()?;
    let [spare0, spare1] = spare_ifnames(&topo);
    fastpath_tests::netns::run(std::process::Command::new("ip").args([
        "-n",
        &topo.ns_name(Host::Gateway),
        "link",
        "add",
        &spare0,
        "type",
        "veth",
        "peer",
        "name",
        &spare1,
    ]))?;
    check_stop()?;
    let pin = PinDir(PathBuf::from(format!(
        "/sys/fs/bpf/fp-bench-{}",
        std::process::id()
    )));

    let report = std::thread::scope(|scope| {
        scope
            .spawn(|| bench(args, &topo, &pin.0))
            .join()
            .map_err(|_| anyhow!("benchmark thread panicked"))
    })??;
    report.print(args);
    Ok(report.json())
}

/// One kind of packet, and how to run it.
struct Probe {
    name: String,
    frame: Vec<u8>,
    /// `xdp_md` for the test run.
    ctx: Vec<u8>,
    kind: Kind,
}

#[derive(Clone, Copy)]
enum Kind {
    /// The `XDP_DROP` baseline.
    Drop,
    /// The fastpath program (`program` 0, or variant `program`): the action every run must
    /// end in, and the one counter every run must bump (none when the variant counts
    /// nothing).
    Fastpath {
        action: u32,
        counter: Option<Counter>,
        program: usize,
    },
}

/// Samples (ns/packet) of one path.
type PathSamples = (String, Vec<f64>);

#[derive(Default)]
struct Report {
    /// (size label, entries, samples of every path).
    sizes: Vec<(&'static str, u32, Vec<PathSamples>)>,
    /// Verifier instruction counts: the daemon's object, then the variants.
    verified: Vec<(String, u32)>,
    /// (size label, entries, cumulative seconds to fill ROUTES from empty).
    fills: Vec<(&'static str, u32, f64)>,
}

/// Runs in its own thread, which it moves into the gateway namespace.
fn bench(args: &Args, topo: &Topology, pin_dir: &Path) -> anyhow::Result<Report> {
    fastpath_tests::netns::enter_netns(&topo.ns_name(Host::Gateway))?;
    if let Some(cpu) = pin_to_current_cpu() {
        eprintln!("benchmark thread pinned to CPU {cpu}");
    }
    let ingress = fastpath::xdp::ifindex(&topo.ifname(Iface::GwCaller))?;
    let egress = fastpath::xdp::ifindex(&topo.ifname(Iface::GwPeer))?;

    let frames = Frames::build()?;
    let mut paths: Vec<Probe> = [
        ("xdp_drop", &frames.hit, Kind::Drop),
        (
            "hit",
            &frames.hit,
            Kind::Fastpath {
                action: XDP_REDIRECT,
                counter: Some(Counter::Hit),
                program: 0,
            },
        ),
        (
            "miss",
            &frames.miss,
            Kind::Fastpath {
                action: XDP_PASS,
                counter: Some(Counter::Miss),
                program: 0,
            },
        ),
        (
            "notsip",
            &frames.icmp,
            Kind::Fastpath {
                action: XDP_PASS,
                counter: Some(Counter::NotSip),
                program: 0,
            },
        ),
        (
            "otherport",
            &frames.other_port,
            Kind::Fastpath {
                action: XDP_PASS,
                counter: Some(Counter::NotSip),
                program: 0,
            },
        ),
        (
            "hit6",
            &frames.hit6,
            Kind::Fastpath {
                action: XDP_REDIRECT,
                counter: Some(Counter::Hit),
                program: 0,
            },
        ),
        (
            "miss6",
            &frames.miss6,
            Kind::Fastpath {
                action: XDP_PASS,
                counter: Some(Counter::Miss),
                program: 0,
            },
        ),
    ]
    .map(|(name, frame, kind)| Probe {
        name: name.to_string(),
        ctx: xdp_md(frame.len(), ingress),
        frame: frame.clone(),
        kind,
    })
    .into();

    let mut report = Report::default();
    let mut ebpf = fastpath::xdp::load(pin_dir, MAX_ROUTES)?;
    // Headroom under the verifier's 1M-instruction budget bounds how far the classifier
    // can grow (its scan window above all).
    report.note_verified("fastpath", fastpath::xdp::program(&mut ebpf)?)?;
    if let Some(dir) = &args.jit_dump {
        jit::dump(fastpath::xdp::program(&mut ebpf)?, dir)?;
    }
    // The variants adopt the pinned maps (routes, peers, config, counters) loaded above.
    let mut variants = Vec::new();
    for (name, object) in variant_objects(args)? {
        // An ablation can leave code the verifier refuses (no-hop-check did, once the
        // local check changed): that variant is left out, the others still measured.
        let mut variant = match fastpath::xdp::load_object(pin_dir, MAX_ROUTES, &object) {
            Ok(variant) => variant,
            Err(e) => {
                eprintln!("variant {name} left out: {e:#}");
                continue;
            }
        };
        report.note_verified(&name, fastpath::xdp::program(&mut variant)?)?;
        paths.extend(variant_probes(&name, variants.len() + 1, &frames, ingress));
        variants.push((name, variant));
    }
    fastpath::maps::apply_config(&mut ebpf, &bench_config()?, GENERATION)?;
    fastpath::maps::set_egress(&mut ebpf, &[egress])?;
    // The gateway's addresses, as the daemon sets them, plus the peer's: with `repeat` the
    // kernel reruns the program on the rewritten buffer, whose destination is the peer, and
    // each repetition must still be a hit (and pay for the lookup).
    let mut local = fastpath::maps::local_addresses()?;
    local.extend([IpAddr::from(PEER_V4), IpAddr::from(PEER_V6)]);
    fastpath::maps::set_local_addrs(pin_dir, &local)?;
    let stats: PerCpuArray<MapData, u64> = PerCpuArray::try_from(
        ebpf.take_map(fastpath_common::maps::STATS)
            .context("STATS map missing")?,
    )?;
    let drop_prog = DropProgram::load()?;

    // With repeat > 1 the kernel puts the program into the XDP dispatcher for the run and
    // takes it out afterwards, two synchronize_rcu() per call (milliseconds, far more on a
    // busy machine). A program that is attached somewhere stays in the dispatcher, which
    // makes those changes no-ops: attach both to the spare veths, down and never used.
    let [spare0, spare1] = spare_ifnames(topo);
    fastpath::xdp::program(&mut ebpf)?
        .attach(&spare0, XdpMode::Skb)
        .with_context(|| format!("attaching fastpath to {spare0}"))?;
    let _drop_link = drop_prog.attach_generic(fastpath::xdp::ifindex(&spare1)?)?;
    for (i, (name, variant)) in variants.iter_mut().enumerate() {
        let spare = variant_ifname(topo, i);
        fastpath_tests::netns::run(std::process::Command::new("ip").args([
            "-n",
            &topo.ns_name(Host::Gateway),
            "link",
            "add",
            &spare,
            "type",
            "veth",
            "peer",
            "name",
            &format!("{spare}p"),
        ]))?;
        fastpath::xdp::program(variant)?
            .attach(&spare, XdpMode::Skb)
            .with_context(|| format!("attaching variant {name} to {spare}"))?;
    }

    // Keys are made before the clock starts: the fill time is the map writes alone.
    let keys: Vec<RouteKey> = (0..SIZES[SIZES.len() - 1].1)
        .map(route_key)
        .collect::<Result<_, _>>()?;
    let hit_key = normalize_number(frames::HIT_NUMBER.as_bytes()).map_err(|e| anyhow!("{e}"))?;
    let hit6_key = normalize_number(frames::HIT6_NUMBER.as_bytes()).map_err(|e| anyhow!("{e}"))?;
    ensure!(
        keys[0] == hit_key,
        "the generated numbers must start with the hit number"
    );

    let (mut filled, mut fill_time) = (0usize, Duration::ZERO);
    for (label, entries) in SIZES {
        if args.only_size.as_deref().is_some_and(|only| only != label) {
            continue;
        }
        let entries_usize = entries as usize;
        {
            let mut routes: HashMap<_, RouteKey, RouteValue> = HashMap::try_from(
                ebpf.map_mut(fastpath_common::maps::ROUTES)
                    .context("ROUTES map missing")?,
            )?;
            let value = RouteValue {
                peer_id: 0,
                generation: GENERATION,
            };
            let start = Instant::now();
            for (n, key) in keys[filled..entries_usize].iter().enumerate() {
                if n % 65536 == 0 {
                    check_stop()?;
                }
                routes.insert(key, value, 0).context("filling ROUTES")?;
            }
            let step = start.elapsed();
            fill_time += step;
            eprintln!(
                "ROUTES: +{} entries in {:.3} s ({:.0} ns/insert), {entries} total, {:.3} s from empty",
                entries_usize - filled,
                step.as_secs_f64(),
                step.as_nanos() as f64 / (entries_usize - filled) as f64,
                fill_time.as_secs_f64(),
            );
            filled = entries_usize;
            let miss_key =
                normalize_number(frames::MISS_NUMBER.as_bytes()).map_err(|e| anyhow!("{e}"))?;
            ensure!(
                routes.get(&hit_key, 0).is_ok(),
                "hit number missing from ROUTES"
            );
            ensure!(
                routes.get(&miss_key, 0).is_err(),
                "miss number present in ROUTES"
            );
        }
        // Outside the timed fill (the sync benchmark times the daemon's own writes).
        let hit6 = (hit6_key, PEER6_ID);
        fastpath::maps::index_routes(
            &mut ebpf,
            keys[..entries_usize].iter().map(|&k| (k, 0)).chain([hit6]),
        )?;
        report.fills.push((label, entries, fill_time.as_secs_f64()));

        let mut progs = vec![&*fastpath::xdp::program(&mut ebpf)?];
        for (_, variant) in &mut variants {
            progs.push(&*fastpath::xdp::program(variant)?);
        }
        for path in &paths {
            check_once(&progs, &drop_prog, path)?;
        }
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
        for round in 0..args.rounds as usize {
            // Rotate the order each round so that no path always follows the same one.
            for k in 0..paths.len() {
                let i = (k + round) % paths.len();
                check_stop()?;
                samples[i].push(sample(&progs, &drop_prog, &stats, &paths[i], args)?);
            }
        }
        eprintln!(
            "measured {label}: {} rounds x {} paths",
            args.rounds,
            paths.len()
        );
        report.sizes.push((
            label,
            entries,
            paths.iter().map(|p| p.name.clone()).zip(samples).collect(),
        ));
    }
    Ok(report)
}

/// The daemon's configuration for the benchmarks: SIP on 5060, an IPv4 peer with the hit
/// number and an IPv6 peer (id [`PEER6_ID`]) with the IPv6 hit number (the generated
/// numbers are written to `ROUTES` directly, all for the IPv4 peer).
fn bench_config() -> anyhow::Result<Config> {
    Config::parse(&format!(
        "[xdp]\nsip_ports = [{PEER_PORT}]\nmax_routes = {MAX_ROUTES}\n\
         [[peers]]\nname = \"peer\"\naddress = \"{}\"\n\
         [[peers]]\nname = \"peer6\"\naddress = \"{}\"\n\
         [[routes]]\nnumber = \"{}\"\npeer = \"peer\"\n\
         [[routes]]\nnumber = \"{}\"\npeer = \"peer6\"\n",
        SocketAddr::new(PEER_V4.into(), PEER_PORT),
        SocketAddr::new(PEER_V6.into(), PEER_PORT),
        frames::HIT_NUMBER,
        frames::HIT6_NUMBER,
    ))
}

/// One run with the output frame: the action must be the expected one, and a hit's frame
/// must come out rewritten for the peer with valid checksums.
fn check_once(progs: &[&Xdp], drop_prog: &DropProgram, path: &Probe) -> anyhow::Result<()> {
    match path.kind {
        Kind::Drop => {
            let (action, _) = drop_prog.test_run(&path.frame, &path.ctx, 1)?;
            ensure!(
                action == XDP_DROP,
                "baseline returned {action}, not XDP_DROP"
            );
        }
        Kind::Fastpath {
            action, program, ..
        } => {
            let mut out = vec![0u8; path.frame.len() + 256];
            let result = progs[program].test_run(TestRunOptions {
                data_in: Some(&path.frame),
                data_out: Some(&mut out),
                ctx_in: Some(&path.ctx),
                repeat: 1,
                ..Default::default()
            })?;
            ensure!(
                result.return_value == action,
                "{}: XDP action {} instead of {action}{}",
                path.name,
                result.return_value,
                if action == XDP_REDIRECT {
                    " (XDP_REDIRECT); neighbours unresolved?"
                } else {
                    ""
                },
            );
            out.truncate(result.data_size_out as usize);
            if action == XDP_REDIRECT || action == XDP_TX {
                let v6 = packet::dst_ip(&path.frame).is_some_and(|ip| ip.is_ipv6());
                let (peer, hops) = if v6 {
                    (IpAddr::from(PEER_V6), packet::hop_limit(&out))
                } else {
                    (IpAddr::from(PEER_V4), packet::ttl(&out))
                };
                let name = &path.name;
                ensure!(
                    packet::dst_ip(&out) == Some(peer),
                    "{name}: destination not rewritten"
                );
                ensure!(
                    packet::dst_port(&out) == Some(PEER_PORT),
                    "{name}: port not rewritten"
                );
                ensure!(hops == Some(frames::TTL - 1), "{name}: TTL not decremented");
                ensure!(
                    v6 || packet::ipv4_header_checksum_ok(&out),
                    "{name}: bad IPv4 checksum"
                );
                ensure!(packet::udp_checksum_ok(&out), "{name}: bad UDP checksum");
            } else {
                ensure!(
                    out == path.frame,
                    "{}: a passed frame was modified",
                    path.name
                );
            }
        }
    }
    Ok(())
}

/// `calls` test runs of `repeat` repetitions: the mean of the kernel's per-repetition
/// durations, in ns/packet. For the fastpath program, the counters must show that every
/// repetition took the expected outcome.
fn sample(
    progs: &[&Xdp],
    drop_prog: &DropProgram,
    stats: &PerCpuArray<MapData, u64>,
    path: &Probe,
    args: &Args,
) -> anyhow::Result<f64> {
    let mut total_ns = 0u64;
    match path.kind {
        Kind::Drop => {
            for _ in 0..args.calls {
                let (action, ns) = drop_prog.test_run(&path.frame, &path.ctx, args.repeat)?;
                ensure!(action == XDP_DROP, "baseline returned {action}");
                total_ns += u64::from(ns);
            }
        }
        Kind::Fastpath {
            action,
            counter,
            program,
        } => {
            let before = Counters::read(stats)?;
            for _ in 0..args.calls {
                let result = progs[program].test_run(TestRunOptions {
                    data_in: Some(&path.frame),
                    ctx_in: Some(&path.ctx),
                    repeat: args.repeat,
                    ..Default::default()
                })?;
                ensure!(
                    result.return_value == action,
                    "{}: XDP action {} instead of {action}",
                    path.name,
                    result.return_value
                );
                total_ns += result.duration.as_nanos() as u64;
            }
            let after = Counters::read(stats)?;
            let runs = u64::from(args.calls) * u64::from(args.repeat);
            for c in Counter::ALL {
                let delta = after.get(c) - before.get(c);
                let want = if Some(c) == counter { runs } else { 0 };
                if delta != want {
                    bail!(
                        "{}: counter {} moved by {delta} over {runs} runs, expected {want}",
                        path.name,
                        c.name()
                    );
                }
            }
        }
    }
    Ok(total_ns as f64 / f64::from(args.calls))
}

impl Report {
    fn note_verified(&mut self, name: &str, prog: &Xdp) -> anyhow::Result<()> {
        if let Some(count) = prog.info()?.verified_instruction_count() {
            eprintln!("verifier ({name}): {count} instructions processed (limit 1000000)");
            self.verified.push((name.to_string(), count));
        }
        Ok(())
    }

    fn print(&self, args: &Args) {
        println!();
        for (name, count) in &self.verified {
            println!("verifier: {name}: {count} instructions processed (limit 1000000)");
        }
        println!(
            "BPF_PROG_TEST_RUN, kernel-timed; each sample = {} calls x repeat {}; {} interleaved rounds",
            args.calls, args.repeat, args.rounds
        );
        println!(
            "{:<10} {:>9} {:>14} {:>10} {:>10}",
            "path", "routes", "median ns/pkt", "min", "x drop"
        );
        for (_, entries, paths) in &self.sizes {
            let drop = paths
                .iter()
                .find(|p| p.0 == "xdp_drop")
                .map(|p| median(&p.1));
            for (name, samples) in paths {
                let (med, min) = (median(samples), minimum(samples));
                let ratio = drop.map_or(f64::NAN, |d| med / d);
                println!("{name:<10} {entries:>9} {med:>14.2} {min:>10.2} {ratio:>10.2}");
            }
            let hit = |name: &str| paths.iter().find(|p| p.0 == name).map(|p| median(&p.1));
            if let (Some(calibrated), Some(full)) = (hit("hit/calibrate-8-calls"), hit("hit")) {
                println!(
                    "one call and its return costs {:.1} ns here ({entries} routes): each kernel \
                     call on a path (a map lookup, a redirect) costs at least that",
                    (calibrated - full) / 8.0
                );
            }
        }
        for (label, entries, secs) in &self.fills {
            println!("ROUTES fill to {entries} ({label}): {secs:.3} s from empty");
        }
    }

    fn json(&self) -> Vec<serde_json::Value> {
        let mut results = Vec::new();
        let mut all_drop = Vec::new();
        for (label, _, paths) in &self.sizes {
            for (name, samples) in paths {
                if name.contains('/') {
                    // Ablation variants: printed, not part of the benchmark's results.
                    continue;
                }
                let key = if name == "xdp_drop" {
                    all_drop.extend_from_slice(samples);
                    format!("xdp_drop_ns_{label}")
                } else {
                    format!("xdp_{name}_ns_{label}")
                };
                results
                    .push(serde_json::json!({"name": key, "value": median(samples), "unit": "ns"}));
            }
        }
        if !all_drop.is_empty() {
            results.push(serde_json::json!({"name": "xdp_drop_ns", "value": median(&all_drop), "unit": "ns"}));
        }
        for (label, _, secs) in &self.fills {
            results.push(serde_json::json!({"name": format!("routes_fill_{label}_s"), "value": secs, "unit": "s"}));
        }
        results
    }
}

fn median(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn minimum(samples: &[f64]) -> f64 {
    samples.iter().copied().fold(f64::INFINITY, f64::min)
}

/// The variant objects in `--variants DIR`, by file name, sorted.
fn variant_objects(args: &Args) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let Some(dir) = &args.variants else {
        return Ok(Vec::new());
    };
    let mut objects = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let object = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        objects.push((name, object));
    }
    objects.sort();
    Ok(objects)
}

/// A variant's probes: its hit, and unless it is a waterfall stage (`stop-…`, which passes
/// the hit frame untouched at its stage and counts it not-SIP), its miss and not-SIP too,
/// so that an ablation or an earlier build shows what it costs every path.
fn variant_probes(name: &str, program: usize, frames: &Frames, ingress: u32) -> Vec<Probe> {
    let counts = name != "no-outcome-stats" && name != "none-of-these";
    let probe = |path: &str, frame: &Vec<u8>, action: u32, counter: Counter| Probe {
        name: format!("{path}/{name}"),
        ctx: xdp_md(frame.len(), ingress),
        frame: frame.clone(),
        kind: Kind::Fastpath {
            action,
            counter: counts.then_some(counter),
            program,
        },
    };
    if name.starts_with("stop-") {
        return vec![probe("hit", &frames.hit, XDP_PASS, Counter::NotSip)];
    }
    let action = if name == "xdp-tx" {
        XDP_TX
    } else {
        XDP_REDIRECT
    };
    vec![
        probe("hit", &frames.hit, action, Counter::Hit),
        probe("miss", &frames.miss, XDP_PASS, Counter::Miss),
        probe("notsip", &frames.icmp, XDP_PASS, Counter::NotSip),
    ]
}

/// The spare interface (in the gateway namespace, down) that keeps variant `i` attached.
fn variant_ifname(topo: &Topology, i: usize) -> String {
    format!("{}v{i}", topo.prefix())
}

/// Registered number `i`: 11 digits starting with 2, spread over the space (the multiplier
/// is coprime to 10^10, so distinct `i` give distinct numbers); number 0 is the hit number.
fn route_key(i: u32) -> anyhow::Result<RouteKey> {
    let spread = (u64::from(i) + 1) * 2_654_435_761 % 10_000_000_000;
    normalize_number(format!("2{spread:010}").as_bytes()).map_err(|e| anyhow!("route {i}: {e}"))
}

/// `struct xdp_md` for BPF_PROG_TEST_RUN: no metadata, the whole frame, received on
/// queue 0 of `ingress`; `egress_ifindex` must be 0.
fn xdp_md(len: usize, ingress: u32) -> Vec<u8> {
    let fields: [u32; 6] = [0, len as u32, 0, ingress, 0, 0];
    fields.iter().flat_map(|f| f.to_ne_bytes()).collect()
}

/// Keeps the benchmark thread on the CPU it runs on (test runs execute on the caller's
/// CPU; migrations in between would add noise). Best effort.
fn pin_to_current_cpu() -> Option<usize> {
    // SAFETY: no arguments, no memory.
    let cpu = usize::try_from(unsafe { libc::sched_getcpu() }).ok()?;
    pin_to_cpu(cpu).then_some(cpu)
}

/// Keeps the calling thread on `cpu`; false when the kernel refuses. Best effort.
fn pin_to_cpu(cpu: usize) -> bool {
    // SAFETY: `set` is a zeroed cpu_set_t owned here; 0 names the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}
