//! The proxy over TCP (RFC 3261 §18): listeners on every proxy address, one tokio task
//! per connection, inbound and outbound alike.
//!
//! A connection task frames messages out of its stream (`framing.rs`) and hands each to
//! [`Proxy::handle_over`], the same decision as for a datagram; it sends what comes out
//! over UDP, over its own connection (our own answers), or over the connection table.
//! The table maps a remote address to the connection that reaches it: an inbound one by
//! its source address (which `received` + `rport` name in the caller's Via, so responses
//! find it), an outbound one by the next hop's address (one per destination, reused).
//! UDP workers send into the same table when a response must go back over TCP.
//!
//! tokio rather than the UDP workers' batched threads: TCP needs per-connection state and
//! timers, and has no batched syscalls to win; TCP signalling rates are far below UDP's.

use std::{
    collections::HashMap,
    io,
    net::{IpAddr, SocketAddr, UdpSocket},
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
};

use anyhow::Context;
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpSocket, TcpStream, tcp::OwnedWriteHalf},
    sync::{mpsc, watch},
    time::Instant,
};
use tracing::{debug, warn};

use super::{
    Action, Inbound, Proxy, ProxyCounters, Tally,
    core::{MAX_DATAGRAM, Transport},
    counters::ProxyCounter,
    framing::{Frame, FrameError, PONG, next_frame},
    settings::TcpConfig,
    udp::RouteCache,
};

/// Messages queued for one connection before further ones are refused (a stuck peer must
/// not hold the memory of a whole call burst).
const QUEUE: usize = 256;
/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 8 * 1024;

/// The TCP side of the proxy; dropping the last handle does not stop it: [`Streams::stop`].
pub struct Streams {
    proxy: Arc<Proxy>,
    counters: Arc<ProxyCounters>,
    config: TcpConfig,
    /// The UDP workers' sockets, one per local address, for what leaves over UDP.
    udp: OnceLock<Vec<UdpSocket>>,
    table: Mutex<Table>,
    runtime: tokio::runtime::Handle,
    next_id: AtomicU64,
    shutdown: watch::Sender<bool>,
}

#[derive(Default)]
struct Table {
    /// Where a message to an address goes; several addresses may name one connection.
    routes: HashMap<SocketAddr, Route>,
    open: usize,
    per_ip: HashMap<IpAddr, usize>,
}

struct Route {
    id: u64,
    tx: mpsc::Sender<Vec<u8>>,
}

/// A connection's place under the caps and in the table; freed when the task ends.
struct Slot {
    streams: Arc<Streams>,
    id: u64,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut table = self.streams.lock();
        table.open -= 1;
        if let Some(n) = table.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                table.per_ip.remove(&self.ip);
            }
        }
        let id = self.id;
        table.routes.retain(|_, r| r.id != id);
    }
}

impl Streams {
    /// The TCP side, not yet listening (must run inside a tokio runtime).
    pub fn new(proxy: Arc<Proxy>, counters: Arc<ProxyCounters>, config: TcpConfig) -> Arc<Self> {
        Arc::new(Self {
            proxy,
            counters,
            config,
            udp: OnceLock::new(),
            table: Mutex::new(Table::default()),
            runtime: tokio::runtime::Handle::current(),
            next_id: AtomicU64::new(1),
            shutdown: watch::channel(false).0,
        })
    }

    /// Gives the sockets UDP forwards leave from (the UDP workers', so the source is our
    /// SIP address), then listens on every proxy address.
    pub fn listen(self: &Arc<Self>, udp: Vec<UdpSocket>) -> anyhow::Result<()> {
        let _ = self.udp.set(udp);
        for &addr in self.proxy.locals() {
            let listener =
                bind(addr).with_context(|| format!("binding the proxy to TCP {addr}"))?;
            let this = Arc::clone(self);
            self.runtime.spawn(this.accept(listener));
        }
        Ok(())
    }

    /// Closes the listeners and every connection.
    pub fn stop(&self) {
        self.shutdown.send_replace(true);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic elsewhere cannot leave the table inconsistent: every change is one step.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `data` over the connection to `to`, opening one to `connect` from our local
    /// address number `local` if none is open. Never blocks: callable from a UDP worker.
    pub fn send(self: &Arc<Self>, to: SocketAddr, connect: SocketAddr, local: usize, data: &[u8]) {
        let mut table = self.lock();
        if let Some(route) = table.routes.get(&to) {
            match route.tx.try_send(data.to_vec()) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    drop(table);
                    debug!(%to, "TCP queue full: message dropped");
                    self.counters.add(ProxyCounter::SendErrors, 1);
                    return;
                }
                // The connection is closing: open a new one.
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    table.routes.remove(&to);
                }
            }
        }
        let Some(id) = self.admit(&mut table, connect.ip()) else {
            drop(table);
            self.counters.add(ProxyCounter::TcpRefused, 1);
            return;
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        let _ = tx.try_send(data.to_vec());
        table.routes.insert(to, Route { id, tx });
        drop(table);
        let slot = Slot {
            streams: Arc::clone(self),
            id,
            ip: connect.ip(),
        };
        let this = Arc::clone(self);
        self.runtime
            .spawn(async move { this.connect(connect, local, rx, slot).await });
    }

    /// Takes a place under the caps for a connection with `ip`; its id if there is room.
    fn admit(&self, table: &mut Table, ip: IpAddr) -> Option<u64> {
        let from_ip = table.per_ip.get(&ip).copied().unwrap_or(0);
        if table.open >= self.config.max_connections
            || from_ip >= self.config.max_connections_per_ip
        {
            return None;
        }
        table.open += 1;
        *table.per_ip.entry(ip).or_default() += 1;
        Some(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    async fn accept(self: Arc<Self>, listener: TcpListener) {
        let mut shutdown = self.shutdown.subscribe();
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = shutdown.changed() => return,
            };
            let (stream, remote) = match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of file descriptors and the like: let it pass, then go on.
                    warn!(%error, "TCP accept");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let mut table = self.lock();
            let Some(id) = self.admit(&mut table, remote.ip()) else {
                drop(table);
                debug!(%remote, "TCP connection refused: at the connection cap");
                self.counters.add(ProxyCounter::TcpRefused, 1);
                continue; // dropping the stream closes it
            };
            let (tx, rx) = mpsc::channel(QUEUE);
            table.routes.insert(remote, Route { id, tx });
            drop(table);
            let slot = Slot {
                streams: Arc::clone(&self),
                id,
                ip: remote.ip(),
            };
            let this = Arc::clone(&self);
            tokio::spawn(async move { this.serve(stream, remote, rx, slot).await });
        }
    }

    async fn connect(
        self: Arc<Self>,
        dest: SocketAddr,
        local: usize,
        rx: mpsc::Receiver<Vec<u8>>,
        slot: Slot,
    ) {
        let opened = tokio::time::timeout(self.config.connect_timeout, async {
            let socket = if dest.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            // From the address our Via names, so the next hop sees who we say we are.
            if let Some(l) = self.proxy.locals().get(local) {
                socket.bind(SocketAddr::new(l.ip(), 0))?;
            }
            socket.connect(dest).await
        })
        .await;
        match opened {
            Ok(Ok(stream)) => self.serve(stream, dest, rx, slot).await,
            Ok(Err(error)) => self.unreachable(dest, &error.to_string()),
            Err(_) => self.unreachable(dest, "connect timed out"),
        }
    }

    fn unreachable(&self, dest: SocketAddr, why: &str) {
        warn!(%dest, why, "TCP connection to next hop failed");
        self.counters.add(ProxyCounter::TcpConnectFailures, 1);
        let now = self.proxy.trunks().now();
        self.proxy.next_hop_unreachable(dest, now);
    }

    /// Runs one connection until it closes, idles out, breaks its framing or the proxy
    /// stops. `slot` frees its place when this returns.
    async fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        remote: SocketAddr,
        mut rx: mpsc::Receiver<Vec<u8>>,
        _slot: Slot,
    ) {
        let _ = stream.set_nodelay(true);
        let (mut reader, mut writer) = stream.into_split();
        let mut conn = Connection {
            streams: Arc::clone(&self),
            remote,
            buf: Vec::with_capacity(READ_CHUNK),
            out: Vec::new(),
            egress: RouteCache::new(self.proxy.locals().to_vec()),
            tally: Tally::default(),
        };
        let mut chunk = vec![0u8; READ_CHUNK];
        let mut shutdown = self.shutdown.subscribe();
        let mut deadline = Instant::now() + self.config.idle_timeout;
        loop {
            match conn.frames(&mut writer).await {
                Ok(true) => deadline = Instant::now() + self.config.idle_timeout,
                Ok(false) => {}
                Err(why) => {
                    debug!(%remote, why, "TCP connection closed");
                    break;
                }
            }
            tokio::select! {
                read = reader.read(&mut chunk) => match read {
                    Ok(0) => break,
                    Ok(n) => conn.buf.extend_from_slice(&chunk[..n]),
                    Err(error) => {
                        debug!(%remote, %error, "TCP read");
                        break;
                    }
                },
                queued = rx.recv() => {
                    let Some(message) = queued else { break };
                    if let Err(error) = writer.write_all(&message).await {
                        debug!(%remote, %error, "TCP write");
                        self.counters.add(ProxyCounter::SendErrors, 1);
                        break;
                    }
                    deadline = Instant::now() + self.config.idle_timeout;
                }
                _ = tokio::time::sleep_until(deadline) => {
                    debug!(%remote, "TCP connection idle: closed");
                    break;
                }
                _ = shutdown.changed() => break,
            }
        }
        let _ = writer.shutdown().await;
    }

    fn send_udp(&self, local: usize, to: SocketAddr, data: &[u8]) {
        let Some(socket) = self.udp.get().and_then(|s| s.get(local)) else {
            self.counters.add(ProxyCounter::SendErrors, 1);
            return;
        };
        // The workers' socket blocks; a full send buffer must not stall this task.
        if let Err(error) =
            SockRef::from(socket).send_to_with_flags(data, &to.into(), libc::MSG_DONTWAIT)
        {
            debug!(%to, %error, "UDP send from a TCP message");
            self.counters.add(ProxyCounter::SendErrors, 1);
        }
    }
}

/// One connection's reading state.
struct Connection {
    streams: Arc<Streams>,
    remote: SocketAddr,
    buf: Vec<u8>,
    out: Vec<u8>,
    egress: RouteCache,
    tally: Tally,
}

impl Connection {
    /// Handles every whole message and ping buffered; `Ok(true)` if there was any, `Err`
    /// when the connection must close.
    async fn frames(&mut self, writer: &mut OwnedWriteHalf) -> Result<bool, &'static str> {
        let mut any = false;
        let result = loop {
            match next_frame(&self.buf, MAX_DATAGRAM) {
                Frame::Incomplete => break Ok(any),
                Frame::Skip { len } => {
                    self.buf.drain(..len);
                }
                Frame::Ping => {
                    self.buf.drain(..4);
                    any = true;
                    if writer.write_all(PONG).await.is_err() {
                        break Err("pong write failed");
                    }
                }
                Frame::Message { len } => {
                    any = true;
                    self.message(len, writer).await?;
                    self.buf.drain(..len);
                }
                Frame::Error(error) => {
                    self.framing_error(error, writer).await;
                    break Err("framing error");
                }
            }
        };
        self.streams.counters.absorb(&mut self.tally);
        result
    }

    async fn message(
        &mut self,
        len: usize,
        writer: &mut OwnedWriteHalf,
    ) -> Result<(), &'static str> {
        let streams = &self.streams;
        let now = streams.proxy.trunks().now();
        let input = Inbound {
            data: &self.buf[..len],
            src: self.remote,
            truncated: false,
        };
        let action = streams.proxy.handle_over(
            Transport::Tcp,
            &input,
            now,
            &mut self.egress,
            &mut self.out,
            &mut self.tally,
        );
        match action {
            // Our own answer goes back the way the request came.
            Action::Reply { .. } => {
                if writer.write_all(&self.out).await.is_err() {
                    return Err("reply write failed");
                }
            }
            Action::Forward { to, local } => streams.send_udp(local, to, &self.out),
            // Through the table even when `to` is this very connection: its queue keeps
            // messages whole and in order.
            Action::ForwardTcp { to, connect, local } => {
                streams.send(to, connect, local, &self.out)
            }
            Action::Drop(why) => debug!(src = %self.remote, why, "dropped"),
        }
        Ok(())
    }

    /// Answers a broken frame where the request can be answered (RFC 3261 §18.3), then
    /// the caller closes the connection.
    async fn framing_error(&mut self, error: FrameError, writer: &mut OwnedWriteHalf) {
        self.streams.counters.add(ProxyCounter::TcpFramingErrors, 1);
        let (head, status) = match error {
            FrameError::NoContentLength { head } => (head, (400, "Missing Content-Length")),
            FrameError::TooLarge { head } => (head, (513, "Message Too Large")),
            FrameError::HeadersTooLarge | FrameError::Garbage => {
                debug!(src = %self.remote, ?error, "TCP stream unreadable");
                return;
            }
        };
        let action = self.streams.proxy.reject(
            &self.buf[..head],
            self.remote,
            status,
            &mut self.out,
            &mut self.tally,
        );
        if let Action::Reply { .. } = action {
            let _ = writer.write_all(&self.out).await;
        }
    }
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // A restarted daemon rebinds at once, whatever connections linger in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}
