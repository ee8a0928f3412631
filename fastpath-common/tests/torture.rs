//! The RFC 4475 torture messages in `shared/sip-torture/` through the classifier.
//!
//! `expected.tsv` says, per message, which number a gateway should route it by (`-`: none).
//! The data set is required: a missing or altered file fails the tests, it is not skipped.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use fastpath_common::{RouteKey, Verdict, classify_bytes, normalize_number};

const TORTURE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/sip-torture");

/// One row of `expected.tsv`.
struct Case {
    path: String,
    /// `valid` or `invalid`, as RFC 4475 files the message.
    verdict: String,
    /// The dialed number the Request-URI carries, if any.
    number: Option<RouteKey>,
    note: String,
    bytes: Vec<u8>,
}

fn dir() -> PathBuf {
    let dir = Path::new(TORTURE_DIR);
    assert!(
        dir.is_dir(),
        "the RFC 4475 torture messages must be at {} (shared/sip-torture beside the repo)",
        dir.display()
    );
    dir.to_path_buf()
}

fn read(relative: &str) -> Vec<u8> {
    let path = dir().join(relative);
    fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn cases() -> Vec<Case> {
    let tsv = String::from_utf8(read("expected.tsv")).expect("expected.tsv is UTF-8");
    let cases: Vec<Case> = tsv
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let fields: Vec<&str> = l.split('\t').collect();
            let [path, verdict, number, note] = fields[..] else {
                panic!("expected.tsv: not 4 tab-separated fields: {l:?}");
            };
            assert!(
                matches!(verdict, "valid" | "invalid"),
                "expected.tsv: verdict {verdict:?}"
            );
            let number = (number != "-").then(|| {
                normalize_number(number.as_bytes())
                    .unwrap_or_else(|e| panic!("expected.tsv: {path}: number {number:?}: {e}"))
            });
            Case {
                path: path.to_owned(),
                verdict: verdict.to_owned(),
                number,
                note: note.to_owned(),
                bytes: read(path),
            }
        })
        .collect();
    assert!(!cases.is_empty(), "expected.tsv lists no message");
    cases
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Fails listing every message for which `check` returned a complaint.
fn assert_all(cases: &[Case], check: impl Fn(&Case) -> Option<String>) {
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| check(c).map(|why| format!("  {}: {why}\n    ({})", c.path, c.note)))
        .collect();
    assert!(
        failures.is_empty(),
        "{} message(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_message_is_listed_and_intact() {
    let cases = cases();
    let listed: BTreeSet<&str> = cases.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(
        listed.len(),
        cases.len(),
        "expected.tsv lists a message twice"
    );

    let on_disk: BTreeSet<String> = fs::read_dir(dir().join("rfc4475"))
        .expect("the rfc4475 folder")
        .map(|e| {
            format!(
                "rfc4475/{}",
                e.expect("a folder entry").file_name().to_string_lossy()
            )
        })
        .collect();
    let on_disk: BTreeSet<&str> = on_disk.iter().map(String::as_str).collect();
    assert_eq!(listed, on_disk, "expected.tsv and rfc4475/ disagree");

    let sums = String::from_utf8(read("SHA256SUMS")).expect("SHA256SUMS is UTF-8");
    let sums: Vec<(&str, &str)> = sums
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.split_once("  ")
                .unwrap_or_else(|| panic!("SHA256SUMS line {l:?}"))
        })
        .map(|(sum, path)| (sum, path.trim_start_matches('*')))
        .collect();
    let summed: BTreeSet<&str> = sums.iter().map(|&(_, p)| p).collect();
    assert!(
        listed.is_subset(&summed),
        "SHA256SUMS misses {:?}",
        listed.difference(&summed)
    );
    assert_all(&cases, |case| {
        let (want, _) = sums.iter().find(|&&(_, p)| p == case.path)?;
        let got = hex(&sha256(&case.bytes));
        (got != *want).then(|| format!("sha256 {got}, SHA256SUMS says {want}"))
    });
}

/// No RFC 4475 Request-URI carries a telephone number, so none may be routed; a message
/// whose row named a number would have to be routed by exactly that one.
#[test]
fn messages_are_routed_only_by_their_listed_number() {
    assert_all(&cases(), |case| {
        match (classify_bytes(&case.bytes), case.number) {
            (Verdict::Pass(_), None) => None,
            (Verdict::Candidate { key, .. }, Some(want)) if key == want => None,
            (got, want) => Some(format!(
                "{} message: got {got:?}, want {want:?}",
                case.verdict
            )),
        }
    });
}

/// Cut anywhere (a datagram truncated by the sender, or a short XDP window), a message
/// without a number still never routes.
#[test]
fn no_prefix_of_a_message_is_routed() {
    assert_all(&cases(), |case| {
        if case.number.is_some() {
            return None;
        }
        (0..=case.bytes.len()).find_map(|cut| match classify_bytes(&case.bytes[..cut]) {
            Verdict::Pass(_) => None,
            got => Some(format!("its first {cut} bytes give {got:?}")),
        })
    });
}

#[test]
fn sha256_known_answers() {
    let vectors: [(&[u8], &str); 3] = [
        (
            b"",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ),
        (
            b"abc",
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        ),
        (
            b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
        ),
    ];
    for (input, want) in vectors {
        assert_eq!(hex(&sha256(input)), want, "{}", input.escape_ascii());
    }
}

/// SHA-256 (FIPS 180-4), enough to check `SHA256SUMS` without a dependency.
fn sha256(data: &[u8]) -> [u8; 32] {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut state: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];

    let mut message = data.to_vec();
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&(data.len() as u64 * 8).to_be_bytes());

    for block in message.chunks_exact(64) {
        let mut w = [0u32; 64];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = state;
        for (&k, &w) in K.iter().zip(&w) {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = h
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(k)
                .wrapping_add(w);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            (h, g, f, e, d, c, b, a) = (g, f, e, d.wrapping_add(t1), c, b, a, t1.wrapping_add(t2));
        }
        for (s, v) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
            *s = s.wrapping_add(v);
        }
    }

    let mut digest = [0u8; 32];
    for (out, s) in digest.chunks_exact_mut(4).zip(state) {
        out.copy_from_slice(&s.to_be_bytes());
    }
    digest
}
