//! Incremental Internet checksum updates (RFC 1624, eqn. 3): HC' = ~(~HC + ~m + m').

/// A checksum being updated word by word; 32 bits hold the carries of any realistic
/// number of updates before the final fold.
pub(crate) struct ChecksumUpdate(u32);

impl ChecksumUpdate {
    #[inline(always)]
    pub(crate) fn new(checksum: u16) -> Self {
        Self(!checksum as u32)
    }

    /// Replaces the 16-bit word `old` by `new`.
    #[inline(always)]
    pub(crate) fn replace_u16(self, old: u16, new: u16) -> Self {
        Self(self.0 + (!old) as u32 + new as u32)
    }

    /// Replaces a run of bytes (an address) by another of the same even length.
    #[inline(always)]
    pub(crate) fn replace_bytes<const N: usize>(mut self, old: &[u8; N], new: &[u8; N]) -> Self {
        let mut i = 0;
        while i + 1 < N {
            self = self.replace_u16(
                u16::from_be_bytes([old[i], old[i + 1]]),
                u16::from_be_bytes([new[i], new[i + 1]]),
            );
            i += 2;
        }
        self
    }

    #[inline(always)]
    pub(crate) fn finish(self) -> u16 {
        let mut sum = self.0;
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        !(sum as u16)
    }

    /// UDP sends a computed zero as 0xFFFF: zero on the wire means "no checksum".
    #[inline(always)]
    pub(crate) fn finish_udp(self) -> u16 {
        match self.finish() {
            0 => 0xffff,
            sum => sum,
        }
    }
}
