//! One datagram in, one decision out: the RFC 3261 §16.11 stateless proxy, free of I/O.
//!
//! [`Proxy::handle`] reads a datagram, decides where it goes and writes the bytes to send
//! into a reused buffer; the socket loop in `udp.rs` only moves datagrams. Keeping the
//! logic here makes every rule testable without a network.

use std::{
    io::Write,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use fastpath_common::{SCAN_LEN, Verdict, classify_bytes};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::{
    counters::{ProxyCounter, Tally},
    health::PeerHealth,
    reply,
    trunks::{Millis, Pick, Trunks},
};
use crate::{
    routing::{Lookup, RouteTable},
    sip::{Field, Host, Kind, Message, Via, ViaValues, eq_fold},
};

/// RFC 3261 magic cookie, then our mark: a Via of ours is recognised by address and this.
pub const BRANCH_PREFIX: &[u8] = b"z9hG4bKfp";
/// Largest datagram the proxy reads; longer ones are answered 513.
pub const MAX_DATAGRAM: usize = 16 * 1024;
/// Largest datagram the proxy sends (an IPv6 UDP payload without jumbograms, less margin).
pub const MAX_SEND: usize = 65_000;
/// Max-Forwards when a request has none (RFC 3261 §16.6 step 3).
const DEFAULT_MAX_FORWARDS: &[u8] = b"70";
/// A request that came in over TCP and is longer than this leaves over TCP whatever its
/// next hop (RFC 3261 §18.1.1: the path MTU is unknown, so 1300 bytes).
pub const MAX_UDP_FROM_TCP: usize = 1300;

/// How a message travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Transport {
    #[default]
    Udp,
    Tcp,
}

impl Transport {
    /// As written in a Via (`SIP/2.0/UDP`) and a URI's `transport` parameter.
    pub fn token(self) -> &'static [u8] {
        match self {
            Transport::Udp => b"UDP",
            Transport::Tcp => b"TCP",
        }
    }

    fn is(self, token: &[u8]) -> bool {
        eq_fold(token, self.token())
    }
}

/// What to do with a datagram; the bytes to send are in the `out` buffer passed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send `out` to `to` from our local address number `local`.
    Forward {
        to: SocketAddr,
        local: usize,
    },
    /// Send `out` (our own response) back to `to` from the socket it came in on.
    Reply {
        to: SocketAddr,
    },
    /// Send `out` over a TCP connection to `to` from our local address number `local`;
    /// with none open, open one to `connect` (differs from `to` only for a response whose
    /// request's connection is gone: RFC 3261 §18.2.2).
    ForwardTcp {
        to: SocketAddr,
        connect: SocketAddr,
        local: usize,
    },
    Drop(&'static str),
}

impl Action {
    pub fn is_forward(&self) -> bool {
        matches!(self, Action::Forward { .. } | Action::ForwardTcp { .. })
    }
}

/// Picks which of our addresses sends to a destination (its Via names that address, so
/// responses come back to the right socket).
pub trait Egress {
    fn local_for(&mut self, dest: SocketAddr) -> Option<usize>;
}

/// Where a request goes next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextHop {
    Peer(u32, SocketAddr),
    Trunk(usize, SocketAddr),
    Route(SocketAddr),
}

pub struct Proxy {
    locals: Vec<SocketAddr>,
    /// `locals` as written in our Via (formatted once, not per request).
    sent_by: Vec<String>,
    table: Arc<RouteTable>,
    trunks: Arc<Trunks>,
    health: Arc<PeerHealth>,
    /// TCP is served: the proxy may choose it for a next hop.
    tcp: bool,
}

/// One received datagram.
pub struct Inbound<'a> {
    pub data: &'a [u8],
    pub src: SocketAddr,
    /// The datagram was longer than the buffer.
    pub truncated: bool,
}

impl Proxy {
    pub fn new(
        locals: Vec<SocketAddr>,
        table: Arc<RouteTable>,
        trunks: Arc<Trunks>,
        health: Arc<PeerHealth>,
    ) -> Self {
        Self {
            sent_by: locals.iter().map(ToString::to_string).collect(),
            locals,
            table,
            trunks,
            health,
            tcp: false,
        }
    }

    /// Lets the proxy send over TCP where a next hop or a response calls for it; without
    /// it everything leaves over UDP, as before TCP was served.
    pub fn with_tcp(mut self, on: bool) -> Self {
        self.tcp = on;
        self
    }

    pub fn locals(&self) -> &[SocketAddr] {
        &self.locals
    }

    pub fn trunks(&self) -> &Trunks {
        &self.trunks
    }

    /// Decides what to do with `input`, a datagram, writing what to send into `out`.
    pub fn handle(
        &self,
        input: &Inbound,
        now: Millis,
        egress: &mut dyn Egress,
        out: &mut Vec<u8>,
        tally: &mut Tally,
    ) -> Action {
        self.handle_over(Transport::Udp, input, now, egress, out, tally)
    }

    /// [`Proxy::handle`] for a message that came over `transport` (a TCP message is one
    /// framed from its stream).
    pub fn handle_over(
        &self,
        transport: Transport,
        input: &Inbound,
        now: Millis,
        egress: &mut dyn Egress,
        out: &mut Vec<u8>,
        tally: &mut Tally,
    ) -> Action {
        out.clear();
        let action = match Message::parse(input.data) {
            Err(e) => Action::Drop(e.0),
            // Counts its forwards itself: it knows which way they went.
            Ok(msg) if msg.is_request() => {
                self.request(&msg, transport, input, now, egress, out, tally)
            }
            Ok(_) if input.truncated => Action::Drop("truncated response"),
            Ok(msg) => {
                let action = self.response(&msg, input.src, now, egress, out);
                if action.is_forward() {
                    tally.bump(ProxyCounter::ResponsesForwarded);
                }
                action
            }
        };
        self.count_outcome(&action, out, tally);
        action
    }

    /// Answers a request whose stream framing failed (`head`: its header section) with
    /// `status`, if it can be answered at all (RFC 3261 §18.3: a stream message without
    /// Content-Length gets 400; one too large, 513).
    pub fn reject(
        &self,
        head: &[u8],
        src: SocketAddr,
        (status, reason): (u16, &'static str),
        out: &mut Vec<u8>,
        tally: &mut Tally,
    ) -> Action {
        out.clear();
        let action = match Message::parse(head) {
            Ok(msg) if msg.is_request() && msg.method() != b"ACK" => {
                reply::write(&msg, status, reason, None, out);
                Action::Reply {
                    to: reply_target(&msg, src),
                }
            }
            Ok(_) => Action::Drop("unanswerable framing error"),
            Err(e) => Action::Drop(e.0),
        };
        self.count_outcome(&action, out, tally);
        action
    }

    /// The next hop at `dest` could not be reached (a TCP connect failed): a trunk is
    /// taken out, a peer's health counts a failure.
    pub fn next_hop_unreachable(&self, dest: SocketAddr, now: Millis) {
        if self.trunks.index_of(dest).is_some() {
            self.trunks.unreachable(dest, now);
        } else if let Some(peer) = self.table.peer_at(dest) {
            self.health.record_failure(peer);
        }
    }

    fn count_outcome(&self, action: &Action, out: &[u8], tally: &mut Tally) {
        match action {
            Action::Drop(_) => tally.bump(ProxyCounter::Dropped),
            // "SIP/2.0 5xx": the status class is byte 8 of our own response.
            Action::Reply { .. } if out.get(8) == Some(&b'5') => {
                tally.bump(ProxyCounter::Replied5xx)
            }
            Action::Reply { .. } => tally.bump(ProxyCounter::Replied4xx),
            Action::Forward { .. } | Action::ForwardTcp { .. } => {}
        }
    }

    #[allow(clippy::too_many_arguments)] // handle's inputs, passed on
    fn request(
        &self,
        msg: &Message,
        transport: Transport,
        input: &Inbound,
        now: Millis,
        egress: &mut dyn Egress,
        out: &mut Vec<u8>,
        tally: &mut Tally,
    ) -> Action {
        let is_ack = msg.method() == b"ACK";
        // An ACK is never answered (RFC 3261 §17.2.1): whatever is wrong with it, drop it.
        let answer = |status: u16, reason: &str, out: &mut Vec<u8>| -> Action {
            if is_ack {
                return Action::Drop("bad ACK");
            }
            reply::write(msg, status, reason, None, out);
            Action::Reply {
                to: reply_target(msg, input.src),
            }
        };
        if input.truncated {
            return answer(513, "Message Too Large", out);
        }
        if let Some((status, reason)) = msg.error {
            return answer(status, reason, out);
        }
        let Some(top) = msg.via_fields().first() else {
            return Action::Drop("no Via");
        };
        let Some((_, top_value, top_end)) = ViaValues::new(top.value.of(msg.buf)).next() else {
            return answer(400, "Malformed Via", out);
        };
        let Some(top_via) = Via::parse(top_value) else {
            return answer(400, "Malformed Via", out);
        };
        let uri = msg.uri();
        match scheme(uri) {
            Some(s) if eq_fold(s, b"sip") || eq_fold(s, b"sips") || eq_fold(s, b"tel") => {}
            Some(_) => return answer(416, "Unsupported URI Scheme", out),
            None => return answer(400, "Malformed Request-URI", out),
        }
        if let Some((_, 0)) = msg.max_forwards {
            return answer(483, "Too Many Hops", out);
        }
        let loop_hash = loop_hash(msg);
        if self.seen_before(msg, loop_hash) {
            return answer(482, "Loop Detected", out);
        }

        let (by_route, pop_route, route_transport) = match self.route_header_hop(msg) {
            Ok(hop) => hop,
            Err(RouteError::Malformed) => return answer(400, "Malformed Route", out),
            // Well formed, but the gateway does no DNS and sends nowhere but unicast.
            Err(RouteError::Unusable) => return answer(502, "Unusable Route Host", out),
        };
        if by_route.is_some() && msg.to_tag().is_none() {
            // A Route set outside a dialog that names a host besides us: the sender asks
            // the gateway to relay to wherever it likes, from an address other networks
            // may trust (RFC 3261 §16.4 leaves preloaded routes to local policy; Kamailio's
            // default configuration refuses them too). Inside a dialog, a Route set is the
            // one the dialog's proxies recorded.
            return answer(403, "Preloaded Route Denied", out);
        }
        let next = match by_route {
            Some(hop) => hop,
            None => match self.decide(msg, now) {
                Ok(hop) => hop,
                Err(Pick::AllDown { retry_after_s }) => {
                    if is_ack {
                        return Action::Drop("no trunk for ACK");
                    }
                    reply::write(msg, 503, "Service Unavailable", Some(retry_after_s), out);
                    return Action::Reply {
                        to: reply_target(msg, input.src),
                    };
                }
                Err(_) => return answer(503, "No Standard Route Configured", out),
            },
        };
        let dest = match next {
            NextHop::Peer(_, a) | NextHop::Trunk(_, a) | NextHop::Route(a) => a,
        };
        let Some(local) = egress.local_for(dest) else {
            return Action::Drop("no local address can reach the next hop");
        };
        let branch = branch(msg, top_value, loop_hash);
        let edits = Edits {
            top: top_received(top, top_end, &top_via, input.src, transport),
            max_forwards: msg.max_forwards.map(|(f, n)| (f, n - 1)),
            pop_route,
        };
        let mut via = self.next_hop_transport(msg, next, dest, route_transport);
        write_request(msg, &self.sent_by[local], &branch, &edits, via, out);
        if via == Transport::Udp && transport == Transport::Tcp && out.len() > MAX_UDP_FROM_TCP {
            out.clear();
            via = Transport::Tcp;
            write_request(msg, &self.sent_by[local], &branch, &edits, via, out);
        }
        if out.len() > MAX_SEND {
            return answer(513, "Message Too Large", out);
        }
        tally.bump(match next {
            NextHop::Peer(..) => ProxyCounter::ForwardedPeer,
            NextHop::Trunk(index, _) => {
                if msg.method() == b"INVITE" {
                    self.trunks.invite_sent(index, now);
                }
                ProxyCounter::ForwardedTrunk
            }
            NextHop::Route(_) => ProxyCounter::ForwardedRoute,
        });
        match via {
            Transport::Udp => Action::Forward { to: dest, local },
            Transport::Tcp => Action::ForwardTcp {
                to: dest,
                connect: dest,
                local,
            },
        }
    }

    /// The transport a next hop calls for (RFC 3261 §18.1.1): `;transport=` on the Route
    /// that chose it, a trunk's configured transport, or on a Request-URI that names it;
    /// otherwise UDP. Always UDP while TCP is not served.
    fn next_hop_transport(
        &self,
        msg: &Message,
        next: NextHop,
        dest: SocketAddr,
        route_transport: Option<Transport>,
    ) -> Transport {
        if !self.tcp {
            return Transport::Udp;
        }
        let wanted = match next {
            NextHop::Route(_) => route_transport,
            NextHop::Trunk(index, _) => self.trunks.transport(index),
            NextHop::Peer(..) => None,
        };
        let wanted = wanted.or_else(|| {
            uri_transport(msg.uri()).filter(|_| route_addr(msg.uri()).flatten() == Some(dest))
        });
        wanted.unwrap_or(Transport::Udp)
    }

    /// The classifier's decision on the Request-URI and the route table; for a number
    /// registered to no peer, or no number, the peer the Request-URI names; then the trunks.
    fn decide(&self, msg: &Message, now: Millis) -> Result<NextHop, Pick> {
        let verdict = match msg.method() {
            // Exactly what the XDP program classifies: the request line as it came.
            b"INVITE" | b"ACK" | b"CANCEL" => classify_bytes(&msg.buf[msg.start_line.start..]),
            // Other requests go where an INVITE to the same Request-URI would: the same
            // classifier on the same URI, so the two can never disagree.
            _ => classify_uri(msg.uri()),
        };
        let registered = match verdict {
            Verdict::Candidate { key, .. } => match self.table.lookup(&key) {
                Lookup::Peer { id, address } => return Ok(NextHop::Peer(id, address)),
                // Its calls take the standard route while the peer is down.
                Lookup::PeerDown { .. } => true,
                Lookup::Miss => false,
            },
            Verdict::Pass(_) => false,
        };
        if !registered && let Some(hop) = self.addressed_peer(msg) {
            return Ok(hop);
        }
        let call_id = msg.text(msg.call_id);
        match self.trunks.pick(xxh3_64_with_seed(call_id, 0), now) {
            Pick::Trunk { index, address } => Ok(NextHop::Trunk(index, address)),
            other => Err(other),
        }
    }

    /// The peer whose address the Request-URI names (`sip:pbx-7f3a@198.51.100.2:5060`).
    ///
    /// Such a URI is the remote target a peer gave in its Contact, so requests inside a
    /// dialog carry it (an ACK for a 2xx, a BYE, a re-INVITE), often with no number in it,
    /// or a number of no registration: by the trunks they would reach a carrier that never
    /// saw the dialog. RFC 3261 §16.5 sends a request for a host the proxy is not
    /// responsible for to that host. Every request of a transaction carries the same URI,
    /// so an INVITE, its CANCEL and the ACK of its error response go the same way. Only to
    /// an address the gateway was given, whatever its health (a dialog lives nowhere
    /// else): it relays to no host a request merely names.
    fn addressed_peer(&self, msg: &Message) -> Option<NextHop> {
        let addr = route_addr(msg.uri())??;
        let id = self.table.peer_at(addr)?;
        Some(NextHop::Peer(id, addr))
    }

    /// Loose routing (RFC 3261 §16.4, §16.12): a top Route naming us is removed, and a
    /// Route left on top decides the next hop.
    fn route_header_hop(&self, msg: &Message) -> Result<RouteHop, RouteError> {
        let fields = msg.route_fields();
        let Some(first) = fields.first() else {
            return Ok((None, None, None));
        };
        let mut values = ViaValues::new(first.value.of(msg.buf));
        let Some((_, top, top_end)) = values.next() else {
            return Ok((None, None, None));
        };
        let top_addr = route_addr(top).ok_or(RouteError::Malformed)?;
        let (pop, next) = if top_addr.is_some_and(|a| self.is_local(a)) {
            let pop = RoutePop {
                field: *first,
                value_end: first.value.start + top_end,
            };
            // The next Route value: in the same field or the next one.
            let next = match values.next() {
                Some((_, v, _)) => Some(v),
                None => fields.get(1).and_then(|f| {
                    ViaValues::new(f.value.of(msg.buf))
                        .next()
                        .map(|(_, v, _)| v)
                }),
            };
            (Some(pop), next)
        } else {
            (None, Some(top))
        };
        let Some(next) = next else {
            // Only our own Route: route by the Request-URI, with the Route removed.
            return Ok((None, pop, None));
        };
        let addr = route_addr(next)
            .ok_or(RouteError::Malformed)?
            .filter(|a| is_unicast(a.ip()))
            .ok_or(RouteError::Unusable)?;
        Ok((Some(NextHop::Route(addr)), pop, uri_transport(next)))
    }

    fn is_local(&self, addr: SocketAddr) -> bool {
        self.locals.contains(&addr)
    }

    /// Loop detection (RFC 3261 §16.3 item 4): a Via of ours whose branch carries the
    /// same loop hash means this very request passed here before unchanged.
    fn seen_before(&self, msg: &Message, loop_hash: u32) -> bool {
        // Cheap test first: without our branch prefix anywhere there is no Via of ours.
        let headers = &msg.buf[msg.start_line.end..msg.headers_end];
        static OURS: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
            std::sync::LazyLock::new(|| memchr::memmem::Finder::new(BRANCH_PREFIX));
        if OURS.find(headers).is_none() {
            return false;
        }
        let mut tail = [0u8; 8];
        hex32(loop_hash, &mut tail);
        msg.all_via_fields().any(|field| {
            ViaValues::new(field.value.of(msg.buf)).any(|(_, value, _)| {
                Via::parse(value).is_some_and(|via| {
                    via.branch.starts_with(BRANCH_PREFIX)
                        && via.branch.ends_with(&tail)
                        && matches!(via.host, Host::Ip(_))
                        && self.locals.iter().any(|&l| via.sent_by_is(l))
                })
            })
        })
    }

    fn response(
        &self,
        msg: &Message,
        src: SocketAddr,
        now: Millis,
        egress: &mut dyn Egress,
        out: &mut Vec<u8>,
    ) -> Action {
        let Kind::Response { code } = msg.kind else {
            return Action::Drop("not a response");
        };
        let fields = msg.via_fields();
        let Some(top) = fields.first() else {
            return Action::Drop("no Via");
        };
        let top_text = top.value.of(msg.buf);
        let mut values = ViaValues::new(top_text);
        let Some((_, ours, ours_end)) = values.next() else {
            return Action::Drop("malformed Via");
        };
        let is_ours = Via::parse(ours).is_some_and(|v| {
            v.branch.starts_with(BRANCH_PREFIX) && self.locals.iter().any(|&l| v.sent_by_is(l))
        });
        if !is_ours {
            return Action::Drop("response whose top Via is not ours");
        }
        let next_value = match values.next() {
            Some((_, v, _)) => Some(v),
            None => fields.get(1).and_then(|f| {
                ViaValues::new(f.value.of(msg.buf))
                    .next()
                    .map(|(_, v, _)| v)
            }),
        };
        let Some((below, target)) = next_value
            .and_then(Via::parse)
            .and_then(|v| Some((v, v.response_target()?)))
            .filter(|(_, t)| is_unicast(t.ip()))
        else {
            return Action::Drop("no usable Via below ours");
        };
        if let Some(index) = self.trunks.index_of(src) {
            self.trunks.response(index, code, now);
        } else if code >= 500
            && msg.cseq_method() == b"INVITE"
            && let Some(peer) = self.table.peer_at(src)
        {
            self.health.record_failure(peer);
        }
        let Some(local) = egress.local_for(target) else {
            return Action::Drop("no local address can reach the caller");
        };
        // Remove our Via value: the whole field if it held only ours.
        let (cut_start, cut_end) = if ours_end < top_text.len() {
            // "ours , next": cut from the field value start to the next value.
            let rest = &top_text[ours_end..];
            let skip = rest
                .iter()
                .position(|&c| !matches!(c, b',' | b' ' | b'\t' | b'\r' | b'\n'))
                .unwrap_or(rest.len());
            (top.value.start, top.value.start + ours_end + skip)
        } else {
            (top.whole.start, top.whole.end)
        };
        out.extend_from_slice(&msg.buf[msg.start_line.start..cut_start]);
        out.extend_from_slice(&msg.buf[cut_end..msg.body.end]);
        if self.tcp && Transport::Tcp.is(below.transport) {
            // Back over the request's connection, found by received + rport (which we
            // set on every request that came over TCP); if it is gone, a new one to
            // received (or sent-by) at the sent-by port.
            let connect = SocketAddr::new(target.ip(), below.port.unwrap_or(5060));
            return Action::ForwardTcp {
                to: target,
                connect,
                local,
            };
        }
        Action::Forward { to: target, local }
    }
}

/// What the Route header decides: the next hop it names, our own Route value to remove,
/// and the `transport` its URI asks for.
type RouteHop = (Option<NextHop>, Option<RoutePop>, Option<Transport>);

enum RouteError {
    Malformed,
    /// A host name (no DNS here) or an address that is not unicast.
    Unusable,
}

/// Whether the proxy may send to `ip`: never loopback, wildcard, multicast or broadcast,
/// whatever a message says.
fn is_unicast(ip: IpAddr) -> bool {
    !ip.is_loopback()
        && !ip.is_unspecified()
        && !ip.is_multicast()
        && ip != IpAddr::V4(std::net::Ipv4Addr::BROADCAST)
}

/// A Route value of ours to remove: the field, and where our value ends in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoutePop {
    field: Field,
    value_end: usize,
}

/// Changes to the incoming header section, besides the Via we add on top.
struct Edits {
    /// The top Via field, with received / rport filled in where they go.
    top: TopVia,
    max_forwards: Option<(Field, u32)>,
    pop_route: Option<RoutePop>,
}

struct TopVia {
    /// Where the port goes, the port, and whether the `;rport` name goes too.
    rport_at: Option<(usize, u16, bool)>,
    received_at: Option<(usize, IpAddr)>,
}

fn top_received(
    field: &Field,
    value_end: usize,
    via: &Via,
    src: SocketAddr,
    transport: Transport,
) -> TopVia {
    let base = field.value.start;
    let rport_at = match (via.rport_fill_at, via.rport, transport) {
        (Some(at), _, _) => Some((base + at, src.port(), false)),
        // Over TCP, always: received + rport name the connection a response goes back on
        // (the sent-by port is not the connection's).
        (None, None, Transport::Tcp) => Some((base + value_end, src.port(), true)),
        _ => None,
    };
    TopVia {
        rport_at,
        // RFC 3261 §18.2.1: `received` when the sent-by host is not where it came from.
        received_at: (via.host != Host::Ip(src.ip())).then_some((base + value_end, src.ip())),
    }
}

/// Start line, our Via, the header fields as they came but for the edits, the body.
fn write_request(
    msg: &Message,
    sent_by: &str,
    branch: &[u8],
    edits: &Edits,
    via: Transport,
    out: &mut Vec<u8>,
) {
    let buf = msg.buf;
    out.extend_from_slice(msg.start_line.of(buf));
    out.extend_from_slice(match via {
        Transport::Udp => b"Via: SIP/2.0/UDP ",
        Transport::Tcp => b"Via: SIP/2.0/TCP ",
    });
    out.extend_from_slice(sent_by.as_bytes());
    out.extend_from_slice(b";branch=");
    out.extend_from_slice(branch);
    out.extend_from_slice(b"\r\n");

    // Insertions and cuts, in buffer order; they never overlap (different fields).
    let mut marks: [(usize, usize, Insert); 5] = [(usize::MAX, usize::MAX, Insert::None); 5];
    let mut n = 0;
    let mut mark = |m: (usize, usize, Insert)| {
        marks[n] = m;
        n += 1;
    };
    // received before an added rport at the same spot: the sort below is stable.
    if let Some((at, ip)) = edits.top.received_at {
        mark((at, at, Insert::Received(ip)));
    }
    if let Some((at, port, named)) = edits.top.rport_at {
        mark((at, at, Insert::Rport(port, named)));
    }
    if let Some((field, value)) = edits.max_forwards {
        mark((field.value.start, field.value.end, Insert::Number(value)));
    }
    if let Some(pop) = edits.pop_route {
        if pop.value_end >= pop.field.value.end {
            mark((pop.field.whole.start, pop.field.whole.end, Insert::None));
        } else {
            // Cut our value, its comma and the space after.
            let rest = &buf[pop.value_end..pop.field.value.end];
            let skip = rest
                .iter()
                .position(|&c| !matches!(c, b',' | b' ' | b'\t' | b'\r' | b'\n'))
                .unwrap_or(rest.len());
            mark((pop.field.value.start, pop.value_end + skip, Insert::None));
        }
    }
    let marks = &mut marks[..n];
    marks.sort_by_key(|m| m.0);
    let mut pos = msg.start_line.end;
    for &(start, end, insert) in marks.iter() {
        out.extend_from_slice(&buf[pos..start]);
        match insert {
            Insert::None => {}
            Insert::Rport(port, false) => {
                let _ = write!(out, "={port}");
            }
            Insert::Rport(port, true) => {
                let _ = write!(out, ";rport={port}");
            }
            Insert::Received(ip) => {
                let _ = write!(out, ";received={ip}");
            }
            Insert::Number(v) => write_decimal(v, out),
        }
        pos = end;
    }
    out.extend_from_slice(&buf[pos..msg.headers_end]);
    if edits.max_forwards.is_none() {
        out.extend_from_slice(b"Max-Forwards: ");
        out.extend_from_slice(DEFAULT_MAX_FORWARDS);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(&buf[msg.headers_end..msg.body.end]);
}

/// `v` in decimal, without the formatting machinery (this runs per request).
fn write_decimal(mut v: u32, out: &mut Vec<u8>) {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

#[derive(Clone, Copy, Debug)]
enum Insert {
    None,
    /// The port of an `rport` (and its name, when we add the parameter).
    Rport(u16, bool),
    Received(IpAddr),
    Number(u32),
}

/// Where a response of our own goes: the address the request came from, at the sent-by
/// port unless the client asked for rport (RFC 3261 §18.2.2, RFC 3581).
fn reply_target(msg: &Message, src: SocketAddr) -> SocketAddr {
    let via = msg
        .via_fields()
        .first()
        .and_then(|f| ViaValues::new(f.value.of(msg.buf)).next())
        .and_then(|(_, v, _)| Via::parse(v));
    match via {
        Some(v) if v.rport.is_none() => SocketAddr::new(src.ip(), v.port.unwrap_or(5060)),
        _ => src,
    }
}

/// The branch for the forwarded request (RFC 3261 §16.11): a hash of the incoming top Via
/// (so a retransmission, and the CANCEL of an INVITE, get the same branch) and the
/// transaction's identifiers, then the loop hash.
fn branch(msg: &Message, top_via: &[u8], loop_hash: u32) -> [u8; 34] {
    let mut h = xxh3_64_with_seed(top_via, 0x5eed);
    h = xxh3_64_with_seed(msg.uri(), h);
    h = xxh3_64_with_seed(msg.text(msg.call_id), h);
    h = h.wrapping_add(u64::from(msg.cseq.map_or(0, |(n, _)| n)));
    let mut out = [0u8; 34];
    out[..9].copy_from_slice(BRANCH_PREFIX);
    let mut head = [0u8; 16];
    hex64(h, &mut head);
    out[9..25].copy_from_slice(&head);
    out[25] = b'.';
    let mut tail = [0u8; 8];
    hex32(loop_hash, &mut tail);
    out[26..].copy_from_slice(&tail);
    out
}

/// What identifies a request for loop detection (RFC 3261 §16.6 step 8): the fields a
/// proxy does not change, so the same request passing twice hashes the same, and that an
/// INVITE shares with its CANCEL and ACK.
fn loop_hash(msg: &Message) -> u32 {
    let mut h = xxh3_64_with_seed(msg.uri(), 0x100f);
    h = xxh3_64_with_seed(msg.text(msg.call_id), h);
    // The whole From value (no proxy changes it). Not To: the ACK of a failed INVITE adds
    // a To tag yet must leave with the INVITE's branch (RFC 3261 §17.1.1.3).
    h = xxh3_64_with_seed(msg.text(msg.from), h);
    h = h.wrapping_add(u64::from(msg.cseq.map_or(0, |(n, _)| n)));
    for field in msg.route_fields() {
        h = xxh3_64_with_seed(field.value.of(msg.buf), h);
    }
    (h ^ (h >> 32)) as u32
}

fn hex64(v: u64, out: &mut [u8; 16]) {
    for (i, o) in out.iter_mut().enumerate() {
        *o = HEX[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
}

fn hex32(v: u32, out: &mut [u8; 8]) {
    for (i, o) in out.iter_mut().enumerate() {
        *o = HEX[((v >> (28 - 4 * i)) & 0xf) as usize];
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The scheme of a URI (`sip`, `tel`, …), if it has a syntactically valid one.
fn scheme(uri: &[u8]) -> Option<&[u8]> {
    let colon = uri.iter().position(|&c| c == b':')?;
    let s = &uri[..colon];
    let valid = s.first().is_some_and(u8::is_ascii_alphabetic)
        && s.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'));
    valid.then_some(s)
}

/// [`classify_bytes`] on `INVITE <uri> SIP/2.0`: the routing decision for a request of
/// another method is the one an INVITE to the same URI gets.
pub fn classify_uri(uri: &[u8]) -> Verdict {
    let mut line = [0u8; SCAN_LEN];
    let parts: [&[u8]; 3] = [b"INVITE ", uri, b" SIP/2.0\r\n"];
    let mut len = 0;
    for part in parts {
        let take = part.len().min(SCAN_LEN - len);
        line[len..len + take].copy_from_slice(&part[..take]);
        len += take;
    }
    classify_bytes(&line[..len])
}

/// The `transport` parameter of a URI (bare or in `<>`), if it names one we speak.
fn uri_transport(value: &[u8]) -> Option<Transport> {
    // Only URIs that have parameters at all are looked at further (the common case is a
    // plain `sip:number@host`).
    memchr::memchr(b';', value)?;
    let inner = match value.iter().position(|&c| c == b'<') {
        Some(lt) => {
            let rest = &value[lt + 1..];
            &rest[..rest.iter().position(|&c| c == b'>')?]
        }
        None => value,
    };
    // Parameters of the host part: after the user part (which may carry its own `;`).
    let host_part = match inner.iter().position(|&c| c == b'@') {
        Some(at) => &inner[at + 1..],
        None => inner,
    };
    let host_part = &host_part[..host_part
        .iter()
        .position(|&c| c == b'?')
        .unwrap_or(host_part.len())];
    host_part.split(|&c| c == b';').skip(1).find_map(|param| {
        let (name, value) = match param.iter().position(|&c| c == b'=') {
            Some(eq) => (&param[..eq], &param[eq + 1..]),
            None => (param, &b""[..]),
        };
        if !eq_fold(name, b"transport") {
            return None;
        }
        [Transport::Udp, Transport::Tcp]
            .into_iter()
            .find(|t| t.is(value))
    })
}

/// The address of a URI (a Route value's or a Request-URI): `Some(None)` for a host name,
/// `None` if malformed.
fn route_addr(value: &[u8]) -> Option<Option<SocketAddr>> {
    let inner = match value.iter().position(|&c| c == b'<') {
        Some(lt) => {
            let rest = &value[lt + 1..];
            &rest[..rest.iter().position(|&c| c == b'>')?]
        }
        None => value,
    };
    let colon = inner.iter().position(|&c| c == b':')?;
    let scheme = &inner[..colon];
    if !(eq_fold(scheme, b"sip") || eq_fold(scheme, b"sips")) {
        return None;
    }
    let mut hostport = &inner[colon + 1..];
    if let Some(at) = hostport.iter().position(|&c| c == b'@') {
        hostport = &hostport[at + 1..];
    }
    let end = hostport
        .iter()
        .position(|&c| matches!(c, b';' | b'?'))
        .unwrap_or(hostport.len());
    let hostport = std::str::from_utf8(&hostport[..end]).ok()?;
    if let Ok(addr) = hostport.parse::<SocketAddr>() {
        return Some(Some(addr));
    }
    let host = hostport
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(hostport);
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(Some(SocketAddr::new(ip, 5060)));
    }
    if hostport.is_empty() {
        return None;
    }
    Some(None)
}
