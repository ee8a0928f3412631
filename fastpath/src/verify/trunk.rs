//! [`SipTrunkChannel`]: the [`Channel`] that delivers codes through the carrier's SIP
//! trunk, as a UAC with its own local address (RFC 3261 over UDP).

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use tokio::{task::JoinHandle, time::Instant};

use super::{
    Channel, Failure, call, compose, text,
    transport::{Session, Transport},
};
use crate::sip::{Message, split_list};

/// RFC 3261 §17 timer base values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// RTT estimate: the first retransmission interval.
    pub t1: Duration,
    /// Cap on the non-INVITE retransmission interval.
    pub t2: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Self {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
        }
    }
}

impl Timers {
    /// Timers B, F and H: how long a transaction may wait for its final response.
    pub fn transaction(self) -> Duration {
        self.t1 * 64
    }
}

/// Delivers codes through the trunk. Dropping it stops its receive task; calls still in
/// flight then end without their final messages.
pub struct SipTrunkChannel {
    transport: Arc<Transport>,
    timers: Timers,
    receiver: JoinHandle<()>,
}

impl SipTrunkChannel {
    /// Binds `local` (a specific address: it goes into Via, Contact and SDP) and talks to
    /// `trunk`. Must run inside a tokio runtime.
    pub async fn bind(local: SocketAddr, trunk: SocketAddr) -> io::Result<Self> {
        Self::with_timers(local, trunk, Timers::default()).await
    }

    pub async fn with_timers(
        local: SocketAddr,
        trunk: SocketAddr,
        timers: Timers,
    ) -> io::Result<Self> {
        if local.ip().is_unspecified() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the verification UAC needs a specific local address, not a wildcard",
            ));
        }
        let transport = Transport::bind(local, trunk, timers.transaction()).await?;
        let receiver = tokio::spawn(Arc::clone(&transport).run());
        Ok(Self {
            transport,
            timers,
            receiver,
        })
    }

    /// The bound address (with the port chosen if `local` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.transport.local()
    }
}

impl Drop for SipTrunkChannel {
    fn drop(&mut self) {
        self.receiver.abort();
    }
}

impl Channel for SipTrunkChannel {
    async fn send_message(&self, number: &str, text: &str) -> Result<(), Failure> {
        let uri = request_uri(number, self.transport.trunk())?;
        let mut session = self.transport.open();
        let dialog = Dialog::new(&session, uri);
        let branch = compose::branch();
        let request = dialog.request(
            "MESSAGE",
            &branch,
            &[],
            Some(("text/plain;charset=UTF-8", text.as_bytes())),
        );
        // Nothing else belongs on a MESSAGE's Call-ID: requests on it get a 481.
        let outcome = non_invite(
            &mut session,
            &request,
            &branch,
            "MESSAGE",
            self.timers,
            |m| {
                Some(compose::response(
                    m,
                    481,
                    "Call/Transaction Does Not Exist",
                    None,
                ))
            },
        )
        .await?;
        match outcome {
            Some(status) if (200..300).contains(&status) => Ok(()),
            Some(status) => Err(Failure::from_status(status)),
            None => Err(Failure::NoAnswer(self.timers.transaction())),
        }
    }

    async fn collect_dtmf(
        &self,
        number: &str,
        digits: usize,
        timeout: Duration,
    ) -> Result<String, Failure> {
        let uri = request_uri(number, self.transport.trunk())?;
        if digits == 0 {
            return Ok(String::new()); // nothing to collect: no call placed
        }
        call::collect(&self.transport, self.timers, uri, digits, timeout).await
    }
}

/// ITU-T E.164 caps a number at 15 digits.
const MAX_E164_DIGITS: usize = 15;

/// `sip:<number>@<trunk>`; the registry hands over E.164 digits without `+`.
fn request_uri(number: &str, trunk: SocketAddr) -> Result<String, Failure> {
    let valid = !number.is_empty()
        && number.len() <= MAX_E164_DIGITS
        && number.bytes().all(|b| b.is_ascii_digit());
    if !valid {
        // Not a delivery failure the trunk reported: the registry handed over a bad number.
        return Err(Failure::Unreachable(format!(
            "{number:?} is not an E.164 number (digits only, at most 15)"
        )));
    }
    Ok(format!("sip:{number}@{trunk}"))
}

/// The UAC's side of a dialog (or of a lone MESSAGE transaction).
pub(super) struct Dialog {
    pub call_id: String,
    pub local_tag: String,
    /// Request-URI: the number at the trunk, then the far end's Contact once answered.
    pub target: String,
    to_uri: String,
    pub remote_tag: Option<String>,
    /// Record-Route of the answer, reversed (RFC 3261 §12.1.2).
    pub route_set: Vec<String>,
    local: SocketAddr,
    pub cseq: u32,
}

impl Dialog {
    pub fn new(session: &Session, uri: String) -> Self {
        Self {
            call_id: session.call_id.clone(),
            local_tag: compose::random_token(),
            target: uri.clone(),
            to_uri: uri,
            remote_tag: None,
            route_set: Vec::new(),
            local: session.transport().local(),
            cseq: 1,
        }
    }

    /// Takes the far end's tag, target and route set from a 2xx to the INVITE.
    pub fn establish(&mut self, answer: &Message) {
        self.remote_tag = answer.to_tag().map(text);
        if let Some(contact) = answer.contact_uri() {
            self.target = text(contact);
        }
        self.route_set = answer
            .header_values(b"record-route")
            .flat_map(split_list)
            .map(text)
            .collect();
        self.route_set.reverse();
    }

    /// A request in this dialog with CSeq `self.cseq`; `extra` headers go after the
    /// standard ones.
    pub fn request(
        &self,
        method: &str,
        branch: &str,
        extra: &[(&str, String)],
        body: Option<(&str, &[u8])>,
    ) -> Vec<u8> {
        self.request_to(&self.target, method, branch, self.cseq, extra, body)
    }

    /// As [`Dialog::request`], with the Request-URI and CSeq number given: an ACK to a
    /// final error and a CANCEL reuse the INVITE's (§17.1.1.3, §9.1).
    pub fn request_to(
        &self,
        uri: &str,
        method: &str,
        branch: &str,
        cseq: u32,
        extra: &[(&str, String)],
        body: Option<(&str, &[u8])>,
    ) -> Vec<u8> {
        let local = self.local;
        let mut to = format!("<{}>", self.to_uri);
        if let Some(tag) = &self.remote_tag {
            to.push_str(&format!(";tag={tag}"));
        }
        let mut headers: Vec<(&str, String)> = vec![
            ("Via", format!("SIP/2.0/UDP {local};branch={branch};rport")),
            ("Max-Forwards", "70".into()),
            (
                "From",
                format!("<sip:fastpath@{local}>;tag={}", self.local_tag),
            ),
            ("To", to),
            ("Call-ID", self.call_id.clone()),
            ("CSeq", format!("{cseq} {method}")),
        ];
        headers.extend(self.route_set.iter().map(|r| ("Route", r.clone())));
        headers.extend(extra.iter().cloned());
        headers.push(("User-Agent", compose::AGENT.into()));
        compose::request(method, uri, &headers, body)
    }

    /// Whether `message` is a request inside this dialog (its To tag is ours).
    pub fn is_ours(&self, request: &Message) -> bool {
        request.to_tag() == Some(self.local_tag.as_bytes())
    }
}

/// Whether `response` answers the client transaction `branch` of `method`.
pub(super) fn answers(response: &Message, branch: &str, method: &str) -> bool {
    response.status().is_some()
        && response.top_branch() == Some(branch.as_bytes())
        && response.cseq_method() == method.as_bytes()
}

/// A non-INVITE client transaction (RFC 3261 §17.1.2): sends `request`, retransmits
/// it per timer E (T1 doubling up to T2; T2 once a provisional arrived), and returns the
/// final status, or `None` when timer F expires. Other messages for the session go to
/// `other`, whose reply (if any) is sent to the trunk.
pub(super) async fn non_invite(
    session: &mut Session,
    request: &[u8],
    branch: &str,
    method: &str,
    timers: Timers,
    mut other: impl FnMut(&Message) -> Option<Vec<u8>>,
) -> Result<Option<u16>, Failure> {
    let transport = Arc::clone(session.transport());
    transport.send(request).await?;
    let timer_f = Instant::now() + timers.transaction();
    let mut interval = timers.t1;
    let mut next = Instant::now() + interval;
    loop {
        tokio::select! {
            message = session.recv() => {
                let Some(owned) = message else { return Ok(None) };
                let message = owned.message();
                match message.status() {
                    Some(status) if answers(&message, branch, method) => {
                        if status >= 200 {
                            return Ok(Some(status));
                        }
                        interval = timers.t2;
                    }
                    Some(_) => {}
                    None => {
                        if let Some(reply) = other(&message) {
                            transport.send(&reply).await?;
                        }
                    }
                }
            }
            () = tokio::time::sleep_until(next) => {
                transport.send(request).await?;
                interval = (interval * 2).min(timers.t2);
                next = Instant::now() + interval;
            }
            () = tokio::time::sleep_until(timer_f) => return Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_uris_take_only_e164_digits() {
        let trunk: SocketAddr = "203.0.113.2:5060".parse().unwrap();
        assert_eq!(
            request_uri("15550100001", trunk).unwrap(),
            "sip:15550100001@203.0.113.2:5060"
        );
        let v6: SocketAddr = "[2001:db8:f::2]:5060".parse().unwrap();
        assert_eq!(request_uri("1", v6).unwrap(), "sip:1@[2001:db8:f::2]:5060");
        for bad in ["", "+1555", "1555@evil", "1234567890123456", "12 34"] {
            assert!(request_uri(bad, trunk).is_err(), "{bad:?}");
        }
    }
}
