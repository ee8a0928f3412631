//! SIP message boundaries on a byte stream (RFC 3261 §18.3), free of I/O.
//!
//! On a stream the header section ends at the first empty line and the body is exactly
//! Content-Length bytes long, so Content-Length is mandatory. CRLFs between messages are
//! ignored (§7.5), except the RFC 5626 §3.5.1 keep-alive: a double CRLF is a ping that
//! wants a single CRLF back.

use memchr::memmem;

use crate::sip::eq_fold;

/// What the start of the buffered bytes holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A whole message in the first `len` bytes.
    Message { len: usize },
    /// A keep-alive ping ("\r\n\r\n") in the first 4 bytes: answer [`PONG`].
    Ping,
    /// `len` bytes of stray line ends to skip (a pong, or CRLFs before a message).
    Skip { len: usize },
    /// Not enough bytes yet to tell.
    Incomplete,
    /// The stream cannot be read on: answer what can be answered, then close.
    Error(FrameError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Headers complete (the first `head` bytes) but no usable Content-Length: the end of
    /// the message is unknown (answer 400).
    NoContentLength { head: usize },
    /// Headers complete (the first `head` bytes); the message would exceed the limit
    /// (answer 513).
    TooLarge { head: usize },
    /// More than the limit buffered and still no end of the headers: nothing to answer.
    HeadersTooLarge,
    /// Not SIP (a binary protocol, a TLS hello, noise): nothing to answer.
    Garbage,
}

/// The answer to a keep-alive ping.
pub const PONG: &[u8] = b"\r\n";
const PING: &[u8] = b"\r\n\r\n";

/// Where the next message in `buf` ends, for messages of at most `max` bytes.
pub fn next_frame(buf: &[u8], max: usize) -> Frame {
    let crlfs = buf
        .iter()
        .position(|&c| !matches!(c, b'\r' | b'\n'))
        .unwrap_or(buf.len());
    if crlfs > 0 {
        if buf.starts_with(PING) {
            return Frame::Ping;
        }
        // "\r", "\r\n" or "\r\n\r" may still become a ping.
        if crlfs == buf.len() && PING.starts_with(buf) {
            return Frame::Incomplete;
        }
        return Frame::Skip { len: crlfs };
    }
    let Some(end) = memmem::find(buf, PING) else {
        if !plausible_start(buf, false) {
            return Frame::Error(FrameError::Garbage);
        }
        return if buf.len() > max {
            Frame::Error(FrameError::HeadersTooLarge)
        } else {
            Frame::Incomplete
        };
    };
    let head = end + PING.len();
    if !plausible_start(buf, true) {
        return Frame::Error(FrameError::Garbage);
    }
    let Some(body) = content_length(&buf[..head]) else {
        return Frame::Error(FrameError::NoContentLength { head });
    };
    let len = head.saturating_add(body);
    if len > max {
        Frame::Error(FrameError::TooLarge { head })
    } else if buf.len() < len {
        Frame::Incomplete
    } else {
        Frame::Message { len }
    }
}

/// Whether `buf` can begin a SIP message: a start line of printable characters that, once
/// complete, is a status line or ends in a SIP version. `complete`: a whole start line is
/// known to be in `buf`.
fn plausible_start(buf: &[u8], complete: bool) -> bool {
    let line_end = memchr::memchr(b'\n', buf);
    let line = &buf[..line_end.unwrap_or(buf.len())];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().any(|&c| c < b' ' || c == 0x7f) {
        return false;
    }
    if line_end.is_none() && !complete {
        return true;
    }
    let version = |text: &[u8]| text.len() >= 4 && eq_fold(&text[..4], b"SIP/");
    let last_word = line.rsplit(|&c| c == b' ').next().unwrap_or_default();
    version(line) || (line.contains(&b' ') && version(last_word))
}

/// The Content-Length (or compact `l`) of a header section; `None` if missing, malformed
/// or given twice with different values.
fn content_length(head: &[u8]) -> Option<usize> {
    let mut found: Option<usize> = None;
    // The first line is the start line; folded continuation lines start with space.
    for line in head.split(|&c| c == b'\n').skip(1) {
        let Some(colon) = line.iter().position(|&c| c == b':') else {
            continue;
        };
        let name = crate::sip::trim(&line[..colon]);
        if !(eq_fold(name, b"content-length") || eq_fold(name, b"l")) {
            continue;
        }
        let value = crate::sip::trim(&line[colon + 1..]);
        let n = crate::sip::parse_u32(value)? as usize;
        if found.is_some_and(|old| old != n) {
            return None;
        }
        found = Some(n);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 16 * 1024;

    fn invite(body: &str) -> String {
        format!(
            "INVITE sip:15550100001@192.0.2.1 SIP/2.0\r\n\
             Via: SIP/2.0/TCP 192.0.2.2:5060;branch=z9hG4bK-1\r\n\
             Call-ID: a@b\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    /// Feeds `stream` in pieces of the given sizes and collects what the framer found,
    /// as a connection would: append, then take frames until it needs more.
    fn frames(stream: &[u8], piece: usize) -> Vec<Result<Vec<u8>, Frame>> {
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for chunk in stream.chunks(piece.max(1)) {
            buf.extend_from_slice(chunk);
            loop {
                match next_frame(&buf, MAX) {
                    Frame::Message { len } => {
                        out.push(Ok(buf[..len].to_vec()));
                        buf.drain(..len);
                    }
                    Frame::Ping => {
                        out.push(Err(Frame::Ping));
                        buf.drain(..PING.len());
                    }
                    Frame::Skip { len } => {
                        buf.drain(..len);
                    }
                    Frame::Incomplete => break,
                    e @ Frame::Error(_) => {
                        out.push(Err(e));
                        return out;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn a_message_split_at_every_byte_comes_out_whole() {
        let msg = invite("v=0\r\no=- 1 1 IN IP4 192.0.2.2\r\n");
        for piece in 1..=msg.len() {
            let got = frames(msg.as_bytes(), piece);
            assert_eq!(got, vec![Ok(msg.clone().into_bytes())], "piece {piece}");
        }
    }

    #[test]
    fn two_messages_in_one_read_come_out_one_by_one() {
        let (a, b) = (invite("body-a"), invite(""));
        let stream = format!("{a}{b}");
        let got = frames(stream.as_bytes(), stream.len());
        assert_eq!(got, vec![Ok(a.into_bytes()), Ok(b.into_bytes())]);
    }

    #[test]
    fn bytes_after_the_body_belong_to_the_next_message() {
        let a = invite("xy");
        let got = next_frame(format!("{a}INVITE sip:x").as_bytes(), MAX);
        assert_eq!(got, Frame::Message { len: a.len() });
    }

    #[test]
    fn a_ping_is_answered_and_crlfs_between_messages_are_skipped() {
        let msg = invite("");
        let stream = format!("\r\n\r\n{msg}\r\n{msg}\r\n\r\n");
        for piece in 1..=stream.len() {
            let got = frames(stream.as_bytes(), piece);
            assert_eq!(
                got,
                vec![
                    Err(Frame::Ping),
                    Ok(msg.clone().into_bytes()),
                    Ok(msg.clone().into_bytes()),
                    Err(Frame::Ping),
                ],
                "piece {piece}"
            );
        }
        assert_eq!(next_frame(b"\r\n", MAX), Frame::Incomplete);
        assert_eq!(next_frame(b"\r\nI", MAX), Frame::Skip { len: 2 });
    }

    #[test]
    fn compact_and_spaced_content_length_frame_the_body() {
        let msg = "MESSAGE sip:a@192.0.2.1 SIP/2.0\r\nl :  3\r\n\r\nabcdef";
        assert_eq!(
            next_frame(msg.as_bytes(), MAX),
            Frame::Message { len: msg.len() - 3 }
        );
    }

    #[test]
    fn a_missing_or_unreadable_content_length_is_an_error_with_the_header_length() {
        let head = "OPTIONS sip:a@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n\r\n";
        for extra in ["", "Content-Length: x\r\n", "l: 1\r\nContent-Length: 2\r\n"] {
            let text = head.replacen("\r\n\r\n", &format!("\r\n{extra}\r\n"), 1);
            assert_eq!(
                next_frame(text.as_bytes(), MAX),
                Frame::Error(FrameError::NoContentLength { head: text.len() }),
                "{extra:?}"
            );
        }
    }

    #[test]
    fn oversized_messages_are_errors_before_they_are_buffered() {
        let head = "INVITE sip:a@192.0.2.1 SIP/2.0\r\nContent-Length: 999999\r\n\r\n";
        assert_eq!(
            next_frame(head.as_bytes(), MAX),
            Frame::Error(FrameError::TooLarge { head: head.len() })
        );
        // A body length that would overflow is too large, not a wrap-around.
        let huge = "INVITE sip:a@192.0.2.1 SIP/2.0\r\nl: 999999999\r\n\r\n";
        assert!(matches!(
            next_frame(huge.as_bytes(), MAX),
            Frame::Error(FrameError::TooLarge { .. })
        ));
        let endless = format!(
            "INVITE sip:a@192.0.2.1 SIP/2.0\r\n{}",
            "X: y\r\n".repeat(4000)
        );
        assert_eq!(
            next_frame(endless.as_bytes(), MAX),
            Frame::Error(FrameError::HeadersTooLarge)
        );
        // Exactly the limit is fine.
        let body = "b".repeat(100);
        let msg = invite(&body);
        assert_eq!(
            next_frame(msg.as_bytes(), msg.len()),
            Frame::Message { len: msg.len() }
        );
    }

    #[test]
    fn garbage_is_an_error_as_soon_as_it_shows() {
        for junk in [
            &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"hello\r\n\r\n",
            b"\x00\x00\x00\x00",
        ] {
            assert_eq!(
                next_frame(junk, MAX),
                Frame::Error(FrameError::Garbage),
                "{junk:?}"
            );
        }
        // A start line still arriving is not judged yet.
        assert_eq!(next_frame(b"INVITE sip:a@b SI", MAX), Frame::Incomplete);
        // A status line is SIP.
        let resp = "SIP/2.0 200 OK\r\nl: 0\r\n\r\n";
        assert_eq!(
            next_frame(resp.as_bytes(), MAX),
            Frame::Message { len: resp.len() }
        );
    }
}
