//! Four or eight bytes at any address in one load or store.
//!
//! For the BPF target this is one instruction written by hand. The kernel's verifier
//! accepts unaligned packet and map-value loads on architectures with efficient unaligned
//! access (x86-64, arm64), but LLVM's BPF backend splits any read it cannot prove aligned
//! into eight byte loads and seven shifts; its switch to allow unaligned access instead
//! applies to the whole object, the stack included, where the verifier refuses every
//! unaligned access (it merged two byte copies on the stack into an unaligned word, seen
//! here). So the places that need such accesses (the classifier's reads of the window, the
//! XDP program's copy of the payload into it and its reads and writes of addresses in the
//! packet and in map values) ask for exactly them.

/// `pub unsafe fn $name(p: *const u8) -> $ty`: the bytes at `p`, native-endian, in one
/// `$size` load.
macro_rules! load {
    ($name:ident, $ty:ty, $size:literal, $bytes:literal) => {
        #[doc = concat!("The ", $bytes, " bytes at `p`, as a native-endian `", stringify!($ty), "`.")]
        ///
        /// # Safety
        /// `p` must be valid for reading that many bytes. In BPF, it must point into a map
        /// value or the packet (never the stack), with the bounds known to the verifier.
        #[inline(always)]
        pub unsafe fn $name(p: *const u8) -> $ty {
            #[cfg(target_arch = "bpf")]
            {
                let word: $ty;
                // SAFETY: the caller's promise; the instruction only reads.
                unsafe {
                    core::arch::asm!(
                        concat!("{0} = *(", $size, " *)({1} + 0)"),
                        lateout(reg) word,
                        in(reg) p,
                        options(readonly, nostack, preserves_flags),
                    );
                }
                word
            }
            #[cfg(not(target_arch = "bpf"))]
            // SAFETY: the caller's promise; any bit pattern is a valid integer.
            unsafe {
                p.cast::<$ty>().read_unaligned()
            }
        }
    };
}

load!(load_u64, u64, "u64", "eight");
load!(load_u32, u32, "u32", "four");

/// Writes `word` (native-endian) to the four bytes at `p`.
///
/// # Safety
/// `p` must be valid for writing four bytes; in BPF, as for [`load_u32`].
#[inline(always)]
pub unsafe fn store_u32(p: *mut u8, word: u32) {
    #[cfg(target_arch = "bpf")]
    // SAFETY: the caller's promise; the instruction writes those four bytes only.
    unsafe {
        core::arch::asm!(
            "*(u32 *)({0} + 0) = {1}",
            in(reg) p,
            in(reg) word,
            options(nostack, preserves_flags),
        );
    }
    #[cfg(not(target_arch = "bpf"))]
    // SAFETY: the caller's promise.
    unsafe {
        p.cast::<u32>().write_unaligned(word)
    }
}
