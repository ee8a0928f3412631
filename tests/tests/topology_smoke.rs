//! The topology and the SIPp scenarios, checked without any gateway program: calls
//! cross the gateway namespace by plain kernel forwarding. Needs root; does not skip.
//! Each test has its own prefix, so they run side by side.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use fastpath_tests::netns::{CALLER_V4, CALLER_V6, GW_CALLER_V4, PEER_V4, PEER_V6, SIP_PORT, run};
use fastpath_tests::{Host, Iface, Topology, Uas, uac_call};

const RUN_LIMIT: Duration = Duration::from_secs(10);
const NUMBER: &str = "15551234567";

fn ns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// UAS on the peer, UAC on the caller, `calls` calls straight at the peer.
fn call_peer(topo: &Topology, caller: IpAddr, peer: IpAddr, calls: u32) -> Result<()> {
    let uas = Uas::start(topo, Host::Peer, peer, SIP_PORT, calls, RUN_LIMIT)?;
    let uac = uac_call(
        topo,
        Host::Caller,
        caller,
        SocketAddr::new(peer, SIP_PORT),
        NUMBER,
        calls,
        10,
        RUN_LIMIT,
    )?;
    let messages = uas.messages()?;
    let uas = uas.finish()?;
    let n = u64::from(calls);
    assert_eq!(
        (uac.created, uac.successful, uac.failed),
        (n, n, 0),
        "{uac:?}"
    );
    assert_eq!((uas.calls_received, uas.successful), (n, n), "{uas:?}");
    // The ACK reached the peer with the INVITE's Request-URI.
    let uri = format!("sip:{NUMBER}@{}", SocketAddr::new(peer, SIP_PORT));
    assert!(
        messages.contains(&format!("INVITE {uri} SIP/2.0")),
        "{messages}"
    );
    assert!(
        messages.contains(&format!("ACK {uri} SIP/2.0")),
        "{messages}"
    );
    Ok(())
}

#[test]
fn ipv4_calls_cross_the_gateway() -> Result<()> {
    let topo = Topology::new("fts4")?;
    call_peer(&topo, CALLER_V4.into(), PEER_V4.into(), 5)
}

#[test]
fn ipv6_calls_cross_the_gateway() -> Result<()> {
    let topo = Topology::new("fts6")?;
    call_peer(&topo, CALLER_V6.into(), PEER_V6.into(), 5)
}

#[test]
fn nft_drop_leaves_only_xdp_a_way_through() -> Result<()> {
    let topo = Topology::new("ftsd")?;
    topo.gw_forward_drop_from_caller()?;
    let uas = Uas::start(&topo, Host::Peer, PEER_V4.into(), SIP_PORT, 1, RUN_LIMIT)?;
    let uac = uac_call(
        &topo,
        Host::Caller,
        CALLER_V4.into(),
        SocketAddr::new(PEER_V4.into(), SIP_PORT),
        NUMBER,
        1,
        1,
        RUN_LIMIT,
    )?;
    let uas = uas.finish()?;
    assert_eq!(
        (uac.created, uac.successful, uac.failed),
        (1, 0, 1),
        "{uac:?}"
    );
    assert_eq!(uas.calls_received, 0, "{uas:?}");
    // The rule (not something else) dropped them: its counter moved.
    let rules = topo.exec(
        Host::Gateway,
        ["nft", "list", "table", "inet", "fastpath_test"],
    )?;
    let rules = String::from_utf8_lossy(&rules.stdout);
    assert!(!rules.contains("packets 0 "), "{rules}");

    // Lifting the rule restores plain forwarding.
    topo.gw_forward_allow_all()?;
    call_peer(&topo, CALLER_V4.into(), PEER_V4.into(), 5)
}

#[test]
fn shape_routes_and_neighbours() -> Result<()> {
    let topo = Topology::new("ftsr")?;
    for host in Host::ALL {
        assert!(ns_exists(&topo.ns_name(host)));
        let routes = topo.exec(host, ["ip", "-4", "route", "show", "default"])?;
        let routes6 = topo.exec(host, ["ip", "-6", "route", "show", "default"])?;
        assert!(
            routes.stdout.is_empty() && routes6.stdout.is_empty(),
            "default route in {host:?}"
        );
    }
    // Every interface sits in its own namespace, none in the root one.
    for iface in Iface::ALL {
        topo.exec(iface.host(), ["ip", "link", "show", &topo.ifname(iface)])?;
        assert!(
            run(std::process::Command::new("ip").args(["link", "show", &topo.ifname(iface)]))
                .is_err()
        );
    }
    let gro = topo.exec(Host::Peer, ["ethtool", "-k", &topo.ifname(Iface::Peer)])?;
    assert!(String::from_utf8_lossy(&gro.stdout).contains("generic-receive-offload: on"));

    topo.resolve_neighbors()?;
    let neigh = topo.exec(Host::Gateway, ["ip", "neigh", "show"])?;
    let neigh = String::from_utf8_lossy(&neigh.stdout);
    for addr in [
        PEER_V4.to_string(),
        PEER_V6.to_string(),
        CALLER_V4.to_string(),
    ] {
        assert!(
            neigh
                .lines()
                .any(|l| l.starts_with(&format!("{addr} ")) && l.contains("lladdr")),
            "{neigh}"
        );
    }
    // The caller reaches the peer through the gateway: one hop, so TTL 1 expires there.
    let one_hop = topo.exec(
        Host::Caller,
        ["ping", "-c1", "-W1", "-t", "1", &PEER_V4.to_string()],
    );
    assert!(one_hop.is_err(), "TTL 1 must expire at the gateway");
    topo.exec(
        Host::Caller,
        ["ping", "-c1", "-W1", &GW_CALLER_V4.to_string()],
    )?;
    Ok(())
}

#[test]
fn leftovers_are_replaced_and_drop_cleans_up() -> Result<()> {
    // A run killed before its drop leaves namespaces behind; the next one clears them.
    std::mem::forget(Topology::new("ftsl")?);
    assert!(ns_exists("ftsl-gw"));
    let topo = Topology::new("ftsl")?;
    drop(topo);
    for host in ["caller", "gw", "peer", "carrier"] {
        assert!(!ns_exists(&format!("ftsl-{host}")));
    }
    Ok(())
}

#[test]
fn panic_still_tears_down() {
    let result = std::thread::spawn(|| {
        let _topo = Topology::new("ftsp").expect("topology");
        panic!("test failure inside a topology");
    })
    .join();
    assert!(result.is_err());
    assert!(!ns_exists("ftsp-gw") && !ns_exists("ftsp-caller"));
}
