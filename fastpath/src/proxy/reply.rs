//! Responses the proxy makes itself (RFC 3261 §8.2.6): the request's Via fields, From,
//! To (with a tag), Call-ID and CSeq, no body.

use std::io::Write;

use xxhash_rust::xxh3::xxh3_64;

use crate::sip::{Message, tag_of};

pub fn write(
    msg: &Message,
    status: u16,
    reason: &str,
    retry_after: Option<u32>,
    out: &mut Vec<u8>,
) {
    out.clear();
    let _ = write!(out, "SIP/2.0 {status} {reason}\r\n");
    for field in msg.all_via_fields() {
        out.extend_from_slice(b"Via: ");
        out.extend_from_slice(field.value.of(msg.buf));
        out.extend_from_slice(b"\r\n");
    }
    let to = msg.text(msg.to);
    for (name, value) in [(&b"From: "[..], msg.text(msg.from)), (b"To: ", to)] {
        if !value.is_empty() {
            out.extend_from_slice(name);
            out.extend_from_slice(value);
            if name == b"To: " && tag_of(value).is_empty() {
                // A stable tag: a retransmitted request gets the same response.
                let _ = write!(out, ";tag=fp{:08x}", xxh3_64(msg.text(msg.call_id)) as u32);
            }
            out.extend_from_slice(b"\r\n");
        }
    }
    if let Some(call_id) = msg.call_id {
        out.extend_from_slice(b"Call-ID: ");
        out.extend_from_slice(call_id.of(msg.buf));
        out.extend_from_slice(b"\r\n");
    }
    if let Some((number, method)) = msg.cseq {
        let _ = write!(out, "CSeq: {number} ");
        out.extend_from_slice(method.of(msg.buf));
        out.extend_from_slice(b"\r\n");
    }
    if let Some(secs) = retry_after {
        let _ = write!(out, "Retry-After: {secs}\r\n");
    }
    out.extend_from_slice(b"Server: fastpath\r\nContent-Length: 0\r\n\r\n");
}
