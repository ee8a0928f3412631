//! The start line and the header fields a stateless proxy reads, as ranges into the datagram.

use super::{
    Via, ViaValues, eq_fold, long_form, parse_u32, same_header, split_list, tag_of, trim, uri_of,
};

/// A byte range of the datagram. Always within the buffer it was made from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn of<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        buf.get(self.start..self.end).unwrap_or_default()
    }
}

/// One header field: the whole field (name to the end of its last line, CRLF included,
/// folded lines too) and its value (trimmed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Field {
    pub whole: Span,
    pub value: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Request { method: Span, uri: Span },
    Response { code: u16 },
}

/// Why a datagram is dropped without an answer (it cannot be answered, or must not be).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseError(pub &'static str);

/// Via fields remembered while parsing (the top ones route responses); the rest are read
/// again only when needed (loop detection, our own responses).
pub const TOP_VIA_FIELDS: usize = 4;

/// Route fields remembered: enough to pop ours and find the next one.
pub const MAX_ROUTE_FIELDS: usize = 4;

/// A parsed SIP message. `error` holds a problem found after enough was read to answer
/// it (the Via, and for requests the identifiers a response copies): the proxy answers
/// with that status instead of forwarding.
///
/// Only what the proxy reads on every message is found while parsing; the accessors
/// below that the verification UAC uses read the header section again when called.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub buf: &'a [u8],
    pub kind: Kind,
    /// The start line with its line end.
    pub start_line: Span,
    vias: [Field; TOP_VIA_FIELDS],
    via_fields: usize,
    pub max_forwards: Option<(Field, u32)>,
    routes: [Field; MAX_ROUTE_FIELDS],
    route_fields: usize,
    pub call_id: Option<Span>,
    /// CSeq number and method.
    pub cseq: Option<(u32, Span)>,
    pub from: Option<Span>,
    pub to: Option<Span>,
    /// Where the header section ends: the empty line (or the end of the datagram if the
    /// sender left it out).
    pub headers_end: usize,
    /// The body, as framed by Content-Length (bytes after it are ignored, RFC 3261 §18.3).
    pub body: Span,
    pub error: Option<(u16, &'static str)>,
}

impl<'a> Message<'a> {
    /// Reads `buf`. `Err` means drop; `Ok` may still carry an [`Message::error`].
    pub fn parse(buf: &'a [u8]) -> Result<Self, ParseError> {
        // RFC 3261 §7.5: CRLFs before the start line are ignored (keep-alives are just that).
        let begin = buf
            .iter()
            .position(|c| !matches!(c, b'\r' | b'\n'))
            .ok_or(ParseError("empty datagram"))?;
        let (line, next) = line_at(buf, begin).ok_or(ParseError("no line end"))?;
        let mut msg = Message {
            buf,
            kind: Kind::Response { code: 0 },
            start_line: Span {
                start: begin,
                end: next,
            },
            vias: [Field::default(); TOP_VIA_FIELDS],
            via_fields: 0,
            max_forwards: None,
            routes: [Field::default(); MAX_ROUTE_FIELDS],
            route_fields: 0,
            call_id: None,
            cseq: None,
            from: None,
            to: None,
            headers_end: buf.len(),
            body: Span {
                start: buf.len(),
                end: buf.len(),
            },
            error: None,
        };
        msg.kind = msg.start(line)?;
        msg.headers(next)?;
        if msg.via_fields == 0 {
            return Err(ParseError("no Via: nowhere to answer"));
        }
        match msg.kind {
            Kind::Response { .. } => {
                if msg.error.is_some() || msg.cseq.is_none() {
                    return Err(ParseError("malformed response"));
                }
            }
            Kind::Request { method, .. } => msg.check_request(method),
        }
        Ok(msg)
    }

    fn fail(&mut self, status: u16, reason: &'static str) {
        self.error.get_or_insert((status, reason));
    }

    /// The start line (without its line end).
    fn start(&mut self, line: Span) -> Result<Kind, ParseError> {
        let text = line.of(self.buf);
        if let Some(rest) = text.strip_prefix(b"SIP/2.0 ") {
            let code = rest
                .get(..3)
                .and_then(parse_u32)
                .filter(|c| (100..=699).contains(c))
                .ok_or(ParseError("bad status code"))?;
            // RFC 3261 §7.2: `SIP-Version SP Status-Code SP Reason-Phrase`; the phrase may
            // be empty, the space before it may not.
            if rest.get(3) != Some(&b' ') {
                return Err(ParseError("bad status code"));
            }
            return Ok(Kind::Response { code: code as u16 });
        }
        let at = |i: usize| line.start + i;
        let sp1 = text.iter().position(|&c| c == b' ');
        let Some(sp1) = sp1.filter(|&i| i > 0 && text[..i].iter().all(|&c| is_token(c))) else {
            // Not even a method: nothing tells us this is SIP worth answering.
            return Err(ParseError("not a SIP start line"));
        };
        let method = Span {
            start: line.start,
            end: at(sp1),
        };
        let rest = &text[sp1 + 1..];
        let Some(sp2) = rest.iter().rposition(|&c| c == b' ') else {
            self.fail(400, "Malformed Request-Line");
            return Ok(Kind::Request {
                method,
                uri: Span::default(),
            });
        };
        let uri = Span {
            start: at(sp1 + 1),
            end: at(sp1 + 1 + sp2),
        };
        let version = &rest[sp2 + 1..];
        let uri_text = uri.of(self.buf);
        if uri_text.is_empty() || uri_text.iter().any(|&c| c <= b' ' || c == 0x7f) {
            self.fail(400, "Malformed Request-Line");
        } else if uri_text.first() == Some(&b'<') {
            self.fail(400, "Request-URI enclosed in <>");
        } else if !eq_fold(version, b"SIP/2.0") {
            if version.len() > 4 && eq_fold(&version[..4], b"SIP/") {
                self.fail(505, "Version Not Supported");
            } else {
                self.fail(400, "Malformed SIP-Version");
            }
        }
        Ok(Kind::Request { method, uri })
    }

    /// Header fields from `pos` to the empty line.
    fn headers(&mut self, pos: usize) -> Result<(), ParseError> {
        let mut content_length: Option<usize> = None;
        let mut fields = Fields {
            buf: self.buf,
            pos,
            end: None,
        };
        for item in fields.by_ref() {
            match item {
                Ok((name, field)) => self.field(name.of(self.buf), field, &mut content_length),
                Err(_) => self.fail(400, "Malformed header field (no colon)"),
            }
        }
        match fields.end {
            Some((headers_end, body_start)) => {
                self.headers_end = headers_end;
                self.body = Span {
                    start: body_start,
                    end: self.buf.len(),
                };
            }
            None => {
                self.fail(400, "Missing empty line after the headers");
                self.headers_end = self.buf.len();
            }
        }
        if let Some(len) = content_length {
            let available = self.body.end - self.body.start;
            if len > available {
                self.fail(400, "Content-Length larger than the message body");
            } else {
                self.body.end = self.body.start + len;
            }
        }
        Ok(())
    }

    fn field(&mut self, name: &[u8], field: Field, content_length: &mut Option<usize>) {
        // Most fields are none of ours: one look at the first letter skips them.
        if !matches!(
            name.first().map(u8::to_ascii_lowercase),
            Some(b'v' | b'm' | b'r' | b'c' | b'i' | b'f' | b't' | b'l')
        ) {
            return;
        }
        let value = field.value.of(self.buf);
        let name = long_form(name);
        if eq_fold(name, b"via") {
            if let Some(slot) = self.vias.get_mut(self.via_fields) {
                *slot = field;
            }
            self.via_fields += 1;
        } else if eq_fold(name, b"max-forwards") {
            match parse_u32(value).filter(|&n| n <= 255) {
                Some(n) if self.max_forwards.is_none() => self.max_forwards = Some((field, n)),
                Some(_) => self.fail(400, "Duplicate Max-Forwards"),
                None => self.fail(400, "Malformed Max-Forwards"),
            }
        } else if eq_fold(name, b"route") {
            // Only the first values decide the next hop; later fields are copied as they are.
            if self.route_fields < MAX_ROUTE_FIELDS {
                self.routes[self.route_fields] = field;
                self.route_fields += 1;
            }
        } else if eq_fold(name, b"call-id") {
            if value.is_empty() {
                self.fail(400, "Empty Call-ID");
            }
            self.call_id.get_or_insert(field.value);
        } else if eq_fold(name, b"cseq") {
            let mut parts = value
                .split(|c| matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
                .filter(|p| !p.is_empty());
            let number = parts.next().and_then(parse_u32).filter(|&n| n < 1 << 31);
            let method = parts.next();
            match (number, method, parts.next()) {
                (Some(n), Some(m), None) => {
                    let start = m.as_ptr() as usize - self.buf.as_ptr() as usize;
                    self.cseq.get_or_insert((
                        n,
                        Span {
                            start,
                            end: start + m.len(),
                        },
                    ));
                }
                _ => self.fail(400, "Malformed CSeq"),
            }
        } else if eq_fold(name, b"from") {
            self.from.get_or_insert(field.value);
        } else if eq_fold(name, b"to") {
            if value.iter().filter(|&&c| c == b'"').count() % 2 == 1 {
                self.fail(400, "Unterminated quoted string in To");
            }
            self.to.get_or_insert(field.value);
        } else if eq_fold(name, b"content-length") {
            match parse_u32(value) {
                Some(n) if content_length.is_none_or(|old| old == n as usize) => {
                    *content_length = Some(n as usize);
                }
                Some(_) => self.fail(400, "Conflicting Content-Length values"),
                None => self.fail(400, "Malformed Content-Length"),
            }
        }
    }

    fn check_request(&mut self, method: Span) {
        if self.call_id.is_none() {
            self.fail(400, "Missing Call-ID");
        }
        if self.from.is_none() {
            self.fail(400, "Missing From");
        }
        if self.to.is_none() {
            self.fail(400, "Missing To");
        }
        match self.cseq {
            None => self.fail(400, "Missing CSeq"),
            Some((_, m)) if m.of(self.buf) != method.of(self.buf) => {
                self.fail(400, "CSeq method does not match the request method");
            }
            Some(_) => {}
        }
    }

    /// The first Route fields (at most [`MAX_ROUTE_FIELDS`]), topmost first.
    pub fn route_fields(&self) -> &[Field] {
        &self.routes[..self.route_fields]
    }

    /// The first Via fields (at most [`TOP_VIA_FIELDS`]), topmost first.
    pub fn via_fields(&self) -> &[Field] {
        &self.vias[..self.via_fields.min(TOP_VIA_FIELDS)]
    }

    /// Every Via field, topmost first (reads the header section again).
    pub fn all_via_fields(&self) -> impl Iterator<Item = Field> + '_ {
        self.fields_named(b"via")
    }

    /// Every field named `name` (any case, long or compact form), in order (reads the
    /// header section again).
    pub fn fields_named<'n>(&self, name: &'n [u8]) -> impl Iterator<Item = Field> + use<'a, 'n> {
        let buf = self.buf;
        let fields = Fields {
            buf,
            pos: self.start_line.end,
            end: None,
        };
        fields.filter_map(move |item| {
            let (field_name, field) = item.ok()?;
            same_header(field_name.of(buf), name).then_some(field)
        })
    }

    /// The value of every field named `name`, in order; a comma-separated list in one
    /// field is one value (see [`super::split_list`]).
    pub fn header_values<'n>(
        &self,
        name: &'n [u8],
    ) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
        let buf = self.buf;
        self.fields_named(name).map(move |f| f.value.of(buf))
    }

    /// The value of the first field named `name` (any case, long or compact form).
    pub fn header(&self, name: &[u8]) -> Option<&'a [u8]> {
        self.header_values(name).next()
    }

    pub fn method(&self) -> &'a [u8] {
        match self.kind {
            Kind::Request { method, .. } => method.of(self.buf),
            Kind::Response { .. } => b"",
        }
    }

    pub fn uri(&self) -> &'a [u8] {
        match self.kind {
            Kind::Request { uri, .. } => uri.of(self.buf),
            Kind::Response { .. } => b"",
        }
    }

    pub fn is_request(&self) -> bool {
        matches!(self.kind, Kind::Request { .. })
    }

    pub fn text(&self, span: Option<Span>) -> &'a [u8] {
        span.map_or(&[][..], |s| s.of(self.buf))
    }

    /// The CSeq method (the method of a response's transaction).
    pub fn cseq_method(&self) -> &'a [u8] {
        self.text(self.cseq.map(|(_, m)| m))
    }

    /// The CSeq number.
    pub fn cseq_number(&self) -> Option<u32> {
        self.cseq.map(|(n, _)| n)
    }

    /// The status code of a response.
    pub fn status(&self) -> Option<u16> {
        match self.kind {
            Kind::Response { code } => Some(code),
            Kind::Request { .. } => None,
        }
    }

    /// The reason phrase of a response (empty for a request).
    pub fn reason(&self) -> &'a [u8] {
        match self.kind {
            // `SIP/2.0 NNN` is 11 bytes, checked by `start`.
            Kind::Response { .. } => {
                trim(self.start_line.of(self.buf).get(11..).unwrap_or_default())
            }
            Kind::Request { .. } => b"",
        }
    }

    /// The body as framed by Content-Length.
    pub fn body_bytes(&self) -> &'a [u8] {
        self.body.of(self.buf)
    }

    /// The `tag` of the From field, if it has one.
    pub fn from_tag(&self) -> Option<&'a [u8]> {
        Some(tag_of(self.text(self.from))).filter(|t| !t.is_empty())
    }

    /// The `tag` of the To field, if it has one.
    pub fn to_tag(&self) -> Option<&'a [u8]> {
        Some(tag_of(self.text(self.to))).filter(|t| !t.is_empty())
    }

    /// The URI of the first Contact (where a dialog's requests go, RFC 3261 §12.1.2).
    pub fn contact_uri(&self) -> Option<&'a [u8]> {
        uri_of(split_list(self.header(b"contact")?).next()?)
    }

    /// The media type of the body (`application/sdp`) without parameters, as sent (media
    /// types compare case-insensitively).
    pub fn content_type(&self) -> Option<&'a [u8]> {
        let value = self.header(b"content-type")?;
        let media = trim(value.split(|&c| c == b';').next().unwrap_or_default());
        (!media.is_empty()).then_some(media)
    }

    /// The `branch` of the top Via value, if that value is well-formed and has one.
    pub fn top_branch(&self) -> Option<&'a [u8]> {
        let field = self.via_fields().first()?;
        let (_, top, _) = ViaValues::new(field.value.of(self.buf)).next()?;
        Some(Via::parse(top)?.branch).filter(|b| !b.is_empty())
    }

    /// This message's layout over `buf`, which must hold the same bytes it was parsed
    /// from (how [`super::OwnedMessage`] keeps a message with its datagram).
    pub(super) fn over<'b>(&self, buf: &'b [u8]) -> Message<'b> {
        Message {
            buf,
            kind: self.kind,
            start_line: self.start_line,
            vias: self.vias,
            via_fields: self.via_fields,
            max_forwards: self.max_forwards,
            routes: self.routes,
            route_fields: self.route_fields,
            call_id: self.call_id,
            cseq: self.cseq,
            from: self.from,
            to: self.to,
            headers_end: self.headers_end,
            body: self.body,
            error: self.error,
        }
    }
}

/// The header fields from `pos` on: (name, field), or `Err` for a line without a colon.
/// Stops at the empty line, recording (where it starts, where the body starts) in `end`.
struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
    end: Option<(usize, usize)>,
}

impl Iterator for Fields<'_> {
    type Item = Result<(Span, Field), Field>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.end.is_some() {
            return None;
        }
        let pos = self.pos;
        let (line, mut next) = line_at(self.buf, pos)?;
        if line.start == line.end {
            self.end = Some((pos, next));
            return None;
        }
        // Folded continuation lines belong to this field.
        let mut value_end = line.end;
        while matches!(self.buf.get(next), Some(b' ' | b'\t')) {
            match line_at(self.buf, next) {
                Some((cont, after)) => {
                    value_end = cont.end;
                    next = after;
                }
                None => break,
            }
        }
        self.pos = next;
        let whole = Span {
            start: pos,
            end: next,
        };
        let text = &self.buf[line.start..value_end];
        let Some(colon) = memchr::memchr(b':', text) else {
            return Some(Err(Field {
                whole,
                value: whole,
            }));
        };
        let name = trimmed_span(self.buf, line.start, line.start + colon);
        let value = trimmed_span(self.buf, line.start + colon + 1, value_end);
        Some(Ok((name, Field { whole, value })))
    }
}

/// The line starting at `pos` (without its CRLF or LF) and where the next one starts.
fn line_at(buf: &[u8], pos: usize) -> Option<(Span, usize)> {
    let rest = buf.get(pos..)?;
    let lf = memchr::memchr(b'\n', rest)?;
    let mut end = pos + lf;
    if end > pos && buf[end - 1] == b'\r' {
        end -= 1;
    }
    Some((Span { start: pos, end }, pos + lf + 1))
}

fn trimmed_span(buf: &[u8], start: usize, end: usize) -> Span {
    let text = &buf[start..end];
    let t = trim(text);
    if t.is_empty() {
        return Span { start: end, end };
    }
    let s = t.as_ptr() as usize - buf.as_ptr() as usize;
    Span {
        start: s,
        end: s + t.len(),
    }
}

/// RFC 3261 `token` characters.
fn is_token(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Message<'_> {
        Message::parse(text.as_bytes()).expect("parses")
    }

    #[test]
    fn reads_compact_and_folded_fields() {
        let msg = parse(
            "\r\nOPTIONS sip:1@192.0.2.1 SIP/2.0\r\n\
             v: SIP/2.0/UDP 192.0.2.2;branch=z9hG4bK1\r\n\
             Via  : SIP/2.0/UDP\r\n  192.0.2.3;branch=z9hG4bK2\r\n\
             f: <sip:a@x>;tag=1\r\nt: <sip:b@y>\r\ni: abc\r\nCSeq: 7 OPTIONS\r\n\
             l: 4\r\n\r\nbodyEXTRA",
        );
        assert_eq!(msg.method(), b"OPTIONS");
        assert_eq!(msg.uri(), b"sip:1@192.0.2.1");
        assert_eq!(msg.via_fields().len(), 2);
        assert_eq!(
            msg.via_fields()[1].value.of(msg.buf),
            b"SIP/2.0/UDP\r\n  192.0.2.3;branch=z9hG4bK2"
        );
        assert_eq!(msg.text(msg.call_id), b"abc");
        assert_eq!(msg.cseq.map(|(n, _)| n), Some(7));
        assert_eq!(
            msg.body.of(msg.buf),
            b"body",
            "Content-Length frames the body"
        );
        assert_eq!(msg.error, None);
        assert_eq!(msg.from_tag(), Some(&b"1"[..]));
        assert_eq!(msg.to_tag(), None);
    }

    #[test]
    fn every_via_field_is_found_past_the_remembered_ones() {
        let vias: String = (0..10)
            .map(|i| format!("Via: SIP/2.0/UDP 192.0.2.{i};branch=z9hG4bK{i}\r\n"))
            .collect();
        let text = format!(
            "BYE sip:1@x SIP/2.0\r\n{vias}From: a\r\nTo: b\r\nCall-ID: c\r\nCSeq: 1 BYE\r\n\r\n"
        );
        let msg = parse(&text);
        assert_eq!(msg.via_fields().len(), TOP_VIA_FIELDS);
        assert_eq!(msg.all_via_fields().count(), 10);
    }

    #[test]
    fn problems_become_statuses_or_drops() {
        let ok = "INVITE sip:1@x SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nFrom: a\r\nTo: b\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n";
        assert_eq!(parse(ok).error, None);
        let status = |text: String| parse(&text).error.map(|e| e.0);
        assert_eq!(
            status(ok.replace("SIP/2.0\r\nVia", "SIP/3.0\r\nVia")),
            Some(505)
        );
        assert_eq!(
            status(ok.replace("CSeq: 1 INVITE", "CSeq: 1 BYE")),
            Some(400)
        );
        assert_eq!(
            status(ok.replace("\r\n\r\n", "\r\nContent-Length: 5\r\n\r\n")),
            Some(400)
        );
        assert_eq!(status(ok.replace("To: b\r\n", "To b\r\n")), Some(400));
        assert_eq!(status(ok.replace("\r\n\r\n", "\r\n")), Some(400));
        for drop in [
            "",
            "\r\n\r\n",
            "SIP/2.0 99 x\r\nVia: a\r\n\r\n",
            "INVITE\r\n\r\n",
        ] {
            assert!(Message::parse(drop.as_bytes()).is_err(), "{drop:?}");
        }
        let no_via = ok.replace("Via: SIP/2.0/UDP h\r\n", "");
        assert!(
            Message::parse(no_via.as_bytes()).is_err(),
            "no Via: nowhere to answer"
        );
    }

    const RESPONSE: &str = "SIP/2.0 200 OK\r\n\
        v: SIP/2.0/UDP 203.0.113.1:5070;branch=z9hG4bKabc;rport=5070\r\n\
        Via: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKother\r\n\
        f: <sip:fastpath@203.0.113.1:5070>;tag=ours\r\n\
        To: \"Bob <x>; y\" <sip:15550100001@203.0.113.2>;tag=theirs\r\n\
        i: call-1@203.0.113.1\r\n\
        CSeq: 7 INVITE\r\n\
        m: <sip:phone@203.0.113.2;transport=udp>;expires=60, <sip:other@h>\r\n\
        Record-Route: <sip:p1;lr>\r\nRECORD-ROUTE: <sip:p2;lr>\r\n\
        Subject: a long\r\n  folded line\r\n\
        c: application/SDP; charset=x\r\n\
        l: 4\r\n\r\nv=0\r\nextra";

    #[test]
    fn what_a_user_agent_reads_is_found_on_demand() {
        let msg = parse(RESPONSE);
        assert_eq!(msg.error, None);
        assert_eq!((msg.status(), msg.reason()), (Some(200), &b"OK"[..]));
        assert_eq!((msg.method(), msg.uri()), (&b""[..], &b""[..]));
        assert_eq!(msg.text(msg.call_id), b"call-1@203.0.113.1");
        assert_eq!(msg.cseq_number(), Some(7));
        assert_eq!(msg.cseq_method(), b"INVITE");
        assert_eq!(msg.top_branch(), Some(&b"z9hG4bKabc"[..]));
        assert_eq!(msg.all_via_fields().count(), 2);
        assert_eq!(
            (msg.from_tag(), msg.to_tag()),
            (Some(&b"ours"[..]), Some(&b"theirs"[..]))
        );
        assert_eq!(
            msg.contact_uri(),
            Some(&b"sip:phone@203.0.113.2;transport=udp"[..])
        );
        let routes: Vec<&[u8]> = msg.header_values(b"Record-Route").collect();
        assert_eq!(routes, [&b"<sip:p1;lr>"[..], b"<sip:p2;lr>"]);
        // Compact and long forms name the same header, whichever is asked for.
        assert_eq!(msg.header(b"CALL-ID"), msg.header(b"i"));
        assert_eq!(msg.header(b"t"), msg.header(b"to"));
        assert_eq!(
            msg.header(b"subject"),
            Some(&b"a long\r\n  folded line"[..])
        );
        assert_eq!(msg.header(b"x-absent"), None);
        assert_eq!(msg.content_type(), Some(&b"application/SDP"[..]));
        assert_eq!(msg.body_bytes(), b"v=0\r", "Content-Length frames the body");
    }

    #[test]
    fn a_body_without_content_length_runs_to_the_end() {
        // RFC 3261 §18.3: over UDP the datagram ends the body.
        let msg = parse(
            "\r\nINFO sip:a@b SIP/2.0\nVia: SIP/2.0/UDP h\nFrom: a\nTo: b\nCall-ID: x\n\
             CSeq: 2 INFO\n\nSignal=5\n",
        );
        assert_eq!(msg.error, None);
        assert_eq!(msg.method(), b"INFO");
        assert_eq!(msg.body_bytes(), b"Signal=5\n");
        assert_eq!(msg.top_branch(), None, "a Via without a branch");
    }

    /// Inputs on which the proxy's reader and the verification UAC's former one
    /// disagreed, decided per RFC 3261.
    #[test]
    fn rfc_3261_decides_where_the_two_readers_differed() {
        let ok = "INVITE sip:1@x SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nFrom: a\r\nTo: b\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n";
        let error = |text: String| parse(&text).error.map(|e| e.0);
        // §7.1: "The SIP-Version string is case-insensitive": not malformed.
        assert_eq!(error(ok.replacen("SIP/2.0", "sip/2.0", 1)), None);
        // §20.14: Content-Length is 1*DIGIT; a sign is malformed (Rust's `parse` took it).
        assert_eq!(
            error(ok.replace("\r\n\r\n", "\r\nContent-Length: +0\r\n\r\n")),
            Some(400)
        );
        // §8.1.1: Via, From, To, Call-ID and CSeq are mandatory in a request: one
        // missing is a 400, not a request to act on.
        assert_eq!(error(ok.replace("Call-ID: c\r\n", "")), Some(400));
        // §7.3.1: a header line without a colon is malformed: 400 (it was a drop).
        assert_eq!(error(ok.replace("To: b", "To b")), Some(400));
        // A field nobody interprets is not validated: a byte that is not UTF-8 in it
        // spoils nothing else (it made the whole message unreadable).
        let latin1 = [&ok.as_bytes()[..ok.len() - 2], b"Subject: caf\xe9\r\n\r\n"].concat();
        let msg = Message::parse(&latin1).expect("parses");
        assert_eq!((msg.error, msg.text(msg.call_id)), (None, &b"c"[..]));
        // §7.2: the space before the reason phrase is required (the phrase may be
        // empty); §8.1.1.7 / §17.1.3: a response without Via or CSeq matches no
        // transaction. All three are dropped.
        let response =
            "SIP/2.0 100 \r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCSeq: 1 INVITE\r\n\r\n";
        assert_eq!(parse(response).reason(), b"");
        for dropped in [
            response.replace("100 \r\n", "100\r\n"),
            response.replace("Via: SIP/2.0/UDP h;branch=z9hG4bK1\r\n", ""),
            response.replace("CSeq: 1 INVITE\r\n", ""),
        ] {
            assert!(Message::parse(dropped.as_bytes()).is_err(), "{dropped:?}");
        }
    }

    #[test]
    fn sip_torture_messages_are_read_without_panic() {
        // RFC 4475 messages, kept beside the repository (DESIGN.md §5).
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/sip-torture/rfc4475");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("shared/sip-torture beside the repository") {
            let path = entry.expect("a directory entry").path();
            let bytes = std::fs::read(&path).expect("a torture message");
            if let Ok(msg) = Message::parse(&bytes) {
                read_everything(&msg);
                if path.file_stem().is_some_and(|s| s == "dblreq") {
                    // Content-Length frames the first request; the trailing INVITE is
                    // ignored (§18.3).
                    assert_eq!(msg.method(), b"REGISTER");
                    assert_eq!(msg.header_values(b"call-id").count(), 1);
                }
            }
            seen += 1;
        }
        assert_eq!(seen, 49);
    }

    fn read_everything(msg: &Message) {
        let _ = (
            msg.status(),
            msg.reason(),
            msg.top_branch(),
            msg.to_tag(),
            msg.from_tag(),
        );
        let _ = (msg.contact_uri(), msg.content_type(), msg.body_bytes());
        let _ = msg.header_values(b"record-route").count();
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            if let Ok(msg) = Message::parse(&bytes) {
                read_everything(&msg);
            }
        }

        #[test]
        fn mutated_messages_never_panic(
            cut in 0..RESPONSE.len(),
            flips in proptest::collection::vec((0..RESPONSE.len(), proptest::num::u8::ANY), 0..8),
        ) {
            let mut bytes = RESPONSE.as_bytes().to_vec();
            for (i, b) in flips { bytes[i] = b; }
            bytes.truncate(cut.max(1));
            if let Ok(msg) = Message::parse(&bytes) {
                read_everything(&msg);
            }
        }
    }
}
