//! The fastpath daemon as a library: the CLI in `main.rs` and the integration tests share it.

pub mod api;
pub mod config;
pub mod control;
pub mod maps;
pub mod metrics;
pub mod proxy;
pub mod registry;
pub mod reload;
pub mod route_index;
pub mod routing;
pub mod sip;
pub mod stats;
pub mod sync;
pub mod verify;
pub mod xdp;

/// The XDP object built by `build.rs` from `fastpath-ebpf`.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fastpath"));
