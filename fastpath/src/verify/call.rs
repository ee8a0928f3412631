//! The verification call: INVITE through the trunk, wait for the answer, collect DTMF
//! digits (RFC 4733 and SIP INFO), hang up.

use std::{collections::HashSet, net::IpAddr, sync::Arc, time::Duration};

use tokio::{net::UdpSocket, time::Instant};
use tracing::debug;

use super::{
    Failure, compose,
    dtmf::{self, Collector, InfoError},
    sdp, text,
    transport::{Session, Transport},
    trunk::{Dialog, Timers, answers, non_invite},
};
use crate::sip::{Message, OwnedMessage};

/// Places the call and returns the first `want` digits typed; see
/// [`super::Channel::collect_dtmf`]. `timeout` bounds the whole call, ringing and typing.
pub(super) async fn collect(
    transport: &Arc<Transport>,
    timers: Timers,
    uri: String,
    want: usize,
    timeout: Duration,
) -> Result<String, Failure> {
    let deadline = Instant::now() + timeout;
    let local = transport.local();
    // Bound before the offer names it, so no early packet is lost.
    let rtp = UdpSocket::bind((local.ip(), 0))
        .await
        .map_err(|e| Failure::Unreachable(format!("binding an RTP port: {e}")))?;
    let rtp_port = rtp
        .local_addr()
        .map_err(|e| Failure::Unreachable(format!("RTP port: {e}")))?
        .port();

    let mut session = transport.open();
    let mut dialog = Dialog::new(&session, uri);
    let offer = sdp::offer(local.ip(), rtp_port, session_id());
    let invite = Invite {
        uri: dialog.target.clone(),
        branch: compose::branch(),
        cseq: dialog.cseq,
    };
    let contact = [("Contact", format!("<sip:fastpath@{local}>"))];
    let request = dialog.request(
        "INVITE",
        &invite.branch,
        &contact,
        Some(("application/sdp", offer.as_bytes())),
    );
    let answer = match ring(&mut session, &invite, &request, timers, deadline).await? {
        Ringing::Answered(answer) => answer,
        Ringing::TimedOut { provisional } => {
            if provisional
                && let Some(late) = cancel(&mut session, &mut dialog, &invite, timers).await?
            {
                // Answered as we gave up: end that call too.
                dialog.establish(&late.message());
                acknowledge(&mut session, &dialog).await?;
                hang_up(session, dialog, timers);
            }
            return Err(Failure::NoAnswer(timeout));
        }
        Ringing::Failed { status, to_tag } => {
            // A final error is ACKed within the INVITE transaction, its To as in the
            // response (§17.1.1.3).
            dialog.remote_tag = to_tag;
            let ack = dialog.request_to(&invite.uri, "ACK", &invite.branch, invite.cseq, &[], None);
            transport.send(&ack).await?;
            session.ack = Some(ack);
            return Err(Failure::from_status(status));
        }
    };

    let answer = answer.message();
    dialog.establish(&answer);
    acknowledge(&mut session, &dialog).await?;
    let media = sdp::parse_answer(answer.body_bytes());
    let listen = Media {
        // Telephone-events are trusted from the answer's media address only.
        source: media.media_ip.unwrap_or(transport.trunk().ip()),
        payload_types: [Some(dtmf::TELEPHONE_EVENT_PT), media.event_pt]
            .into_iter()
            .flatten()
            .collect(),
    };
    let mut digits = Collector::new(want);
    let hung_up =
        listen_for_digits(&mut session, &dialog, &rtp, &listen, &mut digits, deadline).await?;
    if !hung_up {
        hang_up(session, dialog, timers);
    }
    if digits.done() {
        Ok(digits.into_digits())
    } else {
        Err(Failure::IncompleteDigits {
            got: digits.got(),
            want,
        })
    }
}

/// The INVITE client transaction's identity: CANCEL and the ACK of an error reuse it.
struct Invite {
    uri: String,
    branch: String,
    cseq: u32,
}

enum Ringing {
    Answered(OwnedMessage),
    Failed { status: u16, to_tag: Option<String> },
    TimedOut { provisional: bool },
}

/// Sends the INVITE, retransmitting per timer A until a response, and waits for the
/// final response until `deadline` (RFC 3261 §17.1.1).
async fn ring(
    session: &mut Session,
    invite: &Invite,
    request: &[u8],
    timers: Timers,
    deadline: Instant,
) -> Result<Ringing, Failure> {
    let transport = Arc::clone(session.transport());
    transport.send(request).await?;
    let timer_b = Instant::now() + timers.transaction();
    let mut provisional = false;
    let mut interval = timers.t1;
    let mut next = Instant::now() + interval;
    loop {
        tokio::select! {
            message = session.recv() => {
                let Some(owned) = message else { return Ok(Ringing::TimedOut { provisional }) };
                let message = owned.message();
                match message.status() {
                    Some(status) if answers(&message, &invite.branch, "INVITE") => match status {
                        100..=199 => provisional = true,
                        200..=299 => return Ok(Ringing::Answered(owned)),
                        _ => return Ok(Ringing::Failed {
                            status,
                            to_tag: message.to_tag().map(text),
                        }),
                    },
                    Some(_) => {}
                    None => {
                        // No dialog yet: nothing may arrive inside it.
                        if let Some(reply) = no_dialog(&message) {
                            transport.send(&reply).await?;
                        }
                    }
                }
            }
            () = tokio::time::sleep_until(next), if !provisional => {
                if Instant::now() >= timer_b {
                    return Err(Failure::Unreachable(format!(
                        "no response from the trunk to INVITE within {:?}",
                        timers.transaction()
                    )));
                }
                transport.send(request).await?;
                interval *= 2;
                next = Instant::now() + interval;
            }
            () = tokio::time::sleep_until(deadline) => return Ok(Ringing::TimedOut { provisional }),
        }
    }
}

/// Cancels the ringing INVITE (RFC 3261 §9.1) and waits for its final response: the 487
/// is ACKed; a 2xx that crossed the CANCEL is returned so that the caller can end it.
async fn cancel(
    session: &mut Session,
    dialog: &mut Dialog,
    invite: &Invite,
    timers: Timers,
) -> Result<Option<OwnedMessage>, Failure> {
    let transport = Arc::clone(session.transport());
    let request = dialog.request_to(
        &invite.uri,
        "CANCEL",
        &invite.branch,
        invite.cseq,
        &[],
        None,
    );
    transport.send(&request).await?;
    let give_up = Instant::now() + timers.transaction();
    let mut cancel_answered = false;
    let mut interval = timers.t1;
    let mut next = Instant::now() + interval;
    loop {
        tokio::select! {
            message = session.recv() => {
                let Some(owned) = message else { return Ok(None) };
                let message = owned.message();
                if answers(&message, &invite.branch, "CANCEL") {
                    cancel_answered = message.status().is_some_and(|s| s >= 200);
                } else if let Some(status) = message.status().filter(|_| answers(&message, &invite.branch, "INVITE")) {
                    match status {
                        100..=199 => {}
                        200..=299 => return Ok(Some(owned)),
                        _ => {
                            dialog.remote_tag = message.to_tag().map(text);
                            let ack = dialog.request_to(&invite.uri, "ACK", &invite.branch, invite.cseq, &[], None);
                            transport.send(&ack).await?;
                            session.ack = Some(ack);
                            return Ok(None);
                        }
                    }
                } else if message.status().is_none()
                    && let Some(reply) = no_dialog(&message)
                {
                    transport.send(&reply).await?;
                }
            }
            () = tokio::time::sleep_until(next), if !cancel_answered => {
                transport.send(&request).await?;
                interval = (interval * 2).min(timers.t2);
                next = Instant::now() + interval;
            }
            () = tokio::time::sleep_until(give_up) => return Ok(None),
        }
    }
}

/// ACKs the 2xx (a new transaction, §13.2.2.4) and keeps the ACK for retransmitted 2xx.
async fn acknowledge(session: &mut Session, dialog: &Dialog) -> Result<(), Failure> {
    let ack = dialog.request("ACK", &compose::branch(), &[], None);
    session.transport().send(&ack).await?;
    session.ack = Some(ack);
    Ok(())
}

/// Where the digits may come from.
struct Media {
    source: IpAddr,
    payload_types: HashSet<u8>,
}

/// Reads digits until enough arrived, the far end hung up (`true`), or `deadline`.
async fn listen_for_digits(
    session: &mut Session,
    dialog: &Dialog,
    rtp: &UdpSocket,
    media: &Media,
    digits: &mut Collector,
    deadline: Instant,
) -> Result<bool, Failure> {
    let transport = Arc::clone(session.transport());
    let mut packet = [0u8; 1500];
    while !digits.done() {
        tokio::select! {
            message = session.recv() => {
                let Some(owned) = message else { return Ok(false) };
                let message = owned.message();
                if message.status().is_some() {
                    // The 2xx again: our ACK was lost.
                    if message.cseq_method() == b"INVITE"
                        && let Some(ack) = &session.ack
                    {
                        transport.send(ack).await?;
                    }
                    continue;
                }
                let (reply, bye) = in_dialog(dialog, &message, Some(digits));
                if let Some(reply) = reply {
                    transport.send(&reply).await?;
                }
                if bye {
                    return Ok(true);
                }
            }
            received = rtp.recv_from(&mut packet) => {
                let Ok((len, src)) = received else { continue };
                if src.ip().to_canonical() != media.source.to_canonical() {
                    debug!("verify: ignoring RTP from {src}");
                    continue;
                }
                let event = media
                    .payload_types
                    .iter()
                    .find_map(|&pt| dtmf::parse_rtp_event(&packet[..len], pt));
                if let Some(event) = event {
                    digits.rtp(event);
                }
            }
            () = tokio::time::sleep_until(deadline) => return Ok(false),
        }
    }
    Ok(false)
}

/// Answers a request inside the call; `true` when it is the far end's BYE.
fn in_dialog(
    dialog: &Dialog,
    request: &Message,
    digits: Option<&mut Collector>,
) -> (Option<Vec<u8>>, bool) {
    let ok = |r: &Message| compose::response(r, 200, "OK", None);
    let method = request.method();
    if matches!(method, b"ACK" | b"") {
        // An ACK is never answered; a response is no request to answer.
        return (None, false);
    }
    if !dialog.is_ours(request) {
        return (no_dialog(request), false);
    }
    let reply = match method {
        b"BYE" => return (Some(ok(request)), true),
        b"INFO" => match dtmf::parse_info(request.content_type(), request.body_bytes()) {
            Ok(digit) => {
                if let Some(digits) = digits {
                    digits.info(digit);
                }
                ok(request)
            }
            Err(InfoError::UnsupportedType) => {
                compose::response(request, 415, "Unsupported Media Type", None)
            }
            Err(InfoError::BadBody) => compose::response(request, 400, "Bad DTMF Signal", None),
        },
        b"OPTIONS" => ok(request),
        _ => compose::response(request, 501, "Not Implemented", None),
    };
    (Some(reply), false)
}

/// A request on our Call-ID outside any dialog we have: 481, except ACK (never answered).
fn no_dialog(request: &Message) -> Option<Vec<u8>> {
    (request.method() != b"ACK")
        .then(|| compose::response(request, 481, "Call/Transaction Does Not Exist", None))
}

/// Sends BYE in the background (the result is known; the registry need not wait for
/// the trunk's 200), answering whatever else arrives in the dialog meanwhile.
fn hang_up(mut session: Session, mut dialog: Dialog, timers: Timers) {
    tokio::spawn(async move {
        dialog.cseq += 1;
        let branch = compose::branch();
        let bye = dialog.request("BYE", &branch, &[], None);
        let result = non_invite(&mut session, &bye, &branch, "BYE", timers, |message| {
            in_dialog(&dialog, message, None).0
        })
        .await;
        debug!("verify: BYE for {} ended with {result:?}", dialog.call_id);
    });
}

/// SDP session id: any number unique enough per call (RFC 4566 suggests NTP time).
fn session_id() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
