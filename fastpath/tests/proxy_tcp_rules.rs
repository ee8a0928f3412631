//! Which transport the proxy picks (RFC 3261 §18.1.1, §18.2.2), without a network: the
//! same `Proxy` decision for messages that came over TCP and over UDP.

mod rules;

use rules::{BySubnet, CALLER, GW_CALLER, GW_CARRIER, PEER, addr};

use std::sync::Arc;

use fastpath::{
    config::Config,
    proxy::{Action, Inbound, Proxy, Tally, Transport, service::Parts},
};

/// The caller's TCP connection: an ephemeral source port, not its sent-by port.
const CALLER_CONN: &str = "192.0.2.2:40123";
const TRUNK_UDP: &str = "203.0.113.2:5060";
const TRUNK_TCP: &str = "203.0.113.3:5060";

/// A proxy with a UDP trunk of priority 0 (or a TCP one, with `tcp_trunk`), TCP on or off.
fn proxy(tcp: bool, tcp_trunk: bool) -> Arc<Proxy> {
    let (first, second) = if tcp_trunk {
        (TRUNK_TCP, TRUNK_UDP)
    } else {
        (TRUNK_UDP, TRUNK_TCP)
    };
    let config = Config::parse(&format!(
        "[proxy]\nlisten = [\"{GW_CALLER}\", \"{GW_CARRIER}\", \"198.51.100.1:5060\"]\n\
         tcp = {tcp}\n\
         [[peers]]\nname = \"pbx\"\naddress = \"{PEER}\"\n\
         [[routes]]\nnumber = \"+1 555 010 0001\"\npeer = \"pbx\"\n\
         [[trunks]]\nname = \"first\"\naddress = \"{first}\"\ntransport = \"{}\"\n\
         [[trunks]]\nname = \"second\"\naddress = \"{second}\"\npriority = 1\n\
         transport = \"{}\"\n",
        if first == TRUNK_TCP { "tcp" } else { "udp" },
        // A TCP trunk with TCP off is a configuration error.
        if second == TRUNK_TCP && tcp {
            "tcp"
        } else {
            "udp"
        },
    ))
    .unwrap();
    let table = Arc::new(fastpath::routing::RouteTable::from_config(&config));
    Parts::new(&config.proxy, table, None).proxy
}

fn handle(proxy: &Proxy, over: Transport, data: &str, src: &str) -> (Action, String) {
    let mut out = Vec::new();
    let input = Inbound {
        data: data.as_bytes(),
        src: addr(src),
        truncated: false,
    };
    let action = proxy.handle_over(
        over,
        &input,
        1,
        &mut BySubnet,
        &mut out,
        &mut Tally::default(),
    );
    (action, String::from_utf8_lossy(&out).into_owned())
}

fn invite(number: &str, via: &str, extra: &str, body: &str) -> String {
    format!(
        "INVITE sip:{number}@192.0.2.1:5060 SIP/2.0\r\n\
         Via: SIP/2.0/{via} {CALLER};branch=z9hG4bK-abc\r\n\
         From: <sip:caller@192.0.2.2>;tag=f1\r\n\
         To: <sip:{number}@192.0.2.1>\r\n\
         Call-ID: call-1@192.0.2.2\r\n\
         CSeq: 1 INVITE\r\n\
         Max-Forwards: 70\r\n\
         {extra}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// `request` inside its dialog (the To field has the callee's tag): a Route set is followed
/// only there.
fn within_dialog(request: String) -> String {
    request.replacen("@192.0.2.1>\r\n", "@192.0.2.1>;tag=t1\r\n", 1)
}

fn top_via(out: &str) -> &str {
    out.lines().nth(1).unwrap_or_default()
}

fn via_of(out: &str, n: usize) -> &str {
    out.lines()
        .filter(|l| l.starts_with("Via:"))
        .nth(n)
        .unwrap_or_default()
}

/// The response a next hop sends back for a request we forwarded as `forwarded`.
fn response_to(forwarded: &str) -> String {
    let vias: String = forwarded
        .lines()
        .filter(|l| l.starts_with("Via:"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    format!(
        "SIP/2.0 180 Ringing\r\n{vias}From: <sip:caller@192.0.2.2>;tag=f1\r\n\
         To: <sip:x@192.0.2.1>;tag=u1\r\nCall-ID: call-1@192.0.2.2\r\nCSeq: 1 INVITE\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

#[test]
fn a_tcp_caller_reaches_a_udp_peer_and_the_response_goes_back_over_its_connection() {
    let proxy = proxy(true, false);
    let (action, out) = handle(
        &proxy,
        Transport::Tcp,
        &invite("15550100001", "TCP", "", ""),
        CALLER_CONN,
    );
    assert_eq!(
        action,
        Action::Forward {
            to: addr(PEER),
            local: 2
        }
    );
    assert!(top_via(&out).starts_with("Via: SIP/2.0/UDP 198.51.100.1:5060;"));
    // The caller's Via now names its connection: received is not needed (same host),
    // rport is added although the caller did not ask for it.
    assert_eq!(
        via_of(&out, 1),
        "Via: SIP/2.0/TCP 192.0.2.2:5060;branch=z9hG4bK-abc;rport=40123"
    );

    let (action, relayed) = handle(&proxy, Transport::Udp, &response_to(&out), PEER);
    assert_eq!(
        action,
        Action::ForwardTcp {
            to: addr(CALLER_CONN),
            connect: addr(CALLER),
            local: 0
        }
    );
    assert!(relayed.starts_with("SIP/2.0 180 Ringing\r\nVia: SIP/2.0/TCP 192.0.2.2:5060;"));
}

#[test]
fn a_tcp_trunk_gets_requests_over_tcp_with_a_tcp_via() {
    let proxy = proxy(true, true);
    for (over, src) in [(Transport::Udp, CALLER), (Transport::Tcp, CALLER_CONN)] {
        let via = if over == Transport::Tcp { "TCP" } else { "UDP" };
        let (action, out) = handle(&proxy, over, &invite("15550109999", via, "", ""), src);
        assert_eq!(
            action,
            Action::ForwardTcp {
                to: addr(TRUNK_TCP),
                connect: addr(TRUNK_TCP),
                local: 1
            },
            "{over:?}"
        );
        assert!(
            top_via(&out).starts_with("Via: SIP/2.0/TCP 203.0.113.1:5060;branch=z9hG4bKfp"),
            "{out}"
        );
        // The trunk answers over that connection; a UDP caller gets it over UDP.
        let (action, _) = handle(&proxy, Transport::Tcp, &response_to(&out), TRUNK_TCP);
        match over {
            Transport::Udp => assert_eq!(
                action,
                Action::Forward {
                    to: addr(CALLER),
                    local: 0
                }
            ),
            Transport::Tcp => {
                assert!(matches!(action, Action::ForwardTcp { to, .. } if to == addr(CALLER_CONN)))
            }
        }
    }
}

#[test]
fn transport_tcp_on_the_route_or_on_a_uri_naming_the_next_hop_picks_tcp() {
    let proxy = proxy(true, false);
    let route = "Route: <sip:198.51.100.9:5070;lr;transport=TCP>\r\n";
    let (action, out) = handle(
        &proxy,
        Transport::Udp,
        &within_dialog(invite("15550109999", "UDP", route, "")),
        CALLER,
    );
    assert!(
        matches!(action, Action::ForwardTcp { to, .. } if to == addr("198.51.100.9:5070")),
        "{action:?}"
    );
    assert!(top_via(&out).starts_with("Via: SIP/2.0/TCP "));

    // A Request-URI whose host is the next hop (a Route to it, a URI with its address).
    let request = within_dialog(invite(
        "15550109999",
        "UDP",
        "Route: <sip:198.51.100.9:5070;lr>\r\n",
        "",
    ))
    .replace(
        "INVITE sip:15550109999@192.0.2.1:5060 SIP/2.0",
        "INVITE sip:15550109999@198.51.100.9:5070;transport=tcp SIP/2.0",
    );
    let (action, _) = handle(&proxy, Transport::Udp, &request, CALLER);
    assert!(matches!(action, Action::ForwardTcp { .. }), "{action:?}");

    // `;transport=tcp` in the user part, or on a URI naming us, does not.
    let request = invite("15550109999", "UDP", "", "").replace(
        "INVITE sip:15550109999@192.0.2.1:5060 SIP/2.0",
        "INVITE sip:15550109999;transport=tcp@192.0.2.1:5060;transport=tcp SIP/2.0",
    );
    let (action, _) = handle(&proxy, Transport::Udp, &request, CALLER);
    assert_eq!(
        action,
        Action::Forward {
            to: addr(TRUNK_UDP),
            local: 1
        }
    );
}

#[test]
fn a_large_request_from_tcp_leaves_over_tcp_and_a_small_one_over_udp() {
    let proxy = proxy(true, false);
    let big = "a=x\r\n".repeat(300);
    let (action, out) = handle(
        &proxy,
        Transport::Tcp,
        &invite("15550109999", "TCP", "", &big),
        CALLER_CONN,
    );
    assert!(out.len() > 1300);
    assert!(
        matches!(action, Action::ForwardTcp { to, .. } if to == addr(TRUNK_UDP)),
        "{action:?}"
    );
    assert!(top_via(&out).starts_with("Via: SIP/2.0/TCP 203.0.113.1:5060;"));
    // Over UDP the same request stays on UDP, as before TCP was served.
    let (action, out) = handle(
        &proxy,
        Transport::Udp,
        &invite("15550109999", "UDP", "", &big),
        CALLER,
    );
    assert_eq!(
        action,
        Action::Forward {
            to: addr(TRUNK_UDP),
            local: 1
        }
    );
    assert!(top_via(&out).starts_with("Via: SIP/2.0/UDP "));
}

#[test]
fn with_tcp_off_everything_leaves_over_udp_as_before() {
    let proxy = proxy(false, false);
    let route = "Route: <sip:198.51.100.9:5070;lr;transport=tcp>\r\n";
    let (action, out) = handle(
        &proxy,
        Transport::Udp,
        &within_dialog(invite("15550109999", "UDP", route, "")),
        CALLER,
    );
    assert_eq!(
        action,
        Action::Forward {
            to: addr("198.51.100.9:5070"),
            local: 2
        }
    );
    assert!(top_via(&out).starts_with("Via: SIP/2.0/UDP "));
    // A response whose Via below ours says TCP goes back over UDP.
    let (action, _) = handle(
        &proxy,
        Transport::Udp,
        &response_to(&out),
        "198.51.100.9:5070",
    );
    assert!(matches!(action, Action::Forward { .. }), "{action:?}");
}

#[test]
fn framing_errors_are_answered_from_the_header_section() {
    let proxy = proxy(true, false);
    let mut tally = Tally::default();
    let mut out = Vec::new();
    let head = invite("15550109999", "TCP", "", "").replace("Content-Length: 0\r\n", "");
    let action = proxy.reject(
        head.as_bytes(),
        addr(CALLER_CONN),
        (400, "Missing Content-Length"),
        &mut out,
        &mut tally,
    );
    assert!(matches!(action, Action::Reply { .. }), "{action:?}");
    let out = String::from_utf8_lossy(&out);
    assert!(
        out.starts_with("SIP/2.0 400 Missing Content-Length\r\n"),
        "{out}"
    );
    assert!(out.contains("Call-ID: call-1@192.0.2.2\r\n"), "{out}");
    // An ACK, a response or noise is not answered.
    for text in [
        head.replace("INVITE", "ACK"),
        response_to(&head),
        "garbage\r\n\r\n".into(),
    ] {
        let action = proxy.reject(
            text.as_bytes(),
            addr(CALLER_CONN),
            (400, "x"),
            &mut Vec::new(),
            &mut tally,
        );
        assert!(matches!(action, Action::Drop(_)), "{text}: {action:?}");
    }
}
