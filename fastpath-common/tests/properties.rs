//! Properties of the classifier and of `RouteKey`, over generated input.

use std::ops::Range;

use fastpath_common::{
    Method, NumberError, PassReason, RouteKey, SCAN_LEN, Verdict, Window, classify, classify_bytes,
    classify_window, normalize_number,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

mod reference;

const SCHEMES: &[&str] = &[
    "sip:", "SIP:", "Sip:", "sips:", "SIPS:", "sIpS:", "tel:", "TEL:", "Tel:",
];
/// Ways to write the optional leading `+`.
const PLUSES: &[&str] = &["", "+", "%2B", "%2b"];
/// Visual separators, literal and escaped.
const SEPARATORS: &[&str] = &["-", ".", "(", ")", "%2D", "%2d", "%2E", "%28", "%29"];
/// Host parts for `sip:`/`sips:`. Some begin with hex digits so that a `%` written over
/// the `@` makes a plausible escape (`%2d` is `-`, `%2b` is `+`).
const HOSTS: &[&str] = &[
    "example.com",
    "gw.example.net:5060",
    "192.0.2.10",
    "198.51.100.7:5080;transport=udp",
    "[2001:db8::1]",
    "[2001:db8::1]:5060;user=phone",
    "carrier.example;user=phone",
    "203.0.113.5;transport=udp;user=phone;lr",
    "2d0.example.org",
    "2b.example.org",
    "31.example.org",
];
const HEADER_TAILS: &[&str] = &[
    "",
    "\r\n",
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK74bf9\r\nMax-Forwards: 70\r\n\r\n",
    "To: <sip:+15550109999@example.com>\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
];

/// How a number is written in a valid request line; the digits come separately.
#[derive(Clone, Debug)]
struct Spelling {
    method: Method,
    scheme: &'static str,
    plus: &'static str,
    /// Separators, each before the digit at the index (at the end past the last digit).
    separators: Vec<(usize, &'static str)>,
    host: &'static str,
    tail: Vec<u8>,
}

/// A valid request line (and what follows it), with where its parts are.
#[derive(Debug)]
struct Rendered {
    bytes: Vec<u8>,
    /// The user part of a `sip:` URI or the number of a `tel:` URI: from after the scheme
    /// to before the `@` or SP that ends it.
    user: Range<usize>,
    /// Indexes of the literal digits.
    digits: Vec<usize>,
    /// Bytes up to and including the CRLF.
    line_len: usize,
}

impl Spelling {
    fn is_tel(&self) -> bool {
        self.scheme.eq_ignore_ascii_case("tel:")
    }

    /// The line as spelled, made to fit the scan window (whatever `SCAN_LEN` is) by dropping
    /// separators from the end and, if need be, taking the shortest host.
    fn render(&self, digits: &str) -> Rendered {
        let shortest = HOSTS.iter().min_by_key(|h| h.len()).expect("hosts");
        let attempts = (0..=self.separators.len())
            .rev()
            .map(|n| (&self.separators[..n], self.host))
            .chain([(&[][..], *shortest)]);
        for (separators, host) in attempts {
            let line = self.render_as(digits, separators, host);
            if line.line_len <= SCAN_LEN {
                return line;
            }
        }
        panic!("no spelling of {digits} fits {SCAN_LEN} bytes: {self:?}");
    }

    fn render_as(&self, digits: &str, separators: &[(usize, &str)], host: &str) -> Rendered {
        let method = match self.method {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Cancel => "CANCEL",
        };
        let mut bytes = format!("{method} {}{}", self.scheme, self.plus).into_bytes();
        let user_start = bytes.len() - self.plus.len();
        let separators_before = |i: usize| {
            separators
                .iter()
                .filter(move |&&(at, _)| at.min(digits.len()) == i)
                .map(|&(_, sep)| sep)
        };
        let mut digit_at = Vec::new();
        for (i, d) in digits.bytes().enumerate() {
            separators_before(i).for_each(|sep| bytes.extend_from_slice(sep.as_bytes()));
            digit_at.push(bytes.len());
            bytes.push(d);
        }
        separators_before(digits.len()).for_each(|sep| bytes.extend_from_slice(sep.as_bytes()));
        let user = user_start..bytes.len();
        if !self.is_tel() {
            bytes.push(b'@');
            bytes.extend_from_slice(host.as_bytes());
        }
        bytes.extend_from_slice(b" SIP/2.0\r\n");
        let line_len = bytes.len();
        bytes.extend_from_slice(&self.tail);
        Rendered {
            bytes,
            user,
            digits: digit_at,
            line_len,
        }
    }
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::Invite),
        Just(Method::Ack),
        Just(Method::Cancel)
    ]
}

fn digits() -> impl Strategy<Value = String> {
    "[0-9]{1,15}"
}

fn tail() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        select(HEADER_TAILS).prop_map(|t| t.as_bytes().to_vec()),
        vec(any::<u8>(), 0..200),
    ]
}

prop_compose! {
    fn spelling()(
        method in method(),
        scheme in select(SCHEMES),
        plus in select(PLUSES),
        separators in vec((0..=15usize, select(SEPARATORS)), 0..6),
        host in select(HOSTS),
        tail in tail(),
    ) -> Spelling {
        Spelling { method, scheme, plus, separators, host, tail }
    }
}

fn key(digits: &str) -> RouteKey {
    normalize_number(digits.as_bytes()).expect("generated digits are a number")
}

fn is_pass(verdict: Verdict) -> bool {
    matches!(verdict, Verdict::Pass(_))
}

fn method_of(verdict: Verdict) -> Option<Method> {
    match verdict {
        Verdict::Candidate { method, .. } => Some(method),
        Verdict::Pass(_) => None,
    }
}

/// Bytes that take the classifier down its deeper paths more often than uniform bytes do.
fn sip_ish_bytes() -> impl Strategy<Value = Vec<u8>> {
    const TOKENS: &[&str] = &[
        "INVITE ",
        "ACK ",
        "CANCEL ",
        "sip:",
        "sips:",
        "tel:",
        "SIP/2.0",
        "\r\n",
        " ",
        "\t",
        "@",
        "+",
        "%2B",
        "%",
        "%4",
        "%40",
        "%3B",
        ";",
        "?",
        "<",
        ">",
        "\"",
        "-",
        ".",
        "(",
        ")",
        ":",
        "user=phone",
        "example.com",
        "0",
        "1",
        "5",
        "9",
        "0123456789",
        "a",
        "\0",
        "\x7f",
        "\u{e9}",
    ];
    vec(select(TOKENS), 0..40).prop_map(|parts| parts.concat().into_bytes())
}

/// The documented key layout: a digit count of 1..=15 in the top nibble, that many BCD
/// digits in the low nibbles, zeros in between.
fn is_canonical(bits: u64) -> bool {
    let len = bits >> 60;
    (1..=15).contains(&len)
        && (0..15).all(|i| {
            let nibble = (bits >> (4 * i)) & 0xf;
            if i < len { nibble <= 9 } else { nibble == 0 }
        })
}

/// Mostly near-canonical bits: a length, digit nibbles with now and then a non-digit, and
/// now and then a stray nibble above the length; sometimes just any `u64`.
fn packed_bits() -> impl Strategy<Value = u64> {
    let nibble = prop_oneof![9 => 0u64..10, 1 => 10u64..16];
    let near = (0u64..16, vec(nibble, 15), any::<bool>()).prop_map(|(len, nibbles, stray)| {
        let digits = nibbles
            .iter()
            .take(len as usize)
            .fold(0, |acc, n| (acc << 4) | n);
        (len << 60) | digits | if stray { 1 << 56 } else { 0 }
    });
    prop_oneof![3 => near, 1 => any::<u64>()]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// Never panics, and a candidate always has a well-formed key and starts with its method.
    #[test]
    fn classify_bytes_is_total(payload in prop_oneof![vec(any::<u8>(), 0..400), sip_ish_bytes()]) {
        let verdict = classify_bytes(&payload);
        if let Verdict::Candidate { method, key } = verdict {
            prop_assert_eq!(RouteKey::from_bits(key.to_bits()), Some(key));
            let name: &[u8] = match method {
                Method::Invite => b"INVITE ",
                Method::Ack => b"ACK ",
                Method::Cancel => b"CANCEL ",
            };
            prop_assert!(payload.starts_with(name));
        }
    }

    /// The production path (the word-at-a-time canonical form, else the full classifier)
    /// decides exactly as the byte-at-a-time reference.
    #[test]
    fn agrees_with_the_byte_at_a_time_reference(
        payload in prop_oneof![vec(any::<u8>(), 0..100), sip_ish_bytes()],
    ) {
        prop_assert_eq!(classify_bytes(&payload), reference::classify(&payload));
    }

    /// The same on valid lines and every prefix of them, and with stale bytes past `len`.
    #[test]
    fn agrees_with_the_reference_on_valid_lines(digits in digits(), spelling in spelling(),
                                                stale in any::<u8>()) {
        let line = spelling.render(&digits);
        for end in 0..=line.bytes.len().min(SCAN_LEN + 2) {
            let cut = &line.bytes[..end];
            let want = reference::classify(cut);
            prop_assert_eq!(classify_bytes(cut), want, "{:?}", cut);
            let mut window = Window::from_bytes(&[stale; SCAN_LEN]);
            let len = end.min(SCAN_LEN);
            window.bytes[..len].copy_from_slice(&cut[..len]);
            prop_assert_eq!(classify_window(&window, end, 0), want, "{:?}", cut);
        }
    }

    /// Only the first `min(len, SCAN_LEN)` bytes count: not the rest of the payload, and not
    /// whatever is left in the window past `len`.
    #[test]
    fn only_the_window_counts(payload in prop_oneof![vec(any::<u8>(), 0..400), sip_ish_bytes()],
                              stale in any::<u8>()) {
        let verdict = classify_bytes(&payload);
        let len = payload.len().min(SCAN_LEN);
        prop_assert_eq!(classify_bytes(&payload[..len]), verdict);
        let mut head = [stale; SCAN_LEN];
        head[..len].copy_from_slice(&payload[..len]);
        prop_assert_eq!(classify(&head, len), verdict);
        prop_assert_eq!(classify(&head, payload.len()), verdict);
    }

    /// A window smaller than the payload sees what a payload cut to the window would show,
    /// however large the `len` passed with it.
    #[test]
    fn a_small_window_is_a_short_payload(digits in digits(), spelling in spelling(),
                                         extra in 0usize..1000) {
        const SMALL: usize = 64;
        let line = spelling.render(&digits);
        let len = line.bytes.len().min(SMALL);
        let mut window = [0u8; SMALL];
        window[..len].copy_from_slice(&line.bytes[..len]);
        let want = classify_bytes(&line.bytes[..len]);
        prop_assert_eq!(classify(&window, len + extra), want);
        prop_assert_eq!(classify(&window, usize::MAX), classify(&window, SMALL));
    }

    /// A generated valid line gives back exactly its digits.
    #[test]
    fn valid_lines_round_trip_their_digits(digits in digits(), spelling in spelling()) {
        let line = spelling.render(&digits);
        let verdict = classify_bytes(&line.bytes);
        prop_assert_eq!(verdict, Verdict::Candidate { method: spelling.method, key: key(&digits) });
        let Verdict::Candidate { key, .. } = verdict else { unreachable!() };
        let mut out = [0u8; 15];
        let n = key.write_digits(&mut out);
        prop_assert_eq!(&out[..n], digits.as_bytes());
        prop_assert_eq!(key.len() as usize, digits.len());
    }

    /// Separators, `+` or `%2B` or none, scheme, host, method and what follows the line do
    /// not change the key.
    #[test]
    fn spelling_does_not_change_the_key(digits in digits(), a in spelling(), b in spelling()) {
        let key_a = classify_bytes(&a.render(&digits).bytes);
        let key_b = classify_bytes(&b.render(&digits).bytes);
        prop_assert_eq!(key_a, Verdict::Candidate { method: a.method, key: key(&digits) });
        prop_assert_eq!(key_b, Verdict::Candidate { method: b.method, key: key(&digits) });
    }

    /// Too many digits, however spelled, are never a candidate.
    #[test]
    fn sixteen_digits_or_more_pass(digits in "[0-9]{16,24}", spelling in spelling()) {
        let spelling = Spelling { separators: vec![], ..spelling };
        let line = spelling.render(&digits[..15]);
        let mut bytes = line.bytes[..line.user.end].to_vec();
        bytes.extend_from_slice(&digits.as_bytes()[15..]);
        bytes.extend_from_slice(&line.bytes[line.user.end..]);
        let fits = line.line_len + digits.len() - 15 <= SCAN_LEN;
        let want = if fits { PassReason::TooManyDigits } else { PassReason::Truncated };
        prop_assert_eq!(classify_bytes(&bytes), Verdict::Pass(want));
    }

    /// Any proper prefix of a valid line passes; past the scheme it is `Truncated`.
    #[test]
    fn prefixes_of_valid_lines_pass(digits in digits(), spelling in spelling(), cut in any::<prop::sample::Index>()) {
        let line = spelling.render(&digits);
        let cut = cut.index(line.line_len);
        let verdict = classify_bytes(&line.bytes[..cut]);
        prop_assert!(is_pass(verdict));
        if cut >= line.user.start {
            prop_assert_eq!(verdict, Verdict::Pass(PassReason::Truncated));
        }
    }

    /// One byte changed anywhere in a valid message never routes it by another number,
    /// unless the byte is in the user part (where a digit may become another digit, or an
    /// `@` end the user part early), and never turns it into another method.
    #[test]
    fn a_changed_byte_never_misroutes(
        digits in digits(),
        spelling in spelling(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let line = spelling.render(&digits);
        let original = classify_bytes(&line.bytes);
        let at = at.index(line.bytes.len());
        let mut mutated = line.bytes.clone();
        mutated[at] = byte;
        let verdict = classify_bytes(&mutated);

        if line.user.contains(&at) {
            prop_assert!(is_pass(verdict) || method_of(verdict) == Some(spelling.method));
            if let Some(index) = line.digits.iter().position(|&d| d == at).filter(|_| byte.is_ascii_digit()) {
                let mut changed = digits.into_bytes();
                changed[index] = byte;
                let changed = String::from_utf8(changed).expect("ASCII digits");
                prop_assert_eq!(verdict, Verdict::Candidate { method: spelling.method, key: key(&changed) });
            }
        } else {
            prop_assert!(is_pass(verdict) || verdict == original,
                "{} gave {:?}", mutated.escape_ascii(), verdict);
        }
        if at >= line.line_len {
            prop_assert_eq!(verdict, original);
        }
    }

    /// Arbitrary bytes spliced into a valid line: never a panic, never another method.
    #[test]
    fn spliced_bytes_never_change_the_method(
        digits in digits(),
        spelling in spelling(),
        at in any::<prop::sample::Index>(),
        junk in vec(any::<u8>(), 1..8),
    ) {
        let line = spelling.render(&digits);
        let at = at.index(line.line_len);
        let mut bytes = line.bytes.clone();
        bytes.splice(at..at, junk);
        let verdict = classify_bytes(&bytes);
        prop_assert!(is_pass(verdict) || method_of(verdict) == Some(spelling.method));
    }

    /// `normalize_number` never panics, and what it accepts is exactly the digits written.
    #[test]
    fn normalize_number_is_total(text in prop_oneof![
        vec(any::<u8>(), 0..40),
        "[-+ .()0-9]{0,24}".prop_map(String::into_bytes),
    ]) {
        let written: Vec<u8> = text.iter().copied().filter(u8::is_ascii_digit).collect();
        let only_allowed = text.iter().enumerate().all(|(i, &c)| {
            c.is_ascii_digit() || b"-.() ".contains(&c) || (c == b'+' && i == 0)
        });
        match normalize_number(&text) {
            Ok(key) => {
                prop_assert!(only_allowed);
                let mut out = [0u8; 15];
                let n = key.write_digits(&mut out);
                prop_assert_eq!(&out[..n], written.as_slice());
                prop_assert_eq!(RouteKey::from_bits(key.to_bits()), Some(key));
            }
            Err(NumberError::Empty) => prop_assert!(only_allowed && written.is_empty()),
            Err(NumberError::TooLong) => prop_assert!(written.len() > 15),
            Err(NumberError::InvalidCharacter(c)) => {
                prop_assert!(!only_allowed);
                prop_assert!(text.contains(&c));
            }
        }
        if only_allowed && (1..=15).contains(&written.len()) {
            prop_assert!(normalize_number(&text).is_ok());
        }
    }

    /// Keys survive the trip through their map representation.
    #[test]
    fn route_key_bits_round_trip(digits in digits()) {
        let key = key(&digits);
        prop_assert_eq!(RouteKey::from_bits(key.to_bits()), Some(key));
        prop_assert_eq!(key.len() as usize, digits.len());
        for (i, d) in digits.bytes().enumerate() {
            prop_assert_eq!(key.digit(i as u32), d - b'0');
        }
    }

    /// `from_bits` accepts exactly the canonical encodings, so one number has one key.
    #[test]
    fn from_bits_accepts_only_canonical_keys(bits in packed_bits()) {
        prop_assert_eq!(RouteKey::from_bits(bits).is_some(), is_canonical(bits), "{:#018x}", bits);
        if let Some(key) = RouteKey::from_bits(bits) {
            prop_assert_eq!(key.to_bits(), bits);
            let mut out = [0u8; 15];
            let n = key.write_digits(&mut out);
            prop_assert!((1..=15).contains(&n));
            prop_assert_eq!(normalize_number(&out[..n]), Ok(key));
        }
    }
}
