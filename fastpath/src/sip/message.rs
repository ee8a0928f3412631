//! The start line and the header fields a stateless proxy reads, as ranges into the datagram.

use super::{eq_fold, parse_u32, trim};

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
#[derive(Debug)]
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
            if rest.get(3).is_some_and(|&c| c != b' ') {
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
        let is = |long: &[u8], short: &[u8]| eq_fold(name, long) || eq_fold(name, short);
        if is(b"via", b"v") {
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
        } else if is(b"call-id", b"i") {
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
        } else if is(b"from", b"f") {
            self.from.get_or_insert(field.value);
        } else if is(b"to", b"t") {
            if value.iter().filter(|&&c| c == b'"').count() % 2 == 1 {
                self.fail(400, "Unterminated quoted string in To");
            }
            self.to.get_or_insert(field.value);
        } else if is(b"content-length", b"l") {
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
        let fields = Fields {
            buf: self.buf,
            pos: self.start_line.end,
            end: None,
        };
        fields.filter_map(|item| {
            let (name, field) = item.ok()?;
            let name = name.of(self.buf);
            (eq_fold(name, b"via") || eq_fold(name, b"v")).then_some(field)
        })
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
}

/// The `tag` parameter of a From or To value, if any.
pub fn tag_of(value: &[u8]) -> &[u8] {
    // Parameters of the header field follow the closing `>` of a name-addr.
    let params = match value.iter().rposition(|&c| c == b'>') {
        Some(gt) => &value[gt..],
        None => value,
    };
    params
        .split(|&c| c == b';')
        .skip(1)
        .find_map(|p| {
            let p = trim(p);
            (p.len() > 4 && eq_fold(&p[..4], b"tag=")).then(|| trim(&p[4..]))
        })
        .unwrap_or_default()
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
        assert_eq!(tag_of(msg.text(msg.from)), b"1");
        assert_eq!(tag_of(msg.text(msg.to)), b"");
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
}
