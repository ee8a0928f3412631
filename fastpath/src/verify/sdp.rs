//! The SDP of a verification call: an offer that only wants to hear telephone-events, and
//! what we need from the answer (where media comes from, which payload type the events use).

use std::net::IpAddr;

use super::dtmf::TELEPHONE_EVENT_PT;

/// Our offer (RFC 3264): PCMU because every trunk requires one audio codec, and
/// telephone-event (RFC 4733) for the keys. `recvonly`: we never send media.
pub fn offer(ip: IpAddr, port: u16, session: u64) -> String {
    let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
    let pt = TELEPHONE_EVENT_PT;
    format!(
        "v=0\r\n\
         o=fastpath {session} {session} IN {family} {ip}\r\n\
         s=fastpath verification\r\n\
         c=IN {family} {ip}\r\n\
         t=0 0\r\n\
         m=audio {port} RTP/AVP 0 {pt}\r\n\
         a=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:{pt} telephone-event/8000\r\n\
         a=fmtp:{pt} 0-15\r\n\
         a=recvonly\r\n"
    )
}

/// What the answer says about the media we will receive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    /// The audio stream's connection address (media level, else session level).
    pub media_ip: Option<IpAddr>,
    /// The answer's own payload type for telephone-event, if it names one.
    pub event_pt: Option<u8>,
}

/// Reads an answer leniently: lines it does not understand are skipped.
pub fn parse_answer(body: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(body);
    let mut answer = Answer::default();
    let (mut session_ip, mut audio_ip, mut in_audio) = (None, None, false);
    for line in text.lines().map(str::trim) {
        if let Some(media) = line.strip_prefix("m=") {
            in_audio = media.starts_with("audio ");
        } else if let Some(c) = line.strip_prefix("c=") {
            // c=IN IP4 203.0.113.2 (a multicast /ttl suffix is dropped)
            let ip = c
                .split_whitespace()
                .nth(2)
                .and_then(|a| a.split('/').next()?.parse().ok());
            if in_audio {
                audio_ip = audio_ip.or(ip);
            } else {
                session_ip = session_ip.or(ip);
            }
        } else if let Some(map) = line.strip_prefix("a=rtpmap:")
            && in_audio
            && let Some((pt, encoding)) = map.split_once(' ')
            && encoding
                .to_ascii_lowercase()
                .starts_with("telephone-event/")
        {
            answer.event_pt = answer.event_pt.or(pt.trim().parse().ok());
        }
    }
    answer.media_ip = audio_ip.or(session_ip);
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offer_parses_as_an_answer() {
        let ip: IpAddr = "203.0.113.1".parse().unwrap();
        let a = parse_answer(offer(ip, 40000, 1).as_bytes());
        assert_eq!(a.media_ip, Some(ip));
        assert_eq!(a.event_pt, Some(TELEPHONE_EVENT_PT));
    }

    #[test]
    fn media_level_connection_wins() {
        let a = parse_answer(
            b"v=0\r\nc=IN IP4 192.0.2.9\r\nm=video 1 RTP/AVP 96\r\nc=IN IP4 192.0.2.8\r\n\
              a=rtpmap:96 telephone-event/8000\r\nm=audio 2 RTP/AVP 0 96\r\n\
              c=IN IP6 2001:db8::7\r\na=rtpmap:96 TELEPHONE-EVENT/8000\r\n",
        );
        assert_eq!(a.media_ip, "2001:db8::7".parse().ok());
        assert_eq!(a.event_pt, Some(96));
        let b = parse_answer(b"c=IN IP4 192.0.2.9\r\nm=audio 2 RTP/AVP 0\r\n");
        assert_eq!(b.media_ip, "192.0.2.9".parse().ok());
        assert_eq!(b.event_pt, None);
        assert_eq!(parse_answer(b"\xff garbage"), Answer::default());
    }
}
