//! The stateless proxy's rules (RFC 3261 §16.11) on datagrams, without a network:
//! where each request goes, what it looks like when it leaves, and what comes back.

mod rules;

use rules::{BySubnet, CALLER, GW_CALLER, GW_CARRIER, PEER, addr};

use std::{net::SocketAddr, sync::Arc};

use fastpath::{
    config::Config,
    proxy::{Action, Inbound, Proxy, ProxyCounter, ProxyCounters, Tally, service::Parts},
    routing::RouteTable,
    sip::Message,
};
use proptest::prelude::*;

const TRUNK: &str = "203.0.113.2:5060";

struct Rig {
    proxy: Arc<Proxy>,
    table: Arc<RouteTable>,
    counters: Arc<ProxyCounters>,
    tally: Tally,
}

fn rig() -> Rig {
    let config = Config::parse(&format!(
        "[proxy]\nlisten = [\"{GW_CALLER}\", \"{GW_CARRIER}\", \"198.51.100.1:5060\"]\n\
         [[peers]]\nname = \"pbx\"\naddress = \"{PEER}\"\n\
         [[routes]]\nnumber = \"+1 555 010 0001\"\npeer = \"pbx\"\n\
         [[trunks]]\nname = \"carrier\"\naddress = \"{TRUNK}\"\n\
         [health]\nmisses = 1\n"
    ))
    .unwrap();
    let table = Arc::new(RouteTable::from_config(&config));
    let Parts {
        proxy, counters, ..
    } = Parts::new(&config.proxy, Arc::clone(&table), None);
    Rig {
        proxy,
        table,
        counters,
        tally: Tally::default(),
    }
}

impl Rig {
    fn handle(&mut self, data: &[u8], src: &str) -> (Action, String) {
        let mut out = Vec::new();
        let input = Inbound {
            data,
            src: addr(src),
            truncated: false,
        };
        let action = self
            .proxy
            .handle(&input, 1, &mut BySubnet, &mut out, &mut self.tally);
        self.counters.absorb(&mut self.tally);
        (action, String::from_utf8_lossy(&out).into_owned())
    }
}

fn request(method: &str, number: &str, extra: &str) -> String {
    format!(
        "{method} sip:{number}@192.0.2.1:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP {CALLER};branch=z9hG4bK-abc\r\n\
         From: <sip:caller@192.0.2.2>;tag=f1\r\n\
         To: <sip:{number}@192.0.2.1>\r\n\
         Call-ID: call-1@192.0.2.2\r\n\
         CSeq: 1 {method}\r\n\
         {extra}\
         Content-Length: 0\r\n\r\n"
    )
}

fn invite(number: &str) -> String {
    request("INVITE", number, "Max-Forwards: 70\r\n")
}

fn forward_to(action: Action) -> SocketAddr {
    match action {
        Action::Forward { to, .. } => to,
        other => panic!("not forwarded: {other:?}"),
    }
}

fn status(action: Action, out: &str) -> &str {
    assert!(matches!(action, Action::Reply { .. }), "{action:?}");
    out.lines().next().unwrap_or_default()
}

fn top_via(out: &str) -> &str {
    out.lines().nth(1).unwrap_or_default()
}

#[test]
fn unregistered_goes_to_the_trunk_with_our_via_on_top() {
    let mut rig = rig();
    let (action, out) = rig.handle(invite("15550109999").as_bytes(), CALLER);
    assert_eq!(
        action,
        Action::Forward {
            to: addr(TRUNK),
            local: 1
        }
    );
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some("INVITE sip:15550109999@192.0.2.1:5060 SIP/2.0")
    );
    let via = lines.next().unwrap();
    assert!(
        via.starts_with("Via: SIP/2.0/UDP 203.0.113.1:5060;branch=z9hG4bKfp"),
        "{via}"
    );
    assert_eq!(
        lines.next(),
        Some("Via: SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bK-abc")
    );
    assert!(out.contains("\r\nMax-Forwards: 69\r\n"), "{out}");
    assert!(out.ends_with("Content-Length: 0\r\n\r\n"), "{out:?}");
    // Forwarded output is itself a well-formed request.
    let parsed = Message::parse(out.as_bytes()).unwrap();
    assert_eq!(parsed.error, None);
    assert_eq!(rig.counters.get(ProxyCounter::ForwardedTrunk), 1);
}

#[test]
fn a_transaction_stays_together_and_retransmissions_match() {
    let mut rig = rig();
    let (a1, invite1) = rig.handle(invite("15550100001").as_bytes(), CALLER);
    let (_, invite2) = rig.handle(invite("15550100001").as_bytes(), CALLER);
    assert_eq!(forward_to(a1), addr(PEER));
    assert_eq!(
        invite1, invite2,
        "a retransmission leaves byte for byte the same"
    );
    let cancel = request("CANCEL", "15550100001", "Max-Forwards: 70\r\n");
    let (a3, cancel_out) = rig.handle(cancel.as_bytes(), CALLER);
    assert_eq!(forward_to(a3), addr(PEER));
    assert_eq!(
        top_via(&cancel_out),
        top_via(&invite1),
        "CANCEL needs the INVITE's branch"
    );
    // The ACK of a failed INVITE (To tag added) belongs to the INVITE's transaction.
    let ack = request("ACK", "15550100001", "Max-Forwards: 70\r\n").replace(
        "To: <sip:15550100001@192.0.2.1>",
        "To: <sip:15550100001@192.0.2.1>;tag=callee",
    );
    let (a4, ack_out) = rig.handle(ack.as_bytes(), CALLER);
    assert_eq!(forward_to(a4), addr(PEER));
    assert_eq!(
        top_via(&ack_out),
        top_via(&invite1),
        "ACK needs the INVITE's branch"
    );
    assert_eq!(rig.counters.get(ProxyCounter::ForwardedPeer), 4);
}

#[test]
fn other_methods_follow_the_same_decision() {
    let mut rig = rig();
    for method in ["OPTIONS", "MESSAGE", "REGISTER", "BYE"] {
        let registered = request(method, "15550100001", "");
        assert_eq!(
            forward_to(rig.handle(registered.as_bytes(), CALLER).0),
            addr(PEER)
        );
        let other = request(method, "15550109999", "");
        let (action, out) = rig.handle(other.as_bytes(), CALLER);
        assert_eq!(forward_to(action), addr(TRUNK), "{method}");
        assert!(
            out.contains("\r\nMax-Forwards: 70\r\n"),
            "added when absent: {out}"
        );
    }
    // A user part with parameters is not a number the fast path would take: standard route.
    let tel = request("INVITE", "15550100001;user=phone", "");
    assert_eq!(
        forward_to(rig.handle(tel.as_bytes(), CALLER).0),
        addr(TRUNK)
    );
}

#[test]
fn a_down_peer_falls_back_to_the_trunk() {
    let mut rig = rig();
    assert!(rig.table.set_peer_up(0, false));
    assert_eq!(
        forward_to(rig.handle(invite("15550100001").as_bytes(), CALLER).0),
        addr(TRUNK)
    );
    assert!(rig.table.set_peer_up(0, true));
    assert_eq!(
        forward_to(rig.handle(invite("15550100001").as_bytes(), CALLER).0),
        addr(PEER)
    );
}

/// A request whose Request-URI is `uri`, inside a dialog (`To` has a tag).
fn in_dialog(method: &str, uri: &str) -> String {
    format!(
        "{method} {uri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {TRUNK};branch=z9hG4bK-dlg\r\n\
         From: <sip:+15550109999@203.0.113.2>;tag=t1\r\n\
         To: <sip:caller@192.0.2.2>;tag=f1\r\n\
         Call-ID: call-2@203.0.113.2\r\n\
         CSeq: 2 {method}\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

#[test]
fn requests_addressed_to_a_peer_go_to_it() {
    let mut rig = rig();
    // The peer's Contact, with or without a number the registry knows, and with the
    // default port left out: a dialog's ACK, BYE and re-INVITE reach the peer.
    for uri in [
        format!("sip:pbx-7f3a@{PEER}"),
        format!("sip:+15550109999@{PEER};transport=udp"),
        "sip:pbx-7f3a@198.51.100.2".to_string(),
    ] {
        for method in ["ACK", "BYE", "INVITE", "INFO"] {
            let request = in_dialog(method, &uri);
            let (action, _) = rig.handle(request.as_bytes(), TRUNK);
            assert_eq!(forward_to(action), addr(PEER), "{method} {uri}");
        }
    }
    // So does a request outside a dialog (its CANCEL and its error's ACK with it).
    let invite =
        request("INVITE", "15550109999", "").replace("@192.0.2.1:5060", &format!("@{PEER}"));
    assert_eq!(
        forward_to(rig.handle(invite.as_bytes(), CALLER).0),
        addr(PEER)
    );
    // An address the gateway was not given is not relayed to; a host name neither.
    for uri in [
        "sip:pbx-7f3a@198.51.100.77:5060",
        "sip:pbx-7f3a@198.51.100.2:5070",
        "sip:pbx-7f3a@pbx.example.net",
    ] {
        let (action, _) = rig.handle(in_dialog("BYE", uri).as_bytes(), CALLER);
        assert_eq!(forward_to(action), addr(TRUNK), "{uri}");
    }
    // A registered number whose peer is down still takes the standard route, whatever
    // host its Request-URI names.
    assert!(rig.table.set_peer_up(0, false));
    let registered = in_dialog("BYE", &format!("sip:+15550100001@{PEER}"));
    assert_eq!(
        forward_to(rig.handle(registered.as_bytes(), CALLER).0),
        addr(TRUNK)
    );
    let contact = in_dialog("BYE", &format!("sip:pbx-7f3a@{PEER}"));
    assert_eq!(
        forward_to(rig.handle(contact.as_bytes(), CALLER).0),
        addr(PEER)
    );
}

#[test]
fn max_forwards_and_loops() {
    let mut rig = rig();
    let zero = request("INVITE", "15550109999", "Max-Forwards: 0\r\n");
    let (action, out) = rig.handle(zero.as_bytes(), CALLER);
    assert!(status(action, &out).starts_with("SIP/2.0 483 "), "{out}");
    assert!(out.contains("Via: SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bK-abc\r\n"));
    assert!(
        out.contains("To: <sip:15550109999@192.0.2.1>;tag="),
        "{out}"
    );
    assert_eq!(action, Action::Reply { to: addr(CALLER) });

    // What we sent, arriving back at us: a loop.
    let (_, forwarded) = rig.handle(invite("15550109999").as_bytes(), CALLER);
    let (action, out) = rig.handle(forwarded.as_bytes(), GW_CARRIER);
    assert!(status(action, &out).starts_with("SIP/2.0 482 "), "{out}");
    // The same request with a new Request-URI is a spiral, not a loop.
    let spiral = forwarded.replacen("sip:15550109999@", "sip:15550108888@", 1);
    assert!(matches!(
        rig.handle(spiral.as_bytes(), GW_CARRIER).0,
        Action::Forward { .. }
    ));
}

#[test]
fn received_and_rport_are_filled_in() {
    let mut rig = rig();
    let msg = invite("15550109999").replace(
        &format!("Via: SIP/2.0/UDP {CALLER};branch=z9hG4bK-abc"),
        "Via: SIP/2.0/UDP pbx.example:5070;rport;branch=z9hG4bK-abc",
    );
    let (_, out) = rig.handle(msg.as_bytes(), "192.0.2.2:40000");
    assert!(
        out.contains("Via: SIP/2.0/UDP pbx.example:5070;rport=40000;branch=z9hG4bK-abc;received=192.0.2.2\r\n"),
        "{out}"
    );
    // A response finds its way back by them.
    let response = format!(
        "SIP/2.0 180 Ringing\r\n{}",
        &out[out.find("Via:").unwrap()..]
    );
    let (action, relayed) = rig.handle(response.as_bytes(), TRUNK);
    assert_eq!(
        action,
        Action::Forward {
            to: addr("192.0.2.2:40000"),
            local: 0
        }
    );
    assert!(
        relayed.starts_with("SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP pbx.example"),
        "{relayed}"
    );
    assert!(!relayed.contains("z9hG4bKfp"), "our Via is gone: {relayed}");
}

#[test]
fn responses_are_routed_by_via_and_only_through_our_own() {
    let mut rig = rig();
    let (_, out) = rig.handle(invite("15550109999").as_bytes(), CALLER);
    let vias: String = out
        .lines()
        .filter(|l| l.starts_with("Via:"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    let response = format!(
        "SIP/2.0 200 OK\r\n{vias}From: <sip:caller@192.0.2.2>;tag=f1\r\nTo: <sip:x@y>;tag=t\r\n\
         Call-ID: call-1@192.0.2.2\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    );
    let (action, relayed) = rig.handle(response.as_bytes(), TRUNK);
    assert_eq!(
        action,
        Action::Forward {
            to: addr(CALLER),
            local: 0
        }
    );
    assert_eq!(relayed.matches("Via:").count(), 1);
    // Two Via values in one field: only ours goes.
    let folded = response.replacen(
        "\r\nVia: SIP/2.0/UDP 192.0.2.2",
        ", SIP/2.0/UDP 192.0.2.2",
        1,
    );
    let (action, relayed) = rig.handle(folded.as_bytes(), TRUNK);
    assert_eq!(
        action,
        Action::Forward {
            to: addr(CALLER),
            local: 0
        }
    );
    assert!(
        relayed.contains("\r\nVia: SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bK-abc\r\n"),
        "{relayed}"
    );
    // Someone else's response: not ours to route.
    let foreign = response.replacen("203.0.113.1:5060", "203.0.113.9:5060", 1);
    assert!(matches!(
        rig.handle(foreign.as_bytes(), TRUNK).0,
        Action::Drop(_)
    ));
}

/// `request` inside its dialog: the To field has the tag the callee gave.
fn within_dialog(request: String) -> String {
    request.replacen("@192.0.2.1>\r\n", "@192.0.2.1>;tag=t1\r\n", 1)
}

#[test]
fn loose_routing_pops_our_route_and_follows_the_next() {
    let mut rig = rig();
    let routes =
        "Route: <sip:192.0.2.1:5060;lr>, <sip:198.51.100.7:5070;lr>\r\nMax-Forwards: 70\r\n";
    let msg = within_dialog(request("INVITE", "15550109999", routes));
    let (action, out) = rig.handle(msg.as_bytes(), CALLER);
    assert_eq!(
        action,
        Action::Forward {
            to: addr("198.51.100.7:5070"),
            local: 2
        }
    );
    assert!(
        out.contains("\r\nRoute: <sip:198.51.100.7:5070;lr>\r\n"),
        "{out}"
    );
    // Outside a dialog, a Route set naming another host is refused, not followed: the
    // gateway is no relay to wherever a sender likes.
    for method in ["INVITE", "OPTIONS", "CANCEL"] {
        let preloaded = request(method, "15550109999", routes);
        let (action, out) = rig.handle(preloaded.as_bytes(), CALLER);
        assert_eq!(status(action, &out), "SIP/2.0 403 Preloaded Route Denied");
    }
    let (action, _) = rig.handle(request("ACK", "15550109999", routes).as_bytes(), CALLER);
    assert!(matches!(action, Action::Drop(_)), "no answer to an ACK");
    // Only our Route: removed, then the Request-URI decides.
    let msg = request("INVITE", "15550100001", "Route: <sip:192.0.2.1;lr>\r\n");
    let (action, out) = rig.handle(msg.as_bytes(), CALLER);
    assert_eq!(forward_to(action), addr(PEER));
    assert!(!out.contains("Route:"), "{out}");
    for host in [
        "pbx.example",
        "127.0.0.1:5080",
        "224.0.0.1",
        "255.255.255.255",
    ] {
        let bad = request("INVITE", "1", &format!("Route: <sip:{host};lr>\r\n"));
        let (action, out) = rig.handle(bad.as_bytes(), CALLER);
        assert!(
            status(action, &out).starts_with("SIP/2.0 502 "),
            "{host}: {out}"
        );
    }
    let bad = request("INVITE", "1", "Route: <http://x>\r\n");
    let (action, out) = rig.handle(bad.as_bytes(), CALLER);
    assert!(
        status(action, &out).starts_with("SIP/2.0 400 Malformed Route"),
        "{out}"
    );
}

#[test]
fn a_trunk_answering_503_is_taken_out_and_callers_get_503_retry_after() {
    let mut rig = rig();
    let (_, out) = rig.handle(invite("15550109999").as_bytes(), CALLER);
    let vias: String = out
        .lines()
        .filter(|l| l.starts_with("Via:"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    let busy =
        format!("SIP/2.0 503 Busy\r\n{vias}Call-ID: call-1@192.0.2.2\r\nCSeq: 1 INVITE\r\n\r\n");
    assert!(matches!(
        rig.handle(busy.as_bytes(), TRUNK).0,
        Action::Forward { .. }
    ));
    assert_eq!(rig.counters.get(ProxyCounter::TrunkDown), 1);
    let (action, out) = rig.handle(invite("15550109999").as_bytes(), CALLER);
    assert!(status(action, &out).starts_with("SIP/2.0 503 "), "{out}");
    assert!(out.contains("\r\nRetry-After: 5\r\n"), "{out}");
    // Registered numbers with their peer up are not affected.
    assert_eq!(
        forward_to(rig.handle(invite("15550100001").as_bytes(), CALLER).0),
        addr(PEER)
    );
}

#[test]
fn bad_requests_get_their_status() {
    let mut rig = rig();
    let cases = [
        (
            request("INVITE", "1", "").replace("sip:1@", "http:1@"),
            "416",
        ),
        (
            request("INVITE", "1", "").replace("Call-ID: call-1@192.0.2.2\r\n", ""),
            "400 Missing Call-ID",
        ),
        (
            request("INVITE", "1", "").replace("CSeq: 1 INVITE", "CSeq: x INVITE"),
            "400 Malformed CSeq",
        ),
        (
            request("INVITE", "1", "Max-Forwards: many\r\n"),
            "400 Malformed Max-Forwards",
        ),
        (
            request("INVITE", "1", "").replace("Content-Length: 0", "Content-Length: 10"),
            "400 Content-Length",
        ),
        (
            request("INVITE", "1", "").replace(" SIP/2.0\r\n", " SIP/3.0\r\n"),
            "505",
        ),
        (
            request("INVITE", "1", "").replace("sip:1@192.0.2.1:5060", "<sip:1@192.0.2.1>"),
            "400 Request-URI",
        ),
        (
            request("INVITE", "1", "").replace("branch=z9hG4bK-abc", "branch=z9hG4bK-abc;;"),
            "400 Malformed Via",
        ),
    ];
    for (msg, want) in cases {
        let (action, out) = rig.handle(msg.as_bytes(), CALLER);
        let line = status(action, &out);
        assert!(
            line.starts_with(&format!("SIP/2.0 {want}")),
            "{want}: got {line:?}"
        );
    }
    let mut truncated_out = Vec::new();
    let big = invite("1");
    let input = Inbound {
        data: big.as_bytes(),
        src: addr(CALLER),
        truncated: true,
    };
    let action = rig
        .proxy
        .handle(&input, 1, &mut BySubnet, &mut truncated_out, &mut rig.tally);
    assert!(matches!(action, Action::Reply { .. }));
    assert!(truncated_out.starts_with(b"SIP/2.0 513 "));
    // Unanswerable: dropped.
    for msg in [
        "",
        "\r\n\r\n",
        "hello",
        "INVITE sip:1@x SIP/2.0\r\nCall-ID: x\r\n\r\n",
    ] {
        assert!(
            matches!(rig.handle(msg.as_bytes(), CALLER).0, Action::Drop(_)),
            "{msg:?}"
        );
    }
    let ack = request("ACK", "1", "Max-Forwards: 0\r\n");
    assert!(
        matches!(rig.handle(ack.as_bytes(), CALLER).0, Action::Drop(_)),
        "no answer to an ACK"
    );
}

const TORTURE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/sip-torture");

/// Invalid RFC 4475 messages the proxy forwards on purpose, as a liberal element may
/// (the RFC allows it for each of these).
const LIBERAL: &[&str] = &["escruri", "baddate", "badaspec", "regbadct"];

#[test]
fn rfc4475_torture_messages() {
    let tsv = std::fs::read_to_string(format!("{TORTURE_DIR}/expected.tsv"))
        .expect("shared/sip-torture/expected.tsv beside the repo");
    let mut seen = 0;
    for line in tsv
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let fields: Vec<&str> = line.split('\t').collect();
        let (path, verdict) = (fields[0], fields[1]);
        let bytes = std::fs::read(format!("{TORTURE_DIR}/{path}")).unwrap();
        let name = path.trim_start_matches("rfc4475/").trim_end_matches(".sip");
        let mut rig = rig();
        let (action, out) = rig.handle(&bytes, CALLER);
        seen += 1;
        if verdict == "invalid" && !LIBERAL.contains(&name) {
            assert!(
                !matches!(action, Action::Forward { .. }),
                "{name}: invalid but forwarded:\n{out}"
            );
        }
        if let Action::Forward { .. } = action {
            // Whatever leaves parses, and carries our Via (requests) or not (responses).
            let parsed = Message::parse(out.as_bytes());
            assert!(
                parsed.is_ok(),
                "{name}: forwarded something unreadable:\n{out}"
            );
        }
        match name {
            "zeromf" => assert!(status(action, &out).starts_with("SIP/2.0 483")),
            // Well formed, but routed to a host name / loopback: the gateway cannot go there.
            "wsinv" | "mpart01" => assert!(status(action, &out).starts_with("SIP/2.0 502")),
            "longreq" => assert!(matches!(action, Action::Forward { .. }), "{out}"),
            "novelsc" => assert!(status(action, &out).starts_with("SIP/2.0 416")),
            "badvers" => assert!(status(action, &out).starts_with("SIP/2.0 505")),
            "dblreq" => {
                assert!(matches!(action, Action::Forward { .. }));
                assert!(
                    !out.contains("INVITE"),
                    "the trailing bytes are not forwarded"
                );
            }
            "clerr" | "mcl01" | "scalar02" | "insuf" | "mismatch01" | "quotbal" | "ltgtruri" => {
                assert!(
                    status(action, &out).starts_with("SIP/2.0 400"),
                    "{name}: {out}"
                )
            }
            _ => {}
        }
    }
    assert_eq!(seen, 49, "all RFC 4475 messages");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any bytes: no panic; a forwarded request leaves with our Via on top.
    #[test]
    fn never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut rig = rig();
        let (action, out) = rig.handle(&bytes, CALLER);
        if let Action::Forward { .. } = action {
            prop_assert!(top_via(&out).contains("z9hG4bKfp") || out.starts_with("SIP/2.0"));
        }
    }

    /// Valid requests with one byte changed: no panic, and whatever leaves parses.
    #[test]
    fn never_panics_on_mutations(pos in 0usize..400, byte in any::<u8>(), registered in any::<bool>()) {
        let mut rig = rig();
        let number = if registered { "15550100001" } else { "15550109999" };
        let mut msg = invite(number).into_bytes();
        let at = pos % msg.len();
        msg[at] = byte;
        let (action, out) = rig.handle(&msg, CALLER);
        if let Action::Forward { .. } = action {
            prop_assert!(Message::parse(out.as_bytes()).is_ok(), "{}", out);
        }
    }
}

/// A peer answering a real INVITE with 5xx counts against its health (here one strike is
/// enough): its next calls take the trunk, and the 5xx itself still reaches the caller.
#[test]
fn a_peer_failing_calls_goes_down() {
    let mut rig = rig();
    let (action, out) = rig.handle(invite("15550100001").as_bytes(), CALLER);
    assert_eq!(forward_to(action), addr(PEER));
    let vias: String = out
        .lines()
        .filter(|l| l.starts_with("Via:"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    let failure =
        format!("SIP/2.0 500 Oops\r\n{vias}Call-ID: call-1@192.0.2.2\r\nCSeq: 1 INVITE\r\n\r\n");
    let (action, _) = rig.handle(failure.as_bytes(), PEER);
    assert_eq!(
        action,
        Action::Forward {
            to: addr(CALLER),
            local: 0
        }
    );
    assert_eq!(rig.counters.get(ProxyCounter::Peer5xx), 1);
    assert_eq!(rig.counters.get(ProxyCounter::PeerDown), 1);
    assert_eq!(
        forward_to(rig.handle(invite("15550100001").as_bytes(), CALLER).0),
        addr(TRUNK)
    );
}
