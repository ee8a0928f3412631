//! SIGHUP: routes, peers and trunks change in a running daemon, under call load, without
//! a failed call; an invalid file changes nothing.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
    time::Duration,
};

use anyhow::{Result, ensure};
use fastpath_tests::{Gateway, Host, Topology, UacReport, Uas, netns::*, uac_call};

/// Registered to the peer from the start.
const REGISTERED: &str = "15550100001";
/// Unregistered at first; the reload routes it to the peer.
const MOVED: &str = "15550100002";
/// Never registered: the trunk takes it, whichever trunk the config names.
const UNREGISTERED: &str = "15550109999";
const SECOND_CARRIER_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 3);

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_fastpath"))
}

fn sip(ip: impl Into<IpAddr>) -> SocketAddr {
    SocketAddr::new(ip.into(), SIP_PORT)
}

/// The peer owns `numbers`; `trunk` is the standard route.
fn config(numbers: &[&str], trunk: Ipv4Addr) -> String {
    let mut text = format!(
        "[proxy]\nlisten = [\"{}\"]\nworkers = 2\n\n\
         [health]\nenabled = false\n\n\
         [[peers]]\nname = \"alice-pbx\"\naddress = \"{}\"\n\n\
         [[trunks]]\nname = \"carrier\"\naddress = \"{}\"\n\n",
        sip(GW_CALLER_V4),
        sip(PEER_V4),
        sip(trunk),
    );
    for number in numbers {
        text += &format!("[[routes]]\nnumber = \"{number}\"\npeer = \"alice-pbx\"\n\n");
    }
    text
}

/// UASs at the peer and at both carrier addresses, for up to `calls` calls each.
struct Answering {
    peer: Uas,
    carrier: Uas,
    second_carrier: Uas,
}

impl Answering {
    fn start(topology: &Topology, calls: u32) -> Result<Self> {
        let wait = Duration::from_secs(60);
        let uas = |host, ip: Ipv4Addr| Uas::start(topology, host, ip.into(), SIP_PORT, calls, wait);
        Ok(Self {
            peer: uas(Host::Peer, PEER_V4)?,
            carrier: uas(Host::Carrier, CARRIER_V4)?,
            second_carrier: uas(Host::Carrier, SECOND_CARRIER_V4)?,
        })
    }

    /// Calls received at (peer, carrier, second carrier), and the ACKs that arrived
    /// without their INVITE anywhere among them.
    fn finish(self) -> Result<((u64, u64, u64), u64)> {
        let reports = [
            self.peer.finish()?,
            self.carrier.finish()?,
            self.second_carrier.finish()?,
        ];
        let [peer, carrier, second] = reports.map(|r| r.calls_received);
        Ok((
            (peer, carrier, second),
            reports.iter().map(|r| r.stray_acks).sum(),
        ))
    }
}

fn call(topology: &Topology, number: &str, calls: u32, rate: u32) -> Result<UacReport> {
    uac_call(
        topology,
        Host::Caller,
        CALLER_V4.into(),
        sip(GW_CALLER_V4),
        number,
        calls,
        rate,
        Duration::from_secs(u64::from(calls / rate) + 20),
    )
}

#[test]
fn sighup_under_call_load_moves_routes_and_trunks_without_a_failed_call() -> Result<()> {
    let topology = Topology::new("rl0")?;
    topology.add_carrier_address(SECOND_CARRIER_V4.into())?;
    topology.resolve_neighbors()?;
    let before = config(&[REGISTERED], CARRIER_V4);
    let after = config(&[REGISTERED, MOVED], SECOND_CARRIER_V4);
    let mut gateway = Gateway::start(&topology, binary(), &before)?;

    // 150 calls at 15/s to the number the reloads move (peer or trunk) and as many to
    // one they leave on the standard route (one trunk or the other), while the config
    // flips four times between the two versions, with an invalid file in the middle.
    let calls = 150;
    let answering = Answering::start(&topology, 2 * calls)?;
    let (uac, reloads) = std::thread::scope(|scope| -> Result<_> {
        let moved = scope.spawn(|| call(&topology, MOVED, calls, 15));
        let trunked = scope.spawn(|| call(&topology, UNREGISTERED, calls, 15));
        let mut reloads = Vec::new();
        for text in [&after, &before, "[[routes]\nnot toml", &after, &before] {
            std::thread::sleep(Duration::from_millis(1500));
            reloads.push(gateway.reload(text)?);
        }
        let moved = moved.join().expect("the load thread")?;
        let trunked = trunked.join().expect("the load thread")?;
        Ok(([moved, trunked], reloads))
    })?;
    let ((at_peer, at_carrier, at_second), stray_acks) = answering.finish()?;
    let successful: u64 = uac.iter().map(|r| r.successful).sum();
    let failed: u64 = uac.iter().map(|r| r.failed).sum();
    let retransmitted: u64 = uac.iter().map(|r| r.retransmissions).sum();
    let log = gateway.log_text();
    ensure!(
        reloads == [true, true, false, true, true],
        "reloads applied: {reloads:?}\n{log}"
    );
    ensure!(
        (successful, failed) == (2 * u64::from(calls), 0),
        "calls during reloads: {successful} answered, {failed} failed\n{log}"
    );
    // Every call arrived, and once: the proxy and the kernel forward each INVITE they
    // get exactly once. The one exception is inherent to a stateless gateway (RFC 3261
    // §16.11 routes on the message and the server's settings, and a reload changes
    // those): an INVITE retransmitted across a reload that moved its number may land by
    // both routes. So arrivals beyond the calls placed must be retransmissions. Likewise
    // an ACK sent just after such a reload follows the new route (counted, not a call).
    let received = at_peer + at_carrier + at_second;
    let placed = 2 * u64::from(calls);
    ensure!(
        received >= placed && received - placed <= retransmitted,
        "received: peer {at_peer}, carrier {at_carrier}, second carrier {at_second} for \
         {placed} calls ({retransmitted} INVITEs retransmitted, {stray_acks} stray ACKs)"
    );
    eprintln!(
        "reload under load: {received} INVITEs received for {placed} calls, \
         {retransmitted} retransmitted, {stray_acks} ACKs by a new route"
    );
    ensure!(
        at_peer > 0 && at_carrier > 0 && at_second > 0,
        "each config routed some calls: peer {at_peer}, carrier {at_carrier}, \
         second carrier {at_second}"
    );

    // Settled on `after`: the moved number goes to the peer in the kernel, the others as
    // the new file says.
    gateway.reload(&after)?;
    let hits = gateway.counter("hit")?;
    let answering = Answering::start(&topology, 10)?;
    for number in [MOVED, REGISTERED, UNREGISTERED] {
        let uac = call(&topology, number, 5, 10)?;
        ensure!(
            (uac.successful, uac.failed) == (5, 0),
            "calls to {number}: {uac:?}"
        );
    }
    let landed = answering.finish()?;
    ensure!(
        landed == ((10, 0, 5), 0),
        "((peer, carrier, second), stray ACKs) = {landed:?}"
    );
    ensure!(
        gateway.counter("hit")? - hits >= 10,
        "the kernel forwarded the peer's calls (INVITE and ACK each)"
    );
    let status = gateway.cli(&["status"])?;
    for line in [
        "trunk carrier at 203.0.113.3:5060 (priority 0, weight 1): up",
        "reloads: 5 applied, 1 refused",
        "route table: 2 routes",
        "attached: ",
    ] {
        ensure!(status.contains(line), "status lacks {line:?}:\n{status}");
    }
    let attached = status.lines().filter(|l| l.starts_with("xdp: ")).count();
    ensure!(attached == 3, "three interfaces with their mode:\n{status}");
    gateway.stop()?;
    Ok(())
}

#[test]
fn an_invalid_file_or_a_restart_only_key_changes_nothing_else() -> Result<()> {
    let topology = Topology::new("rl1")?;
    topology.add_carrier_address(SECOND_CARRIER_V4.into())?;
    topology.resolve_neighbors()?;
    let before = config(&[REGISTERED], CARRIER_V4);
    let mut gateway = Gateway::start_with(&topology, binary(), &before, &["--no-xdp"], true)?;
    // A route to a peer the file does not name: refused whole.
    let dangling = before.replace("peer = \"alice-pbx\"", "peer = \"bob-pbx\"");
    ensure!(!gateway.reload(&dangling)?, "a dangling route is refused");
    ensure!(
        gateway
            .log_text()
            .contains("routes[0].peer: no peer named 'bob-pbx'"),
        "the error names the key:\n{}",
        gateway.log_text()
    );
    // The listen address needs a restart: named, and the old one keeps answering.
    let moved_listen = config(&[REGISTERED, MOVED], CARRIER_V4).replace(
        &format!("listen = [\"{}\"]", sip(GW_CALLER_V4)),
        &format!("listen = [\"{}\"]", sip(GW_PEER_V4)),
    );
    ensure!(gateway.reload(&moved_listen)?);
    ensure!(
        gateway.log_text().contains("proxy.listen"),
        "the restart-only key is named:\n{}",
        gateway.log_text()
    );
    let answering = Answering::start(&topology, 10)?;
    for number in [REGISTERED, MOVED, UNREGISTERED] {
        let uac = call(&topology, number, 3, 10)?;
        ensure!(
            (uac.successful, uac.failed) == (3, 0),
            "calls to {number}: {uac:?}"
        );
    }
    let landed = answering.finish()?;
    ensure!(
        landed == ((6, 3, 0), 0),
        "((peer, carrier, second), stray ACKs) = {landed:?}"
    );
    // The daemon's own view, through `fastpath status`.
    let status = gateway.cli(&["status"])?;
    for line in [
        "xdp: off (the proxy takes every call)",
        "route table: 2 routes",
        "peer alice-pbx at 198.51.100.2:5060: up (config)",
        "trunk carrier at 203.0.113.2:5060 (priority 0, weight 1): up",
        "reloads: 1 applied, 1 refused",
        "fast path: not loaded",
    ] {
        ensure!(status.contains(line), "status lacks {line:?}:\n{status}");
    }
    // `fastpath routes` asks the daemon's table when no maps are pinned.
    let routes = gateway.cli(&["routes", "list"])?;
    let mut lines: Vec<&str> = routes.lines().collect();
    lines.sort();
    ensure!(
        lines
            == [
                "+15550100001 -> 198.51.100.2:5060 (up)",
                "+15550100002 -> 198.51.100.2:5060 (up)"
            ],
        "routes list: {routes}"
    );
    let one = gateway.cli(&["routes", "get", "+1 (555) 010-0002"])?;
    ensure!(one == "+15550100002 -> 198.51.100.2:5060 (up)\n", "{one}");
    ensure!(
        gateway.cli(&["routes", "get", UNREGISTERED]).is_err(),
        "an unregistered number is an error"
    );
    // And on /metrics, as Prometheus sees it.
    let metrics = gateway.http_get("127.0.0.1:9477".parse()?, "/metrics")?;
    for line in [
        "fastpath_config_reloads_total 1",
        "fastpath_config_reload_failures_total 1",
        "fastpath_peer_up{address=\"198.51.100.2:5060\",peer=\"alice-pbx\"} 1",
        "fastpath_trunk_up{address=\"203.0.113.2:5060\",trunk=\"carrier\"} 1",
    ] {
        ensure!(
            metrics.contains(line),
            "/metrics lacks {line:?}:\n{metrics}"
        );
    }
    fastpath_tests::promtool_check_metrics(&metrics)?;
    gateway.stop()?;
    Ok(())
}
