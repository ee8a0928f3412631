//! Writes the SIP messages the verification side sends: requests, and responses built
//! from the request they answer (RFC 3261 §8.2.6).

use std::{fmt::Write as _, io::Write as _};

use crate::sip::{Message, write_response_head};

/// Product token for User-Agent / Server headers.
pub const AGENT: &str = "fastpath-verify";

/// A request with `headers` in order, then Content-Type (if there is a body) and
/// Content-Length.
pub fn request<S: AsRef<str>>(
    method: &str,
    uri: &str,
    headers: &[(&str, S)],
    body: Option<(&str, &[u8])>,
) -> Vec<u8> {
    let mut text = format!("{method} {uri} SIP/2.0\r\n");
    for (name, value) in headers {
        let _ = write!(text, "{name}: {}\r\n", value.as_ref());
    }
    finish(text.into_bytes(), body)
}

/// A response to `request`: its Vias, From, Call-ID and CSeq copied, its To given
/// `to_tag` unless it already carries one. No body.
pub fn response(request: &Message, status: u16, reason: &str, to_tag: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    write_response_head(request, status, reason, to_tag, &mut out);
    let _ = write!(out, "Server: {AGENT}\r\n");
    finish(out, None)
}

fn finish(mut out: Vec<u8>, body: Option<(&str, &[u8])>) -> Vec<u8> {
    if let Some((content_type, _)) = body {
        let _ = write!(out, "Content-Type: {content_type}\r\n");
    }
    let body = body.map_or(&[][..], |(_, b)| b);
    let _ = write!(out, "Content-Length: {}\r\n\r\n", body.len());
    out.extend_from_slice(body);
    out
}

/// 64 random bits from the OS CSPRNG as hex: Call-IDs, tags and branches must not be
/// guessable, or an off-path sender could inject requests into a verification dialog.
pub fn random_token() -> String {
    let mut bytes = [0u8; 8];
    // getrandom only fails where no OS source exists; fall back to the clock and a
    // counter, which still keeps tokens unique.
    if getrandom::fill(&mut bytes).is_err() {
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        bytes = (nanos ^ seq.rotate_left(40)).to_be_bytes();
    }
    bytes.iter().fold(String::with_capacity(16), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A Via branch: the RFC 3261 magic cookie and a random token.
pub fn branch() -> String {
    format!("z9hG4bK{}", random_token())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_round_trips_through_the_parser() {
        let bytes = request(
            "MESSAGE",
            "sip:15550100001@203.0.113.2:5060",
            &[
                ("Via", "SIP/2.0/UDP 203.0.113.1:5070;branch=z9hG4bK1"),
                ("From", "<sip:fastpath@203.0.113.1>;tag=f"),
                ("To", "<sip:15550100001@203.0.113.2>"),
                ("Call-ID", "c1"),
                ("CSeq", "1 MESSAGE"),
            ],
            Some(("text/plain", b"code 123456")),
        );
        let m = Message::parse(&bytes).unwrap();
        assert_eq!(m.error, None);
        assert_eq!(m.method(), b"MESSAGE");
        assert_eq!(m.cseq_number(), Some(1));
        assert_eq!(m.cseq_method(), b"MESSAGE");
        assert_eq!(m.content_type(), Some(&b"text/plain"[..]));
        assert_eq!(m.body_bytes(), b"code 123456");
    }

    #[test]
    fn a_response_copies_the_transaction_headers_and_tags_to() {
        let req = Message::parse(
            b"INVITE sip:1@h SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\n\
              Via: SIP/2.0/UDP b;branch=z9hG4bK2\r\nFrom: <sip:2@t>;tag=f\r\n\
              To: <sip:1@h>\r\nCall-ID: c\r\nCSeq: 4 INVITE\r\n\r\n",
        )
        .unwrap();
        let bytes = response(&req, 603, "Decline", Some("t1"));
        let m = Message::parse(&bytes).unwrap();
        assert_eq!(m.status(), Some(603));
        assert_eq!(m.reason(), b"Decline");
        assert_eq!(m.all_via_fields().count(), 2);
        assert_eq!(m.top_branch(), Some(&b"z9hG4bK1"[..]));
        assert_eq!(m.to_tag(), Some(&b"t1"[..]));
        assert_eq!(m.from_tag(), Some(&b"f"[..]));
        assert_eq!(
            (m.cseq_number(), m.cseq_method()),
            (Some(4), &b"INVITE"[..])
        );
    }

    #[test]
    fn tokens_differ() {
        assert_ne!(random_token(), random_token());
        assert!(branch().starts_with("z9hG4bK"));
    }
}
