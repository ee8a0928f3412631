//! DTMF digits from the two places a trunk puts them: RFC 4733 telephone-events in RTP,
//! and SIP INFO `application/dtmf-relay` bodies; and the rule that turns the packets of
//! one call into the digits the owner typed.

use std::collections::HashSet;

/// The RTP payload type we offer for telephone-event/8000.
pub const TELEPHONE_EVENT_PT: u8 = 101;

/// One telephone-event packet (RFC 4733 §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpEvent {
    pub ssrc: u32,
    /// The event's start time: every packet of one key press carries the same one.
    pub timestamp: u32,
    pub digit: char,
    pub end: bool,
}

/// The event in an RTP packet of payload type `pt`; `None` for anything else (other
/// payload types, events that are not keys, short or malformed packets).
pub fn parse_rtp_event(packet: &[u8], pt: u8) -> Option<RtpEvent> {
    let first = *packet.first()?;
    if first >> 6 != 2 || packet.get(1)? & 0x7f != pt {
        return None;
    }
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_be_bytes(packet.get(at..at + 4)?.try_into().ok()?))
    };
    let (timestamp, ssrc) = (word(4)?, word(8)?);
    let mut offset = 12 + 4 * usize::from(first & 0x0f); // CSRC list
    if first & 0x10 != 0 {
        // Header extension: 16-bit profile, 16-bit length in words.
        let len = u16::from_be_bytes(packet.get(offset + 2..offset + 4)?.try_into().ok()?);
        offset += 4 + 4 * usize::from(len);
    }
    let payload = packet.get(offset..offset + 4)?;
    Some(RtpEvent {
        ssrc,
        timestamp,
        digit: event_digit(payload[0])?,
        end: payload[1] & 0x80 != 0,
    })
}

/// RFC 4733 §3.2 event codes 0-15: the keys of a telephone keypad.
fn event_digit(event: u8) -> Option<char> {
    match event {
        0..=9 => Some(char::from(b'0' + event)),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some(char::from(b'A' + event - 12)),
        _ => None,
    }
}

/// Why an INFO body carries no digit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InfoError {
    /// Not a DTMF content type: answered 415.
    UnsupportedType,
    /// A DTMF content type without a valid signal: answered 400.
    BadBody,
}

/// The digit in a SIP INFO: `application/dtmf-relay` (`Signal=5`, the form most trunks
/// send) or `application/dtmf` (the bare digit). `content_type` is the media type
/// without parameters, in any case.
pub fn parse_info(content_type: Option<&[u8]>, body: &[u8]) -> Result<char, InfoError> {
    let text = std::str::from_utf8(body).map_err(|_| InfoError::BadBody)?;
    let signal = match content_type.map(<[u8]>::to_ascii_lowercase).as_deref() {
        Some(b"application/dtmf-relay") => text
            .lines()
            .find_map(|line| {
                let (key, value) = line.split_once('=')?;
                key.trim()
                    .eq_ignore_ascii_case("signal")
                    .then(|| value.trim())
            })
            .ok_or(InfoError::BadBody)?,
        Some(b"application/dtmf") => text.trim(),
        _ => return Err(InfoError::UnsupportedType),
    };
    match signal.to_ascii_uppercase().as_str() {
        // Some gateways send the event code of `*` and `#` instead of the key.
        "10" => Ok('*'),
        "11" => Ok('#'),
        s if s.len() == 1 => s
            .chars()
            .next()
            .filter(|c| c.is_ascii_digit() || matches!(c, '*' | '#' | 'A'..='D'))
            .ok_or(InfoError::BadBody),
        _ => Err(InfoError::BadBody),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Rtp,
    Info,
}

/// Collects one call's digits. A key press is one RTP event however many packets carry
/// it (RFC 4733 §2.5.1.3: a new event has a new timestamp), and the first transport
/// that delivers a digit is the only one heard from then on: endpoints that send both
/// RFC 4733 and INFO for one key press would otherwise count every digit twice.
#[derive(Debug)]
pub struct Collector {
    want: usize,
    digits: String,
    events: HashSet<(u32, u32)>,
    source: Option<Source>,
}

impl Collector {
    pub fn new(want: usize) -> Self {
        Self {
            want,
            digits: String::new(),
            events: HashSet::new(),
            source: None,
        }
    }

    pub fn rtp(&mut self, event: RtpEvent) {
        if self.accepts(Source::Rtp) && self.events.insert((event.ssrc, event.timestamp)) {
            self.push(Source::Rtp, event.digit);
        }
    }

    pub fn info(&mut self, digit: char) {
        if self.accepts(Source::Info) {
            self.push(Source::Info, digit);
        }
    }

    fn accepts(&self, source: Source) -> bool {
        !self.done() && self.source.is_none_or(|s| s == source)
    }

    fn push(&mut self, source: Source, digit: char) {
        self.source = Some(source);
        self.digits.push(digit);
    }

    pub fn done(&self) -> bool {
        self.digits.len() >= self.want
    }

    pub fn got(&self) -> usize {
        self.digits.len()
    }

    pub fn into_digits(self) -> String {
        self.digits
    }
}

/// An RTP telephone-event packet, for tests and the test sender.
pub fn rtp_event_packet(seq: u16, event: RtpEvent, pt: u8, duration: u16) -> Vec<u8> {
    let code = match event.digit {
        '0'..='9' => event.digit as u8 - b'0',
        '*' => 10,
        '#' => 11,
        'A'..='D' => event.digit as u8 - b'A' + 12,
        _ => 0,
    };
    let mut p = vec![0x80, pt & 0x7f];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&event.timestamp.to_be_bytes());
    p.extend_from_slice(&event.ssrc.to_be_bytes());
    // Volume 10 (-10 dBm0), end bit as given.
    p.extend_from_slice(&[code, 10 | if event.end { 0x80 } else { 0 }]);
    p.extend_from_slice(&duration.to_be_bytes());
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ts: u32, digit: char, end: bool) -> RtpEvent {
        RtpEvent {
            ssrc: 7,
            timestamp: ts,
            digit,
            end,
        }
    }

    #[test]
    fn rtp_events_round_trip() {
        for digit in "0123456789*#ABCD".chars() {
            let p = rtp_event_packet(1, ev(160, digit, true), TELEPHONE_EVENT_PT, 800);
            assert_eq!(
                parse_rtp_event(&p, TELEPHONE_EVENT_PT),
                Some(ev(160, digit, true))
            );
        }
    }

    #[test]
    fn rtp_skips_csrcs_and_extensions() {
        let p = rtp_event_packet(1, ev(160, '5', false), TELEPHONE_EVENT_PT, 800);
        let mut q = vec![0x80 | 0x10 | 1, p[1]];
        q.extend_from_slice(&p[2..12]);
        q.extend_from_slice(&[0; 4]); // one CSRC
        q.extend_from_slice(&[0xbe, 0xde, 0, 1, 0, 0, 0, 0]); // one-word extension
        q.extend_from_slice(&p[12..]);
        assert_eq!(
            parse_rtp_event(&q, TELEPHONE_EVENT_PT).map(|e| e.digit),
            Some('5')
        );
    }

    #[test]
    fn rtp_rejects_what_is_not_a_key_event() {
        let good = rtp_event_packet(1, ev(160, '5', false), TELEPHONE_EVENT_PT, 800);
        assert_eq!(parse_rtp_event(&good, 0), None, "other payload type");
        assert_eq!(
            parse_rtp_event(&good[..15], TELEPHONE_EVENT_PT),
            None,
            "short"
        );
        let mut v1 = good.clone();
        v1[0] = 0x40;
        assert_eq!(
            parse_rtp_event(&v1, TELEPHONE_EVENT_PT),
            None,
            "RTP version 1"
        );
        let mut flash = good.clone();
        flash[12] = 16; // hook flash
        assert_eq!(parse_rtp_event(&flash, TELEPHONE_EVENT_PT), None);
        let mut csrcs = good;
        csrcs[0] |= 0x0f;
        assert_eq!(
            parse_rtp_event(&csrcs, TELEPHONE_EVENT_PT),
            None,
            "CSRCs past the end"
        );
        assert_eq!(parse_rtp_event(&[], TELEPHONE_EVENT_PT), None);
    }

    #[test]
    fn one_key_press_is_one_digit() {
        let mut c = Collector::new(3);
        // Start packets, then the end packet sent three times (RFC 4733 §2.5.1.4).
        for end in [false, false, true, true, true] {
            c.rtp(ev(160, '1', end));
        }
        // A key press whose start packets were lost still counts.
        c.rtp(ev(960, '2', true));
        c.rtp(ev(960, '2', true));
        c.rtp(ev(1760, '2', false));
        c.rtp(ev(2560, '9', false)); // beyond the digits wanted
        assert!(c.done());
        assert_eq!(c.into_digits(), "122");
    }

    #[test]
    fn the_first_transport_wins() {
        let mut c = Collector::new(4);
        c.info('4');
        c.rtp(ev(160, '4', true)); // the same key press, sent both ways
        c.info('2');
        assert_eq!(c.got(), 2);
        assert_eq!(c.into_digits(), "42");
    }

    #[test]
    fn info_bodies() {
        let relay = Some(&b"application/dtmf-relay"[..]);
        assert_eq!(parse_info(relay, b"Signal=5\r\nDuration=160\r\n"), Ok('5'));
        assert_eq!(parse_info(relay, b"signal = #\r\n"), Ok('#'));
        assert_eq!(parse_info(relay, b"Signal=10\r\n"), Ok('*'));
        assert_eq!(parse_info(relay, b"Signal=d"), Ok('D'));
        assert_eq!(parse_info(Some(b"Application/DTMF"), b"7\r\n"), Ok('7'));
        assert_eq!(parse_info(relay, b"Duration=160"), Err(InfoError::BadBody));
        assert_eq!(parse_info(relay, b"Signal=55"), Err(InfoError::BadBody));
        assert_eq!(parse_info(relay, b"Signal=E"), Err(InfoError::BadBody));
        assert_eq!(parse_info(relay, b"Signal=\xff"), Err(InfoError::BadBody));
        assert_eq!(
            parse_info(Some(b"text/plain"), b"5"),
            Err(InfoError::UnsupportedType)
        );
        assert_eq!(
            parse_info(None, b"Signal=5"),
            Err(InfoError::UnsupportedType)
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_packets_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = parse_rtp_event(&bytes, TELEPHONE_EVENT_PT);
            let _ = parse_info(Some(b"application/dtmf-relay"), &bytes);
        }
    }
}
