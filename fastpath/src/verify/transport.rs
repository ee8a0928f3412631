//! The verification UAC's one UDP socket toward the trunk, shared by every code delivery
//! in flight: received messages go to the delivery whose Call-ID they carry.
//!
//! A delivery that has ended leaves its Call-ID behind for a while (timer H's 64·T1), so
//! that a final response the trunk retransmits is ACKed again and a late request gets a
//! 481, instead of either side retransmitting into silence.

use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use tokio::{net::UdpSocket, sync::mpsc, time::Instant};
use tracing::debug;

use super::{Failure, MAX_MESSAGE, compose, inbound};
use crate::sip::OwnedMessage;

/// Messages a delivery has not read yet; beyond this, the trunk's retransmissions cover.
const QUEUE: usize = 64;

enum Route {
    Live(mpsc::Sender<OwnedMessage>),
    Ended {
        ack: Option<Vec<u8>>,
        until: Instant,
    },
}

pub struct Transport {
    socket: UdpSocket,
    trunk: SocketAddr,
    local: SocketAddr,
    linger: Duration,
    routes: Mutex<HashMap<String, Route>>,
}

impl Transport {
    pub async fn bind(
        local: SocketAddr,
        trunk: SocketAddr,
        linger: Duration,
    ) -> io::Result<Arc<Self>> {
        let socket = UdpSocket::bind(local).await?;
        let local = socket.local_addr()?;
        Ok(Arc::new(Self {
            socket,
            trunk,
            local,
            linger,
            routes: Mutex::new(HashMap::new()),
        }))
    }

    pub fn local(&self) -> SocketAddr {
        self.local
    }

    pub fn trunk(&self) -> SocketAddr {
        self.trunk
    }

    pub async fn send(&self, bytes: &[u8]) -> Result<(), Failure> {
        self.socket
            .send_to(bytes, self.trunk)
            .await
            .map(drop)
            .map_err(|e| Failure::Unreachable(format!("sending to {}: {e}", self.trunk)))
    }

    /// A new Call-ID whose messages go to the returned session.
    pub fn open(self: &Arc<Self>) -> Session {
        let call_id = format!("{}@{}", compose::random_token(), self.local.ip());
        let (tx, rx) = mpsc::channel(QUEUE);
        let mut routes = self.routes();
        let now = Instant::now();
        routes.retain(|_, r| !matches!(r, Route::Ended { until, .. } if *until <= now));
        routes.insert(call_id.clone(), Route::Live(tx));
        Session {
            call_id,
            rx,
            ack: None,
            transport: Arc::clone(self),
        }
    }

    fn routes(&self) -> MutexGuard<'_, HashMap<String, Route>> {
        // A panic while holding the lock cannot leave the map inconsistent (every update
        // is a single insert or remove), so a poisoned lock is still usable.
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Receives until the task is aborted (when the channel is dropped).
    pub async fn run(self: Arc<Self>) {
        let mut buf = vec![0u8; MAX_MESSAGE];
        loop {
            let (len, src) = match self.socket.recv_from(&mut buf).await {
                Ok(received) => received,
                Err(e) => {
                    // E.g. an ICMP error reported on the socket: nothing to do but go on.
                    debug!("verify: receive error: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            // Only the trunk talks to the verification UAC; anything else is untrusted.
            if src.ip().to_canonical() != self.trunk.ip().to_canonical() {
                debug!("verify: ignoring {len} bytes from {src}");
                continue;
            }
            let message = match inbound(&buf[..len]) {
                Ok(m) => m,
                Err(problem) => {
                    debug!("verify: ignoring a message from {src}: {problem}");
                    continue;
                }
            };
            if let Some(reply) = self.dispatch(message) {
                let _ = self.socket.send_to(&reply, src).await;
            }
        }
    }

    /// Hands `message` to its session; returns what to send back when there is none.
    fn dispatch(&self, owned: OwnedMessage) -> Option<Vec<u8>> {
        let message = owned.message();
        // Our Call-IDs are ASCII: one that is not UTF-8 belongs to no session.
        let call_id = std::str::from_utf8(message.text(message.call_id)).ok()?;
        let mut routes = self.routes();
        let stale = match routes.get(call_id) {
            Some(Route::Live(tx)) => {
                // A full queue drops the message, as the network could have.
                let _ = tx.try_send(owned);
                return None;
            }
            Some(Route::Ended { ack, until }) if *until > Instant::now() => {
                let final_to_invite = message.status().is_some_and(|s| s >= 200)
                    && message.cseq_method() == b"INVITE";
                if final_to_invite {
                    return ack.clone();
                }
                false
            }
            Some(Route::Ended { .. }) => true,
            None => false,
        };
        if stale {
            routes.remove(call_id);
        }
        drop(routes);
        match message.method() {
            b"ACK" | b"" => None,
            _ => Some(compose::response(
                &message,
                481,
                "Call/Transaction Does Not Exist",
                None,
            )),
        }
    }
}

/// One delivery's Call-ID and its incoming messages.
pub struct Session {
    pub call_id: String,
    pub rx: mpsc::Receiver<OwnedMessage>,
    /// The last ACK sent, re-sent for final responses retransmitted after the end.
    pub ack: Option<Vec<u8>>,
    transport: Arc<Transport>,
}

impl Session {
    pub fn transport(&self) -> &Arc<Transport> {
        &self.transport
    }

    /// The next message for this session. The transport outlives every session, so the
    /// queue never closes while one is alive.
    pub async fn recv(&mut self) -> Option<OwnedMessage> {
        self.rx.recv().await
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let until = Instant::now() + self.transport.linger;
        let ack = self.ack.take();
        self.transport.routes().insert(
            std::mem::take(&mut self.call_id),
            Route::Ended { ack, until },
        );
    }
}
