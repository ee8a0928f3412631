//! UDP: the SIP port check, length sanity and the classifier on the payload.

use aya_ebpf::{helpers::generated::bpf_xdp_load_bytes, programs::XdpContext};
use fastpath_common::{Counter, RouteKey, SCAN_LEN, Verdict, classify_seeded};
use network_types::udp::UdpHdr;

use crate::{
    maps::{CONFIG, OPAQUE_ZERO, SCAN_WINDOW},
    ref_at::ref_mut_at,
};

/// The UDP header of a SIP packet and the number its request line dials.
pub(crate) struct SipRequest<'a> {
    pub(crate) udp: &'a mut UdpHdr,
    pub(crate) key: RouteKey,
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
    let sip_port = CONFIG
        .get(0)
        .is_some_and(|config| config.is_sip_port(udp.dst_port()));
    if !sip_port {
        return Err(Counter::NotSip);
    }
    let udp_len = udp.len() as usize;
    if udp_len != ip_payload_len || udp_len < UdpHdr::LEN {
        return Err(Counter::Malformed);
    }
    let key = classify_payload(ctx, offset + UdpHdr::LEN, udp_len - UdpHdr::LEN)?;
    Ok(SipRequest { udp, key })
}

/// Copies the start of the payload to the stack and runs the shared classifier on it.
#[inline(always)]
fn classify_payload(ctx: &XdpContext, offset: usize, len: usize) -> Result<RouteKey, Counter> {
    let len = if len > SCAN_LEN { SCAN_LEN } else { len };
    if len == 0 {
        return Err(Counter::OtherMethod);
    }
    // The window lives in a per-CPU map, not on the stack: no zeroing per packet (bytes past
    // `len` are never read), and LLVM cannot turn `base + i` into `base | i` on a pointer
    // it believes aligned, which the verifier rejects.
    let head = SCAN_WINDOW.get_ptr_mut(0).ok_or(Counter::Malformed)?;
    // SAFETY: the slot holds SCAN_LEN >= `len` bytes; the helper checks the packet side.
    let rc = unsafe { bpf_xdp_load_bytes(ctx.ctx, offset as u32, head.cast(), len as u32) };
    if rc != 0 {
        return Err(Counter::Malformed);
    }
    // A one-slot array lookup cannot fail; the arm only satisfies the type.
    let Some(&zero) = OPAQUE_ZERO.get(0) else {
        return Err(Counter::Malformed);
    };
    // SAFETY: per-CPU slot, no other user during this program run.
    match classify_seeded(unsafe { &*head }, len, zero) {
        Verdict::Candidate { key, .. } => Ok(key),
        Verdict::Pass(reason) => Err(reason.counter()),
    }
}
