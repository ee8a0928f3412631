//! The standard route: a stateless RFC 3261 proxy for every request the fast path does
//! not take (unregistered numbers, peers that are down, everything in `--no-xdp` mode).

pub mod core;
pub mod counters;
pub mod health;
mod reply;
pub mod service;
pub mod settings;
pub mod trunks;
pub mod udp;

pub use core::{Action, Egress, Inbound, Proxy};
pub use counters::{ProxyCounter, ProxyCounters, Tally};
