//! A parsed message that owns its bytes, for code that keeps a message past the buffer
//! it was received into (the verification UAC queues them per dialog).

use super::{Message, ParseError};

/// A copy of a datagram and its [`Message`] layout. The layout holds byte ranges only, so
/// it is parsed once and laid over the copy whenever the message is read.
#[derive(Clone)]
pub struct OwnedMessage {
    bytes: Box<[u8]>,
    /// Parsed from `bytes`, kept over an empty buffer: only [`OwnedMessage::message`]
    /// gives it its bytes back. Boxed: the layout is some 500 bytes, and owned messages
    /// wait in queues.
    layout: Box<Message<'static>>,
}

impl OwnedMessage {
    /// Copies `bytes` and parses them; as [`Message::parse`], `Ok` may carry an `error`.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let bytes: Box<[u8]> = bytes.into();
        let layout = Box::new(Message::parse(&bytes)?.over(&[]));
        Ok(Self { bytes, layout })
    }

    pub fn message(&self) -> Message<'_> {
        self.layout.over(&self.bytes)
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl std::fmt::Debug for OwnedMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_same_as_the_borrowed_message() {
        let text = b"SIP/2.0 486 Busy Here\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
                     To: <sip:1@h>;tag=t\r\nCSeq: 2 INVITE\r\n\r\n";
        let owned = OwnedMessage::parse(text).expect("parses");
        let clone = owned.clone();
        drop(owned);
        let m = clone.message();
        assert_eq!((m.status(), m.reason()), (Some(486), &b"Busy Here"[..]));
        assert_eq!(m.to_tag(), Some(&b"t"[..]));
        assert_eq!(m.top_branch(), Some(&b"z9hG4bK1"[..]));
        assert_eq!(clone.bytes(), text);
        assert!(OwnedMessage::parse(b"junk").is_err());
    }
}
