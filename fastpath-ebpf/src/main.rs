//! The fast path: an XDP program that sends INVITEs (and their CANCEL / ACK) for registered
//! numbers straight to the owner's peer, and passes everything else to the kernel untouched.
#![no_std]
#![no_main]

/// A stage of the hit path for `cargo xtask ablation`'s waterfall: built with the feature
/// `stop-after-<stage>`, the program passes every packet here, so the bench measures the
/// hit's cost up to this point. The daemon's object has none of these features: the check
/// is a constant `false` and compiles to nothing.
macro_rules! stop_after {
    ($stage:literal) => {
        if cfg!(feature = $stage) {
            return Err(fastpath_common::Counter::NotSip);
        }
    };
    // A stage whose result nothing else uses yet: kept, or LLVM would drop the stage.
    ($stage:literal, $result:expr) => {
        if cfg!(feature = $stage) {
            core::hint::black_box($result);
            return Err(fastpath_common::Counter::NotSip);
        }
    };
}

mod checksum;
mod eth;
mod forward;
mod ip4;
mod ip6;
mod maps;
mod ref_at;
mod sip;
mod stats;
mod udp;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use fastpath_common::Counter;

#[xdp]
pub fn fastpath(ctx: XdpContext) -> u32 {
    if cfg!(feature = "calibrate-calls") && calibrate_calls() != 0 {
        return xdp_action::XDP_ABORTED;
    }
    // The one place where an outcome becomes an action: forwarded packets were fully
    // rewritten; every other outcome leaves the packet exactly as it arrived.
    match try_handle_sip(&ctx) {
        Ok(action) => {
            stats::count(Counter::Hit);
            action
        }
        Err(outcome) => {
            stats::count(outcome);
            xdp_action::XDP_PASS
        }
    }
}

/// `Ok(XDP_TX | XDP_REDIRECT)` once the packet is rewritten for its peer; `Err(counter)` says
/// why it was left alone.
#[inline(always)]
fn try_handle_sip(ctx: &XdpContext) -> Result<u32, Counter> {
    let l2 = eth::parse(ctx)?;
    match l2.ether_type {
        eth::ETH_P_IPV4 => ip4::try_handle(ctx, &l2),
        eth::ETH_P_IPV6 => ip6::try_handle(ctx, &l2),
        _ => Err(Counter::NotSip),
    }
}

/// `cargo xtask ablation`'s calibration: built with the feature `calibrate-calls`, the
/// program first makes eight calls to an empty function, so that the bench shows what one
/// call and its return cost on the machine. Under return-stack mitigations (AMD's SRSO
/// "Safe RET", retpolines) that is far more than the instructions suggest, and the reason
/// the hit path makes as few calls as it can (a map lookup is one or more). Returns 0.
#[inline(always)]
fn calibrate_calls() -> u64 {
    #[cfg(feature = "calibrate-calls")]
    {
        let mut value = 0;
        for _ in 0..8 {
            value = fastpath_calibrate(core::hint::black_box(value));
        }
        value
    }
    #[cfg(not(feature = "calibrate-calls"))]
    0
}

/// Flips the lowest bit: eight calls leave 0 as it was.
#[cfg(feature = "calibrate-calls")]
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn fastpath_calibrate(value: u64) -> u64 {
    value ^ 1
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Every index in this program is checked; the verifier refuses code that could get here.
    unsafe { core::hint::unreachable_unchecked() }
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
