//! Next hop and egress: `bpf_fib_lookup`, then XDP_TX or a devmap redirect.

use aya_ebpf::{
    bindings::{bpf_fib_lookup, xdp_action},
    helpers::generated::{bpf_fib_lookup as fib_lookup, bpf_jiffies64},
    programs::XdpContext,
};
use aya_log_ebpf::debug;
use fastpath_common::Counter;

use crate::{
    eth::{self, Macs},
    maps::{EGRESS, NEXT_HOPS},
    ref_at::{word, words},
    sip::Peer,
};

/// How long a CPU reuses a peer's FIB answer, in timer ticks. A lookup costs several times
/// the rest of a hit (~200 ns measured), while a route or neighbour change is picked up this
/// much later: 100 ms at the slowest tick Linux has (HZ=100), 10 ms at HZ=1000.
///
/// Ticks, not nanoseconds: the verifier inlines `bpf_jiffies64` into a single load on
/// 64-bit JITs, where `bpf_ktime_get_coarse_ns` is a real call (a timekeeper read) on
/// every hit.
const NEXT_HOP_TTL_JIFFIES: u64 = 10;

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const IPPROTO_UDP: u8 = 17;
const BPF_FIB_LKUP_RET_SUCCESS: i64 = 0;

/// Where a rewritten packet leaves, decided before anything is rewritten.
pub(crate) struct NextHop {
    macs: Macs,
    action: u32,
}

/// Addresses in network byte order: the source as it sits in the packet, the destination
/// as words (see `sip::Peer`).
pub(crate) enum FibQuery<'a> {
    V4 {
        src: &'a [u8; 4],
        dst: u32,
        tos: u8,
    },
    V6 {
        src: &'a [u8; 16],
        dst: [u32; 4],
        flowinfo: u32,
    },
}

/// A successful FIB answer for one peer on one CPU (`NEXT_HOPS[peer id]`).
///
/// It is keyed by what the answer was computed from: the peer's address (a moved peer
/// misses), the ingress interface and, for the MTU check, the largest datagram approved so
/// far. The source address and TOS are not part of the key: policy routing on them would
/// see a changed rule only after [`NEXT_HOP_TTL_JIFFIES`].
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct CachedHop {
    /// `bpf_jiffies64` of the lookup; 0 = empty.
    stamp_jiffies: u64,
    dst: [u32; 4],
    ingress: u32,
    egress: u32,
    macs: Macs,
    max_len: u16,
    _pad: [u8; 2],
}

/// The next hop towards `peer`: from this CPU's cache when fresh, else `bpf_fib_lookup`.
#[inline(always)]
pub(crate) fn next_hop(
    ctx: &XdpContext,
    peer: &Peer,
    query: FibQuery,
    tot_len: u16,
    tagged: bool,
) -> Result<NextHop, Counter> {
    // SAFETY: `ctx.ctx` is the live xdp_md of this invocation.
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    let now = if cfg!(feature = "ablate-hop-check") {
        1
    } else {
        // SAFETY: a helper without arguments.
        unsafe { bpf_jiffies64() }
    };
    let cache = NEXT_HOPS
        .get_ptr_mut(peer.id)
        .ok_or(Counter::PeerUnavailable)?;
    // SAFETY: this CPU's slot; nothing else runs on it during this program run.
    let cache = unsafe { &mut *cache };
    let fresh = if cfg!(feature = "ablate-hop-check") {
        cache.stamp_jiffies != 0
    } else {
        cache.stamp_jiffies != 0
            && now.wrapping_sub(cache.stamp_jiffies) < NEXT_HOP_TTL_JIFFIES
            && cache.ingress == ingress
            && cache.dst == peer.addr
    };
    if fresh && tot_len <= cache.max_len {
        return choose_action(ingress, cache.egress, cache.macs, tagged);
    }
    let (egress, macs) = fib(ctx, ingress, query, tot_len)?;
    *cache = CachedHop {
        stamp_jiffies: now,
        dst: peer.addr,
        ingress,
        egress,
        macs,
        // Either a new entry or a larger datagram than any approved before.
        max_len: tot_len,
        _pad: [0; 2],
    };
    choose_action(ingress, egress, macs, tagged)
}

/// `bpf_fib_lookup` with its MTU check for a datagram of `tot_len` bytes: egress ifindex and
/// the MACs to write.
#[inline(always)]
fn fib(
    ctx: &XdpContext,
    ingress: u32,
    query: FibQuery,
    tot_len: u16,
) -> Result<(u32, Macs), Counter> {
    // SAFETY: plain C struct, all-zero is its neutral value.
    let mut params: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    params.l4_protocol = IPPROTO_UDP;
    params.ifindex = ingress;
    params.__bindgen_anon_1.tot_len = tot_len;
    match query {
        FibQuery::V4 { src, dst, tos } => {
            params.family = AF_INET;
            params.__bindgen_anon_2.tos = tos;
            params.__bindgen_anon_3.ipv4_src = word(src, 0);
            params.__bindgen_anon_4.ipv4_dst = dst;
        }
        FibQuery::V6 { src, dst, flowinfo } => {
            params.family = AF_INET6;
            params.__bindgen_anon_2.flowinfo = flowinfo;
            params.__bindgen_anon_3.ipv6_src = words(src);
            params.__bindgen_anon_4.ipv6_dst = dst;
        }
    }
    // SAFETY: params is a valid, fully initialized lookup struct of the size passed.
    let rc = unsafe {
        fib_lookup(
            ctx.ctx.cast(),
            &mut params,
            core::mem::size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    };
    if rc != BPF_FIB_LKUP_RET_SUCCESS {
        // No route, no neighbour entry yet, forwarding off, MTU: the kernel knows what to do.
        debug!(ctx, "fib lookup failed: {}", rc);
        return Err(Counter::FibFailed);
    }
    Ok((params.ifindex, Macs::new(&params.smac, &params.dmac)))
}

#[inline(always)]
fn choose_action(ingress: u32, egress: u32, macs: Macs, tagged: bool) -> Result<NextHop, Counter> {
    let action = if egress == ingress || cfg!(feature = "xdp-tx") {
        xdp_action::XDP_TX
    } else if !tagged && redirect_to(egress) {
        xdp_action::XDP_REDIRECT
    } else {
        // A tag belongs to the ingress link; unmanaged egress cannot take redirects.
        return Err(Counter::FibFailed);
    };
    Ok(NextHop { macs, action })
}

/// Asks the kernel to send the frame out of `egress` once the program returns
/// `XDP_REDIRECT`; false when `EGRESS` does not hold it.
///
/// This is also the check that the egress is managed: the helper only records the target
/// (acted on only for `XDP_REDIRECT`, replaced by the next call), so asking before the
/// rewrite costs nothing when the program then passes the packet, and saves a second
/// lookup of the same devmap entry (each kernel call is a return through the
/// return-stack mitigations of the CPU: `cargo xtask ablation`'s next-hop step).
#[inline(always)]
fn redirect_to(egress: u32) -> bool {
    EGRESS.redirect(egress, xdp_action::XDP_PASS as u64) == Ok(xdp_action::XDP_REDIRECT)
}

/// Sets the MACs of the next hop and hands the frame over.
#[inline(always)]
pub(crate) fn send(ctx: &XdpContext, hop: &NextHop) -> Result<u32, Counter> {
    eth::set_macs(ctx, &hop.macs)?;
    Ok(hop.action)
}
