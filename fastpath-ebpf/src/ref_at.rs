//! Bounds-checked views into the packet, in the form the verifier accepts, and word access
//! to the addresses in it.

use aya_ebpf::programs::XdpContext;
use fastpath_common::{
    Counter,
    unaligned::{load_u32, store_u32},
};

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

/// The `i`-th 32-bit word of `bytes`, as it lies in memory: one load, where LLVM reads an
/// array of bytes a byte at a time. `bytes` must be in the packet or a map value, never on
/// the stack (see `fastpath_common::unaligned`); `i` is a constant in every caller.
#[inline(always)]
pub(crate) fn word<const N: usize>(bytes: &[u8; N], i: usize) -> u32 {
    if 4 * i + 4 > N {
        return 0;
    }
    // SAFETY: four bytes inside `bytes` (checked above), which lies where the caller says.
    unsafe { load_u32(bytes.as_ptr().add(4 * i)) }
}

/// The words of a 16-byte address (IPv6, or IPv4 in the first word and zeros).
#[inline(always)]
pub(crate) fn words(addr: &[u8; 16]) -> [u32; 4] {
    [word(addr, 0), word(addr, 1), word(addr, 2), word(addr, 3)]
}

/// Writes the `i`-th 32-bit word of `bytes` (see [`word`]).
#[inline(always)]
pub(crate) fn set_word<const N: usize>(bytes: &mut [u8; N], i: usize, value: u32) {
    if 4 * i + 4 > N {
        return;
    }
    // SAFETY: as in `word`.
    unsafe { store_u32(bytes.as_mut_ptr().add(4 * i), value) }
}
