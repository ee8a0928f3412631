//! UDP: the SIP port check, length sanity and the classifier on the payload.

use aya_ebpf::{helpers::generated::bpf_xdp_load_bytes, programs::XdpContext};
use fastpath_common::{
    Counter, RouteKey, SCAN_LEN, Verdict, Window, classify_canonical, classify_seeded,
    unaligned::load_u64,
};
use network_types::udp::UdpHdr;

use crate::{
    maps::{CONFIG, SCAN_WINDOW},
    ref_at::ref_mut_at,
    sip::LocalPolicy,
};

/// The UDP header of a SIP packet and the number its request line dials.
pub(crate) struct SipRequest<'a> {
    pub(crate) udp: &'a mut UdpHdr,
    pub(crate) key: RouteKey,
    /// Read with the SIP ports: one `CONFIG` lookup per packet.
    pub(crate) local: LocalPolicy,
}

/// Parses the UDP header at `offset`, which the IP layer says spans `ip_payload_len` bytes.
#[inline(always)]
pub(crate) fn parse_sip<'a>(
    ctx: &'a XdpContext,
    offset: usize,
    ip_payload_len: usize,
) -> Result<SipRequest<'a>, Counter> {
    // SAFETY: plain data; the only live reference into the packet besides the IP header.
    let udp = unsafe { ref_mut_at::<UdpHdr>(ctx, offset) }?;
    let config = CONFIG.get(0).ok_or(Counter::NotSip)?;
    if !config.is_sip_port(udp.dst_port()) {
        return Err(Counter::NotSip);
    }
    // Values, not the reference: LLVM has been seen to spill half of a map value pointer
    // kept across the classifier, which the verifier refuses.
    let local = LocalPolicy::of(config);
    let udp_len = udp.len() as usize;
    if udp_len != ip_payload_len || udp_len < UdpHdr::LEN {
        return Err(Counter::Malformed);
    }
    stop_after!("stop-after-headers");
    let key = classify_payload(ctx, offset + UdpHdr::LEN, udp_len - UdpHdr::LEN)?;
    Ok(SipRequest { udp, key, local })
}

/// Copies the start of the payload into the per-CPU window and runs the shared classifier.
#[inline(always)]
fn classify_payload(ctx: &XdpContext, offset: usize, len: usize) -> Result<RouteKey, Counter> {
    let len = if len > SCAN_LEN { SCAN_LEN } else { len };
    if len == 0 {
        return Err(Counter::OtherMethod);
    }
    // The window lives in a per-CPU map, not on the stack: no zeroing per packet (bytes past
    // `len` may be read but never decide: see the length check at the end of
    // `fastpath_common`'s canonical classifier), and LLVM cannot turn `base + i` into
    // `base | i` on a pointer it believes aligned, which the verifier rejects.
    let head = SCAN_WINDOW.get_ptr_mut(0).ok_or(Counter::Malformed)?;
    let start = ctx.data() + offset;
    if len == SCAN_LEN && start + SCAN_LEN <= ctx.data_end() {
        // SAFETY: SCAN_LEN packet bytes from `start` (checked above) into a whole window.
        unsafe { copy_window(start as *const u8, head.cast()) };
    } else {
        // SAFETY: the slot holds SCAN_LEN >= `len` bytes; the helper checks the packet side.
        let rc = unsafe { bpf_xdp_load_bytes(ctx.ctx, offset as u32, head.cast(), len as u32) };
        if rc != 0 {
            return Err(Counter::Malformed);
        }
    }
    stop_after!("stop-after-copy");
    // SAFETY: a whole Window (the map's value); per-CPU slot, no other user during this
    // program run.
    let window = unsafe { &*head };
    // The two steps of `fastpath_common::classify_window`. The canonical one is inlined: a
    // call costs a return, which the CPU's return-stack mitigations make dear (~25 ns of a
    // hit here), and seeded as it is, it adds little to the verifier's work.
    let key = match classify_canonical(window, len) {
        Some(Verdict::Candidate { key, .. }) => Ok(key),
        _ => classify_full(window, len),
    };
    stop_after!("stop-after-classify", &key);
    key
}

/// The full classifier, through its global function.
#[inline(always)]
fn classify_full(window: &Window, len: usize) -> Result<RouteKey, Counter> {
    // SAFETY: a plain u64 underneath; written before it is read.
    let mut key: RouteKey = unsafe { core::mem::zeroed() };
    // SAFETY: a whole Window and a RouteKey on our stack.
    let outcome = unsafe { fastpath_classify_full(window, len as u64, 0, &mut key) };
    // Comparisons, not a table: LLVM knows which values the function returns and would
    // index a table unchecked, which the verifier refuses.
    match outcome {
        CANDIDATE => Ok(key),
        o if o == Counter::OtherMethod as u32 => Err(Counter::OtherMethod),
        o if o == Counter::NotNumber as u32 => Err(Counter::NotNumber),
        _ => Err(Counter::Malformed),
    }
}

/// SCAN_LEN bytes, a word at a time: 16 unaligned loads and 16 stores, where
/// `bpf_xdp_load_bytes` cost ~30 ns more per packet (`cargo xtask ablation`'s waterfall: a
/// helper call and a `rep movsb` into the map value).
#[inline(always)]
unsafe fn copy_window(from: *const u8, to: *mut u64) {
    let mut k = 0;
    while k < SCAN_LEN / 8 {
        // SAFETY: the caller's promise: both sides hold SCAN_LEN bytes.
        unsafe { to.add(k).write(load_u64(from.add(8 * k))) };
        k += 1;
    }
}

/// What `fastpath_classify_full` returns for a candidate, whose key it wrote; any other
/// answer is a `Counter`.
const CANDIDATE: u32 = u32::MAX;

/// [`classify_seeded`] as a BPF global function.
///
/// Global functions are verified once, for any arguments, instead of once for every path
/// that reaches them (IPv4 or IPv6, tagged or not, each with the exact length it knows):
/// that keeps its loop over the line well inside the verifier's budget. `zero` is 0, which
/// the verifier cannot know: what `classify_seeded` needs to keep its states few.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn fastpath_classify_full(
    window: *const Window,
    len: u64,
    zero: u64,
    key: *mut RouteKey,
) -> u32 {
    if window.is_null() || key.is_null() {
        return Counter::Malformed as u32;
    }
    // SAFETY: the verifier holds callers to pointers to a whole Window and a RouteKey.
    match classify_seeded(unsafe { &(*window).bytes }, len as usize, zero as u32) {
        Verdict::Candidate { key: found, .. } => {
            unsafe { *key = found };
            CANDIDATE
        }
        Verdict::Pass(reason) => reason.counter() as u32,
    }
}
