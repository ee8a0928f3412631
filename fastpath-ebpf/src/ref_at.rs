//! Bounds-checked views into the packet, in the form the verifier accepts.

use aya_ebpf::programs::XdpContext;
use fastpath_common::Counter;

/// A reference to a `T` at `offset` bytes into the packet, or `Malformed` when the packet
/// is too short: a truncated header is never parsed past its end.
///
/// # Safety
/// `T` must be `repr(C)` plain data, and the caller must not hold two overlapping `&mut`.
#[inline(always)]
#[expect(
    clippy::mut_from_ref,
    reason = "packet memory is owned by the XDP context"
)]
pub(crate) unsafe fn ref_mut_at<T>(ctx: &XdpContext, offset: usize) -> Result<&mut T, Counter> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return Err(Counter::Malformed);
    }
    // SAFETY: in bounds (checked above) and packet memory is writable in XDP.
    Ok(unsafe { &mut *((start + offset) as *mut T) })
}

/// Bytes of packet from `offset` to the end.
#[inline(always)]
pub(crate) fn remaining(ctx: &XdpContext, offset: usize) -> usize {
    ctx.data_end().saturating_sub(ctx.data() + offset)
}
