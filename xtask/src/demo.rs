//! The demo: a caller, the gateway, a peer PBX and a carrier trunk in network namespaces;
//! real SIPp calls to a registered and an unregistered number; where each went.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use anyhow::Result;
use fastpath_tests::{Gateway, Host, Topology, Uas, netns::*, uac_call};

use crate::step;

const CONFIG: &str = r#"
[[peers]]
name = "alice-pbx"
address = "198.51.100.2:5060"

[[peers]]
name = "alice-pbx-v6"
address = "[2001:db8:e::2]:5060"

[[routes]]
number = "+1 (555) 010-0001"
peer = "alice-pbx"

[[routes]]
number = "+1 (555) 010-0002"
peer = "alice-pbx-v6"

# Every call the fast path does not take: the userspace proxy, to the carrier trunk.
[proxy]
listen = ["192.0.2.1:5060", "[2001:db8:c::1]:5060"]

[[trunks]]
name = "carrier"
address = "203.0.113.2:5060"

# OPTIONS pings would show up in the demo's SIPp call counts.
[health]
enabled = false
"#;

const CALLS: u32 = 5;

pub fn run() -> Result<()> {
    step(
        "building the topology: caller 192.0.2.2 | gateway | peer 198.51.100.2, carrier 203.0.113.2",
    );
    let topology = Topology::new("demo")?;
    topology.resolve_neighbors()?;
    // Only XDP can carry caller → peer traffic across the gateway.
    topology.gw_forward_drop_from_caller()?;
    let binary = crate::repo_root().join("target/release/fastpath");
    step("starting `fastpath run` on the gateway (config below)");
    println!("{CONFIG}");
    let gateway = Gateway::start(&topology, &binary, CONFIG)?;

    let calls = [
        (
            "+1 555 010 0001 (registered, IPv4)",
            "15550100001",
            CALLER_V4.into(),
            GW_CALLER_V4.into(),
            PEER_V4.into(),
            CARRIER_V4.into(),
        ),
        (
            "+1 555 010 0002 (registered, IPv6)",
            "15550100002",
            CALLER_V6.into(),
            GW_CALLER_V6.into(),
            PEER_V6.into(),
            CARRIER_V6.into(),
        ),
        (
            "+1 555 010 9999 (not registered)",
            "15550109999",
            CALLER_V4.into(),
            GW_CALLER_V4.into(),
            PEER_V4.into(),
            CARRIER_V4.into(),
        ),
    ];
    let mut rows = Vec::new();
    for (label, number, caller, gw, peer, carrier) in calls {
        step(&format!("calling {label}: {CALLS} SIPp calls"));
        let (answered, at_peer, at_carrier) = place(&topology, number, caller, gw, peer, carrier)?;
        rows.push((label, answered, at_peer, at_carrier));
    }

    println!(
        "\n{:<38}{:>10}{:>10}{:>12}",
        "dialed", "answered", "at peer", "at carrier"
    );
    for (label, answered, at_peer, at_carrier) in &rows {
        println!("{label:<38}{answered:>10}{at_peer:>10}{at_carrier:>12}");
    }
    println!(
        "\nRegistered numbers went peer to peer, forwarded in the kernel by XDP (the gateway's\n\
         own forwarding drops caller traffic). The unregistered number was passed to the\n\
         kernel untouched and took the standard route: the userspace proxy sent it to the\n\
         carrier trunk.\n"
    );
    println!("XDP counters (`fastpath stats`):");
    let mut counters: Vec<_> = gateway.counters()?.into_iter().collect();
    counters.sort();
    for (name, value) in counters {
        println!("  {name:<18}{value:>8}");
    }
    step("tearing down");
    gateway.stop()?;
    Ok(())
}

fn place(
    topology: &Topology,
    number: &str,
    caller: IpAddr,
    gw: IpAddr,
    peer: IpAddr,
    carrier: IpAddr,
) -> Result<(u64, u64, u64)> {
    let timeout = Duration::from_secs(20);
    let at_peer = Uas::start(topology, Host::Peer, peer, SIP_PORT, CALLS, timeout)?;
    let at_carrier = Uas::start(topology, Host::Carrier, carrier, SIP_PORT, CALLS, timeout)?;
    let uac = uac_call(
        topology,
        Host::Caller,
        caller,
        SocketAddr::new(gw, SIP_PORT),
        number,
        CALLS,
        10,
        timeout,
    )?;
    Ok((
        uac.successful,
        at_peer.finish()?.calls_received,
        at_carrier.finish()?.calls_received,
    ))
}
