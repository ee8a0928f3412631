//! `classify_bytes` and `normalize_number` on arbitrary bytes: no panic, and the invariants
//! the XDP program relies on.
#![no_main]

use fastpath_common::{
    Method, PassReason, RouteKey, SCAN_LEN, Verdict, classify, classify_bytes, normalize_number,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check_classify(data);
    check_normalize(data);
});

fn check_classify(data: &[u8]) {
    let verdict = classify_bytes(data);

    // Only the window counts: not the bytes past it, nor stale bytes in it past `len`.
    let len = data.len().min(SCAN_LEN);
    assert_eq!(classify_bytes(&data[..len]), verdict);
    let mut head = [0xa5u8; SCAN_LEN];
    head[..len].copy_from_slice(&data[..len]);
    assert_eq!(classify(&head, len), verdict);
    assert_eq!(classify(&head, usize::MAX), classify(&head, SCAN_LEN));

    // A smaller window that holds the whole payload decides the same.
    if data.len() <= 64 {
        let mut small = [0u8; 64];
        small[..data.len()].copy_from_slice(data);
        assert_eq!(classify(&small, data.len()), verdict);
    }

    if let Verdict::Candidate { method, key } = verdict {
        assert_eq!(RouteKey::from_bits(key.to_bits()), Some(key));
        let name: &[u8] = match method {
            Method::Invite => b"INVITE ",
            Method::Ack => b"ACK ",
            Method::Cancel => b"CANCEL ",
        };
        assert!(data.starts_with(name));
        // The request line ends within the window with exactly " SIP/2.0\r\n", and is
        // the first line.
        let end = data.windows(2).position(|w| w == b"\r\n").expect("a CRLF") + 2;
        assert!(end <= SCAN_LEN);
        assert!(data[..end].ends_with(b" SIP/2.0\r\n"));
        assert!(
            !data[..end - 2]
                .iter()
                .any(|&c| c == b'\t' || c == b'\n' || c == b'\r')
        );
        // Without its LF, the same line is not yet a candidate.
        assert_eq!(
            classify_bytes(&data[..end - 1]),
            Verdict::Pass(PassReason::Truncated)
        );
    }
}

fn check_normalize(data: &[u8]) {
    if let Ok(key) = normalize_number(data) {
        assert_eq!(RouteKey::from_bits(key.to_bits()), Some(key));
        let mut out = [0u8; 15];
        let n = key.write_digits(&mut out);
        assert!(
            data.iter()
                .copied()
                .filter(u8::is_ascii_digit)
                .eq(out[..n].iter().copied())
        );
    }
}
