//! The classifier's rules written the plainest way: one byte at a time over a slice, no
//! words, no seeded counters. The crate's word-at-a-time classifier must agree with it on
//! every input.

use fastpath_common::{Method, PassReason, SCAN_LEN, Verdict, normalize_number};

type Parsed<T> = Result<T, PassReason>;

pub fn classify(payload: &[u8]) -> Verdict {
    let line = &payload[..payload.len().min(SCAN_LEN)];
    match parse(line) {
        Ok((method, digits)) => {
            if digits.len() > 15 {
                return Verdict::Pass(PassReason::TooManyDigits);
            }
            let key = normalize_number(&digits).expect("1 to 15 digits");
            Verdict::Candidate { method, key }
        }
        Err(reason) => Verdict::Pass(reason),
    }
}

fn at(line: &[u8], i: usize) -> Parsed<u8> {
    line.get(i).copied().ok_or(PassReason::Truncated)
}

fn has(line: &[u8], i: usize, text: &[u8], fold: bool) -> bool {
    line.get(i..i + text.len()).is_some_and(|got| {
        if fold {
            got.eq_ignore_ascii_case(text)
        } else {
            got == text
        }
    })
}

fn parse(line: &[u8]) -> Parsed<(Method, Vec<u8>)> {
    let (method, mut i) = if has(line, 0, b"INVITE ", false) {
        (Method::Invite, 7)
    } else if has(line, 0, b"ACK ", false) {
        (Method::Ack, 4)
    } else if has(line, 0, b"CANCEL ", false) {
        (Method::Cancel, 7)
    } else {
        return Err(PassReason::OtherMethod);
    };
    let sip = if has(line, i, b"sip:", true) {
        i += 4;
        true
    } else if has(line, i, b"sips:", true) {
        i += 5;
        true
    } else if has(line, i, b"tel:", true) {
        i += 4;
        false
    } else if matches!(at(line, i)?, b' ' | b'\t' | b'\r' | b'\n') {
        return Err(PassReason::Malformed);
    } else {
        return Err(PassReason::UnsupportedScheme);
    };

    let mut digits = Vec::new();
    let mut seen = 0;
    let end = loop {
        let raw = at(line, i)?;
        let (c, escaped) = if raw == b'%' {
            let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
            let hi = hex(at(line, i + 1)?).ok_or(PassReason::Malformed)?;
            let lo = hex(at(line, i + 2)?).ok_or(PassReason::Malformed)?;
            i += 3;
            (hi << 4 | lo, true)
        } else {
            i += 1;
            (raw, false)
        };
        seen += 1;
        match c {
            b'0'..=b'9' => digits.push(c),
            b'+' if seen == 1 => {}
            b'-' | b'.' | b'(' | b')' => {}
            b'@' if !escaped && sip => {
                if digits.is_empty() {
                    return Err(PassReason::NoUser);
                }
                if at(line, i)? == b' ' {
                    return Err(PassReason::Malformed);
                }
                break host(line, i)?;
            }
            b' ' if !escaped => {
                if sip || digits.is_empty() {
                    return Err(PassReason::NoUser);
                }
                break i - 1;
            }
            b';' if !escaped => return Err(PassReason::UserParameters),
            b'\t' | b'\r' | b'\n' | b'?' | b'>' if !escaped => {
                return Err(PassReason::Malformed);
            }
            _ => return Err(PassReason::NotNumber),
        }
    };
    if !has(line, end, b" SIP/2.0\r\n", false) {
        return Err(if end + 10 > line.len() {
            PassReason::Truncated
        } else {
            PassReason::Malformed
        });
    }
    Ok((method, digits))
}

/// The index of the SP that ends the host part starting at `i`.
fn host(line: &[u8], mut i: usize) -> Parsed<usize> {
    loop {
        match at(line, i)? {
            b' ' => return Ok(i),
            b'?' | b'<' | b'>' | b'"' | 0..=0x1f | 0x7f => return Err(PassReason::Malformed),
            _ => i += 1,
        }
    }
}
