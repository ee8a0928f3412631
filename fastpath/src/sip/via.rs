//! Via values: where responses go back to (RFC 3261 §18.2.2, RFC 3581 rport).

use std::net::{IpAddr, SocketAddr};

use super::eq_fold;

/// The host of a sent-by: an address we can send to, or a name we cannot resolve (the
/// gateway does no DNS on the hot path).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    Name,
}

/// One Via value (a Via field may carry several, comma-separated).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Via<'a> {
    pub transport: &'a [u8],
    pub host: Host,
    pub port: Option<u16>,
    pub branch: &'a [u8],
    pub received: Option<IpAddr>,
    /// `rport` present: `Some(None)` when it asks to be filled in, `Some(Some(p))` when filled.
    pub rport: Option<Option<u16>>,
    /// Offset in the value just after a valueless `rport`, where `=port` goes.
    pub rport_fill_at: Option<usize>,
}

impl<'a> Via<'a> {
    /// Parses one Via value; `None` if it is malformed.
    pub fn parse(value: &'a [u8]) -> Option<Self> {
        let mut cur = Cursor {
            text: value,
            pos: 0,
        };
        cur.ws();
        if !eq_fold(cur.token()?, b"SIP") {
            return None;
        }
        cur.expect(b'/')?;
        if cur.token()? != b"2.0" {
            return None;
        }
        cur.expect(b'/')?;
        let transport = cur.token()?;
        cur.ws();
        let host = cur.host()?;
        cur.ws();
        let port = if cur.peek() == Some(b':') {
            cur.pos += 1;
            cur.ws();
            let digits = cur.token()?;
            Some(super::parse_u32(digits).and_then(|p| u16::try_from(p).ok())?)
        } else {
            None
        };
        let mut via = Via {
            transport,
            host,
            port,
            branch: b"",
            received: None,
            rport: None,
            rport_fill_at: None,
        };
        cur.ws();
        while cur.peek() == Some(b';') {
            cur.pos += 1;
            cur.ws();
            let name = cur.token()?;
            let name_end = cur.pos;
            cur.ws();
            let param_value = if cur.peek() == Some(b'=') {
                cur.pos += 1;
                cur.ws();
                Some(cur.param_value()?)
            } else {
                None
            };
            if eq_fold(name, b"branch") {
                via.branch = param_value?;
            } else if eq_fold(name, b"received") {
                via.received = parse_ip(param_value?);
            } else if eq_fold(name, b"rport") {
                match param_value {
                    None => {
                        via.rport = Some(None);
                        via.rport_fill_at = Some(name_end);
                    }
                    Some(v) => {
                        let p = super::parse_u32(v).and_then(|p| u16::try_from(p).ok())?;
                        via.rport = Some(Some(p));
                    }
                }
            }
            cur.ws();
        }
        (cur.pos == value.len()).then_some(via)
    }

    /// Where a response to the request that carried this Via goes (RFC 3261 §18.2.2 and
    /// RFC 3581): the received address if any, the filled-in rport if any, else sent-by.
    pub fn response_target(&self) -> Option<SocketAddr> {
        let ip = match (self.received, self.host) {
            (Some(ip), _) | (None, Host::Ip(ip)) => ip,
            (None, Host::Name) => return None,
        };
        let port = match self.rport {
            Some(Some(p)) => p,
            _ => self.port.unwrap_or(5060),
        };
        Some(SocketAddr::new(ip, port))
    }

    /// Whether the sent-by names `addr` (the default port is 5060).
    pub fn sent_by_is(&self, addr: SocketAddr) -> bool {
        self.host == Host::Ip(addr.ip()) && self.port.unwrap_or(5060) == addr.port()
    }
}

/// The values of one Via field, split on commas outside quoted strings, each with its
/// offset in the field value.
pub type ViaValues<'a> = super::ListValues<'a>;

fn parse_ip(text: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(text).ok()?;
    let text = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    text.parse().ok()
}

struct Cursor<'a> {
    text: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        self.ws();
        (self.peek() == Some(c)).then(|| self.pos += 1)?;
        self.ws();
        Some(())
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.pos += 1;
        }
        &self.text[start..self.pos]
    }

    fn token(&mut self) -> Option<&'a [u8]> {
        let t = self.take_while(|c| c.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&c));
        (!t.is_empty()).then_some(t)
    }

    fn host(&mut self) -> Option<Host> {
        if self.peek() == Some(b'[') {
            let start = self.pos;
            self.take_while(|c| c != b']');
            self.expect_raw(b']')?;
            return Some(Host::Ip(parse_ip(&self.text[start..self.pos])?));
        }
        let name = self.take_while(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-');
        if name.is_empty() {
            return None;
        }
        Some(parse_ip(name).map_or(Host::Name, Host::Ip))
    }

    fn expect_raw(&mut self, c: u8) -> Option<()> {
        (self.peek() == Some(c)).then(|| self.pos += 1)
    }

    /// A token, an IPv6 reference or a quoted string.
    fn param_value(&mut self) -> Option<&'a [u8]> {
        match self.peek() {
            Some(b'"') => {
                let start = self.pos;
                self.pos += 1;
                while let Some(c) = self.peek() {
                    self.pos += 1;
                    match c {
                        b'\\' => self.pos += 1,
                        b'"' => return Some(&self.text[start..self.pos]),
                        _ => {}
                    }
                }
                None
            }
            Some(b'[') => {
                let start = self.pos;
                self.take_while(|c| c != b']');
                self.expect_raw(b']')?;
                Some(&self.text[start..self.pos])
            }
            _ => self.token(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_usual_via() {
        let via = Via::parse(b"SIP/2.0/UDP 192.0.2.2:5070;branch=z9hG4bK-1;rport").unwrap();
        assert_eq!(via.transport, b"UDP");
        assert_eq!(via.host, Host::Ip("192.0.2.2".parse().unwrap()));
        assert_eq!(via.port, Some(5070));
        assert_eq!(via.branch, b"z9hG4bK-1");
        assert_eq!(via.rport, Some(None));
        assert_eq!(via.rport_fill_at, Some(49), "the end of `rport`");
        assert_eq!(
            via.response_target(),
            Some("192.0.2.2:5070".parse().unwrap())
        );
    }

    #[test]
    fn received_and_rport_win_over_sent_by() {
        let via =
            Via::parse(b"SIP / 2.0 / UDP host.example ;received=192.0.2.9; rport=4000").unwrap();
        assert_eq!(via.host, Host::Name);
        assert_eq!(
            via.response_target(),
            Some("192.0.2.9:4000".parse().unwrap())
        );
        let v6 = Via::parse(b"SIP/2.0/UDP [2001:db8::1];branch=z9hG4bKx").unwrap();
        assert_eq!(
            v6.response_target(),
            Some("[2001:db8::1]:5060".parse().unwrap())
        );
    }

    #[test]
    fn rejects_malformed_values() {
        for bad in [
            &b""[..],
            b"SIP/2.0/UDP",
            b"SIP/2.0 192.0.2.1",
            b"SIP/2.0/UDP 192.0.2.1:99999",
            b"SIP/2.0/UDP 192.0.2.1;;branch=x",
            b"SIP/2.0/UDP 192.0.2.1;branch=x junk",
            b"HTTP/1.1/TCP 192.0.2.1",
        ] {
            assert_eq!(Via::parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn splits_values_outside_quotes() {
        let text = b"SIP/2.0/UDP a;x=\"1,2\" , SIP/2.0/UDP b";
        let values: Vec<&[u8]> = ViaValues::new(text).map(|(_, v, _)| v).collect();
        assert_eq!(
            values,
            [&b"SIP/2.0/UDP a;x=\"1,2\""[..], &b"SIP/2.0/UDP b"[..]]
        );
    }
}
