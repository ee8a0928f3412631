//! The proxy over TCP end to end: SIPp callers and answerers over TCP and UDP in a netns
//! topology, and raw streams that break the framing rules.

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpStream},
    path::Path,
    time::Duration,
};

use anyhow::{Context, Result, ensure};
use fastpath_tests::{
    Gateway, Host, Topology,
    netns::*,
    sipp::{SipTransport, UAC_SCENARIO, UAS_SCENARIO, Uas, uac_call_over},
};

const REGISTERED: &str = "15550100001";
const UNREGISTERED: &str = "15550109999";

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_fastpath"))
}

fn sip(ip: impl Into<IpAddr>) -> SocketAddr {
    SocketAddr::new(ip.into(), SIP_PORT)
}

/// The peer owns [`REGISTERED`] and is reached over UDP; the trunk over TCP.
fn config(peer: SocketAddr, trunk: SocketAddr, extra: &str) -> String {
    let listen = [
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
    .join(", ");
    format!(
        "[proxy]\nlisten = [{listen}]\nworkers = 2\ntrunk_timeout_ms = 1000\n{extra}\n\
         [[peers]]\nname = \"alice-pbx\"\naddress = \"{peer}\"\n\n\
         [[routes]]\nnumber = \"+1 555 010 0001\"\npeer = \"alice-pbx\"\n\n\
         [[trunks]]\nname = \"carrier\"\naddress = \"{trunk}\"\ntransport = \"tcp\"\n\n\
         [health]\nenabled = false\n"
    )
}

struct Sides {
    caller: IpAddr,
    gateway: IpAddr,
    peer: IpAddr,
    carrier: IpAddr,
}

fn sides(v6: bool) -> Sides {
    if v6 {
        Sides {
            caller: CALLER_V6.into(),
            gateway: GW_CALLER_V6.into(),
            peer: PEER_V6.into(),
            carrier: CARRIER_V6.into(),
        }
    } else {
        Sides {
            caller: CALLER_V4.into(),
            gateway: GW_CALLER_V4.into(),
            peer: PEER_V4.into(),
            carrier: CARRIER_V4.into(),
        }
    }
}

/// `calls` calls from the caller over `caller_transport` to `number`: (answered at the
/// caller, received by the peer's UDP UAS, received by the carrier's TCP UAS).
fn place(
    topology: &Topology,
    s: &Sides,
    caller_transport: SipTransport,
    number: &str,
    calls: u32,
) -> Result<(u64, u64, u64)> {
    let wait = Duration::from_secs(30);
    let peer = Uas::start_over(
        topology,
        Host::Peer,
        (s.peer, SIP_PORT),
        calls,
        wait,
        UAS_SCENARIO,
        SipTransport::Udp,
    )?;
    let carrier = Uas::start_over(
        topology,
        Host::Carrier,
        (s.carrier, SIP_PORT),
        calls,
        wait,
        UAS_SCENARIO,
        SipTransport::Tcp,
    )?;
    let uac = uac_call_over(
        topology,
        Host::Caller,
        s.caller,
        sip(s.gateway),
        number,
        (calls, 20),
        Duration::from_secs(20),
        UAC_SCENARIO,
        caller_transport,
    )?;
    Ok((
        uac.successful,
        peer.finish()?.calls_received,
        carrier.finish()?.calls_received,
    ))
}

/// Over TCP, a registered call lands at the (UDP) peer and an unregistered one at the
/// (TCP) trunk, answered back over the caller's connection; a UDP caller reaches the TCP
/// trunk too.
fn calls_land_over_tcp(prefix: &str, v6: bool) -> Result<()> {
    let topology = Topology::new(prefix)?;
    let s = sides(v6);
    let config = config(sip(s.peer), sip(s.carrier), "");
    let gateway = Gateway::start_with(&topology, binary(), &config, &["--no-xdp"], true)?;
    let log = |g: &Gateway| g.log_text();
    let got = place(&topology, &s, SipTransport::Tcp, REGISTERED, 5)?;
    ensure!(
        got == (5, 5, 0),
        "TCP registered: {got:?}\n{}",
        log(&gateway)
    );
    let got = place(&topology, &s, SipTransport::Tcp, UNREGISTERED, 5)?;
    ensure!(
        got == (5, 0, 5),
        "TCP unregistered: {got:?}\n{}",
        log(&gateway)
    );
    let got = place(&topology, &s, SipTransport::Udp, UNREGISTERED, 5)?;
    ensure!(
        got == (5, 0, 5),
        "UDP to TCP trunk: {got:?}\n{}",
        log(&gateway)
    );
    let pin_dir = gateway.pin_dir().to_path_buf();
    let out = gateway.stop()?;
    let _ = std::fs::remove_dir_all(pin_dir);
    ensure!(out.contains("proxy_requests_to_peer_total\":10"), "{out}");
    ensure!(
        out.contains("proxy_tcp_connect_failures_total\":0"),
        "{out}"
    );
    Ok(())
}

#[test]
fn ipv4_calls_over_tcp_land_where_they_belong() -> Result<()> {
    calls_land_over_tcp("tc0", false)
}

#[test]
fn ipv6_calls_over_tcp_land_where_they_belong() -> Result<()> {
    calls_land_over_tcp("tc1", true)
}

/// A TCP connection from the caller's namespace to the gateway.
fn connect(topology: &Topology, to: SocketAddr) -> Result<TcpStream> {
    let stream = in_netns(&topology.ns_name(Host::Caller), || {
        TcpStream::connect_timeout(&to, Duration::from_secs(5))
            .with_context(|| format!("connecting to {to}"))
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(stream)
}

/// Everything the gateway sends until it closes the connection (or 10 s pass).
fn read_to_close(stream: &mut TcpStream) -> Result<String> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            // Closed with our bytes unread: a reset is a close too.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => return Err(e).context("the gateway did not close the connection"),
        }
    }
    Ok(String::from_utf8_lossy(&got).into_owned())
}

/// Reads until `want` bytes ending a message have come (the end of the headers).
fn read_message(stream: &mut TcpStream) -> Result<String> {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        ensure!(stream.read(&mut byte)? == 1, "closed after {got:?}");
        got.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&got).into_owned())
}

fn options(from: SocketAddr, max_forwards: u32, content_length: Option<usize>) -> String {
    let cl = content_length.map_or(String::new(), |n| format!("Content-Length: {n}\r\n"));
    format!(
        "OPTIONS sip:{UNREGISTERED}@{GW_CALLER_V4} SIP/2.0\r\n\
         Via: SIP/2.0/TCP {from};branch=z9hG4bK-tcp-{max_forwards}\r\n\
         Max-Forwards: {max_forwards}\r\n\
         From: <sip:caller@{from}>;tag=t1\r\n\
         To: <sip:{UNREGISTERED}@{GW_CALLER_V4}>\r\n\
         Call-ID: tcp-{max_forwards}@test\r\n\
         CSeq: 1 OPTIONS\r\n\
         {cl}\r\n"
    )
}

#[test]
fn broken_streams_get_their_status_or_a_close_and_spare_other_connections() -> Result<()> {
    let topology = Topology::new("tc2")?;
    let s = sides(false);
    let extra = "tcp_idle_timeout_ms = 1500\ntcp_max_connections_per_ip = 4\n";
    let config = config(sip(s.peer), sip(s.carrier), extra);
    let gateway = Gateway::start_with(&topology, binary(), &config, &["--no-xdp"], true)?;
    let gw = sip(GW_CALLER_V4);
    let me = SocketAddr::from((CALLER_V4, 5099));

    // A good connection: an answer of the proxy's own (483) and a keep-alive pong.
    let mut good = connect(&topology, gw)?;
    good.write_all(options(me, 0, Some(0)).as_bytes())?;
    let answer = read_message(&mut good)?;
    ensure!(answer.starts_with("SIP/2.0 483 "), "{answer}");
    good.write_all(b"\r\n\r\n")?;
    let mut pong = [0u8; 2];
    good.read_exact(&mut pong)?;
    ensure!(&pong == b"\r\n", "pong {pong:?}");

    let cases: [(&str, Vec<u8>, &str); 3] = [
        (
            "no Content-Length",
            options(me, 70, None).into_bytes(),
            "SIP/2.0 400 Missing Content-Length\r\n",
        ),
        (
            "oversized",
            options(me, 70, Some(1_000_000)).into_bytes(),
            "SIP/2.0 513 Message Too Large\r\n",
        ),
        ("garbage", b"\x16\x03\x01\x02\x00\x01\x00".to_vec(), ""),
    ];
    for (name, bytes, status) in cases {
        let mut bad = connect(&topology, gw)?;
        bad.write_all(&bytes)?;
        let got = read_to_close(&mut bad).with_context(|| name.to_string())?;
        if status.is_empty() {
            ensure!(got.is_empty(), "{name}: {got:?}");
        } else {
            ensure!(got.starts_with(status), "{name}: {got:?}");
        }
    }

    // The cap: the good connection and three more are all one address may hold (the
    // broken ones were closed: give their tasks a moment to free their places).
    std::thread::sleep(Duration::from_millis(300));
    let held: Vec<TcpStream> = (0..3)
        .map(|_| connect(&topology, gw))
        .collect::<Result<_>>()?;
    let mut over = connect(&topology, gw)?;
    let got = read_to_close(&mut over)?;
    ensure!(got.is_empty(), "over the cap: {got:?}");
    drop(held);

    // The good connection still works, and calls over TCP still go through.
    good.write_all(options(me, 0, Some(0)).as_bytes())?;
    let answer = read_message(&mut good)?;
    ensure!(answer.starts_with("SIP/2.0 483 "), "{answer}");
    drop(good);

    // A connection that sends nothing is closed after the idle timeout.
    let mut idle = connect(&topology, gw)?;
    let got = read_to_close(&mut idle)?;
    ensure!(got.is_empty(), "idle: {got:?}");

    let got = place(&topology, &s, SipTransport::Tcp, UNREGISTERED, 3)?;
    ensure!(got == (3, 0, 3), "after the bad streams: {got:?}");

    let pin_dir = gateway.pin_dir().to_path_buf();
    let out = gateway.stop()?;
    let _ = std::fs::remove_dir_all(pin_dir);
    ensure!(out.contains("proxy_tcp_framing_errors_total\":3"), "{out}");
    ensure!(out.contains("proxy_tcp_refused_total\":1"), "{out}");
    Ok(())
}

/// A TCP trunk that refuses connections is taken out like one that does not answer: the
/// caller's retransmission (UDP) takes the next trunk, and so do the calls after it.
#[test]
fn a_tcp_trunk_that_refuses_connections_is_taken_out() -> Result<()> {
    let topology = Topology::new("tc3")?;
    let s = sides(false);
    // Nothing listens at the first trunk's port: its connects are refused.
    let dead = SocketAddr::new(s.carrier, 5071);
    let config = format!(
        "[proxy]\nlisten = [\"{}\", \"{}\", \"{}\"]\nworkers = 2\n\n\
         [[trunks]]\nname = \"dead\"\naddress = \"{dead}\"\ntransport = \"tcp\"\n\n\
         [[trunks]]\nname = \"backup\"\naddress = \"{}\"\npriority = 1\n\n\
         [health]\nenabled = false\n",
        sip(GW_CALLER_V4),
        sip(GW_PEER_V4),
        sip(GW_CARRIER_V4),
        sip(s.carrier),
    );
    let gateway = Gateway::start_with(&topology, binary(), &config, &["--no-xdp"], true)?;
    let calls = 3;
    let backup = Uas::start_over(
        &topology,
        Host::Carrier,
        (s.carrier, SIP_PORT),
        calls,
        Duration::from_secs(30),
        UAS_SCENARIO,
        SipTransport::Udp,
    )?;
    let uac = uac_call_over(
        &topology,
        Host::Caller,
        s.caller,
        sip(s.gateway),
        UNREGISTERED,
        (calls, 5),
        Duration::from_secs(20),
        UAC_SCENARIO,
        SipTransport::Udp,
    )?;
    let at_backup = backup.finish()?.calls_received;
    ensure!(
        (uac.successful, at_backup) == (3, 3),
        "(answered, at backup) = ({}, {at_backup})\n{}",
        uac.successful,
        gateway.log_text()
    );
    let pin_dir = gateway.pin_dir().to_path_buf();
    let out = gateway.stop()?;
    let _ = std::fs::remove_dir_all(pin_dir);
    ensure!(
        out.contains("proxy_tcp_connect_failures_total\":1"),
        "{out}"
    );
    ensure!(out.contains("proxy_trunk_down_total\":1"), "{out}");
    Ok(())
}
