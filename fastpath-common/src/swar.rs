//! Eight bytes at a time in a `u64` ("SIMD within a register"), first byte lowest.
//!
//! Each test sets the high bit of every byte it flags and nothing else, exactly: no carry
//! crosses from one byte into the next, so the first flagged byte is always the right one.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;
const LOWS: u64 = !HIGHS;

/// Every byte repeated: `splat(b'a')` is `aaaaaaaa`.
#[inline(always)]
pub(crate) const fn splat(byte: u8) -> u64 {
    ONES * byte as u64
}

/// Flags the bytes that are not zero.
#[inline(always)]
pub(crate) const fn nonzero(x: u64) -> u64 {
    // The low seven bits plus 0x7f reach the high bit exactly when they are not all zero.
    (((x & LOWS) + LOWS) | x) & HIGHS
}

/// Flags the bytes equal to `byte`.
#[inline(always)]
pub(crate) const fn equal(x: u64, byte: u8) -> u64 {
    nonzero(x ^ splat(byte)) ^ HIGHS
}

/// Flags the bytes below `bound` (at most 0x80).
#[inline(always)]
pub(crate) const fn below(x: u64, bound: u8) -> u64 {
    ((((x & LOWS) + splat(0x80 - bound)) | x) & HIGHS) ^ HIGHS
}

/// Flags the bytes that are not ASCII digits.
#[inline(always)]
pub(crate) const fn non_digits(x: u64) -> u64 {
    // A digit is 0x3N with N + 6 < 16.
    let high_nibble_not_3 = (x & splat(0xf0)) ^ splat(0x30);
    let low_nibble_over_9 = ((x & splat(0x0f)) + splat(6)) & splat(0xf0);
    nonzero(high_nibble_not_3 | low_nibble_over_9)
}

/// How many bytes come before the first flagged one: 0 to 8.
#[inline(always)]
pub(crate) const fn before_first(flags: u64) -> usize {
    if flags == 0 {
        return 8;
    }
    // The lowest flag is bit 8k+7; multiplying 2^8k by the bytes 7,6,…,0 brings k to the
    // top byte (no count-trailing-zeros instruction in eBPF).
    let lowest = flags & flags.wrapping_neg();
    ((lowest >> 7).wrapping_mul(0x0001_0203_0405_0607) >> 56) as usize
}

/// The low nibbles of eight ASCII digits as BCD, the first byte most significant:
/// `"12345678"` becomes `0x1234_5678`.
#[inline(always)]
pub(crate) const fn pack_digits(x: u64) -> u64 {
    let n = x & splat(0x0f);
    let n = ((n << 4) | (n >> 8)) & 0x00ff_00ff_00ff_00ff;
    let n = ((n << 8) | (n >> 16)) & 0x0000_ffff_0000_ffff;
    ((n << 16) | (n >> 32)) & 0xffff_ffff
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Flags computed one byte at a time.
    fn each(x: u64, flagged: impl Fn(u8) -> bool) -> u64 {
        x.to_le_bytes()
            .iter()
            .enumerate()
            .filter(|(_, b)| flagged(**b))
            .map(|(i, _)| 0x80u64 << (8 * i))
            .sum()
    }

    /// Words that put every byte value in every position, next to every other kind of byte.
    fn words() -> impl Iterator<Item = u64> {
        let fillers = [0x00u8, 0x20, 0x30, 0x39, 0x3a, 0x7f, 0x80, 0xff, 0x2f, 0x40];
        (0..=255u8).flat_map(move |b| {
            (0..8).flat_map(move |pos| {
                fillers.into_iter().map(move |f| {
                    let mut bytes = [f; 8];
                    bytes[pos] = b;
                    bytes[(pos + 3) % 8] = b.wrapping_add(1);
                    u64::from_le_bytes(bytes)
                })
            })
        })
    }

    #[test]
    fn byte_tests_flag_exactly_the_right_bytes() {
        for x in words() {
            assert_eq!(nonzero(x), each(x, |b| b != 0), "{x:016x}");
            for c in [0u8, b' ', b'"', b'<', b'?', 0x7f, 0xff] {
                assert_eq!(equal(x, c), each(x, |b| b == c), "{x:016x} == {c:#x}");
            }
            for bound in [1u8, 0x21, 0x30, 0x80] {
                assert_eq!(
                    below(x, bound),
                    each(x, |b| b < bound),
                    "{x:016x} < {bound}"
                );
            }
            assert_eq!(non_digits(x), each(x, |b| !b.is_ascii_digit()), "{x:016x}");
        }
    }

    #[test]
    fn before_first_counts_unflagged_bytes() {
        assert_eq!(before_first(0), 8);
        for k in 0..8 {
            let first = 0x80u64 << (8 * k);
            assert_eq!(before_first(first), k);
            // Later flags do not matter.
            assert_eq!(before_first(first | HIGHS << (8 * k)), k);
        }
    }

    #[test]
    fn digits_pack_as_bcd() {
        assert_eq!(pack_digits(u64::from_le_bytes(*b"12345678")), 0x1234_5678);
        assert_eq!(pack_digits(u64::from_le_bytes(*b"00000009")), 0x9);
        assert_eq!(pack_digits(u64::from_le_bytes(*b"90000000")), 0x9000_0000);
    }
}
