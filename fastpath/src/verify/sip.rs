//! A compact SIP message parser: what the verification UAC and the missed-call listener
//! need from the trunk's messages (start line, headers, body), and nothing more.
//!
//! It never panics on any input: every index is checked, and a message it cannot make
//! sense of is an [`Error`], which the callers turn into "ignore" (DESIGN.md §6).

/// Largest message we accept: a UDP datagram.
pub const MAX_MESSAGE: usize = 65_535;

/// Why bytes are not a SIP message we can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("message larger than {MAX_MESSAGE} bytes")]
    TooLarge,
    #[error("no blank line ends the header section")]
    NoHeaderEnd,
    #[error("header section is not UTF-8")]
    NotUtf8,
    #[error("bad start line")]
    StartLine,
    #[error("bad header line")]
    Header,
    #[error("bad Content-Length")]
    ContentLength,
    #[error("body shorter than Content-Length")]
    TruncatedBody,
}

/// Request line or status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request { method: String, uri: String },
    Response { status: u16, reason: String },
}

/// A parsed message. Header names are stored lower-case and in their long form
/// (`i` becomes `call-id`), values trimmed, folded lines joined by one space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub start: StartLine,
    headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Message {
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() > MAX_MESSAGE {
            return Err(Error::TooLarge);
        }
        // RFC 3261 §7.5: leading CRLFs (keep-alives) before the start line are skipped.
        let bytes = trim_leading_newlines(bytes);
        let (head, rest) = split_head(bytes).ok_or(Error::NoHeaderEnd)?;
        let head = std::str::from_utf8(head).map_err(|_| Error::NotUtf8)?;
        let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        let start = parse_start_line(lines.next().ok_or(Error::StartLine)?)?;
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in lines {
            if line.starts_with([' ', '\t']) {
                // A folded continuation (RFC 3261 §7.3.1) belongs to the header above.
                let (_, value) = headers.last_mut().ok_or(Error::Header)?;
                value.push(' ');
                value.push_str(line.trim());
                continue;
            }
            let (name, value) = line.split_once(':').ok_or(Error::Header)?;
            let name = name.trim_end();
            if name.is_empty() || !name.bytes().all(is_token_char) {
                return Err(Error::Header);
            }
            headers.push((long_name(name), value.trim().to_owned()));
        }
        let mut message = Self {
            start,
            headers,
            body: Vec::new(),
        };
        message.body = match message.header("content-length") {
            // Over UDP the body may run to the end of the datagram (§18.3).
            None => rest.to_vec(),
            Some(text) => {
                let len: usize = text.parse().map_err(|_| Error::ContentLength)?;
                rest.get(..len).ok_or(Error::TruncatedBody)?.to_vec()
            }
        };
        Ok(message)
    }

    /// The first value of header `name` (any case, long or compact form).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers_named(name).next()
    }

    /// Every value of header `name`, in order; a comma-separated list is one value.
    pub fn headers_named<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> + 'a {
        let name = long_name(name);
        self.headers
            .iter()
            .filter(move |(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn method(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { status, .. } => Some(status),
            StartLine::Request { .. } => None,
        }
    }

    pub fn call_id(&self) -> Option<&str> {
        self.header("call-id").filter(|v| !v.is_empty())
    }

    /// CSeq number and method.
    pub fn cseq(&self) -> Option<(u32, &str)> {
        let (number, method) = self.header("cseq")?.split_once(char::is_whitespace)?;
        Some((number.parse().ok()?, method.trim()))
    }

    /// The `branch` parameter of the top Via.
    pub fn top_branch(&self) -> Option<&str> {
        let top = self.header("via")?;
        // Several Vias may share one header line; the first is the top one.
        let first = top.split(',').next()?;
        param(first, "branch")
    }

    /// The `tag` parameter of the To header.
    pub fn to_tag(&self) -> Option<&str> {
        param(name_addr_params(self.header("to")?), "tag")
    }

    /// The `tag` parameter of the From header.
    pub fn from_tag(&self) -> Option<&str> {
        param(name_addr_params(self.header("from")?), "tag")
    }

    /// The bare media type of the body (`application/sdp`), lower-case.
    pub fn content_type(&self) -> Option<String> {
        let value = self.header("content-type")?;
        let media = value.split(';').next()?.trim();
        Some(media.to_ascii_lowercase())
    }
}

/// The URI of a name-addr or addr-spec header value: `"Bob" <sip:1@h>;tag=x` → `sip:1@h`.
pub fn uri_of(value: &str) -> Option<&str> {
    let rest = skip_display_name(value)?;
    if let Some(open) = rest.find('<') {
        let inner = rest.get(open + 1..)?;
        let close = inner.find('>')?;
        return inner.get(..close).map(str::trim);
    }
    // addr-spec without brackets: its own parameters are header parameters (§20.10).
    let uri = rest.split(';').next()?.trim();
    (!uri.is_empty()).then_some(uri)
}

/// The elements of a comma-separated header value; commas inside quoted strings and
/// `<…>` are not separators.
pub fn split_list(value: &str) -> Vec<&str> {
    let (mut parts, mut start) = (Vec::new(), 0);
    let (mut quoted, mut escaped, mut angle) = (false, false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                parts.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(value[start..].trim());
    parts
}

/// The header parameters after a name-addr or addr-spec (`;tag=x;…`), or `""`.
fn name_addr_params(value: &str) -> &str {
    let Some(rest) = skip_display_name(value) else {
        return "";
    };
    match rest.find('<') {
        Some(open) => rest
            .get(open..)
            .and_then(|s| s.find('>').and_then(|close| s.get(close + 1..)))
            .unwrap_or(""),
        None => rest.find(';').and_then(|i| rest.get(i..)).unwrap_or(""),
    }
}

/// Skips a quoted display name, which may itself contain `<`, `;` or escaped quotes.
fn skip_display_name(value: &str) -> Option<&str> {
    let value = value.trim_start();
    let Some(quoted) = value.strip_prefix('"') else {
        return Some(value);
    };
    let mut escaped = false;
    for (i, c) in quoted.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return quoted.get(i + 1..),
            _ => {}
        }
    }
    None
}

/// The value of parameter `name` in a `;a=b;c` list (name compared case-insensitively);
/// `Some("")` for a parameter without a value.
pub fn param<'a>(params: &'a str, name: &str) -> Option<&'a str> {
    params.split(';').skip(1).find_map(|p| {
        let (key, value) = p.split_once('=').unwrap_or((p, ""));
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().trim_matches('"'))
    })
}

fn trim_leading_newlines(mut bytes: &[u8]) -> &[u8] {
    while let [b'\r' | b'\n', rest @ ..] = bytes {
        bytes = rest;
    }
    bytes
}

/// Splits at the first empty line (CRLF CRLF, or bare LF LF from lenient senders).
fn split_head(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\n' {
            let after = &bytes[i + 1..];
            if let Some(rest) = after.strip_prefix(b"\r\n") {
                return Some((&bytes[..i], rest));
            }
            if let Some(rest) = after.strip_prefix(b"\n") {
                return Some((&bytes[..i], rest));
            }
        }
        i += 1;
    }
    None
}

fn parse_start_line(line: &str) -> Result<StartLine, Error> {
    let mut parts = line.splitn(3, ' ');
    let (Some(first), Some(second), Some(third)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(Error::StartLine);
    };
    if first == "SIP/2.0" {
        let status: u16 = second.parse().map_err(|_| Error::StartLine)?;
        if second.len() != 3 || !(100..=699).contains(&status) {
            return Err(Error::StartLine);
        }
        return Ok(StartLine::Response {
            status,
            reason: third.to_owned(),
        });
    }
    let valid_uri = !second.is_empty() && second.bytes().all(|b| b.is_ascii_graphic());
    if third != "SIP/2.0" || first.is_empty() || !first.bytes().all(is_token_char) || !valid_uri {
        return Err(Error::StartLine);
    }
    Ok(StartLine::Request {
        method: first.to_owned(),
        uri: second.to_owned(),
    })
}

/// RFC 3261 §25.1 `token` characters.
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// Lower-case long form of a header name (RFC 3261 §7.3.3 compact forms).
fn long_name(name: &str) -> String {
    let long = match name.to_ascii_lowercase().as_str() {
        "i" => "call-id",
        "f" => "from",
        "t" => "to",
        "v" => "via",
        "m" => "contact",
        "l" => "content-length",
        "c" => "content-type",
        "e" => "content-encoding",
        "k" => "supported",
        "s" => "subject",
        other => return other.to_owned(),
    };
    long.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESPONSE: &[u8] = b"SIP/2.0 200 OK\r\n\
        v: SIP/2.0/UDP 203.0.113.1:5070;branch=z9hG4bKabc;rport=5070\r\n\
        Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKother\r\n\
        f: <sip:fastpath@203.0.113.1:5070>;tag=ours\r\n\
        To: \"Bob <x>; y\" <sip:15550100001@203.0.113.2>;tag=theirs\r\n\
        i: call-1@203.0.113.1\r\n\
        CSeq: 7 INVITE\r\n\
        Subject: a long\r\n  folded line\r\n\
        c: application/SDP; charset=x\r\n\
        l: 4\r\n\r\nv=0\r\nextra";

    #[test]
    fn parses_a_response_with_compact_and_folded_headers() {
        let m = Message::parse(RESPONSE).unwrap();
        assert_eq!(m.status(), Some(200));
        assert_eq!(m.call_id(), Some("call-1@203.0.113.1"));
        assert_eq!(m.cseq(), Some((7, "INVITE")));
        assert_eq!(m.top_branch(), Some("z9hG4bKabc"));
        assert_eq!(m.headers_named("VIA").count(), 2);
        assert_eq!(m.from_tag(), Some("ours"));
        assert_eq!(m.to_tag(), Some("theirs"));
        assert_eq!(m.header("subject"), Some("a long folded line"));
        assert_eq!(m.content_type().as_deref(), Some("application/sdp"));
        assert_eq!(m.body, b"v=0\r");
        assert_eq!(
            uri_of(m.header("to").unwrap()),
            Some("sip:15550100001@203.0.113.2")
        );
    }

    #[test]
    fn parses_a_request_without_content_length() {
        let m = Message::parse(b"\r\nINFO sip:a@b SIP/2.0\nCall-ID: x\n\nSignal=5\n").unwrap();
        assert_eq!(m.method(), Some("INFO"));
        assert_eq!(m.body, b"Signal=5\n");
    }

    #[test]
    fn addr_spec_parameters_are_header_parameters() {
        assert_eq!(uri_of("sip:1@h;tag=x"), Some("sip:1@h"));
        assert_eq!(param(name_addr_params("sip:1@h;tag=x"), "tag"), Some("x"));
        assert_eq!(uri_of("\"unterminated <sip:1@h>"), None);
        assert_eq!(uri_of("<sip:1@h"), None);
    }

    #[test]
    fn splits_lists_outside_quotes_and_brackets() {
        assert_eq!(
            split_list(r#""a, \"b" <sip:1@h;x=1,2>, <tel:+2>"#),
            [r#""a, \"b" <sip:1@h;x=1,2>"#, "<tel:+2>"]
        );
        assert_eq!(split_list(""), [""]);
    }

    #[test]
    fn rejects_malformed_messages() {
        let cases: &[(&[u8], Error)] = &[
            (b"SIP/2.0 200 OK\r\nCall-ID: x\r\n", Error::NoHeaderEnd),
            (b"SIP/2.0 99 Low\r\n\r\n", Error::StartLine),
            (b"SIP/2.0 2000 OK\r\n\r\n", Error::StartLine),
            (b"INVITE sip:a@b SIP/3.0\r\n\r\n", Error::StartLine),
            (b"INV(TE sip:a@b SIP/2.0\r\n\r\n", Error::StartLine),
            (b"INVITE  SIP/2.0\r\n\r\n", Error::StartLine),
            (b"INVITE sip:a@b SIP/2.0\r\nno colon\r\n\r\n", Error::Header),
            (
                b"INVITE sip:a@b SIP/2.0\r\n folded first\r\n\r\n",
                Error::Header,
            ),
            (
                b"INVITE sip:a@b SIP/2.0\r\nl: -1\r\n\r\n",
                Error::ContentLength,
            ),
            (
                b"INVITE sip:a@b SIP/2.0\r\nl: 9\r\n\r\nab",
                Error::TruncatedBody,
            ),
            (b"INVITE sip:a@b SIP/2.0\r\nX: \xff\r\n\r\n", Error::NotUtf8),
        ];
        for (bytes, error) in cases {
            assert_eq!(
                Message::parse(bytes).as_ref().err(),
                Some(error),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn sip_torture_messages_never_panic() {
        // RFC 4475 messages, kept beside the repository (DESIGN.md §5).
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/sip-torture/rfc4475");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("shared/sip-torture beside the repository") {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            let parsed = Message::parse(&bytes);
            if path.file_stem().is_some_and(|s| s == "dblreq") {
                // Content-Length frames the first request; the trailing INVITE is ignored.
                assert_eq!(parsed.unwrap().method(), Some("REGISTER"));
            }
            seen += 1;
        }
        assert_eq!(seen, 49);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            if let Ok(m) = Message::parse(&bytes) {
                let _ = (m.cseq(), m.top_branch(), m.to_tag(), m.from_tag(), m.content_type());
                if let Some(v) = m.header("to") { let _ = uri_of(v); }
            }
        }

        #[test]
        fn mutated_messages_never_panic(
            cut in 0..RESPONSE.len(),
            flips in proptest::collection::vec((0..RESPONSE.len(), proptest::num::u8::ANY), 0..8),
        ) {
            let mut bytes = RESPONSE.to_vec();
            for (i, b) in flips { bytes[i] = b; }
            bytes.truncate(cut.max(1));
            if let Ok(m) = Message::parse(&bytes) {
                let _ = (m.cseq(), m.top_branch(), m.to_tag(), m.from_tag(), m.content_type());
                if let Some(v) = m.header("from") { let _ = uri_of(v); }
            }
        }
    }
}
