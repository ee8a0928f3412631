//! Incremental Internet checksum updates (RFC 1624, eqn. 3): HC' = ~(~HC + ~m + m').
//!
//! Everything stays in the packet's own byte order. The one's-complement sum does not care
//! which byte of a 16-bit word is the high one, as long as every word and the checksum
//! itself are read the same way (RFC 1071 §2(B)); and 32-bit words sum like the pairs of
//! 16-bit words they hold, once the carries are folded back in. So the sum runs over the
//! addresses' 32-bit words as they lie, with no byte swaps.

/// A checksum being updated; 64 bits hold the carries of any number of 32-bit updates a
/// header can need before the final fold.
pub(crate) struct ChecksumUpdate(u64);

impl ChecksumUpdate {
    /// Starts from the checksum field as it lies in the packet.
    #[inline(always)]
    pub(crate) fn new(field: [u8; 2]) -> Self {
        Self(!u16::from_ne_bytes(field) as u64)
    }

    /// Replaces two bytes at an even offset (a port, TTL with protocol) by two others.
    #[inline(always)]
    pub(crate) fn replace_pair(self, old: [u8; 2], new: [u8; 2]) -> Self {
        Self(self.0 + !u16::from_ne_bytes(old) as u64 + u16::from_ne_bytes(new) as u64)
    }

    /// Replaces the words of an address (one for IPv4, four for IPv6, each at an even
    /// offset and read as it lies) by others.
    #[inline(always)]
    pub(crate) fn replace_words<const N: usize>(mut self, old: [u32; N], new: [u32; N]) -> Self {
        let mut i = 0;
        while i < N {
            self.0 += !old[i] as u64 + new[i] as u64;
            i += 1;
        }
        self
    }

    /// The new checksum field, in the packet's byte order.
    #[inline(always)]
    pub(crate) fn finish(self) -> [u8; 2] {
        let mut sum = (self.0 & 0xffff_ffff) + (self.0 >> 32);
        sum = (sum & 0xffff_ffff) + (sum >> 32);
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        (!(sum as u16)).to_ne_bytes()
    }

    /// UDP sends a computed zero as 0xFFFF: zero on the wire means "no checksum".
    #[inline(always)]
    pub(crate) fn finish_udp(self) -> [u8; 2] {
        match self.finish() {
            [0, 0] => [0xff, 0xff],
            sum => sum,
        }
    }
}
