//! End to end: real SIPp calls across a netns topology, through the XDP fast path.
//!
//! The gateway's kernel drops everything it would forward from the caller side, so a
//! call that reaches the peer can only have been forwarded by the XDP program.

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    time::Duration,
};

use anyhow::{Result, ensure};
use fastpath_tests::{Gateway, Host, Iface, Topology, Uas, netns::*, uac_call};

const REGISTERED: &str = "15550100001";
const UNREGISTERED: &str = "15550109999";
const CALLS: u32 = 10;

fn config(peer: SocketAddr) -> String {
    format!(
        "[[peers]]\nname = \"alice-pbx\"\naddress = \"{peer}\"\n\n\
         [[routes]]\nnumber = \"+1 555 010 0001\"\npeer = \"alice-pbx\"\n"
    )
}

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_fastpath"))
}

/// Places `calls` calls to `number` from the caller to the gateway and returns how many
/// the peer's UAS received.
fn place_calls(
    topology: &Topology,
    addrs: (IpAddr, IpAddr, IpAddr),
    number: &str,
    calls: u32,
) -> Result<(u64, u64)> {
    let (caller, gw, peer) = addrs;
    let uas = Uas::start(
        topology,
        Host::Peer,
        peer,
        SIP_PORT,
        calls,
        Duration::from_secs(40),
    )?;
    let gw_sip = SocketAddr::new(gw, SIP_PORT);
    let uac = uac_call(
        topology,
        Host::Caller,
        caller,
        gw_sip,
        number,
        calls,
        20,
        Duration::from_secs(30),
    )?;
    Ok((uac.successful, uas.finish()?.calls_received))
}

fn calls_cross_the_gateway_in_xdp(prefix: &str, addrs: (IpAddr, IpAddr, IpAddr)) -> Result<()> {
    let topology = Topology::new(prefix)?;
    topology.resolve_neighbors()?;
    topology.gw_forward_drop_from_caller()?;
    let gateway = Gateway::start(
        &topology,
        binary(),
        &config(SocketAddr::new(addrs.2, SIP_PORT)),
    )?;

    let metrics: SocketAddr = "127.0.0.1:9477".parse()?;
    let before = gateway.http_get(metrics, "/metrics")?;
    ensure!(
        before.contains("fastpath_xdp_packets_total{outcome=\"hit\"} 0"),
        "fresh daemon:\n{before}"
    );

    let (answered, received) = place_calls(&topology, addrs, REGISTERED, CALLS)?;
    ensure!(
        answered == u64::from(CALLS),
        "caller saw {answered} answered; counters {:?}\n{}",
        gateway.counters()?,
        gateway.log_text()
    );
    ensure!(received == u64::from(CALLS), "peer received {received}");
    // Each call is an INVITE and its ACK, both taken by the fast path.
    let hits = gateway.counter("hit")?;
    ensure!(
        hits == 2 * u64::from(CALLS),
        "hit counter {hits}, want {}",
        2 * CALLS
    );

    // An unregistered number is left to the kernel (the standard route is issue #5): it
    // must never reach the peer.
    let (answered, received) = place_calls(&topology, addrs, UNREGISTERED, 2)?;
    ensure!(answered == 0, "{answered} unregistered calls were answered");
    ensure!(
        received == 0,
        "{received} unregistered calls reached the peer"
    );
    let misses = gateway.counter("miss")?;
    ensure!(
        misses >= 2,
        "miss counter {misses}: each unregistered INVITE is a miss"
    );
    ensure!(
        gateway.counter("hit")? == hits,
        "an unregistered call was counted as a hit"
    );

    // Prometheus sees the same: the counters moved with the calls, and the peer's traffic.
    let after = gateway.http_get(metrics, "/metrics")?;
    let peer = SocketAddr::new(addrs.2, SIP_PORT);
    for line in [
        format!("fastpath_xdp_packets_total{{outcome=\"hit\"}} {hits}"),
        format!("fastpath_xdp_packets_total{{outcome=\"miss\"}} {misses}"),
        format!("fastpath_xdp_peer_packets_total{{peer=\"{peer}\"}} {hits}"),
    ] {
        ensure!(after.lines().any(|l| l == line), "no `{line}` in\n{after}");
    }
    fastpath_tests::promtool_check_metrics(&after)?;

    // `fastpath status` tells the same from the pins: where it is attached, the route,
    // the peer, the counters.
    let out = std::process::Command::new(binary())
        .args(["status", "--pin-dir"])
        .arg(gateway.pin_dir())
        .output()?;
    let status = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "{status}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for iface in [Iface::GwCaller, Iface::GwPeer, Iface::GwCarrier] {
        ensure!(
            status.contains(&format!("{} (link ", topology.ifname(iface))),
            "{status}"
        );
    }
    ensure!(status.contains("routes: 1 of "), "{status}");
    // The default capacity, 1M routes: 2^19 buckets of 64 bytes, this route in one.
    ensure!(
        status.contains("route index: 32768 KiB, 1 routes in slots, 0 overflowed buckets"),
        "{status}"
    );
    ensure!(status.contains(&format!("{peer} up")), "{status}");
    ensure!(
        status
            .lines()
            .any(|l| l.starts_with("hit") && l.split_whitespace().nth(1) == Some(&hits.to_string())),
        "{status}"
    );

    let log = gateway.stop()?;
    ensure!(
        log.contains("detached"),
        "daemon did not detach on SIGTERM:\n{log}"
    );
    Ok(())
}

#[test]
fn ipv4_registered_calls_take_the_fast_path() -> Result<()> {
    calls_cross_the_gateway_in_xdp(
        "fpe4",
        (CALLER_V4.into(), GW_CALLER_V4.into(), PEER_V4.into()),
    )
}

#[test]
fn ipv6_registered_calls_take_the_fast_path() -> Result<()> {
    calls_cross_the_gateway_in_xdp(
        "fpe6",
        (CALLER_V6.into(), GW_CALLER_V6.into(), PEER_V6.into()),
    )
}

/// `--keep-attached` leaves the pinned program forwarding after the daemon exits, and a
/// new daemon adopts the pinned link and maps.
#[test]
fn keep_attached_keeps_forwarding_and_is_adopted() -> Result<()> {
    let topology = Topology::new("fpek")?;
    topology.resolve_neighbors()?;
    topology.gw_forward_drop_from_caller()?;
    let addrs = (CALLER_V4.into(), GW_CALLER_V4.into(), PEER_V4.into());
    let config = config(SocketAddr::new(PEER_V4.into(), SIP_PORT));

    let first = Gateway::start_with(&topology, binary(), &config, &["--keep-attached"], true)?;
    let link = first
        .pin_dir()
        .join(format!("link-{}", topology.ifname(Iface::GwCaller)));
    first.stop()?;
    ensure!(link.exists(), "no pinned link left at {}", link.display());
    let (_, received) = place_calls(&topology, addrs, REGISTERED, 3)?;
    ensure!(
        received == 3,
        "{received} of 3 calls forwarded while no daemon ran"
    );

    let second = Gateway::start_with(&topology, binary(), &config, &[], false)?;
    ensure!(
        second.log_text().contains("adopted the pinned XDP link"),
        "{}",
        second.log_text()
    );
    let (_, received) = place_calls(&topology, addrs, REGISTERED, 3)?;
    ensure!(
        received == 3,
        "{received} of 3 calls forwarded by the adopting daemon"
    );
    // The counters live in the pinned map, so they carry across daemons.
    let hits = second.counter("hit")?;
    ensure!(hits == 12, "hit counter {hits}, want 12");
    second.stop()?;
    ensure!(!link.exists(), "link still pinned after a plain stop");
    Ok(())
}
