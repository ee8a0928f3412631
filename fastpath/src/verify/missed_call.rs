//! Missed-call verification: the owner calls the gateway's verification number from the
//! number being registered; the trunk's INVITE carries that caller identity. The gateway
//! rejects the call (no call is ever established, nothing is billed) and reports it.
//!
//! The decision ([`classify_missed_call`]) is a pure function, separate from the socket,
//! so that the proxy can make it on its own socket later; [`listen`] is a standalone
//! listener until then.

use std::{collections::VecDeque, net::SocketAddr, time::Duration};

use fastpath_common::{RouteKey, Verdict, classify};
use tokio::{net::UdpSocket, sync::mpsc, time::Instant};
use tracing::debug;

use super::{MAX_MESSAGE, MissedCall, compose, inbound};
use crate::sip::{Message, split_list, uri_of};

/// The status that rejects a verification call: the owner hears that the call was
/// declined, which is the expected end of a missed-call verification.
pub const REJECT_STATUS: u16 = 603;

/// Longest URI we classify: far more than any request line with a phone number.
const URI_WINDOW: usize = 512;

/// `Some` when `message` is an INVITE to `number`, received from the trunk's address,
/// with a caller identity that is a phone number; `None` for anything else, which is
/// not trusted and must be ignored.
///
/// The trunk is recognized by IP address, not port: trunks send from pools of ports.
/// The caller is `P-Asserted-Identity` (RFC 3325, set by the carrier) when present,
/// else the From URI; both go through the same normalizer as the fast path.
pub fn classify_missed_call(
    message: &Message,
    src: SocketAddr,
    trunk: SocketAddr,
    number: RouteKey,
) -> Option<MissedCall> {
    if src.ip().to_canonical() != trunk.ip().to_canonical() {
        return None;
    }
    if message.method() != b"INVITE" || uri_number(message.uri()) != Some(number) {
        return None;
    }
    // A trunk that asserts an identity vouches for it; From is only what the caller sent.
    let caller = match message.header(b"p-asserted-identity") {
        Some(asserted) => asserted_number(asserted)?,
        None => uri_number(uri_of(message.text(message.from))?)?,
    };
    Some(MissedCall {
        caller: caller.to_string(),
    })
}

/// The first phone number among the identities of a P-Asserted-Identity (a `sip:` and a
/// `tel:` URI may both be given, RFC 3325 §9.1).
fn asserted_number(value: &[u8]) -> Option<RouteKey> {
    split_list(value).find_map(|identity| uri_number(uri_of(identity)?))
}

/// The number in a `sip:`/`sips:`/`tel:` URI, decided by the shared classifier.
fn uri_number(uri: &[u8]) -> Option<RouteKey> {
    let line = [&b"INVITE "[..], uri, b" SIP/2.0\r\n"].concat();
    let mut window = [0u8; URI_WINDOW];
    let len = line.len().min(URI_WINDOW);
    window[..len].copy_from_slice(&line[..len]);
    match classify(&window, len) {
        Verdict::Candidate { key, .. } => Some(key),
        Verdict::Pass(_) => None,
    }
}

/// How long a rejected call's Call-ID is remembered: its INVITE retransmissions (timer
/// B's 32 s) get the same answer without counting as new missed calls.
const REMEMBER: Duration = Duration::from_secs(32);
/// At most this many rejected calls remembered; beyond it the oldest is forgotten.
const REMEMBER_MAX: usize = 1024;

/// Receives on `socket` until `tx` is closed: each missed call from the trunk is
/// rejected with 603 and sent on `tx` once; everything else is ignored. Socket errors
/// do not end it.
pub async fn listen(
    socket: UdpSocket,
    trunk: SocketAddr,
    number: RouteKey,
    tx: mpsc::Sender<MissedCall>,
) {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut recent: VecDeque<(Vec<u8>, Instant, Vec<u8>)> = VecDeque::new();
    loop {
        let (len, src) = tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok(received) => received,
                Err(e) => {
                    debug!("missed-call listener: receive error: {e}");
                    continue;
                }
            },
            () = tx.closed() => return,
        };
        let owned = match inbound(&buf[..len]) {
            Ok(owned) => owned,
            Err(problem) => {
                debug!("missed-call listener: ignoring a message from {src}: {problem}");
                continue;
            }
        };
        let message = owned.message();
        let Some(missed) = classify_missed_call(&message, src, trunk, number) else {
            continue;
        };
        // Parsed without an error, a request has a Call-ID.
        let call_id = message.text(message.call_id).to_vec();
        let now = Instant::now();
        while recent
            .front()
            .is_some_and(|(_, at, _)| now.duration_since(*at) > REMEMBER)
            || recent.len() >= REMEMBER_MAX
        {
            recent.pop_front();
        }
        if let Some((_, _, reply)) = recent.iter().find(|(id, _, _)| *id == call_id) {
            // A retransmitted INVITE: the same answer again, not a second missed call.
            send_reply(&socket, reply, src).await;
            continue;
        }
        let tag = compose::random_token();
        let reply = compose::response(&message, REJECT_STATUS, "Decline", Some(&tag));
        send_reply(&socket, &reply, src).await;
        recent.push_back((call_id, now, reply));
        if tx.send(missed).await.is_err() {
            return;
        }
    }
}

/// A reply that cannot be sent (no route back, say) is lost like a datagram: the
/// trunk retransmits, and the listener goes on.
async fn send_reply(socket: &UdpSocket, reply: &[u8], to: SocketAddr) {
    if let Err(e) = socket.send_to(reply, to).await {
        debug!("missed-call listener: cannot answer {to}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::OwnedMessage;
    use fastpath_common::normalize_number;

    const TRUNK: &str = "203.0.113.2:5060";
    const VERIFY_NUMBER: &str = "15550109000";

    fn invite(uri: &str, extra: &str) -> OwnedMessage {
        let text = format!(
            "INVITE {uri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP 203.0.113.2:5060;branch=z9hG4bK1\r\n\
             From: \"Alice\" <sip:+1-555-010-0001@203.0.113.2>;tag=a\r\n\
             To: <{uri}>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        parse(text.as_bytes())
    }

    fn parse(bytes: &[u8]) -> OwnedMessage {
        OwnedMessage::parse(bytes).unwrap()
    }

    fn decide(message: &OwnedMessage, src: &str) -> Option<String> {
        let key = normalize_number(VERIFY_NUMBER.as_bytes()).unwrap();
        let message = message.message();
        classify_missed_call(&message, src.parse().unwrap(), TRUNK.parse().unwrap(), key)
            .map(|m| m.caller)
    }

    const VIA: &str = "Via: SIP/2.0/UDP 203.0.113.2;branch=z9hG4bK2\r\n";

    #[test]
    fn from_the_trunk_to_the_verification_number() {
        let m = invite("sip:+15550109000@203.0.113.1:5080", "");
        assert_eq!(decide(&m, TRUNK).as_deref(), Some("15550100001"));
        // Another source port of the trunk is still the trunk.
        assert_eq!(
            decide(&m, "203.0.113.2:40000").as_deref(),
            Some("15550100001")
        );
        let tel = invite("tel:+1-555-010-9000", "");
        assert_eq!(decide(&tel, TRUNK).as_deref(), Some("15550100001"));
    }

    #[test]
    fn asserted_identity_wins_over_from() {
        let pai =
            "P-Asserted-Identity: \"Bob, Jr\" <sip:+15550100002@carrier>, <tel:+15550100003>\r\n";
        let m = invite("sip:15550109000@203.0.113.1", pai);
        assert_eq!(decide(&m, TRUNK).as_deref(), Some("15550100002"));
        let m = invite(
            "sip:15550109000@203.0.113.1",
            "P-Asserted-Identity: <sip:alice@carrier>, <tel:+15550100003>\r\n",
        );
        assert_eq!(decide(&m, TRUNK).as_deref(), Some("15550100003"));
        let m = invite(
            "sip:15550109000@203.0.113.1",
            "P-Asserted-Identity: <sip:+15550100002@carrier;user=phone>\r\n",
        );
        assert_eq!(decide(&m, TRUNK).as_deref(), Some("15550100002"));
        // An asserted identity that is not a number is not replaced by From.
        let m = invite(
            "sip:15550109000@203.0.113.1",
            "P-Asserted-Identity: <sip:anonymous@anonymous.invalid>\r\n",
        );
        assert_eq!(decide(&m, TRUNK), None);
    }

    #[test]
    fn everything_else_is_ignored() {
        let m = invite("sip:+15550109000@203.0.113.1", "");
        assert_eq!(decide(&m, "192.0.2.2:5060"), None, "not the trunk");
        assert_eq!(decide(&m, "[2001:db8:f::2]:5060"), None, "not the trunk");
        let other = invite("sip:+15550109001@203.0.113.1", "");
        assert_eq!(decide(&other, TRUNK), None, "another number");
        let zero = invite("sip:015550109000@203.0.113.1", "");
        assert_eq!(
            decide(&zero, TRUNK),
            None,
            "a leading zero is another number"
        );
        let ctx = invite("sip:9000;phone-context=+1555010@203.0.113.1", "");
        assert_eq!(
            decide(&ctx, TRUNK),
            None,
            "context the classifier leaves alone"
        );
        let msg = parse(
            format!(
                "MESSAGE sip:15550109000@h SIP/2.0\r\n{VIA}From: <sip:15550100001@t>\r\n\
                 Call-ID: x\r\n\r\n"
            )
            .as_bytes(),
        );
        assert_eq!(decide(&msg, TRUNK), None, "not an INVITE");
        let response = parse(format!("SIP/2.0 200 OK\r\n{VIA}CSeq: 1 INVITE\r\n\r\n").as_bytes());
        assert_eq!(decide(&response, TRUNK), None);
        let anonymous = parse(
            format!(
                "INVITE sip:15550109000@h SIP/2.0\r\n{VIA}\
                 From: <sip:anonymous@anonymous.invalid>\r\n\r\n"
            )
            .as_bytes(),
        );
        assert_eq!(decide(&anonymous, TRUNK), None, "no caller number");
        let no_from = parse(format!("INVITE sip:15550109000@h SIP/2.0\r\n{VIA}\r\n").as_bytes());
        assert_eq!(decide(&no_from, TRUNK), None);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_identities_never_panic(from in ".{0,80}", pai in ".{0,80}", uri in "[ -~]{0,80}") {
            let text = format!(
                "INVITE {uri} SIP/2.0\r\n{VIA}From: {from}\r\nP-Asserted-Identity: {pai}\r\n\r\n"
            );
            if let Ok(m) = OwnedMessage::parse(text.as_bytes()) {
                let _ = decide(&m, TRUNK);
            }
        }
    }
}
