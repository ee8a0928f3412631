//! Dialed numbers as fixed-size map keys.

/// At most this many digits fit a key: E.164 caps numbers at 15 digits.
pub const MAX_DIGITS: u32 = 15;

/// A normalized dialed number: up to 15 digits packed as BCD in the low 60 bits and the
/// digit count in the top 4, so `0044…` and `44…` are different keys.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct RouteKey(u64);

impl RouteKey {
    /// The key as stored in the `ROUTES` map.
    pub const fn to_bits(self) -> u64 {
        self.0
    }

    /// A key from its map representation; `None` unless it is a valid packed number.
    pub const fn from_bits(bits: u64) -> Option<Self> {
        let len = (bits >> 60) as u32;
        if len == 0 || len > MAX_DIGITS {
            return None;
        }
        let mut i = 0;
        while i < len {
            if (bits >> (4 * i)) & 0xf > 9 {
                return None;
            }
            i += 1;
        }
        // Digits above the length must be zero, or two encodings would name one number.
        if len < MAX_DIGITS && (bits & ((1u64 << 60) - 1)) >> (4 * len) != 0 {
            return None;
        }
        Some(Self(bits))
    }

    /// `len` (1 to 15) digits packed as BCD in the low nibbles of `bcd`, first digit highest.
    pub(crate) const fn from_packed(bcd: u64, len: u32) -> Option<Self> {
        if len == 0 || len > MAX_DIGITS {
            return None;
        }
        Some(Self(bcd | ((len as u64) << 60)))
    }

    /// Number of digits (1..=15).
    pub const fn len(self) -> u32 {
        (self.0 >> 60) as u32
    }

    /// Never true: a key always holds at least one digit.
    pub const fn is_empty(self) -> bool {
        self.len() == 0
    }

    /// The digit at `index` (0 = first dialed digit).
    pub const fn digit(self, index: u32) -> u8 {
        let shift = 4 * (self.len() - 1 - index);
        ((self.0 >> shift) & 0xf) as u8
    }

    /// The digits as ASCII into `out`; returns how many were written.
    pub fn write_digits(self, out: &mut [u8; MAX_DIGITS as usize]) -> usize {
        let len = self.len();
        let mut i = 0;
        while i < len {
            out[i as usize] = b'0' + self.digit(i);
            i += 1;
        }
        len as usize
    }
}

/// The digits as dialed, without a `+`: `15550100001`, `0044207946001`.
impl core::fmt::Display for RouteKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut digits = [0u8; MAX_DIGITS as usize];
        let len = self.write_digits(&mut digits);
        // Always ASCII digits.
        f.write_str(core::str::from_utf8(&digits[..len]).map_err(|_| core::fmt::Error)?)
    }
}

/// Accumulates digits into a [`RouteKey`].
///
/// `push` never branches on the count: the classifier's loop stays free of state the eBPF
/// verifier would have to track; the length is judged once, in `finish_checked`.
#[derive(Clone, Copy, Default)]
pub(crate) struct KeyBuilder {
    bcd: u64,
    len: u32,
}

impl KeyBuilder {
    /// An empty builder whose count starts at `zero` (see `classify_seeded`).
    #[inline(always)]
    pub(crate) fn seeded(zero: u32) -> Self {
        Self { bcd: 0, len: zero }
    }

    #[inline(always)]
    pub(crate) fn push(&mut self, digit: u8) {
        self.bcd = (self.bcd << 4) | digit as u64;
        // Wrapping, not saturating: a saturating add is a branch the verifier would split on.
        self.len = self.len.wrapping_add(1);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The key, or `TooManyDigits` past 15 (`None` is impossible after a digit was pushed).
    pub(crate) fn finish_checked(self) -> Result<RouteKey, crate::PassReason> {
        if self.len > MAX_DIGITS {
            return Err(crate::PassReason::TooManyDigits);
        }
        Ok(RouteKey(self.bcd | ((self.len as u64) << 60)))
    }
}

/// Why a configured or API-supplied number was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NumberError {
    Empty,
    TooLong,
    /// A character that is neither a digit, a leading `+`, nor a visual separator.
    InvalidCharacter(u8),
}

impl core::fmt::Display for NumberError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Empty => f.write_str("no digits"),
            Self::TooLong => write!(f, "more than {MAX_DIGITS} digits"),
            Self::InvalidCharacter(c) if c.is_ascii_graphic() => {
                write!(f, "invalid character '{}'", *c as char)
            }
            Self::InvalidCharacter(c) => write!(f, "invalid byte 0x{c:02x}"),
        }
    }
}

/// Normalizes a number written by an operator (config file, API): `+1 (555) 010-0001`.
///
/// The same rules as the request-URI user part, minus URI escapes: a leading `+` is dropped,
/// visual separators (`-`, `.`, `(`, `)`) and spaces are ignored, leading zeros are kept.
pub fn normalize_number(text: &[u8]) -> Result<RouteKey, NumberError> {
    // Bounds the digit count long before it could wrap; no real spelling comes close.
    if text.len() > 64 {
        return Err(NumberError::TooLong);
    }
    let mut key = KeyBuilder::default();
    for (i, &c) in text.iter().enumerate() {
        match c {
            b'0'..=b'9' => key.push(c - b'0'),
            b'+' if i == 0 => {}
            b'-' | b'.' | b'(' | b')' | b' ' => {}
            _ => return Err(NumberError::InvalidCharacter(c)),
        }
    }
    if key.is_empty() {
        return Err(NumberError::Empty);
    }
    key.finish_checked().map_err(|_| NumberError::TooLong)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digits(key: RouteKey) -> [u8; 15] {
        let mut out = [0; 15];
        key.write_digits(&mut out);
        out
    }

    #[test]
    fn keys_display_their_digits() {
        extern crate std;
        use std::string::ToString;
        assert_eq!(
            normalize_number(b"+1 (555) 010-0001").unwrap().to_string(),
            "15550100001"
        );
        assert_eq!(normalize_number(b"0044").unwrap().to_string(), "0044");
    }

    #[test]
    fn leading_zeros_make_distinct_keys() {
        let a = normalize_number(b"0044").unwrap();
        let b = normalize_number(b"44").unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 4);
        assert_eq!(&digits(a)[..4], b"0044");
    }

    #[test]
    fn operator_spelling_is_normalized() {
        let plain = normalize_number(b"15550100001").unwrap();
        assert_eq!(normalize_number(b"+1 (555) 010-0001").unwrap(), plain);
        assert_eq!(normalize_number(b"+1.555.010.0001").unwrap(), plain);
    }

    #[test]
    fn bad_numbers_are_refused() {
        assert_eq!(normalize_number(b""), Err(NumberError::Empty));
        assert_eq!(normalize_number(b"+"), Err(NumberError::Empty));
        assert_eq!(
            normalize_number(b"1234567890123456"),
            Err(NumberError::TooLong)
        );
        assert_eq!(
            normalize_number(b"12+3"),
            Err(NumberError::InvalidCharacter(b'+'))
        );
        assert_eq!(
            normalize_number(b"alice"),
            Err(NumberError::InvalidCharacter(b'a'))
        );
        assert!(normalize_number(b"123456789012345").is_ok());
    }

    #[test]
    fn bits_round_trip_and_reject_garbage() {
        let key = normalize_number(b"0015550100001").unwrap();
        assert_eq!(RouteKey::from_bits(key.to_bits()), Some(key));
        assert_eq!(RouteKey::from_bits(0), None);
        assert_eq!(RouteKey::from_bits((1 << 60) | 0xa), None);
        assert_eq!(RouteKey::from_bits((1 << 60) | 0x10), None);
    }
}
