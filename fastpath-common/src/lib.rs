//! What the XDP program and the userspace daemon must agree on.
//!
//! This crate is `no_std` and allocation-free so that the eBPF program links the very same
//! code the daemon runs: the routing decision ([`classify`]) is defined here once, and the
//! map layouts ([`maps`]) and counter indexes ([`Counter`]) are shared byte for byte.
#![no_std]
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

mod classify;
mod counter;
mod fast;
pub mod maps;
mod number;
pub mod route_index;
mod swar;
pub mod unaligned;

pub use classify::{
    Method, PassReason, SCAN_LEN, Verdict, Window, classify, classify_bytes, classify_canonical,
    classify_seeded, classify_window,
};
pub use counter::Counter;
pub use number::{NumberError, RouteKey, normalize_number};

// SAFETY: each type derives bytemuck::Pod (no padding, any bit pattern valid).
#[cfg(feature = "user")]
mod pod {
    unsafe impl aya::Pod for crate::RouteKey {}
    unsafe impl aya::Pod for crate::maps::RouteValue {}
    unsafe impl aya::Pod for crate::maps::PeerValue {}
    unsafe impl aya::Pod for crate::maps::Config {}
    unsafe impl aya::Pod for crate::maps::PeerCounters {}
    unsafe impl aya::Pod for crate::maps::LocalAddr {}
}
