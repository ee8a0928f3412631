//! Responses the proxy makes itself (RFC 3261 §8.2.6): the request's Via fields, From,
//! To (with a tag), Call-ID and CSeq, no body.

use std::io::Write;

use xxhash_rust::xxh3::xxh3_64;

use crate::sip::{Message, write_response_head};

pub fn write(
    msg: &Message,
    status: u16,
    reason: &str,
    retry_after: Option<u32>,
    out: &mut Vec<u8>,
) {
    out.clear();
    // A stable tag: a retransmitted request gets the same response.
    let tag = xxh3_64(msg.text(msg.call_id)) as u32;
    write_response_head(msg, status, reason, Some(format_args!("fp{tag:08x}")), out);
    if let Some(secs) = retry_after {
        let _ = write!(out, "Retry-After: {secs}\r\n");
    }
    out.extend_from_slice(b"Server: fastpath\r\nContent-Length: 0\r\n\r\n");
}
