//! The routing decision: which SIP request lines the fast path may take, and for which number.
//!
//! The classifier reads only the request line, from a fixed window at the start of the UDP
//! payload, so that the XDP program can run exactly this code on a bounded stack buffer. It
//! answers [`Verdict::Candidate`] only when it is certain; everything else is a
//! [`Verdict::Pass`] with the reason, and the slow path decides.

use crate::number::{KeyBuilder, RouteKey};

/// Bytes of the UDP payload the classifier looks at. A request line that does not end
/// within them is passed to the slow path. 128 holds real carrier request lines
/// (`INVITE sip:+15551234567@gw.carrier.example:5060;user=phone;transport=udp SIP/2.0` is
/// 81 bytes); the XDP program verifies in about 0.53M of the verifier's 1M instructions.
pub const SCAN_LEN: usize = 128;

/// The first [`SCAN_LEN`] bytes of a UDP payload, aligned so that the XDP program fills it
/// with aligned eight-byte stores (the `fast` module reads it a word at a time), and followed by as many zeros so that an
/// unaligned read near the end needs no bounds branch (the verifier's view of an index
/// LLVM has folded into an address can be a few words wider than the real one). The XDP
/// program copies packet bytes straight into `bytes`; the host builds one with
/// [`Window::from_bytes`].
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub bytes: [u8; SCAN_LEN],
    /// Always zero.
    overrun: [u8; SCAN_LEN],
}

impl Window {
    /// The start of `payload`, zero-filled past its end.
    pub fn from_bytes(payload: &[u8]) -> Self {
        let mut bytes = [0; SCAN_LEN];
        let len = payload.len().min(SCAN_LEN);
        bytes[..len].copy_from_slice(&payload[..len]);
        Self {
            bytes,
            overrun: [0; SCAN_LEN],
        }
    }

    /// Zero, read from memory: a value the eBPF verifier cannot know. An index seeded with
    /// it is a range to the verifier, not a constant, so paths that differ only in where
    /// they stand in the line reach equal states and it walks the rest once, not once per
    /// path (see [`classify_seeded`] for the same idea).
    #[inline(always)]
    pub(crate) fn zero(&self) -> usize {
        // SAFETY: eight bytes inside `overrun`, which nothing ever writes.
        u64::from_le(unsafe { crate::unaligned::load_u64(self.overrun.as_ptr()) }) as usize
    }

    /// The eight bytes from `i % SCAN_LEN` on, the first in the low byte: one unaligned
    /// load (see [`crate::unaligned`]), where assembling a word from two aligned ones took
    /// ten instructions.
    ///
    /// The index is masked, not bounds-checked: a branch would let LLVM drop the mask and
    /// add the index's parts to the pointer one by one, which the verifier then sees as a
    /// wider range than the window has.
    #[inline(always)]
    pub(crate) fn bytes_at(&self, i: usize) -> u64 {
        // SAFETY: the start is below SCAN_LEN and the window is 2 * SCAN_LEN bytes, so all
        // eight bytes are inside it; any bit pattern is a valid u64.
        let start = unsafe { (self as *const Self).cast::<u8>().add(i & (SCAN_LEN - 1)) };
        u64::from_le(unsafe { crate::unaligned::load_u64(start) })
    }
}

/// Classifies the payload whose first `min(len, SCAN_LEN)` bytes are in `window`: the
/// canonical form a word at a time, anything else by [`classify_seeded`]. This is what the
/// XDP program and [`classify_bytes`] run.
#[inline(always)]
pub fn classify_window(window: &Window, len: usize, zero: u32) -> Verdict {
    match classify_canonical(window, len) {
        Some(verdict) => verdict,
        None => classify_seeded(&window.bytes, len, zero),
    }
}

/// The verdict on a request line in canonical form (`INVITE sip:+15551234567@host
/// SIP/2.0`, `tel:`, `sips:`, ACK, CANCEL), decided a word at a time; `None` for any other
/// line, which [`classify_seeded`] must then decide. When it answers, it answers exactly as
/// [`classify_seeded`] would.
#[inline(always)]
pub fn classify_canonical(window: &Window, len: usize) -> Option<Verdict> {
    crate::fast::canonical(window, len)
}

/// Requests the fast path may take: an INVITE and the CANCEL / ACK that share its
/// request URI, so that a transaction is never split between the two paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Invite,
    Ack,
    Cancel,
}

/// Why a payload is not a fast-path candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PassReason {
    /// Not an INVITE/ACK/CANCEL request line (methods are case-sensitive); responses too.
    OtherMethod,
    /// The Request-URI scheme is not `sip:`, `sips:` or `tel:`.
    UnsupportedScheme,
    /// No user part, or an empty one.
    NoUser,
    /// The user part holds something other than digits, a leading `+` and visual separators.
    NotNumber,
    /// More than 15 digits: not an E.164 number.
    TooManyDigits,
    /// `;phone-context`, `;ext`, `;isub` and other user or `tel:` parameters change what the
    /// digits mean; only the slow path may interpret them.
    UserParameters,
    /// Stray whitespace, control characters, URI headers, a bad escape or SIP version.
    Malformed,
    /// The request line does not end within the scan window (or the packet).
    Truncated,
}

impl PassReason {
    /// The `STATS` slot this reason is counted in.
    pub const fn counter(self) -> crate::Counter {
        use crate::Counter;
        match self {
            Self::OtherMethod => Counter::OtherMethod,
            Self::Malformed => Counter::Malformed,
            Self::UnsupportedScheme
            | Self::NoUser
            | Self::NotNumber
            | Self::TooManyDigits
            | Self::UserParameters
            | Self::Truncated => Counter::NotNumber,
        }
    }
}

/// The classifier's answer for one UDP payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A request the fast path may take if `key` is in `ROUTES`.
    Candidate { method: Method, key: RouteKey },
    /// Leave it to the kernel stack and the userspace proxy.
    Pass(PassReason),
}

/// Classifies the payload whose first `min(len, N)` bytes are in `head`.
///
/// The fixed-size window keeps every index provably in bounds, which is what lets the
/// eBPF verifier accept this code; it never panics for any input.
#[inline(always)]
pub fn classify<const N: usize>(head: &[u8; N], len: usize) -> Verdict {
    classify_seeded(head, len, 0)
}

/// [`classify`] with its loop counters starting from `zero`, which must be 0.
///
/// The eBPF verifier tracks every constant exactly and must keep apart states whose
/// counters differ, so counters starting from a literal 0 make verification quadratic in
/// the window (it runs out of its 1M-instruction budget). The XDP program loads `zero` from
/// a map nobody writes: the verifier sees an unknown value, states merge, verification
/// stays linear, and the result is exactly that of [`classify`].
#[inline(always)]
pub fn classify_seeded<const N: usize>(head: &[u8; N], len: usize, zero: u32) -> Verdict {
    let line = Line {
        head,
        len: if len < N { len } else { N },
        zero,
    };
    match line.parse() {
        Ok((method, key)) => Verdict::Candidate { method, key },
        Err(reason) => Verdict::Pass(reason),
    }
}

/// [`classify_window`] over a payload slice, for the host.
pub fn classify_bytes(payload: &[u8]) -> Verdict {
    classify_window(&Window::from_bytes(payload), payload.len(), 0)
}

struct Line<'a, const N: usize> {
    head: &'a [u8; N],
    len: usize,
    zero: u32,
}

enum Scheme {
    Sip,
    Tel,
}

type Parsed<T> = Result<T, PassReason>;

impl<const N: usize> Line<'_, N> {
    #[inline(always)]
    fn at(&self, i: usize) -> Parsed<u8> {
        if i < self.len && i < N {
            Ok(self.head[i])
        } else {
            Err(PassReason::Truncated)
        }
    }

    /// `true` when `text` stands at `i`; ASCII letters compared case-insensitively if `fold`.
    #[inline(always)]
    fn has(&self, i: usize, text: &[u8], fold: bool) -> bool {
        let mut k = 0;
        while k < text.len() {
            let Ok(c) = self.at(i + k) else { return false };
            let c = if fold && c.is_ascii_uppercase() {
                c | 0x20
            } else {
                c
            };
            if c != text[k] {
                return false;
            }
            k += 1;
        }
        true
    }

    #[inline(always)]
    fn parse(&self) -> Parsed<(Method, RouteKey)> {
        let (_, i) = self.method()?;
        let (scheme, i) = self.scheme(i)?;
        let (key, i) = self.uri(i, &scheme)?;
        self.version(i)?;
        let key = key.finish_checked()?;
        // Read the method again rather than carry it through the loop: a value live across
        // the loop multiplies the states the verifier must keep apart.
        let (method, _) = self.method()?;
        Ok((method, key))
    }

    /// The method and the single SP after it; returns the index of the Request-URI.
    #[inline(always)]
    fn method(&self) -> Parsed<(Method, usize)> {
        if self.has(0, b"INVITE ", false) {
            Ok((Method::Invite, 7))
        } else if self.has(0, b"ACK ", false) {
            Ok((Method::Ack, 4))
        } else if self.has(0, b"CANCEL ", false) {
            Ok((Method::Cancel, 7))
        } else {
            Err(PassReason::OtherMethod)
        }
    }

    #[inline(always)]
    fn scheme(&self, i: usize) -> Parsed<(Scheme, usize)> {
        if self.has(i, b"sip:", true) {
            Ok((Scheme::Sip, i + 4))
        } else if self.has(i, b"sips:", true) {
            Ok((Scheme::Sip, i + 5))
        } else if self.has(i, b"tel:", true) {
            Ok((Scheme::Tel, i + 4))
        } else if matches!(self.at(i)?, b' ' | b'\t' | b'\r' | b'\n') {
            Err(PassReason::Malformed)
        } else {
            Err(PassReason::UnsupportedScheme)
        }
    }

    /// The user part of a `sip:`/`sips:` URI (up to `@`) and its host part, or the number of
    /// a `tel:` URI; returns the key and the index of the SP before the version.
    ///
    /// One loop whose only state besides the index is a flag and the key, seeded from
    /// `zero`: each extra value live across it would multiply the eBPF verifier's work.
    #[inline(always)]
    fn uri(&self, start: usize, scheme: &Scheme) -> Parsed<(KeyBuilder, usize)> {
        let zero = self.zero;
        let mut key = KeyBuilder::seeded(zero);
        let mut in_host = false;
        // The index starts from `zero` too: a range, not a constant, to the verifier
        // (722k -> 550k instructions verified).
        let mut i = self.after_plus(start) + zero as usize;
        while i < N {
            let raw = self.at(i)?;
            if in_host {
                match raw {
                    b' ' => return Ok((key, i)),
                    // Escaped headers (`?Route=`), brackets, quotes and control bytes have
                    // no place in a Request-URI host part.
                    b'?' | b'<' | b'>' | b'"' | 0..=0x1f | 0x7f => {
                        return Err(PassReason::Malformed);
                    }
                    _ => {}
                }
                i += 1;
                continue;
            }
            let (c, escaped) = if raw == b'%' {
                let hi = hex_digit(self.at(i + 1)?).ok_or(PassReason::Malformed)?;
                let lo = hex_digit(self.at(i + 2)?).ok_or(PassReason::Malformed)?;
                i += 3;
                (hi << 4 | lo, true)
            } else {
                i += 1;
                (raw, false)
            };
            match c {
                b'0'..=b'9' => key.push(c - b'0'),
                b'-' | b'.' | b'(' | b')' => {}
                // Delimiters only count when written literally (RFC 3261 §19.1.4).
                b'@' if !escaped && matches!(scheme, Scheme::Sip) => {
                    if key.is_empty() {
                        return Err(PassReason::NoUser);
                    }
                    if self.at(i)? == b' ' {
                        return Err(PassReason::Malformed); // empty host
                    }
                    in_host = true;
                }
                b' ' if !escaped => {
                    return match scheme {
                        // `sip:host` without a user part.
                        Scheme::Sip => Err(PassReason::NoUser),
                        Scheme::Tel if key.is_empty() => Err(PassReason::NoUser),
                        Scheme::Tel => Ok((key, i - 1)),
                    };
                }
                b';' if !escaped => return Err(PassReason::UserParameters),
                b'\t' | b'\r' | b'\n' | b'?' | b'>' if !escaped => {
                    return Err(PassReason::Malformed);
                }
                _ => return Err(PassReason::NotNumber),
            }
        }
        Err(PassReason::Truncated)
    }

    /// Past the `+` (literal or `%2B`) that may open the user part, else `start`: taken
    /// before the loop, so that no count of the characters seen lives across it.
    #[inline(always)]
    fn after_plus(&self, start: usize) -> usize {
        let at = |i| self.at(i).ok();
        if at(start) == Some(b'+') {
            start + 1
        } else if at(start) == Some(b'%')
            && at(start + 1) == Some(b'2')
            && matches!(at(start + 2), Some(b'B' | b'b'))
        {
            start + 3
        } else {
            start
        }
    }

    /// Exactly one SP, `SIP/2.0`, CRLF.
    #[inline(always)]
    fn version(&self, i: usize) -> Parsed<()> {
        if self.has(i, b" SIP/2.0\r\n", false) {
            Ok(())
        } else if i + 10 > self.len {
            Err(PassReason::Truncated)
        } else {
            Err(PassReason::Malformed)
        }
    }
}

#[inline(always)]
fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}
