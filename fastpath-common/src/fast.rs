//! The common case, a word at a time: a request line in canonical form,
//! `INVITE sip:+15551234567@host SIP/2.0` (or `tel:`, `sips:`, ACK, CANCEL), decided in a
//! few dozen instructions without a per-byte loop.
//!
//! It answers only when the line is exactly that: a method, a scheme, an optional literal
//! `+`, 1 to 15 literal digits, then `@` and a host part (or, for `tel:`, the SP), and
//! ` SIP/2.0` CRLF. For anything else (separators, escapes, parameters in the user part, a
//! cut or malformed line) it answers `None` and the full classifier decides, so the verdict
//! is always the full classifier's.

use crate::{
    classify::{Method, SCAN_LEN, Verdict, Window},
    number::RouteKey,
    swar,
};

/// The line's verdict when it is in canonical form, else `None`.
#[inline(always)]
pub(crate) fn canonical(window: &Window, len: usize) -> Option<Verdict> {
    let words = Words {
        window,
        len: if len < SCAN_LEN { len } else { SCAN_LEN },
    };
    let first = words.at(0);
    let (method, start) = if INVITE.matches(first) {
        (Method::Invite, 7)
    } else if ACK.matches(first) {
        (Method::Ack, 4)
    } else if CANCEL.matches(first) {
        (Method::Cancel, 7)
    } else {
        return None;
    };

    // Every index from here on is an offset from `start`: seeded with `Window::zero`, none
    // is a constant to the verifier, so the paths of the different methods, schemes and
    // numbers lead to equal states, which it walks once (inlined into the XDP program, the
    // unseeded step cost 230k more instructions verified, this one 30k).
    let start = start + window.zero();
    let scheme = words.at(start);
    let (tel, digits) = if SIP.matches(scheme) {
        (false, start + 4)
    } else if SIPS.matches(scheme) {
        (false, start + 5)
    } else if TEL.matches(scheme) {
        (true, start + 4)
    } else {
        return None;
    };
    let digits = if words.at(digits) & 0xff == b'+' as u64 {
        digits + 1
    } else {
        digits
    };

    // The digits: up to two words of them, then the delimiter.
    let head = words.at(digits);
    let tail = words.at(digits + 8);
    let count = match swar::before_first(swar::non_digits(head)) {
        8 => 8 + swar::before_first(swar::non_digits(tail)),
        n => n,
    };
    if count == 0 || count > 15 {
        return None;
    }
    let end = digits + count;
    let key = if count <= 8 {
        swar::pack_digits(head) >> (4 * (8 - count))
    } else {
        (swar::pack_digits(head) << (4 * (count - 8)))
            | (swar::pack_digits(tail) >> (4 * (16 - count)))
    };
    let key = RouteKey::from_packed(key, count as u32)?;

    let delimiter = words.at(end) & 0xff;
    let version = if tel {
        if delimiter != b' ' as u64 {
            return None;
        }
        end
    } else {
        if delimiter != b'@' as u64 {
            return None;
        }
        words.host_end(end + 1)?
    };
    // Every byte a decision above rested on lies before the CRLF, and each one past `len`
    // may be stale (`at` does not mask them): a line that does not end within `len` is
    // the full classifier's, whatever those bytes said.
    if version + 10 > words.len {
        return None;
    }
    if !(VERSION.matches(words.at(version)) && CRLF.matches(words.at(version + 8))) {
        return None;
    }
    Some(Verdict::Candidate { method, key })
}

/// Up to eight bytes of literal text, as they read at the start of a word.
struct Literal {
    want: u64,
    /// The bytes the text covers.
    mask: u64,
    /// 0x20 on the letters that may come in either case: it folds A-Z onto a-z.
    fold: u64,
}

impl Literal {
    const fn new(text: &[u8], any_case: bool) -> Self {
        let (mut want, mut mask, mut fold) = (0, 0, 0);
        let mut i = 0;
        while i < text.len() {
            want |= (text[i] as u64) << (8 * i);
            mask |= 0xff << (8 * i);
            if any_case && text[i].is_ascii_lowercase() {
                fold |= 0x20 << (8 * i);
            }
            i += 1;
        }
        Self { want, mask, fold }
    }

    #[inline(always)]
    const fn matches(&self, word: u64) -> bool {
        (word | self.fold) & self.mask == self.want
    }
}

const INVITE: Literal = Literal::new(b"INVITE ", false);
const ACK: Literal = Literal::new(b"ACK ", false);
const CANCEL: Literal = Literal::new(b"CANCEL ", false);
const SIP: Literal = Literal::new(b"sip:", true);
const SIPS: Literal = Literal::new(b"sips:", true);
const TEL: Literal = Literal::new(b"tel:", true);
const VERSION: Literal = Literal::new(b" SIP/2.0", false);
const CRLF: Literal = Literal::new(b"\r\n", false);

struct Words<'a> {
    window: &'a Window,
    /// At most SCAN_LEN.
    len: usize,
}

impl Words<'_> {
    /// The eight bytes from `i` on, the first in the low byte. Bytes at or past `len` are
    /// whatever the window holds there (see the length check at the end of `canonical`);
    /// `i` past the window wraps around.
    #[inline(always)]
    fn at(&self, i: usize) -> u64 {
        self.window.bytes_at(i)
    }

    /// The index of the SP that ends a non-empty host part starting at `start`, if no byte
    /// before it is one a host part may not hold.
    #[inline(always)]
    fn host_end(&self, start: usize) -> Option<usize> {
        let mut i = start;
        while i < SCAN_LEN {
            let word = self.at(i);
            // Escaped headers (`?Route=`), brackets, quotes and control bytes have no
            // place in a Request-URI host part; SP ends it.
            let stops = swar::below(word, b' ' + 1)
                | swar::equal(word, b'"')
                | swar::equal(word, b'<')
                | swar::equal(word | swar::splat(1), b'?') // `>` or `?`
                | swar::equal(word, 0x7f);
            if stops != 0 {
                let end = i + swar::before_first(stops);
                let ends_well = end > start && self.at(end) & 0xff == b' ' as u64;
                return if ends_well { Some(end) } else { None };
            }
            i += 8;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PassReason, classify, normalize_number};

    fn fast(line: &[u8]) -> Option<Verdict> {
        canonical(&Window::from_bytes(line), line.len())
    }

    fn full(line: &[u8]) -> Verdict {
        let mut head = [0u8; SCAN_LEN];
        let len = line.len().min(SCAN_LEN);
        head[..len].copy_from_slice(&line[..len]);
        classify(&head, len)
    }

    #[test]
    fn canonical_lines_are_decided_here_as_the_full_classifier_decides() {
        let lines: [&[u8]; 9] = [
            b"INVITE sip:+15550100001@192.0.2.1:5060 SIP/2.0\r\n",
            b"INVITE sip:15550100001@gw SIP/2.0\r\nVia: x\r\n",
            b"ACK sip:+442079460000@[2001:db8::1]:5060 SIP/2.0\r\n",
            b"CANCEL SIPS:0044207946001@example.com;user=phone SIP/2.0\r\n",
            b"INVITE tel:+15550100001 SIP/2.0\r\n",
            b"INVITE TeL:1 SIP/2.0\r\n",
            b"INVITE sip:12345678@h SIP/2.0\r\n",
            b"INVITE sip:123456789012345@h SIP/2.0\r\n",
            b"INVITE sIp:+000000000000000@h SIP/2.0\r\n",
        ];
        for line in lines {
            let verdict = fast(line);
            assert!(
                verdict.is_some(),
                "{}",
                core::str::from_utf8(line).unwrap_or("?")
            );
            assert_eq!(
                verdict,
                Some(full(line)),
                "{}",
                core::str::from_utf8(line).unwrap_or("?")
            );
        }
        let Some(Verdict::Candidate { method, key }) = fast(lines[0]) else {
            panic!("not a candidate");
        };
        assert_eq!(method, Method::Invite);
        assert_eq!(Some(key), normalize_number(b"15550100001").ok());
    }

    #[test]
    fn everything_else_is_left_to_the_full_classifier() {
        let lines: [&[u8]; 16] = [
            b"INVITE sip:+1-555-0100@h SIP/2.0\r\n",
            b"INVITE sip:%2B15550100001@h SIP/2.0\r\n",
            b"INVITE sip:15550100001;phone-context=x@h SIP/2.0\r\n",
            b"INVITE sip:1234567890123456@h SIP/2.0\r\n",
            b"INVITE sip:alice@h SIP/2.0\r\n",
            b"INVITE sip:+@h SIP/2.0\r\n",
            b"INVITE sip:1@ SIP/2.0\r\n",
            b"INVITE sip:1@h?Route=x SIP/2.0\r\n",
            b"INVITE sip:1@h  SIP/2.0\r\n",
            b"INVITE sip:1@h SIP/2.1\r\n",
            b"INVITE sip:1@h SIP/2.0\n",
            b"INVITE  sip:1@h SIP/2.0\r\n",
            b"invite sip:1@h SIP/2.0\r\n",
            b"OPTIONS sip:1@h SIP/2.0\r\n",
            b"INVITE tel:1@h SIP/2.0\r\n",
            b"INVITE sip:1@h SIP/2.0\r",
        ];
        for line in lines {
            assert_eq!(
                fast(line),
                None,
                "{}",
                core::str::from_utf8(line).unwrap_or("?")
            );
        }
        assert_eq!(full(lines[3]), Verdict::Pass(PassReason::TooManyDigits));
    }

    #[test]
    fn bytes_past_len_are_not_read() {
        let line = b"INVITE sip:15550100001@h SIP/2.0\r\n";
        let mut stale = [b'7'; SCAN_LEN];
        stale[..line.len()].copy_from_slice(line);
        let window = Window::from_bytes(&stale);
        assert_eq!(canonical(&window, line.len() - 1), None);
        assert_eq!(canonical(&window, line.len()), fast(line));
        // The digits stop at `len` even where the stale bytes go on with more.
        let cut = b"INVITE tel:1555";
        let mut stale = [b'9'; SCAN_LEN];
        stale[..cut.len()].copy_from_slice(cut);
        assert_eq!(canonical(&Window::from_bytes(&stale), cut.len()), None);
    }

    #[test]
    fn a_line_completed_only_by_stale_bytes_is_not_decided() {
        // The window still holds a whole canonical line from an earlier packet; this packet's
        // payload is any shorter prefix of it. Only a payload holding the whole line (its
        // CRLF included) may be decided here.
        let lines: [&[u8]; 3] = [
            b"INVITE sip:+15550100001@192.0.2.1:5060 SIP/2.0\r\n",
            b"ACK tel:123456789012345 SIP/2.0\r\n",
            b"CANCEL sips:1@[2001:db8::1]:5061;transport=tls SIP/2.0\r\n",
        ];
        for line in lines {
            let window = Window::from_bytes(line);
            for len in 0..line.len() {
                assert_eq!(
                    canonical(&window, len),
                    None,
                    "{} cut at {len}",
                    core::str::from_utf8(line).unwrap_or("?")
                );
            }
            assert!(canonical(&window, line.len()).is_some());
            assert_eq!(canonical(&window, SCAN_LEN), canonical(&window, line.len()));
        }
    }
}
