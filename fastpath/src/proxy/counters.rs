//! What the proxy did, one counter per outcome and per state transition.
//!
//! Names follow Prometheus conventions (`*_total`) so that the metrics issue can export
//! them as they are. Workers count into a local [`Tally`] and add it here once per batch,
//! so the hot path never contends on a shared cache line.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($variant:ident => $name:literal, $help:literal;)*) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(usize)]
        pub enum ProxyCounter { $($variant),* }

        impl ProxyCounter {
            pub const ALL: &[ProxyCounter] = &[$(ProxyCounter::$variant),*];
            pub const COUNT: usize = Self::ALL.len();

            pub const fn name(self) -> &'static str {
                match self { $(ProxyCounter::$variant => $name),* }
            }

            pub const fn help(self) -> &'static str {
                match self { $(ProxyCounter::$variant => $help),* }
            }
        }
    };
}

counters! {
    ForwardedPeer => "proxy_requests_to_peer_total", "requests forwarded to a peer path";
    ForwardedTrunk => "proxy_requests_to_trunk_total", "requests forwarded to a carrier trunk (standard route)";
    ForwardedRoute => "proxy_requests_by_route_total", "requests forwarded by their Route header";
    FallbackPeerDown => "proxy_peer_down_fallbacks_total", "requests for a registered number whose peer was down, sent to the standard route";
    ResponsesForwarded => "proxy_responses_forwarded_total", "responses relayed back by Via";
    Replied4xx => "proxy_replies_4xx_total", "requests answered by the proxy with a 4xx (400, 416, 482, 483, 513)";
    Replied5xx => "proxy_replies_5xx_total", "requests answered by the proxy with a 5xx (503 no trunk, 505)";
    Dropped => "proxy_dropped_total", "datagrams dropped (unanswerable, not for us, no next hop)";
    SendErrors => "proxy_send_errors_total", "datagrams the kernel refused to send";
    TcpRefused => "proxy_tcp_refused_total", "TCP connections refused at the connection caps";
    TcpConnectFailures => "proxy_tcp_connect_failures_total", "TCP connections to a next hop that could not be opened in time";
    TcpFramingErrors => "proxy_tcp_framing_errors_total", "TCP connections closed for a framing error (no Content-Length, too large, not SIP)";
    TrunkDown => "proxy_trunk_down_total", "trunk up -> down transitions (timeout, 503, ICMP unreachable)";
    TrunkUp => "proxy_trunk_up_total", "trunk down -> up transitions (answered again after its back-off)";
    PeerDown => "health_peer_down_total", "peer up -> down transitions";
    PeerUp => "health_peer_up_total", "peer down -> up transitions";
    PeerPings => "health_pings_total", "OPTIONS pings sent to peers";
    PeerPingMisses => "health_ping_misses_total", "OPTIONS pings without an answer in time";
    Peer5xx => "health_peer_5xx_total", "5xx answers of peers to real INVITEs, counted against their health";
}

#[derive(Debug)]
pub struct ProxyCounters {
    counts: [AtomicU64; ProxyCounter::COUNT],
    /// Receipt → send of each datagram; workers observe into their own copies.
    pub latency: crate::metrics::ProxyLatency,
}

impl Default for ProxyCounters {
    fn default() -> Self {
        Self {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            latency: Default::default(),
        }
    }
}

impl ProxyCounters {
    pub fn add(&self, counter: ProxyCounter, n: u64) {
        self.counts[counter as usize].fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self, counter: ProxyCounter) -> u64 {
        self.counts[counter as usize].load(Ordering::Relaxed)
    }

    /// Adds a worker's tally and clears it.
    pub fn absorb(&self, tally: &mut Tally) {
        for (i, n) in tally.0.iter_mut().enumerate() {
            if *n != 0 {
                self.counts[i].fetch_add(*n, Ordering::Relaxed);
                *n = 0;
            }
        }
    }

    /// `{"proxy_requests_to_peer_total": 3, ...}`
    pub fn to_json(&self) -> String {
        let fields: Vec<String> = ProxyCounter::ALL
            .iter()
            .map(|c| format!("\"{}\":{}", c.name(), self.get(*c)))
            .collect();
        format!("{{{}}}", fields.join(","))
    }
}

/// A worker's counts since its last flush.
#[derive(Debug, Default)]
pub struct Tally([u64; ProxyCounter::COUNT]);

impl Tally {
    pub fn bump(&mut self, counter: ProxyCounter) {
        self.0[counter as usize] += 1;
    }

    pub fn get(&self, counter: ProxyCounter) -> u64 {
        self.0[counter as usize]
    }

    /// Of the datagrams tallied, how many requests and how many responses the proxy sent
    /// something for (forwarded, or answered with its own response): each such datagram
    /// bumps exactly one of these counters.
    pub fn sent_by_kind(&self) -> (u64, u64) {
        use ProxyCounter::*;
        let requests = [
            ForwardedPeer,
            ForwardedTrunk,
            ForwardedRoute,
            Replied4xx,
            Replied5xx,
        ]
        .into_iter()
        .map(|c| self.get(c))
        .sum();
        (requests, self.get(ResponsesForwarded))
    }
}
