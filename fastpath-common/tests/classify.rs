//! Table-driven tests of the request-line classifier.
//!
//! Every table row is an input and what it must classify as; a table reports all of its
//! failing rows at once. Expected keys are packed here independently of the crate (see
//! [`bcd_key`]) so that a bug shared by `normalize_number` and the classifier still shows.

use PassReason::{
    Malformed, NoUser, NotNumber, OtherMethod, TooManyDigits, Truncated, UnsupportedScheme,
    UserParameters,
};
use fastpath_common::{
    Counter, Method, PassReason, RouteKey, SCAN_LEN, Verdict, classify, classify_bytes,
    normalize_number,
};

/// What a payload must classify as.
#[derive(Clone, Copy, Debug)]
enum Want {
    /// An INVITE candidate for exactly these digits.
    Number(&'static str),
    Pass(PassReason),
}
use Want::Number;

/// `Want::Pass`, short enough for tables.
const fn pass(reason: PassReason) -> Want {
    Want::Pass(reason)
}

/// Headers a real INVITE carries after its request line, numbers and all.
const HEADERS: &str = "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds\r\n\
    Max-Forwards: 70\r\n\
    To: <sip:+15550109999@example.com;user=phone>\r\n\
    From: \"Alice\" <sip:+15550100002@example.com>;tag=1928301774\r\n\
    Call-ID: a84b4c76e66710@pc33.example.com\r\n\
    CSeq: 314159 INVITE\r\n\
    Contact: <sip:alice@192.0.2.1>\r\n\
    Content-Length: 0\r\n\r\n";

/// The key for `digits`, packed from the documented layout: BCD digits in the low 60 bits
/// (last digit lowest), the digit count in the top 4.
fn bcd_key(digits: &str) -> RouteKey {
    assert!((1..=15).contains(&digits.len()), "test digits {digits:?}");
    let bcd = digits.bytes().fold(0u64, |acc, d| {
        assert!(d.is_ascii_digit(), "test digits {digits:?}");
        (acc << 4) | u64::from(d - b'0')
    });
    RouteKey::from_bits(bcd | ((digits.len() as u64) << 60)).expect("a valid packed key")
}

/// A request line, nothing after it.
fn line(method: &str, uri: &str) -> Vec<u8> {
    format!("{method} {uri} SIP/2.0\r\n").into_bytes()
}

/// A whole request: the line and [`HEADERS`].
fn message(method: &str, uri: &str) -> Vec<u8> {
    let mut bytes = line(method, uri);
    bytes.extend_from_slice(HEADERS.as_bytes());
    bytes
}

/// The verdict `want` means for `payload`: a number is only a candidate if its request line
/// ends within the scan window.
fn want_verdict(method: Method, want: Want, payload: &[u8]) -> Verdict {
    match want {
        Number(_) if line_len(payload) > SCAN_LEN => Verdict::Pass(Truncated),
        Number(digits) => Verdict::Candidate {
            method,
            key: bcd_key(digits),
        },
        Want::Pass(reason) => Verdict::Pass(reason),
    }
}

/// Bytes up to and including the first CRLF (all of them if there is none).
fn line_len(payload: &[u8]) -> usize {
    payload
        .windows(2)
        .position(|w| w == b"\r\n")
        .map_or(payload.len(), |at| at + 2)
}

/// Classifies every payload, and fails listing every row whose verdict is not the one wanted.
fn assert_rows(method: Method, rows: impl IntoIterator<Item = (Vec<u8>, Want)>) {
    let failures: Vec<String> = rows
        .into_iter()
        .filter_map(|(payload, want)| {
            let expected = want_verdict(method, want, &payload);
            let got = classify_bytes(&payload);
            (got != expected).then(|| {
                format!(
                    "  {}\n    want {expected:?}\n    got  {got:?}",
                    payload.escape_ascii()
                )
            })
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} row(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Each Request-URI, in an INVITE with headers after it.
fn assert_uris(table: &[(&str, Want)]) {
    assert_rows(
        Method::Invite,
        table
            .iter()
            .map(|&(uri, want)| (message("INVITE", uri), want)),
    );
}

/// Each payload exactly as written.
fn assert_payloads(table: &[(&str, Want)]) {
    assert_rows(
        Method::Invite,
        table.iter().map(|&(p, want)| (p.as_bytes().to_vec(), want)),
    );
}

fn key_of(payload: &[u8]) -> RouteKey {
    match classify_bytes(payload) {
        Verdict::Candidate { key, .. } => key,
        other => panic!("{} is {other:?}, not a candidate", payload.escape_ascii()),
    }
}

#[test]
#[rustfmt::skip] // a table
fn sip_sips_and_tel_schemes_case_insensitive() {
    assert_uris(&[
        ("sip:+15550100001@example.com", Number("15550100001")),
        ("sips:+15550100001@example.com", Number("15550100001")),
        ("tel:+15550100001", Number("15550100001")),
        ("SIP:+15550100001@example.com", Number("15550100001")),
        ("Sip:+15550100001@example.com", Number("15550100001")),
        ("sIpS:+15550100001@example.com", Number("15550100001")),
        ("SIPS:+15550100001@example.com", Number("15550100001")),
        ("TEL:+15550100001", Number("15550100001")),
        ("Tel:15550100001", Number("15550100001")),
    ]);
}

#[test]
#[rustfmt::skip] // a table
fn other_schemes_are_unsupported() {
    assert_uris(&[
        ("<sip:+15550100001@example.com>", pass(UnsupportedScheme)),
        ("http://example.com/15550100001", pass(UnsupportedScheme)),
        ("soap.beep://192.0.2.103:3002", pass(UnsupportedScheme)),
        ("nobodyKnowsThisScheme:totallyopaquecontent", pass(UnsupportedScheme)),
        ("im:+15550100001@example.com", pass(UnsupportedScheme)),
        ("urn:service:sos", pass(UnsupportedScheme)),
        ("tels:+15550100001", pass(UnsupportedScheme)),
        ("sipx:+15550100001@example.com", pass(UnsupportedScheme)),
        ("si:+15550100001@example.com", pass(UnsupportedScheme)),
        ("sip+15550100001@example.com", pass(UnsupportedScheme)),
        ("s1p:+15550100001@example.com", pass(UnsupportedScheme)),
        ("+15550100001", pass(UnsupportedScheme)),
    ]);
}

#[test]
#[rustfmt::skip] // a table
fn leading_plus_literal_or_escaped() {
    assert_uris(&[
        ("sip:15550100001@example.com", Number("15550100001")),
        ("sip:+15550100001@example.com", Number("15550100001")),
        ("sip:%2B15550100001@example.com", Number("15550100001")),
        ("sip:%2b15550100001@example.com", Number("15550100001")),
        ("tel:%2B15550100001", Number("15550100001")),
        ("sip:+-15550100001@example.com", Number("15550100001")),
        // A `+` is only accepted as the very first character of the user part.
        ("sip:++15550100001@example.com", pass(NotNumber)),
        ("sip:+%2B15550100001@example.com", pass(NotNumber)),
        ("sip:%2B+15550100001@example.com", pass(NotNumber)),
        ("sip:1+5550100001@example.com", pass(NotNumber)),
        ("sip:15550100001+@example.com", pass(NotNumber)),
        ("sip:-+15550100001@example.com", pass(NotNumber)),
        ("sip:(+1)5550100001@example.com", pass(NotNumber)),
        ("sip:1%2B5550100001@example.com", pass(NotNumber)),
        ("tel:1+5550100001", pass(NotNumber)),
    ]);
}

#[test]
#[rustfmt::skip] // a table
fn visual_separators_are_ignored() {
    assert_uris(&[
        ("sip:+1-555-010-0001@example.com", Number("15550100001")),
        ("sip:+1.555.010.0001@example.com", Number("15550100001")),
        ("sip:+1(555)010-0001@example.com", Number("15550100001")),
        ("sip:(555)010-0001@example.com", Number("5550100001")),
        ("sip:1-5-5-5-0-1-0-0-0-0-1@example.com", Number("15550100001")),
        ("sip:15550100001-@example.com", Number("15550100001")),
        ("sip:1..--((555))@example.com", Number("1555")),
        ("tel:+1-555-010-0001", Number("15550100001")),
        ("tel:+1.(555).010.0001", Number("15550100001")),
        ("sip:1%2D555%2e010%280001%29@example.com", Number("15550100001")),
        // Separators alone are no user part.
        ("sip:-.()@example.com", pass(NoUser)),
        // Not visual separators.
        ("sip:1/555@example.com", pass(NotNumber)),
        ("sip:1_555@example.com", pass(NotNumber)),
        ("sip:1,555@example.com", pass(NotNumber)),
        ("sip:1[555]@example.com", pass(NotNumber)),
    ]);
}

#[test]
#[rustfmt::skip] // a table
fn uri_parameters_and_ports_after_the_host() {
    assert_uris(&[
        ("sip:+15550100001@example.com;user=phone", Number("15550100001")),
        ("sips:+15550100001@example.com;user=phone", Number("15550100001")),
        ("sip:+15550100001@example.com:5060;user=phone;transport=udp", Number("15550100001")),
        ("sip:+15550100001@192.0.2.10:5080", Number("15550100001")),
        ("sip:+15550100001@[2001:db8::1]:5060;transport=udp", Number("15550100001")),
        ("sip:+15550100001@example.com;lr;maddr=192.0.2.1", Number("15550100001")),
        ("sip:+15550100001@example.com;unknownparam", Number("15550100001")),
    ]);
}

#[test]
#[rustfmt::skip] // a table
fn bad_host_parts_are_malformed() {
    assert_uris(&[
        ("sip:+15550100001@", pass(Malformed)),
        ("sip:+15550100001@example.com?Subject=hi", pass(Malformed)),
        ("sip:+15550100001@example.com?Route=%3Csip:example.com%3E", pass(Malformed)),
        ("sip:+15550100001@<example.com>", pass(Malformed)),
        ("sip:+15550100001@example.com>", pass(Malformed)),
        ("sip:+15550100001@exa\"mple.com", pass(Malformed)),
        ("sip:+15550100001@example.com\0", pass(Malformed)),
        ("sip:+15550100001@example.com\x01", pass(Malformed)),
        ("sip:+15550100001@example.com\x1f", pass(Malformed)),
        ("sip:+15550100001@example.com\x7f", pass(Malformed)),
        ("sip:+15550100001@example.com\r\n", pass(Malformed)),
    ]);
}

#[test]
#[rustfmt::skip] // a table
fn user_and_tel_parameters_are_left_to_the_slow_path() {
    assert_uris(&[
        ("sip:15550100001;phone-context=+1@example.com;user=phone", pass(UserParameters)),
        ("sip:5550100;phone-context=example.com@example.com", pass(UserParameters)),
        ("sip:+15550100001;isub=12@example.com", pass(UserParameters)),
        ("sip:+15550100001;ext=12@example.com", pass(UserParameters)),
        ("sip:+15550100001;@example.com", pass(UserParameters)),
        ("tel:5550100;phone-context=+1", pass(UserParameters)),
        ("tel:5550100;phone-context=example.com", pass(UserParameters)),
        ("tel:+15550100001;ext=123", pass(UserParameters)),
        ("tel:+15550100001;isub=1234", pass(UserParameters)),
        ("tel:+15550100001;foo", pass(UserParameters)),
        ("tel:+1-555-010-0001;", pass(UserParameters)),
    ]);
}

#[test]
#[rustfmt::skip] // a table
fn percent_escapes_are_decoded_but_never_delimit() {
    assert_uris(&[
        ("sip:%31%35%35%35@example.com", Number("1555")),
        ("sip:%2B1555%2e0100@example.com", Number("15550100")),
        ("tel:%2b15550100001", Number("15550100001")),
        // Escaped delimiters are data, and data that is no digit.
        ("sip:1555%40example.com@example.net", pass(NotNumber)),
        ("sip:sips%3Auser%40example.com@example.net", pass(NotNumber)),
        ("sip:1555%20@example.com", pass(NotNumber)),
        ("sip:1555%3b@example.com", pass(NotNumber)),
        ("sip:1555%3Bext=1@example.com", pass(NotNumber)),
        ("sip:1555%3F@example.com", pass(NotNumber)),
        ("sip:1555%0D%0A@example.com", pass(NotNumber)),
        ("sip:1555%00@example.com", pass(NotNumber)),
        ("tel:1555%20", pass(NotNumber)),
        ("tel:1555%40example.com", pass(NotNumber)),
        // Bad escapes.
        ("sip:1555%zz@example.com", pass(Malformed)),
        ("sip:1555%4@example.com", pass(Malformed)),
        ("sip:%@example.com", pass(Malformed)),
        ("sip:%G1555@example.com", pass(Malformed)),
        ("tel:1555%", pass(Malformed)),
    ]);
}

#[test]
#[rustfmt::skip] // a table
fn methods_are_case_sensitive_and_limited() {
    let uri = "sip:+15550100001@example.com";
    let rows = [
        ("INVITE", Number("15550100001")),
        ("invite", pass(OtherMethod)),
        ("Invite", pass(OtherMethod)),
        ("INVITe", pass(OtherMethod)),
        ("ack", pass(OtherMethod)),
        ("Ack", pass(OtherMethod)),
        ("cancel", pass(OtherMethod)),
        ("Cancel", pass(OtherMethod)),
        ("OPTIONS", pass(OtherMethod)),
        ("REGISTER", pass(OtherMethod)),
        ("BYE", pass(OtherMethod)),
        ("MESSAGE", pass(OtherMethod)),
        ("INVITEX", pass(OtherMethod)),
        ("INVIT", pass(OtherMethod)),
        ("ACKNOWLEDGE", pass(OtherMethod)),
        ("XINVITE", pass(OtherMethod)),
        ("RE%47IST%45R", pass(OtherMethod)),
        ("IN%56ITE", pass(OtherMethod)),
    ];
    assert_rows(Method::Invite, rows.iter().map(|&(m, want)| (message(m, uri), want)));
    assert_payloads(&[
        ("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.1\r\n\r\n", pass(OtherMethod)),
        ("SIP/2.0 100 \r\n\r\n", pass(OtherMethod)),
        // A keep-alive CRLF before the request line.
        ("\r\nINVITE sip:+15550100001@example.com SIP/2.0\r\n", pass(OtherMethod)),
    ]);
}

#[test]
fn ack_and_cancel_share_the_invite_key() {
    let uris = [
        "sip:+15550100001@example.com",
        "sips:1-555-010-0001@example.com;user=phone",
        "tel:%2B15550100001",
        "sip:0044207946000@192.0.2.10:5060",
    ];
    for uri in uris {
        let invite = key_of(&message("INVITE", uri));
        for (name, method) in [
            ("INVITE", Method::Invite),
            ("ACK", Method::Ack),
            ("CANCEL", Method::Cancel),
        ] {
            assert_eq!(
                classify_bytes(&message(name, uri)),
                Verdict::Candidate {
                    method,
                    key: invite
                },
                "{name} {uri}"
            );
        }
    }
}

#[test]
#[rustfmt::skip] // a table
fn empty_or_missing_user_part() {
    assert_uris(&[
        ("sip:@example.com", pass(NoUser)),
        ("sips:@example.com", pass(NoUser)),
        ("sip:@", pass(NoUser)),
        // `sip:host` is NoUser only while the host is digits and separators; a named host
        // is NotNumber (see `deviations_from_the_brief`).
        ("sip:192.0.2.10", pass(NoUser)),
        // All digits, but a host: `sip:host` has no user part.
        ("sip:15550100001", pass(NoUser)),
        ("sip:+@example.com", pass(NoUser)),
        ("sip:%2B@example.com", pass(NoUser)),
        ("sip:+-@example.com", pass(NoUser)),
        ("tel:", pass(NoUser)),
        ("tel:+", pass(NoUser)),
        ("tel:-.", pass(NoUser)),
    ]);
}

#[test]
#[rustfmt::skip] // a table
fn non_numeric_users_are_not_numbers() {
    assert_uris(&[
        ("sip:alice@example.com", pass(NotNumber)),
        ("sips:bob@example.com", pass(NotNumber)),
        ("sip:user@example.com", pass(NotNumber)),
        ("sip:1555alice@example.com", pass(NotNumber)),
        ("sip:alice1555@example.com", pass(NotNumber)),
        ("sip:15550100001*1@example.com", pass(NotNumber)),
        ("sip:#15550100001@example.com", pass(NotNumber)),
        ("sip:*6715550100001@example.com", pass(NotNumber)),
        ("sip:1555:secret@example.com", pass(NotNumber)),
        ("sip:1555<@example.com", pass(NotNumber)),
        ("sip:1555\0@example.com", pass(NotNumber)),
        ("sip:\u{ff11}\u{ff12}\u{ff13}@example.com", pass(NotNumber)),
        ("sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy@example.com", pass(NotNumber)),
        ("tel:+1555-ABCD", pass(NotNumber)),
        ("tel:alice", pass(NotNumber)),
        ("tel:+15550100001@example.com", pass(NotNumber)),
        // Delimiters that are malformed in a user part.
        ("sip:15550100001?x@example.com", pass(Malformed)),
        ("sip:15550100001>@example.com", pass(Malformed)),
    ]);
}

#[test]
#[rustfmt::skip] // a table
fn at_most_fifteen_digits() {
    assert_uris(&[
        ("sip:1@example.com", Number("1")),
        ("sip:0@example.com", Number("0")),
        ("sip:123456789012345@example.com", Number("123456789012345")),
        ("sip:+123456789012345@example.com", Number("123456789012345")),
        ("sip:000000000000000@example.com", Number("000000000000000")),
        ("sip:999999999999999@example.com", Number("999999999999999")),
        ("tel:+123456789012345", Number("123456789012345")),
        ("sip:+1-234-567-890-123-45@example.com", Number("123456789012345")),
        ("sip:1234567890123456@example.com", pass(TooManyDigits)),
        ("sip:+1234567890123456@example.com", pass(TooManyDigits)),
        ("sip:0000000000000000@example.com", pass(TooManyDigits)),
        ("sip:+1-234-567-890-123-456@example.com", pass(TooManyDigits)),
        ("sip:123456789012345%36@example.com", pass(TooManyDigits)),
        ("sip:12345678901234567890123@example.com", pass(TooManyDigits)),
        ("tel:1234567890123456", pass(TooManyDigits)),
        ("tel:+1-234-567-890-123-456-789", pass(TooManyDigits)),
    ]);
}

/// Which of its faults a line is passed for is the classifier's choice; that it passes is not.
#[test]
#[rustfmt::skip] // a table
fn several_faults_pass_for_one_of_them() {
    let rows: [(&str, &[PassReason]); 6] = [
        ("sip:1234567890123456alice@example.com", &[TooManyDigits, NotNumber]),
        ("tel:12345678901234567890;phone-context=+1", &[TooManyDigits, UserParameters]),
        ("sip:1234567890123456@example.com?x=y", &[TooManyDigits, Malformed]),
        ("sip:alice;x=1@example.com", &[NotNumber, UserParameters]),
        ("sip:1555;ext=1@example.com?x", &[UserParameters, Malformed]),
        ("sip:1555%zz;x@example.com", &[Malformed, UserParameters]),
    ];
    for (uri, reasons) in rows {
        let got = classify_bytes(&message("INVITE", uri));
        assert!(reasons.iter().any(|&r| got == Verdict::Pass(r)), "{uri}: {got:?}, want one of {reasons:?}");
    }
    let got = classify_bytes(b"INVITE sip:1234567890123456@example.com SIP/7.0\r\n");
    assert!(matches!(got, Verdict::Pass(TooManyDigits | Malformed)), "{got:?}");
}

#[test]
fn leading_zeros_make_distinct_keys() {
    let spellings = ["44", "044", "0044", "00044", "0", "00", "000"];
    let keys: Vec<RouteKey> = spellings
        .iter()
        .map(|d| key_of(&message("INVITE", &format!("sip:{d}@example.com"))))
        .collect();
    for (i, (digits, key)) in spellings.iter().zip(&keys).enumerate() {
        assert_eq!(*key, bcd_key(digits), "{digits}");
        assert_eq!(key.len() as usize, digits.len(), "{digits}");
        for (other, other_key) in spellings.iter().zip(&keys).skip(i + 1) {
            assert_ne!(
                key, other_key,
                "{digits} and {other} must be different keys"
            );
        }
    }
    // A `+` is not a digit: `+0044` is `0044`, and still not `44`.
    assert_eq!(
        key_of(&message("INVITE", "tel:+0044207946000")),
        bcd_key("0044207946000")
    );
}

#[test]
fn plus_and_no_plus_give_the_same_key() {
    let plain = key_of(&message("INVITE", "sip:15550100001@example.com"));
    for uri in [
        "sip:+15550100001@example.com",
        "tel:+15550100001",
        "tel:15550100001",
        "sips:%2b1.555.010.0001@h",
    ] {
        assert_eq!(key_of(&message("INVITE", uri)), plain, "{uri}");
    }
    assert_eq!(normalize_number(b"+1 (555) 010-0001"), Ok(plain));
}

#[test]
fn candidate_keys_expose_their_digits() {
    let key = key_of(&message("INVITE", "sip:+1-555-010-0001@example.com"));
    let mut out = [0u8; 15];
    let n = key.write_digits(&mut out);
    assert_eq!(&out[..n], b"15550100001");
    assert_eq!(key.len(), 11);
    assert!(!key.is_empty());
    assert_eq!((key.digit(0), key.digit(1), key.digit(10)), (1, 5, 1));
    assert_eq!(RouteKey::from_bits(key.to_bits()), Some(key));
}

/// Every SP of a valid line doubled, or turned into a TAB: never a candidate.
#[test]
#[rustfmt::skip] // a table
fn extra_whitespace_is_never_a_candidate() {
    for valid in [line("INVITE", "sip:+15550100001@example.com;user=phone"), line("ACK", "tel:+15550100001")] {
        assert!(matches!(classify_bytes(&valid), Verdict::Candidate { .. }));
        let spaces: Vec<usize> = (0..valid.len()).filter(|&i| valid[i] == b' ').collect();
        for &at in &spaces {
            let mut doubled = valid.clone();
            doubled.insert(at, b' ');
            assert_eq!(classify_bytes(&doubled), Verdict::Pass(Malformed), "{}", doubled.escape_ascii());

            let mut tab = valid.clone();
            tab[at] = b'\t';
            // The method must be followed by SP, so a TAB there leaves no INVITE/ACK/CANCEL.
            let want = if at == spaces[0] { OtherMethod } else { Malformed };
            assert_eq!(classify_bytes(&tab), Verdict::Pass(want), "{}", tab.escape_ascii());
        }
    }
    assert_payloads(&[
        ("INVITE \tsip:+15550100001@example.com SIP/2.0\r\n", pass(Malformed)),
        ("INVITE sip:\t+15550100001@example.com SIP/2.0\r\n", pass(Malformed)),
        ("INVITE sip:+15550100001\t@example.com SIP/2.0\r\n", pass(Malformed)),
        ("INVITE sip:+15550100001@\texample.com SIP/2.0\r\n", pass(Malformed)),
        ("INVITE sip:+15550100001@example.com SIP/2.0 \r\n", pass(Malformed)),
        ("INVITE sip:+15550100001@example.com SIP/2.0\t\r\n", pass(Malformed)),
        ("INVITE sip:+15550100001@example.com  SIP/2.0  \r\n", pass(Malformed)),
        ("INVITE sip:+15550100001@example.com; lr SIP/2.0\r\n", pass(Malformed)),
        ("INVITE sip:+15550100001@ example.com SIP/2.0\r\n", pass(Malformed)),
        ("INVITE tel:+15550100001\tSIP/2.0\r\n", pass(Malformed)),
        // A SP inside a sip user part ends it as if it were a host: `sip:host`.
        ("INVITE sip:+1555 0100001@example.com SIP/2.0\r\n", pass(NoUser)),
        ("INVITE tel:+1555 0100001 SIP/2.0\r\n", pass(Malformed)),
    ]);
}

#[test]
#[rustfmt::skip] // a table
fn version_must_be_sip_2_0_then_crlf() {
    let uri = "sip:+15550100001@example.com";
    let endings = [
        (" SIP/2.0\r\n", Number("15550100001")),
        (" SIP/2.0\r\n\r\n", Number("15550100001")),
        (" SIP/7.0\r\n", pass(Malformed)),
        (" SIP/2.1\r\n", pass(Malformed)),
        (" SIP/2.00\r\n", pass(Malformed)),
        (" SIP/20\r\n\r\n", pass(Malformed)),
        (" sip/2.0\r\n", pass(Malformed)),
        (" Sip/2.0\r\n", pass(Malformed)),
        (" HTTP/1.1\r\n", pass(Malformed)),
        (" SIP/2.0 \r\n", pass(Malformed)),
        (" SIP/2.0\r\r\n", pass(Malformed)),
        (" SIP/2.0\n\r\n", pass(Malformed)),
        // Bare LF, or no line end at all, with more bytes following.
        (" SIP/2.0\nVia: x\r\n", pass(Malformed)),
        (" SIP/2.0\rVia: x\r\n", pass(Malformed)),
        (" SIP/2.0Via: x\r\n", pass(Malformed)),
        // ... or at the very end of the payload: the line may go on.
        (" SIP/2.0", pass(Truncated)),
        (" SIP/2.0\r", pass(Truncated)),
        (" SIP/2.0\n", pass(Truncated)),
        (" SIP/2.", pass(Truncated)),
        (" ", pass(Truncated)),
    ];
    let rows = |scheme_uri: &'static str| {
        endings.iter().map(move |&(end, want)| (format!("INVITE {scheme_uri}{end}").into_bytes(), want))
    };
    assert_rows(Method::Invite, rows(uri).chain(rows("tel:+15550100001")));
}

#[test]
fn headers_after_the_request_line_are_ignored() {
    let valid = line("INVITE", "sip:+15550100001@example.com;user=phone");
    let want = classify_bytes(&valid);
    assert_eq!(
        want,
        Verdict::Candidate {
            method: Method::Invite,
            key: bcd_key("15550100001")
        }
    );
    let tails: [&[u8]; 6] = [
        b"",
        b"\r\n",
        HEADERS.as_bytes(),
        b"INVITE sip:999@example.com SIP/2.0\r\nTo: <tel:+4420794600>\r\n\r\n",
        b"\0\0\0\x07\x7f\xff\xfe garbage \r\n\t",
        &[0xff; 2000],
    ];
    for tail in tails {
        let payload = [valid.as_slice(), tail].concat();
        assert_eq!(
            classify_bytes(&payload),
            want,
            "tail {}",
            tail.escape_ascii()
        );
    }
    // Only the first line counts: a request that is no candidate stays one whatever follows
    // (RFC 4475 dblreq: a REGISTER then bytes that look like an INVITE).
    for first in [
        line("REGISTER", "sip:example.com"),
        line("INVITE", "sip:alice@example.com"),
    ] {
        let payload = [first.as_slice(), &valid].concat();
        assert!(
            matches!(classify_bytes(&payload), Verdict::Pass(_)),
            "{}",
            payload.escape_ascii()
        );
    }
}

/// The message with a host padded so that the request line is exactly `len` bytes.
fn line_of_len(len: usize) -> Vec<u8> {
    let fixed = line("INVITE", "sip:+15550100001@.example.com").len();
    let host = "a".repeat(len.checked_sub(fixed).expect("a longer line"));
    let bytes = line("INVITE", &format!("sip:+15550100001@{host}.example.com"));
    assert_eq!(bytes.len(), len);
    bytes
}

#[test]
fn request_line_must_end_within_the_scan_window() {
    let fits = line_of_len(SCAN_LEN);
    assert_eq!(key_of(&fits), bcd_key("15550100001"));
    assert_eq!(
        key_of(&[fits.as_slice(), HEADERS.as_bytes()].concat()),
        bcd_key("15550100001")
    );

    for len in [SCAN_LEN + 1, SCAN_LEN + 2, SCAN_LEN + 10, 400] {
        let long = line_of_len(len);
        assert_eq!(
            classify_bytes(&long),
            Verdict::Pass(Truncated),
            "line of {len} bytes"
        );
        let with_headers = [long.as_slice(), HEADERS.as_bytes()].concat();
        assert_eq!(
            classify_bytes(&with_headers),
            Verdict::Pass(Truncated),
            "line of {len} bytes"
        );
    }
    // Long in the user part or in a tel number, without too many digits.
    let separators = "-".repeat(SCAN_LEN);
    assert_payloads(&[
        (
            &format!("INVITE sip:1{separators}@example.com SIP/2.0\r\n"),
            pass(Truncated),
        ),
        (
            &format!("INVITE tel:+1{separators}5 SIP/2.0\r\n"),
            pass(Truncated),
        ),
        (
            &format!("INVITE sip:1555@example.com;x={separators} SIP/2.0\r\n"),
            pass(Truncated),
        ),
    ]);
}

/// Every proper prefix of a valid line is a pass, and `Truncated` once the scheme is read.
///
/// A cut inside the method or the scheme is reported as the method or scheme it fails to
/// be (`OtherMethod`, `UnsupportedScheme`); see the report for this deviation from "always
/// Truncated". Only payloads shorter than ~12 bytes can be cut there.
#[test]
fn every_prefix_of_a_valid_line_passes() {
    let lines = [
        message("INVITE", "sip:+1-555-010-0001@gw.example.net;user=phone"),
        message("ACK", "tel:%2B15550100001"),
        message("CANCEL", "sips:15550100001@[2001:db8::1]"),
        line_of_len(SCAN_LEN),
    ];
    for full in lines {
        let end = line_len(&full);
        let user = full.iter().position(|&c| c == b':').expect("a scheme") + 1;
        assert!(matches!(
            classify_bytes(&full[..end]),
            Verdict::Candidate { .. }
        ));
        for cut in 0..end {
            let prefix = &full[..cut];
            let got = classify_bytes(prefix);
            let ok = if cut >= user {
                got == Verdict::Pass(Truncated)
            } else {
                matches!(
                    got,
                    Verdict::Pass(OtherMethod | UnsupportedScheme | Truncated)
                )
            };
            assert!(
                ok,
                "prefix {} of {cut} bytes: {got:?}",
                prefix.escape_ascii()
            );
        }
    }
}

#[test]
fn classify_reads_only_its_window_and_len() {
    let valid = message("INVITE", "sip:+15550100001@example.com");
    let line_len = line("INVITE", "sip:+15550100001@example.com").len();
    let want = classify_bytes(&valid);

    // A bigger window reads the same line; bytes past `len` are not looked at.
    let mut big = [0xa5u8; 512];
    big[..valid.len()].copy_from_slice(&valid);
    assert_eq!(classify(&big, valid.len()), want);
    assert_eq!(classify(&big, line_len), want);
    assert_eq!(classify(&big, line_len - 1), Verdict::Pass(Truncated));
    assert_eq!(classify(&big, 0), Verdict::Pass(OtherMethod));

    // `len` beyond the window is clamped to it.
    let mut small = [0u8; 32];
    small.copy_from_slice(&valid[..32]);
    assert_eq!(classify(&small, usize::MAX), Verdict::Pass(Truncated));
    assert_eq!(classify(&small, valid.len()), Verdict::Pass(Truncated));
    // The URI ends within a 40-byte window, " SIP/2.0\r\n" does not.
    let mut straddling = [0u8; 40];
    straddling.copy_from_slice(&valid[..40]);
    for len in [40, 45, valid.len(), usize::MAX] {
        assert_eq!(
            classify(&straddling, len),
            Verdict::Pass(Truncated),
            "len {len}"
        );
    }
    let exact: [u8; 45] = valid[..45].try_into().expect("45 bytes");
    assert_eq!(line_len, 45);
    assert_eq!(classify(&exact, usize::MAX), want);

    // A line that fits a bigger window than SCAN_LEN but not SCAN_LEN itself.
    let long = line_of_len(300);
    let mut window = [0u8; 300];
    window.copy_from_slice(&long);
    assert!(matches!(classify(&window, 300), Verdict::Candidate { .. }));
    assert_eq!(classify_bytes(&long), Verdict::Pass(Truncated));
}

const ALL_REASONS: [PassReason; 8] = [
    OtherMethod,
    UnsupportedScheme,
    NoUser,
    NotNumber,
    TooManyDigits,
    UserParameters,
    Malformed,
    Truncated,
];

/// The counter each reason is meant to land in, written as the spec, matched exhaustively
/// so that a new reason does not compile without a decision here.
fn counter_for(reason: PassReason) -> Counter {
    match reason {
        OtherMethod => Counter::OtherMethod,
        Malformed => Counter::Malformed,
        UnsupportedScheme | NoUser | NotNumber | TooManyDigits | UserParameters | Truncated => {
            Counter::NotNumber
        }
    }
}

#[test]
fn pass_reasons_map_to_their_counters() {
    for reason in ALL_REASONS {
        let counter = reason.counter();
        assert_eq!(counter, counter_for(reason), "{reason:?}");
        assert!((counter as u32) < Counter::COUNT);
        assert_eq!(Counter::ALL[counter as usize], counter);
        assert!(
            !matches!(counter, Counter::Hit | Counter::Miss),
            "{reason:?} is no pass"
        );
    }
}

#[test]
#[rustfmt::skip] // a table
fn every_pass_reason_is_reachable() {
    let examples = [
        (OtherMethod, "OPTIONS sip:+15550100001@example.com SIP/2.0\r\n"),
        (UnsupportedScheme, "INVITE http://example.com SIP/2.0\r\n"),
        (NoUser, "INVITE sip:@example.com SIP/2.0\r\n"),
        (NotNumber, "INVITE sip:alice@example.com SIP/2.0\r\n"),
        (TooManyDigits, "INVITE tel:+1234567890123456 SIP/2.0\r\n"),
        (UserParameters, "INVITE tel:5550100;phone-context=+1 SIP/2.0\r\n"),
        (Malformed, "INVITE sip:+15550100001@example.com SIP/7.0\r\n"),
        (Truncated, "INVITE sip:+15550100001@example.com SIP/2"),
    ];
    for reason in ALL_REASONS {
        let (_, payload) = examples.iter().find(|(r, _)| *r == reason).expect("an example per reason");
        assert_eq!(classify_bytes(payload.as_bytes()), Verdict::Pass(reason), "{payload:?}");
    }
}

/// Where the classifier answers a pass, but with another reason than the brief names. None
/// of them can turn into a candidate; they only move a packet between `STATS` counters
/// (or not at all: `NoUser` and `NotNumber` share one). Flip a row when the classifier
/// changes.
#[test]
#[rustfmt::skip] // a table
fn deviations_from_the_brief() {
    assert_payloads(&[
        // Brief: extra whitespace is Malformed or Truncated. A leading SP or TAB, or a TAB
        // after the method, leaves no `INVITE `/`ACK `/`CANCEL ` at offset 0.
        (" INVITE sip:+15550100001@example.com SIP/2.0\r\n", pass(OtherMethod)),
        ("\tINVITE sip:+15550100001@example.com SIP/2.0\r\n", pass(OtherMethod)),
        ("INVITE\tsip:+15550100001@example.com SIP/2.0\r\n", pass(OtherMethod)),
        // Brief: `sip:host` with no user is NoUser. The user part is read left to right and
        // the first letter of a host name stops it.
        ("INVITE sip:example.com SIP/2.0\r\n", pass(NotNumber)),
        ("INVITE sips:example.com:5061 SIP/2.0\r\n", pass(NotNumber)),
        // Brief: a line not ending within the payload is Truncated. A cut inside the method
        // or scheme is judged as the method or scheme it fails to be.
        ("INV", pass(OtherMethod)),
        ("INVITE si", pass(UnsupportedScheme)),
        ("", pass(OtherMethod)),
    ]);
}
