//! The part of a response that comes from the request it answers (RFC 3261 §8.2.6):
//! written the same way by the proxy's own responses and the verification UAC's.

use std::{fmt::Display, io::Write};

use super::{Message, tag_of};

/// Writes the status line and the fields copied from `request` into `out`: every Via
/// field, From, To, Call-ID and CSeq. A To without a tag gets `;tag=` and `to_tag`
/// (§8.2.6.2) when one is given. Fields the request left empty are left out. The caller
/// adds its own fields, Content-Length and the empty line.
pub fn write_response_head(
    request: &Message,
    status: u16,
    reason: &str,
    to_tag: Option<impl Display>,
    out: &mut Vec<u8>,
) {
    let _ = write!(out, "SIP/2.0 {status} {reason}\r\n");
    for field in request.all_via_fields() {
        out.extend_from_slice(b"Via: ");
        out.extend_from_slice(field.value.of(request.buf));
        out.extend_from_slice(b"\r\n");
    }
    let to = request.text(request.to);
    for (name, value) in [(&b"From: "[..], request.text(request.from)), (b"To: ", to)] {
        if !value.is_empty() {
            out.extend_from_slice(name);
            out.extend_from_slice(value);
            if name == b"To: "
                && tag_of(value).is_empty()
                && let Some(tag) = &to_tag
            {
                let _ = write!(out, ";tag={tag}");
            }
            out.extend_from_slice(b"\r\n");
        }
    }
    if let Some(call_id) = request.call_id {
        out.extend_from_slice(b"Call-ID: ");
        out.extend_from_slice(call_id.of(request.buf));
        out.extend_from_slice(b"\r\n");
    }
    if let Some((number, method)) = request.cseq {
        let _ = write!(out, "CSeq: {number} ");
        out.extend_from_slice(method.of(request.buf));
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(request: &str, to_tag: Option<&str>) -> String {
        let msg = Message::parse(request.as_bytes()).expect("parses");
        let mut out = Vec::new();
        write_response_head(&msg, 480, "Temporarily Unavailable", to_tag, &mut out);
        String::from_utf8(out).expect("text")
    }

    #[test]
    fn copies_the_transaction_fields_and_tags_an_untagged_to() {
        let request = "BYE sip:1@h SIP/2.0\r\nv: SIP/2.0/UDP a;branch=z9hG4bK1,\r\n SIP/2.0/UDP b\r\n\
                       Via: SIP/2.0/UDP c\r\nf: <sip:2@t>;tag=f\r\nt: <sip:1@h>\r\ni: c1\r\n\
                       CSeq:  4   BYE\r\nSubject: not copied\r\n\r\n";
        assert_eq!(
            head(request, Some("t1")),
            "SIP/2.0 480 Temporarily Unavailable\r\n\
             Via: SIP/2.0/UDP a;branch=z9hG4bK1,\r\n SIP/2.0/UDP b\r\nVia: SIP/2.0/UDP c\r\n\
             From: <sip:2@t>;tag=f\r\nTo: <sip:1@h>;tag=t1\r\nCall-ID: c1\r\nCSeq: 4 BYE\r\n"
        );
        let tagged = request.replace("t: <sip:1@h>", "t: <sip:1@h> ; tag = x");
        assert!(head(&tagged, Some("t1")).contains("To: <sip:1@h> ; tag = x\r\n"));
        assert!(head(request, None).contains("To: <sip:1@h>\r\n"));
    }
}
