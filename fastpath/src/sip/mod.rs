//! A zero-copy SIP message reader for the proxy's hot path.
//!
//! Hand-written rather than a crate: the SIP crates on crates.io (rsip, ezk-sip-types,
//! sip-codec…) build owned `String`s and `Vec`s for every header, which costs more than the
//! whole per-message budget of the proxy (> 240k INVITE/s on 2 cores). This reader finds
//! only what a stateless proxy needs — the start line, the Via lines, Max-Forwards, Route,
//! the transaction identifiers and the body — as byte ranges into the datagram, and never
//! allocates. The verification UAC reads the trunk's messages with it too (through
//! [`OwnedMessage`], which keeps the datagram): what it needs beyond the proxy's fields
//! (any header by name, tags, Contact, the reason phrase) is looked up on demand, so the
//! proxy's per-message work stays what it was.

mod addr;
mod message;
mod owned;
mod response;
mod via;

pub use addr::{ListValues, param_of, split_list, tag_of, uri_of};
pub use message::{Field, Kind, Message, ParseError, Span, TOP_VIA_FIELDS};
pub use owned::OwnedMessage;
pub use response::write_response_head;
pub use via::{Host, Via, ViaValues};

/// Case-insensitive ASCII comparison of a header or parameter name.
#[inline]
pub(crate) fn eq_fold(a: &[u8], b: &[u8]) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// The long form of a header name given in its compact form (RFC 3261 §7.3.3 and the
/// IANA registry of compact forms); any other name as it is.
#[inline]
pub(crate) fn long_form(name: &[u8]) -> &[u8] {
    let [letter] = name else {
        return name;
    };
    match letter.to_ascii_lowercase() {
        b'a' => b"accept-contact",
        b'b' => b"referred-by",
        b'c' => b"content-type",
        b'd' => b"request-disposition",
        b'e' => b"content-encoding",
        b'f' => b"from",
        b'i' => b"call-id",
        b'j' => b"reject-contact",
        b'k' => b"supported",
        b'l' => b"content-length",
        b'm' => b"contact",
        b'o' => b"event",
        b'r' => b"refer-to",
        b's' => b"subject",
        b't' => b"to",
        b'u' => b"allow-events",
        b'v' => b"via",
        b'x' => b"session-expires",
        b'y' => b"identity",
        _ => name,
    }
}

/// Whether two header names name the same header (any case, long or compact form).
#[inline]
pub(crate) fn same_header(a: &[u8], b: &[u8]) -> bool {
    eq_fold(long_form(a), long_form(b))
}

/// `bytes` without leading and trailing SP / HT / CR / LF (line folding counts as space).
#[inline]
pub(crate) fn trim(bytes: &[u8]) -> &[u8] {
    let is_ws = |c: &u8| matches!(c, b' ' | b'\t' | b'\r' | b'\n');
    let start = bytes.iter().position(|c| !is_ws(c)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|c| !is_ws(c))
        .map_or(start, |i| i + 1);
    &bytes[start..end.max(start)]
}

/// A decimal number of at most 9 digits (no sign, no spaces).
#[inline]
pub(crate) fn parse_u32(bytes: &[u8]) -> Option<u32> {
    if bytes.is_empty() || bytes.len() > 9 {
        return None;
    }
    let mut n = 0u32;
    for &c in bytes {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u32::from(c - b'0');
    }
    Some(n)
}
