//! The standard route end to end: the userspace proxy in a netns topology, driven by
//! SIPp and by raw datagrams.
//!
//! Calls to a registered number must land at the peer's UAS and all others at the
//! carrier's, in XDP mode and in `--no-xdp` mode alike; bad requests get their status.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use fastpath_tests::{Gateway, Host, Topology, Uas, netns::*, uac_call};

const REGISTERED: &str = "15550100001";
const UNREGISTERED: &str = "15550109999";
const SECOND_CARRIER_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 3);

/// Stops the daemon (checking it exits cleanly) and removes the maps it pinned: `stop`
/// keeps them for `--keep-attached` tests, which these are not.
fn stop(gateway: Gateway) -> Result<String> {
    let pin_dir = gateway.pin_dir().to_path_buf();
    let log = gateway.stop()?;
    let _ = std::fs::remove_dir_all(pin_dir);
    Ok(log)
}

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_fastpath"))
}

fn sip(ip: impl Into<IpAddr>) -> SocketAddr {
    SocketAddr::new(ip.into(), SIP_PORT)
}

/// Every gateway address as a proxy address.
fn listen() -> String {
    [
        sip(GW_CALLER_V4),
        sip(GW_PEER_V4),
        sip(GW_CARRIER_V4),
        sip(GW_CALLER_V6),
        sip(GW_PEER_V6),
        sip(GW_CARRIER_V6),
    ]
    .iter()
    .map(|a| format!("\"{a}\""))
    .collect::<Vec<_>>()
    .join(", ")
}

/// One peer owning [`REGISTERED`], the given trunks `(address, priority)`, and `extra`.
fn config(peer: SocketAddr, trunks: &[(SocketAddr, u32)], extra: &str) -> String {
    let mut text = format!(
        "[proxy]\nlisten = [{}]\nworkers = 2\ntrunk_timeout_ms = 1000\n\n\
         [[peers]]\nname = \"alice-pbx\"\naddress = \"{peer}\"\n\n\
         [[routes]]\nnumber = \"+1 555 010 0001\"\npeer = \"alice-pbx\"\n\n",
        listen()
    );
    for (i, (address, priority)) in trunks.iter().enumerate() {
        text.push_str(&format!(
            "[[trunks]]\nname = \"carrier-{i}\"\naddress = \"{address}\"\npriority = {priority}\n\n"
        ));
    }
    // Health checks only where a test is about them: elsewhere the peer's UAS runs only
    // while calls are placed, and unanswered pings would take the peer down.
    if !extra.contains("[health]") {
        text.push_str("[health]\nenabled = false\n\n");
    }
    text.push_str(extra);
    text
}

/// Where `calls` calls to `number` landed: (answered at the caller, received by the peer,
/// received by the carrier).
fn place(
    topology: &Topology,
    caller: IpAddr,
    gateway: IpAddr,
    (peer, carrier): (IpAddr, IpAddr),
    number: &str,
    calls: u32,
) -> Result<(u64, u64, u64)> {
    let wait = Duration::from_secs(30);
    let peer_uas = Uas::start(topology, Host::Peer, peer, SIP_PORT, calls, wait)?;
    let carrier_uas = Uas::start(topology, Host::Carrier, carrier, SIP_PORT, calls, wait)?;
    let uac = uac_call(
        topology,
        Host::Caller,
        caller,
        sip(gateway),
        number,
        calls,
        20,
        Duration::from_secs(20),
    )?;
    let at_peer = peer_uas.finish()?.calls_received;
    let at_carrier = carrier_uas.finish()?.calls_received;
    Ok((uac.successful, at_peer, at_carrier))
}

/// Registered calls reach the peer, unregistered the carrier, all answered.
fn calls_land_where_they_belong(topology: &Topology, gateway: &Gateway, v6: bool) -> Result<()> {
    let (caller, gw, peer, carrier): (IpAddr, IpAddr, IpAddr, IpAddr) = if v6 {
        (
            CALLER_V6.into(),
            GW_CALLER_V6.into(),
            PEER_V6.into(),
            CARRIER_V6.into(),
        )
    } else {
        (
            CALLER_V4.into(),
            GW_CALLER_V4.into(),
            PEER_V4.into(),
            CARRIER_V4.into(),
        )
    };
    let calls = 5;
    let got = place(topology, caller, gw, (peer, carrier), REGISTERED, calls)?;
    ensure!(
        got == (5, 5, 0),
        "registered: (answered, at peer, at carrier) = {got:?}\n{}",
        gateway.log_text()
    );
    let got = place(topology, caller, gw, (peer, carrier), UNREGISTERED, calls)?;
    ensure!(
        got == (5, 0, 5),
        "unregistered: (answered, at peer, at carrier) = {got:?}\n{}",
        gateway.log_text()
    );
    Ok(())
}

#[test]
fn no_xdp_ipv4_calls_land_at_the_same_destinations() -> Result<()> {
    let topology = Topology::new("px0")?;
    let config = config(sip(PEER_V4), &[(sip(CARRIER_V4), 0)], "");
    let gateway = Gateway::start_with(&topology, binary(), &config, &["--no-xdp"], true)?;
    ensure!(
        gateway
            .log_text()
            .contains("proxy running without the fast path"),
        "{}",
        gateway.log_text()
    );
    calls_land_where_they_belong(&topology, &gateway, false)?;
    let log = stop(gateway)?;
    ensure!(log.contains("proxy_requests_to_peer_total\":10"), "{log}");
    Ok(())
}

#[test]
fn no_xdp_ipv6_calls_land_at_the_same_destinations() -> Result<()> {
    let topology = Topology::new("px1")?;
    let config = config(sip(PEER_V6), &[(sip(CARRIER_V6), 0)], "");
    let gateway = Gateway::start_with(&topology, binary(), &config, &["--no-xdp"], true)?;
    calls_land_where_they_belong(&topology, &gateway, true)?;
    stop(gateway)?;
    Ok(())
}

/// With XDP the registered calls take the fast path (the gateway's kernel could not
/// forward them: it drops everything from the caller side) and the others the proxy.
#[test]
fn xdp_mode_calls_land_at_the_same_destinations() -> Result<()> {
    let topology = Topology::new("px2")?;
    topology.resolve_neighbors()?;
    topology.gw_forward_drop_from_caller()?;
    let config = config(sip(PEER_V4), &[(sip(CARRIER_V4), 0)], "");
    let gateway = Gateway::start(&topology, binary(), &config)?;
    ensure!(
        gateway.log_text().contains("fast path running"),
        "{}",
        gateway.log_text()
    );
    calls_land_where_they_belong(&topology, &gateway, false)?;
    // Each registered call: an INVITE and its ACK through XDP.
    ensure!(gateway.counter("hit")? == 10, "{:?}", gateway.counters()?);
    let log = stop(gateway)?;
    ensure!(log.contains("proxy_requests_to_trunk_total\":10"), "{log}");
    ensure!(log.contains("proxy_requests_to_peer_total\":0"), "{log}");
    Ok(())
}

/// A request as SIPp would send it, with `headers` replacing the defaults by name.
fn request(
    method: &str,
    uri: &str,
    from: SocketAddr,
    extra: &str,
    max_forwards: Option<u32>,
) -> String {
    let mf = max_forwards.map_or(String::new(), |n| format!("Max-Forwards: {n}\r\n"));
    format!(
        "{method} {uri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {from};branch=z9hG4bK-test-{method}-{}\r\n\
         {mf}\
         From: <sip:caller@{from}>;tag=t1\r\n\
         To: <{uri}>\r\n\
         Call-ID: {method}-{}@test\r\n\
         CSeq: 1 {method}\r\n\
         {extra}\
         Content-Length: 0\r\n\r\n",
        uri.len(),
        extra.len(),
    )
}

/// Sends `message` and returns the status line of the answer, or `None` after `wait`.
fn ask(
    socket: &UdpSocket,
    to: SocketAddr,
    message: &[u8],
    wait: Duration,
) -> Result<Option<String>> {
    socket.send_to(message, to)?;
    socket.set_read_timeout(Some(wait))?;
    let mut buf = vec![0u8; 65536];
    match socket.recv(&mut buf) {
        Ok(n) => Ok(Some(String::from_utf8_lossy(&buf[..n]).into_owned())),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

fn status_line(answer: &Option<String>) -> &str {
    answer
        .as_deref()
        .and_then(|a| a.lines().next())
        .unwrap_or("(no answer)")
}

#[test]
fn bad_requests_get_the_right_status_and_the_proxy_keeps_working() -> Result<()> {
    let topology = Topology::new("px3")?;
    let config = config(sip(PEER_V4), &[(sip(CARRIER_V4), 0)], "");
    let gateway = Gateway::start_with(&topology, binary(), &config, &["--no-xdp"], true)?;
    let me = SocketAddr::from((CALLER_V4, 5099));
    let socket = topology.udp_socket(Host::Caller, me)?;
    let gw = sip(GW_CALLER_V4);
    let uri = format!("sip:{UNREGISTERED}@{GW_CALLER_V4}");
    let wait = Duration::from_secs(3);

    let cases: Vec<(String, Vec<u8>, &str)> = vec![
        (
            "Max-Forwards 0".into(),
            request("INVITE", &uri, me, "", Some(0)).into_bytes(),
            "SIP/2.0 483 ",
        ),
        (
            "mailto: URI".into(),
            request("OPTIONS", "mailto:bob@example.com", me, "", Some(70)).into_bytes(),
            "SIP/2.0 416 ",
        ),
        (
            "no Call-ID".into(),
            request("OPTIONS", &uri, me, "", Some(70))
                .replace("Call-ID: OPTIONS-0@test\r\n", "")
                .into_bytes(),
            "SIP/2.0 400 Missing Call-ID",
        ),
        (
            "CSeq method mismatch".into(),
            request("OPTIONS", &uri, me, "", Some(70))
                .replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE")
                .into_bytes(),
            "SIP/2.0 400 CSeq method",
        ),
        (
            "SIP/7.0".into(),
            request("OPTIONS", &uri, me, "", Some(70))
                .replacen("SIP/2.0\r\n", "SIP/7.0\r\n", 1)
                .into_bytes(),
            "SIP/2.0 505 ",
        ),
        (
            "Content-Length past the end".into(),
            request("INVITE", &uri, me, "", Some(70))
                .replace("Content-Length: 0", "Content-Length: 999")
                .into_bytes(),
            "SIP/2.0 400 Content-Length",
        ),
        (
            "20 KB datagram".into(),
            request(
                "MESSAGE",
                &uri,
                me,
                &format!("X-Pad: {}\r\n", "a".repeat(20_000)),
                Some(70),
            )
            .into_bytes(),
            "SIP/2.0 513 ",
        ),
    ];
    for (name, bytes, want) in &cases {
        let answer = ask(&socket, gw, bytes, wait)?;
        let line = status_line(&answer);
        ensure!(
            line.starts_with(want),
            "{name}: got {line:?}, want {want:?}"
        );
        if let Some(text) = &answer {
            // Our own answer carries the request's Via as it came and a To tag.
            ensure!(text.contains("z9hG4bK-test-"), "{name}: Via lost: {text}");
            ensure!(text.contains(";tag="), "{name}: no To tag: {text}");
        }
    }
    // Unanswerable: garbage, a request without Via, a bad ACK. Nothing comes back.
    for bytes in [
        &b"\x00\x01garbage"[..],
        b"INVITE sip:1@x SIP/2.0\r\nCall-ID: a\r\n\r\n",
        request("ACK", &uri, me, "", Some(0)).as_bytes(),
    ] {
        let answer = ask(&socket, gw, bytes, Duration::from_millis(500))?;
        ensure!(answer.is_none(), "answered {:?}", status_line(&answer));
    }
    // The proxy still forwards: an OPTIONS to the trunk arrives with our Via on top.
    let carrier = topology.udp_socket(Host::Carrier, sip(CARRIER_V4))?;
    socket.send_to(request("OPTIONS", &uri, me, "", None).as_bytes(), gw)?;
    carrier.set_read_timeout(Some(wait))?;
    let mut buf = vec![0u8; 65536];
    let n = carrier.recv(&mut buf).context("the trunk got nothing")?;
    let text = String::from_utf8_lossy(&buf[..n]);
    let mut lines = text.lines();
    ensure!(
        lines.next() == Some(&*format!("OPTIONS {uri} SIP/2.0")),
        "{text}"
    );
    let via = lines.next().unwrap_or_default();
    ensure!(
        via.starts_with(&format!(
            "Via: SIP/2.0/UDP {GW_CARRIER_V4}:5060;branch=z9hG4bKfp"
        )),
        "{text}"
    );
    ensure!(text.contains("Max-Forwards: 70\r\n"), "none added: {text}");
    stop(gateway)?;
    Ok(())
}

/// A trunk that is the gateway itself: the request comes back with our Via and the
/// same loop hash, and the caller gets 482.
#[test]
fn a_loop_is_answered_482() -> Result<()> {
    let topology = Topology::new("px4")?;
    let config = config(sip(PEER_V4), &[(sip(GW_CARRIER_V4), 0)], "");
    let gateway = Gateway::start_with(&topology, binary(), &config, &["--no-xdp"], true)?;
    let me = SocketAddr::from((CALLER_V4, 5099));
    let socket = topology.udp_socket(Host::Caller, me)?;
    let uri = format!("sip:{UNREGISTERED}@{GW_CALLER_V4}");
    let answer = ask(
        &socket,
        sip(GW_CALLER_V4),
        request("INVITE", &uri, me, "", Some(70)).as_bytes(),
        Duration::from_secs(3),
    )?;
    ensure!(
        status_line(&answer).starts_with("SIP/2.0 482 "),
        "got {:?}\n{}",
        answer,
        gateway.log_text()
    );
    stop(gateway)?;
    Ok(())
}

/// Trunk A (preferred) has nobody listening: the kernel answers ICMP port unreachable,
/// A is taken out and the calls go to trunk B. With B gone too, 503 with Retry-After.
#[test]
fn trunk_failover_and_all_trunks_down() -> Result<()> {
    let topology = Topology::new("px5")?;
    topology.add_carrier_address(SECOND_CARRIER_V4.into())?;
    let config = config(
        sip(PEER_V4),
        &[(sip(CARRIER_V4), 0), (sip(SECOND_CARRIER_V4), 1)],
        "",
    );
    let gateway = Gateway::start_with(&topology, binary(), &config, &["--no-xdp"], true)?;
    let wait = Duration::from_secs(30);
    let backup = Uas::start(
        &topology,
        Host::Carrier,
        SECOND_CARRIER_V4.into(),
        SIP_PORT,
        3,
        wait,
    )?;
    let uac = uac_call(
        &topology,
        Host::Caller,
        CALLER_V4.into(),
        sip(GW_CALLER_V4),
        UNREGISTERED,
        3,
        5,
        Duration::from_secs(20),
    )?;
    let received = backup.finish()?.calls_received;
    ensure!(
        uac.successful == 3 && received == 3,
        "answered {}, at the backup trunk {received}\n{}",
        uac.successful,
        gateway.log_text()
    );
    ensure!(
        gateway.log_text().contains("trunk down"),
        "{}",
        gateway.log_text()
    );

    // Now nobody listens on either: each is taken out by its first INVITE.
    let me = SocketAddr::from((CALLER_V4, 5099));
    let socket = topology.udp_socket(Host::Caller, me)?;
    let uri = format!("sip:{UNREGISTERED}@{GW_CALLER_V4}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    let answer = loop {
        n += 1;
        let invite = request("INVITE", &uri, me, "", Some(70))
            .replace("INVITE-0@test", &format!("all-down-{n}"));
        let answer = ask(
            &socket,
            sip(GW_CALLER_V4),
            invite.as_bytes(),
            Duration::from_millis(300),
        )?;
        if answer.is_some() || Instant::now() > deadline {
            break answer;
        }
    };
    let text = answer.context("never answered 503")?;
    ensure!(text.starts_with("SIP/2.0 503 "), "{text}");
    ensure!(text.contains("\r\nRetry-After: "), "{text}");
    stop(gateway)?;
    Ok(())
}

/// The PEERS map entry of peer 0: its state byte (1 up, 0 down).
fn peer_state(gateway: &Gateway) -> Result<u8> {
    let data = fastpath::maps::open_pinned(gateway.pin_dir(), fastpath_common::maps::PEERS)?;
    let peers: aya::maps::Array<_, fastpath_common::maps::PeerValue> =
        aya::maps::Array::try_from(aya::maps::Map::Array(data))?;
    Ok(peers.get(&0, 0)?.state)
}

fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check()? {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what}: not within {timeout:?}")
}

/// Peer silent → down (PEERS state too) → its calls take the standard route; peer
/// answering again → up → direct again, through XDP.
#[test]
fn peer_down_falls_back_to_the_trunk_and_comes_back() -> Result<()> {
    let topology = Topology::new("px6")?;
    topology.resolve_neighbors()?;
    let interval = Duration::from_millis(200);
    let config = config(
        sip(PEER_V4),
        &[(sip(CARRIER_V4), 0)],
        "[health]\ninterval_ms = 200\nmisses = 2\n",
    );
    let gateway = Gateway::start(&topology, binary(), &config)?;
    // Nobody answers at the peer yet: 2 misses at 200 ms.
    wait_for(
        "peer down",
        interval * 10,
        || Ok(peer_state(&gateway)? == 0),
    )?;
    ensure!(
        gateway.log_text().contains("peer down"),
        "{}",
        gateway.log_text()
    );
    let wait = Duration::from_secs(30);
    let carrier = Uas::start(
        &topology,
        Host::Carrier,
        CARRIER_V4.into(),
        SIP_PORT,
        3,
        wait,
    )?;
    let uac = uac_call(
        &topology,
        Host::Caller,
        CALLER_V4.into(),
        sip(GW_CALLER_V4),
        REGISTERED,
        3,
        10,
        Duration::from_secs(20),
    )?;
    let at_carrier = carrier.finish()?.calls_received;
    ensure!(
        uac.successful == 3 && at_carrier == 3,
        "peer down: answered {}, at the carrier {at_carrier}",
        uac.successful
    );

    // The peer's PBX comes up and answers the pings (SIPp -aa answers OPTIONS). SIPp
    // counts each OPTIONS as a call of its own, so its INVITEs are counted from its
    // message log instead, and it gets room for the pings in its call limit.
    let peer = Uas::start(&topology, Host::Peer, PEER_V4.into(), SIP_PORT, 1000, wait)?;
    wait_for("peer up", interval * 10, || Ok(peer_state(&gateway)? == 1))?;
    let hits = gateway.counter("hit")?;
    let carrier = Uas::start(
        &topology,
        Host::Carrier,
        CARRIER_V4.into(),
        SIP_PORT,
        3,
        wait,
    )?;
    let uac = uac_call(
        &topology,
        Host::Caller,
        CALLER_V4.into(),
        sip(GW_CALLER_V4),
        REGISTERED,
        3,
        10,
        Duration::from_secs(20),
    )?;
    let at_peer = peer.messages()?.matches("\nINVITE sip:").count();
    drop(peer);
    let at_carrier = carrier.finish()?.calls_received;
    ensure!(
        uac.successful == 3 && at_peer == 3 && at_carrier == 0,
        "peer back: answered {}, at the peer {at_peer}, at the carrier {at_carrier}",
        uac.successful
    );
    ensure!(gateway.counter("hit")? >= hits + 6, "not through XDP");
    let log = stop(gateway)?;
    ensure!(log.contains("health_peer_down_total\":1"), "{log}");
    ensure!(log.contains("health_peer_up_total\":1"), "{log}");
    Ok(())
}

/// A call given up while it rings: the CANCEL follows its INVITE (to the peer for a
/// registered number, to the trunk otherwise), its 200 and the INVITE's 487 come back,
/// and the ACK reaches the callee.
#[test]
fn cancel_during_ringing_follows_the_invite() -> Result<()> {
    use fastpath_tests::sipp::{UAC_CANCEL_SCENARIO, UAS_CANCEL_SCENARIO, uac_call_scenario};
    let topology = Topology::new("px7")?;
    let config = config(sip(PEER_V4), &[(sip(CARRIER_V4), 0)], "");
    let gateway = Gateway::start_with(&topology, binary(), &config, &["--no-xdp"], true)?;
    let wait = Duration::from_secs(30);
    for (number, callee) in [(REGISTERED, Host::Peer), (UNREGISTERED, Host::Carrier)] {
        let ip: IpAddr = if callee == Host::Peer {
            PEER_V4.into()
        } else {
            CARRIER_V4.into()
        };
        let uas = Uas::start_scenario(
            &topology,
            callee,
            ip,
            SIP_PORT,
            2,
            wait,
            UAS_CANCEL_SCENARIO,
        )?;
        let uac = uac_call_scenario(
            &topology,
            Host::Caller,
            CALLER_V4.into(),
            sip(GW_CALLER_V4),
            number,
            2,
            10,
            Duration::from_secs(20),
            UAC_CANCEL_SCENARIO,
        )?;
        let uas = uas.finish()?;
        ensure!(
            uac.successful == 2 && uas.successful == 2,
            "{number}: caller completed {}, callee {:?}\n{}",
            uac.successful,
            uas,
            gateway.log_text()
        );
    }
    stop(gateway)?;
    Ok(())
}

/// When the XDP program cannot be attached (here: one interface does not exist), the
/// daemon says so, leaves nothing attached, and the proxy takes every call.
#[test]
fn xdp_failure_falls_back_to_the_proxy() -> Result<()> {
    let topology = Topology::new("px8")?;
    let config = config(sip(PEER_V4), &[(sip(CARRIER_V4), 0)], "");
    let gateway = Gateway::start_with(&topology, binary(), &config, &["--iface", "px8nope"], true)?;
    let log = gateway.log_text();
    ensure!(log.contains("XDP fast path unavailable"), "{log}");
    ensure!(log.contains("proxy running without the fast path"), "{log}");
    let links = std::fs::read_dir(gateway.pin_dir())
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("link-"))
                .count()
        })
        .unwrap_or(0);
    ensure!(links == 0, "{links} XDP links left pinned");
    calls_land_where_they_belong(&topology, &gateway, false)?;
    stop(gateway)?;
    Ok(())
}
