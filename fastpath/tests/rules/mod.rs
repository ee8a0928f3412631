//! Shared by the proxy's rule tests (`proxy_rules.rs`, `proxy_tcp_rules.rs`): the
//! gateway's addresses and an `Egress` that picks ours as the kernel would.
#![allow(dead_code, reason = "each test binary uses a different part")]

use std::net::SocketAddr;

use fastpath::proxy::Egress;

pub const CALLER: &str = "192.0.2.2:5060";
pub const GW_CALLER: &str = "192.0.2.1:5060";
pub const GW_CARRIER: &str = "203.0.113.1:5060";
pub const PEER: &str = "198.51.100.2:5060";

pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Our address on the destination's network, as the kernel would pick it.
pub struct BySubnet;

impl Egress for BySubnet {
    fn local_for(&mut self, dest: SocketAddr) -> Option<usize> {
        let text = dest.ip().to_string();
        Some(if text.starts_with("203.0.113.") {
            1
        } else if text.starts_with("198.51.100.") {
            2
        } else {
            0
        })
    }
}
