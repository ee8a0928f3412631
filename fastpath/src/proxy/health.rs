//! Peer health: OPTIONS pings to each peer path; a peer that misses `misses` in a row (or
//! answers real INVITEs with 5xx as often) goes down, which takes its numbers off the fast
//! path (`PEERS` state) and sends their calls to the standard route; its next answer
//! brings it back.

use std::{
    io::ErrorKind,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering::Relaxed},
    },
    time::Duration,
};

use std::collections::HashMap;

use tokio::{net::UdpSocket, task::AbortHandle};
use tracing::{info, warn};

use super::counters::{ProxyCounter, ProxyCounters};
use crate::routing::RouteTable;

/// Mirrors a peer's state where the kernel reads it (the `PEERS` map).
pub type StateWriter = Box<dyn Fn(u32, bool) -> anyhow::Result<()> + Send + Sync>;

pub struct PeerHealth {
    table: Arc<RouteTable>,
    misses: Vec<AtomicU32>,
    threshold: u32,
    counters: Arc<ProxyCounters>,
    writer: Option<StateWriter>,
}

impl PeerHealth {
    pub fn new(
        table: Arc<RouteTable>,
        threshold: u32,
        counters: Arc<ProxyCounters>,
        writer: Option<StateWriter>,
    ) -> Self {
        // Room for every peer slot the maps can hold: peers may join the table later.
        let misses = (0..fastpath_common::maps::MAX_PEERS)
            .map(|_| AtomicU32::new(0))
            .collect();
        Self {
            table,
            misses,
            threshold,
            counters,
            writer,
        }
    }

    /// A peer answered a real INVITE with 5xx.
    pub fn record_failure(&self, id: u32) {
        self.counters.add(ProxyCounter::Peer5xx, 1);
        self.missed(id);
    }

    /// The peer answered a ping.
    pub fn answered(&self, id: u32) {
        let Some(m) = self.misses.get(id as usize) else {
            return;
        };
        m.store(0, Relaxed);
        if self.table.set_peer_up(id, true) {
            self.counters.add(ProxyCounter::PeerUp, 1);
            info!(peer = id, "peer answers again: up, back on the fast path");
            self.write(id, true);
        }
    }

    pub fn missed(&self, id: u32) {
        let Some(m) = self.misses.get(id as usize) else {
            return;
        };
        let misses = m.fetch_add(1, Relaxed) + 1;
        if misses >= self.threshold && self.table.set_peer_up(id, false) {
            self.counters.add(ProxyCounter::PeerDown, 1);
            warn!(
                peer = id,
                misses, "peer down: its calls take the standard route"
            );
            self.write(id, false);
        }
    }

    fn write(&self, id: u32, up: bool) {
        if let Some(writer) = &self.writer
            && let Err(error) = writer(id, up)
        {
            warn!(peer = id, %error, "cannot write the peer state to PEERS");
        }
    }
}

/// Pings every active peer every `interval` until the task is dropped: peers that join
/// the table later (the registry's, a reload's) are pinged from the next interval on, and
/// peers no longer in use (a reload removed them, the registry dropped their last number)
/// are no longer pinged.
pub async fn run(health: Arc<PeerHealth>, interval: Duration) {
    let mut tasks = tokio::task::JoinSet::new();
    let mut pinging: HashMap<u32, AbortHandle> = HashMap::new();
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        while tasks.try_join_next().is_some() {}
        pinging.retain(|_, task| !task.is_finished());
        for (id, peer) in health.table.peers().iter().enumerate() {
            let id = id as u32;
            match (peer.active(), pinging.contains_key(&id)) {
                (true, false) => {
                    let health = Arc::clone(&health);
                    let address = peer.address;
                    let task = tasks.spawn(async move {
                        if let Err(error) = ping_loop(&health, id, address, interval).await {
                            warn!(peer = id, %error, "health checks stopped");
                        }
                    });
                    pinging.insert(id, task);
                }
                (false, true) => {
                    if let Some(task) = pinging.remove(&id) {
                        task.abort();
                    }
                }
                _ => {}
            }
        }
    }
}

async fn ping_loop(
    health: &PeerHealth,
    id: u32,
    peer: SocketAddr,
    interval: Duration,
) -> std::io::Result<()> {
    let any: SocketAddr = if peer.is_ipv4() {
        "0.0.0.0:0".parse().map_err(std::io::Error::other)?
    } else {
        "[::]:0".parse().map_err(std::io::Error::other)?
    };
    // Connected: the kernel picks the source address, and reports ICMP unreachable to us.
    let socket = UdpSocket::bind(any).await?;
    socket.connect(peer).await?;
    let local = socket.local_addr()?;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0u8; 4096];
    for seq in 1u32.. {
        tick.tick().await;
        let request = options(peer, local, id, seq);
        health.counters.add(ProxyCounter::PeerPings, 1);
        let answered = match socket.send(request.as_bytes()).await {
            Ok(_) => wait_answer(&socket, &mut buf, seq, interval).await,
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => false,
            Err(e) => return Err(e),
        };
        if answered {
            health.answered(id);
        } else {
            health.counters.add(ProxyCounter::PeerPingMisses, 1);
            health.missed(id);
        }
    }
    Ok(())
}

/// Whether an answer to ping `seq` (any status but 5xx) arrives within `wait`.
async fn wait_answer(socket: &UdpSocket, buf: &mut [u8], seq: u32, wait: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    let cseq = format!("CSeq: {seq} OPTIONS");
    loop {
        match tokio::time::timeout_at(deadline, socket.recv(buf)).await {
            Err(_) => return false,
            Ok(Err(e)) if e.kind() == ErrorKind::ConnectionRefused => return false,
            Ok(Err(_)) => return false,
            Ok(Ok(n)) => {
                let text = &buf[..n];
                let Ok(msg) = crate::sip::Message::parse(text) else {
                    continue;
                };
                let crate::sip::Kind::Response { code } = msg.kind else {
                    continue;
                };
                let matches = text.windows(cseq.len()).any(|w| w == cseq.as_bytes())
                    || msg.cseq.map(|(n, _)| n) == Some(seq);
                if matches && msg.cseq_method() == b"OPTIONS" {
                    if code >= 500 {
                        return false;
                    }
                    return true;
                }
            }
        }
    }
}

fn options(peer: SocketAddr, local: SocketAddr, id: u32, seq: u32) -> String {
    format!(
        "OPTIONS sip:{peer} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bKfph{id}x{seq}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:health@{local}>;tag=fph{id}\r\n\
         To: <sip:{peer}>\r\n\
         Call-ID: fastpath-health-{id}-{seq}@{local}\r\n\
         CSeq: {seq} OPTIONS\r\n\
         Accept: application/sdp\r\n\
         Content-Length: 0\r\n\r\n"
    )
}
