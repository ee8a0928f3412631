//! The XDP program against the host build of the same classifier, on well over 100 000
//! request lines: generated ones (methods, schemes in any case, numbers with `+`, `%2B`,
//! separators, 0-18 digits, hosts, parameters) and byte-mutated variants of them.
//!
//! Each line becomes the payload of a UDP datagram to port 5060 and runs through the
//! program with `BPF_PROG_TEST_RUN`. The counter that moved in the kernel must be the one
//! `fastpath_common::classify_bytes` predicts on the host: a registered candidate reaches
//! the FIB lookup (which fails outside a topology: FibFailed), an unregistered one is a
//! Miss, a pass is counted under its reason. Needs root; does not skip.
//!
//! The seed is fixed (printed); set FP_DIFF_SEED to replay another one.

mod common;

use std::{
    collections::{BTreeMap, HashSet},
    fmt::Write as _,
    time::Instant,
};

use anyhow::{Result, ensure};
use common::*;
use fastpath::config::Config;
use fastpath_common::{Counter, Method, PassReason, RouteKey, SCAN_LEN, Verdict, classify_bytes};
use fastpath_tests::FrameSpec;

const SEED: u64 = 0xfa57_9a7b_2026_1123;
const GENERATED: usize = 75_000;
const MUTATED: usize = 75_000;
/// Every this-many packets goes over IPv6 (where every registered peer is IPv4: a
/// registered candidate is then PeerUnavailable).
const IPV6_EVERY: usize = 8;

/// Numbers of every shape: short, 15 digits, leading zeros. All at one IPv4 peer.
const REGISTERED: [&str; 7] = [
    "15550100001",
    "0044207946001",
    "123456789012345",
    "5",
    "000",
    "4930123456",
    "911",
];

fn config() -> Config {
    let mut text = String::from("[[peers]]\nname = \"pbx\"\naddress = \"198.51.100.2:5060\"\n");
    for number in REGISTERED {
        writeln!(text, "[[routes]]\nnumber = \"{number}\"\npeer = \"pbx\"")
            .expect("write to String");
    }
    Config::parse(&text).expect("the differential config parses")
}

const METHODS: [&str; 4] = ["INVITE", "INVITE", "ACK", "CANCEL"];
/// Drawn for one line in six.
const OTHER_METHODS: [&str; 8] = [
    "OPTIONS", "BYE", "REGISTER", "invite", "Ack", "INVITEX", "SIP/2.0", "",
];
const OTHER_SCHEMES: [&str; 6] = ["http", "im", "sipx", "si", "tel2", "urn"];
const HOSTS: [&str; 9] = [
    "192.0.2.1",
    "gw.example.net",
    "[2001:db8:c::1]",
    "example.com",
    "h",
    "198.51.100.77",
    "a.b",
    "GW.EXAMPLE",
    "x-y_z~",
];
const HOST_PARAMS: [&str; 6] = [
    ":5060",
    ":5080",
    ";transport=udp",
    ";lr",
    ";user=phone",
    ":5060;transport=tcp",
];
const USER_PARAMS: [&str; 5] = [
    ";phone-context=+1",
    ";ext=12",
    ";isub=1",
    ";user=phone",
    ";",
];
const VERSIONS: [&str; 9] = [
    " SIP/2.0\n",
    "  SIP/2.0\r\n",
    " SIP/3.0\r\n",
    " sip/2.0\r\n",
    " SIP/2.0 \r\n",
    " SIP/2.0",
    "\r\n",
    " SIP/2.0\r",
    "\tSIP/2.0\r\n",
];
const SEPARATORS: [&str; 7] = ["-", ".", "(", ")", "%2D", "%2e", " "];
/// Bytes with a meaning somewhere in a request line.
const INTERESTING: [u8; 28] = [
    b' ', b'\t', b'\r', b'\n', b'@', b';', b'%', b'+', b'-', b'.', b'(', b')', b'?', b'<', b'>',
    b'"', b':', 0, 0x7f, 0xff, 0x80, b'A', b'a', b'0', b'9', b'2', b'B', b'/',
];

fn random_case(rng: &mut Rng, text: &str) -> String {
    text.chars()
        .map(|c| {
            if rng.chance(50) {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

/// The digits of a dialed number: often a registered one, otherwise 0-18 random digits.
fn digits(rng: &mut Rng) -> String {
    if rng.chance(40) {
        return rng.pick(&REGISTERED).to_owned();
    }
    let len = rng.below(19);
    (0..len)
        .map(|i| {
            if i == 0 && rng.chance(15) {
                '0'
            } else {
                char::from(b'0' + rng.below(10) as u8)
            }
        })
        .collect()
}

/// The user part: `+` or `%2B`, digits with separators and escapes, sometimes a stray
/// letter or parameter.
fn user_part(rng: &mut Rng) -> String {
    let mut out = String::new();
    match rng.below(20) {
        0..=8 => out.push('+'),
        9 => out.push_str("%2B"),
        10 => out.push_str("%2b"),
        11 => out.push_str("++"),
        _ => {}
    }
    for d in digits(rng).chars() {
        if rng.chance(8) {
            out.push_str(rng.pick(&SEPARATORS));
        }
        if rng.chance(3) {
            write!(out, "%3{d}").expect("write to String");
        } else {
            out.push(d);
        }
    }
    if rng.chance(3) {
        let at = rng.below(out.len() + 1);
        out.insert(at, char::from(b'a' + rng.below(26) as u8));
    }
    if rng.chance(3) {
        out.push('+');
    }
    if rng.chance(7) {
        out.push_str(rng.pick(&USER_PARAMS));
    }
    out
}

/// One request line (well formed most of the time) and a header section.
fn generated(rng: &mut Rng, serial: usize) -> Vec<u8> {
    let mut line = String::from(if rng.chance(16) {
        rng.pick(&OTHER_METHODS)
    } else {
        rng.pick(&METHODS)
    });
    line.push_str(match rng.below(40) {
        0 => "  ",
        1 => "\t",
        _ => " ",
    });
    let scheme = match rng.below(20) {
        0..=9 => "sip",
        10..=12 => "sips",
        13..=18 => "tel",
        _ => rng.pick(&OTHER_SCHEMES),
    };
    line.push_str(&random_case(rng, scheme));
    line.push(':');
    line.push_str(&user_part(rng));
    if scheme.starts_with("sip") && rng.chance(95) {
        line.push('@');
        if rng.chance(5) {
            // A long host: the line may no longer end within the scan window.
            line.extend((0..10 + rng.below(50)).map(|_| char::from(b'a' + rng.below(26) as u8)));
        } else if !rng.chance(3) {
            line.push_str(rng.pick(&HOSTS));
        }
        if rng.chance(25) {
            line.push_str(rng.pick(&HOST_PARAMS));
        }
    } else if scheme == "tel" && rng.chance(8) {
        line.push_str(rng.pick(&USER_PARAMS));
    }
    line.push_str(if rng.chance(90) {
        " SIP/2.0\r\n"
    } else {
        rng.pick(&VERSIONS)
    });
    if rng.chance(85) {
        write!(
            line,
            "Via: SIP/2.0/UDP 192.0.2.2:5062;branch=z9hG4bK-{serial}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        .expect("write to String");
    }
    line.into_bytes()
}

/// One to four byte edits, mostly within the scan window.
fn mutated(rng: &mut Rng, mut bytes: Vec<u8>) -> Vec<u8> {
    for _ in 0..1 + rng.below(4) {
        let span = if rng.chance(85) {
            bytes.len().min(SCAN_LEN + 8)
        } else {
            bytes.len()
        };
        let at = rng.below(span.max(1));
        let value = if rng.chance(60) {
            rng.pick(&INTERESTING)
        } else {
            rng.byte()
        };
        match rng.below(7) {
            0 if at < bytes.len() => bytes[at] ^= 1 << rng.below(8),
            1 if at < bytes.len() => bytes[at] = value,
            2 => bytes.insert(at.min(bytes.len()), value),
            3 if at < bytes.len() => {
                bytes.remove(at);
            }
            4 => bytes.truncate(at),
            5 if at < bytes.len() => {
                // Repeat a short span (duplicated digits, separators, "SIP/").
                let end = (at + 1 + rng.below(6)).min(bytes.len());
                let span: Vec<u8> = bytes[at..end].to_vec();
                bytes.splice(at..at, span);
            }
            // Flip the case of a letter ("sip" / "SIP", "INVITE" / "iNVITE").
            _ if at < bytes.len() && bytes[at].is_ascii_alphabetic() => bytes[at] ^= 0x20,
            _ if at < bytes.len() => bytes[at] = value,
            _ => bytes.push(value),
        }
    }
    bytes
}

/// What the host classifier says, in words, and the counter the kernel must move.
fn expected(payload: &[u8], registered: &HashSet<RouteKey>, v6: bool) -> (String, Counter) {
    match classify_bytes(payload) {
        Verdict::Candidate { method, key } if registered.contains(&key) => {
            let counter = if v6 {
                Counter::PeerUnavailable
            } else {
                Counter::FibFailed
            };
            (format!("candidate {method:?}, registered"), counter)
        }
        Verdict::Candidate { method, .. } => {
            (format!("candidate {method:?}, unregistered"), Counter::Miss)
        }
        Verdict::Pass(reason) => (format!("pass {reason:?}"), reason.counter()),
    }
}

fn escaped(bytes: &[u8]) -> String {
    bytes
        .iter()
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect()
}

#[test]
fn xdp_agrees_with_the_host_classifier() -> Result<()> {
    let seed = std::env::var("FP_DIFF_SEED")
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .unwrap_or(SEED);
    eprintln!("differential: seed {seed:#x} (FP_DIFF_SEED to replay another, hex)");
    let config = config();
    let registered: HashSet<RouteKey> = config.routes.iter().map(|r| r.key).collect();
    let mut xdp = Harness::with_config("diff", &config)?;
    // Nothing may be redirected anywhere: a registered candidate ends at the FIB.
    xdp.set_egress(&[])?;

    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let mut kernel_time = std::time::Duration::ZERO;
    let mut by_counter: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut by_verdict: BTreeMap<String, u64> = BTreeMap::new();
    let mut disagreements: Vec<String> = Vec::new();
    let mut before = xdp.counters()?;
    let total = GENERATED + MUTATED;
    for serial in 0..total {
        let line = generated(&mut rng, serial);
        let payload = if serial < GENERATED {
            line
        } else {
            mutated(&mut rng, line)
        };
        let v6 = serial % IPV6_EVERY == IPV6_EVERY - 1;
        let frame = build(&if v6 {
            FrameSpec::udp(caller_v6(), gw_v6(SIP_PORT), payload.clone())
        } else {
            FrameSpec::udp(caller_v4(), gw_v4(SIP_PORT), payload.clone())
        });
        let (verdict, want) = expected(&payload, &registered, v6);

        let t = Instant::now();
        let outcome = xdp.run(&frame, None)?;
        kernel_time += t.elapsed();
        let after = xdp.counters()?;
        let moved = single_delta(&before, &after);
        before = after;

        let agrees = matches!(moved, Ok(c) if c == want)
            && outcome.action == XDP_PASS
            && outcome.frame == frame;
        if !agrees {
            disagreements.push(format!(
                "#{serial} ({}) host: {verdict} -> {want:?}; kernel: {moved:?}, action {}, frame {}: \"{}\"",
                if v6 { "IPv6" } else { "IPv4" },
                outcome.action,
                if outcome.frame == frame { "unchanged" } else { "CHANGED" },
                escaped(&payload[..payload.len().min(SCAN_LEN + 16)]),
            ));
        }
        *by_counter.entry(want.name()).or_default() += 1;
        *by_verdict.entry(verdict).or_default() += 1;
    }
    let elapsed = started.elapsed();

    eprintln!(
        "differential: {total} lines ({GENERATED} generated, {MUTATED} mutated; every {IPV6_EVERY}th over IPv6) \
         in {elapsed:.2?} ({:.1} us/line, of which BPF_PROG_TEST_RUN {:.1} us)",
        elapsed.as_secs_f64() * 1e6 / total as f64,
        kernel_time.as_secs_f64() * 1e6 / total as f64,
    );
    eprintln!("differential: expected counters: {by_counter:?}");
    for (verdict, n) in &by_verdict {
        eprintln!("differential:   {n:>7}  {verdict}");
    }
    eprintln!("differential: disagreements: {}", disagreements.len());
    for d in disagreements.iter().take(20) {
        eprintln!("  {d}");
    }
    ensure!(
        disagreements.is_empty(),
        "{} disagreements between XDP and the host classifier",
        disagreements.len()
    );

    // The generator must have reached every outcome, or the agreement proves little.
    let count = |v: &str| by_verdict.get(v).copied().unwrap_or(0);
    for reason in [
        PassReason::OtherMethod,
        PassReason::UnsupportedScheme,
        PassReason::NoUser,
        PassReason::NotNumber,
        PassReason::TooManyDigits,
        PassReason::UserParameters,
        PassReason::Malformed,
        PassReason::Truncated,
    ] {
        let n = count(&format!("pass {reason:?}"));
        ensure!(n >= 100, "only {n} lines passed as {reason:?}");
    }
    for method in [Method::Invite, Method::Ack, Method::Cancel] {
        for which in ["registered", "unregistered"] {
            let n = count(&format!("candidate {method:?}, {which}"));
            ensure!(n >= 500, "only {n} {which} {method:?} candidates");
        }
    }
    ensure!(total >= 100_000);
    Ok(())
}
