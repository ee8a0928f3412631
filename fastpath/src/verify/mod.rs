//! Ownership verification: how a code reaches a number's owner over the carrier trunk,
//! and how a missed call from the number is recognized.
//!
//! This is the contract between the registry (which owns codes, attempts, expiry and
//! state) and the SIP side (which only delivers and observes). Numbers are E.164 digits
//! without the `+`, as stored in the registry.

use std::{future::Future, time::Duration};

mod call;
mod compose;
pub mod dtmf;
pub mod missed_call;
pub mod sdp;
mod transport;
pub mod trunk;

pub use trunk::{SipTrunkChannel, Timers};

use crate::sip::OwnedMessage;

/// Largest message the verification sockets read: a UDP datagram.
const MAX_MESSAGE: usize = 65_535;

/// A message from the trunk that the verification side acts on, or why it is ignored.
/// Besides what the parser drops, a message with a problem the proxy would answer 400
/// or 505 for (a missing Call-ID, a malformed CSeq, …) is ignored: the UAC is no proxy,
/// and a trunk that sends such a message retransmits it and then gives up, as it would
/// on a lost datagram.
fn inbound(bytes: &[u8]) -> Result<OwnedMessage, &'static str> {
    let owned = OwnedMessage::parse(bytes).map_err(|e| e.0)?;
    match owned.message().error {
        Some((_, problem)) => Err(problem),
        None => Ok(owned),
    }
}

/// A header value we keep (a tag, a URI) as text. Every such value we act on is ASCII
/// (tokens and URIs, RFC 3261 §25.1); anything else only has to stay unequal to ours.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// How a number's owner proves control of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// The gateway calls the number; the owner types the code on the keypad (DTMF).
    Call,
    /// The gateway sends the code in a SIP MESSAGE; the owner submits it through the API.
    Message,
    /// The owner calls the gateway's verification number from the number itself.
    MissedCall,
}

/// Why a delivery did not verify; recorded on the number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("no answer within {0:?}")]
    NoAnswer(Duration),
    #[error("busy")]
    Busy,
    /// 404, 410, 484 or 604 from the trunk: the number is no longer the owner's.
    #[error("number gone (SIP {0})")]
    NumberGone(u16),
    #[error("trunk answered SIP {0}")]
    Status(u16),
    #[error("trunk unreachable: {0}")]
    Unreachable(String),
    #[error("call ended after {got} of {want} digits")]
    IncompleteDigits { got: usize, want: usize },
}

impl Failure {
    /// The statuses that mean the number was reassigned or no longer exists.
    pub fn from_status(status: u16) -> Self {
        match status {
            404 | 410 | 484 | 604 => Failure::NumberGone(status),
            486 | 600 => Failure::Busy,
            _ => Failure::Status(status),
        }
    }
}

/// Delivers codes through the carrier trunk.
pub trait Channel: Send + Sync + 'static {
    /// Sends `text` (which carries the code) to `number` in a SIP MESSAGE (RFC 3428);
    /// `Ok` once the trunk answers 2xx.
    fn send_message(
        &self,
        number: &str,
        text: &str,
    ) -> impl Future<Output = Result<(), Failure>> + Send;

    /// Calls `number` through the trunk and returns the first `digits` DTMF digits
    /// entered (RFC 4733 telephone-events or SIP INFO `application/dtmf-relay`), then
    /// hangs up.
    fn collect_dtmf(
        &self,
        number: &str,
        digits: usize,
        timeout: Duration,
    ) -> impl Future<Output = Result<String, Failure>> + Send;
}

/// An INVITE to the verification number, received from the trunk's own address, whose
/// caller identity is `caller`; the gateway has already rejected the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissedCall {
    pub caller: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_messages_without_problems_are_acted_on() {
        let ok = "MESSAGE sip:1@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
                  From: <sip:2@t>;tag=f\r\nTo: <sip:1@h>\r\nCall-ID: c\r\nCSeq: 1 MESSAGE\r\n\r\n";
        assert!(inbound(ok.as_bytes()).is_ok());
        assert_eq!(
            inbound(ok.replace("Call-ID: c\r\n", "").as_bytes()).err(),
            Some("Missing Call-ID"),
            "a 400 for the proxy, ignored here"
        );
        assert!(inbound(b"\r\n\r\n").is_err());
    }
}
