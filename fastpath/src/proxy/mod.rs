//! The standard route: a stateless RFC 3261 proxy for every request the fast path does
//! not take (unregistered numbers, peers that are down, everything in `--no-xdp` mode).

pub mod core;
pub mod counters;
mod framing;
pub mod health;
mod reply;
pub mod service;
pub mod settings;
pub mod tcp;
pub mod trunks;
pub mod udp;

pub use core::{Action, Egress, Inbound, Proxy, Transport};
pub use counters::{ProxyCounter, ProxyCounters, Tally};
