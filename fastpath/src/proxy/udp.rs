//! The proxy's datagram loop: per core one thread, all of them reading one socket per
//! address, `recvmmsg` / `sendmmsg` in batches, buffers reused, no allocation per datagram.
//!
//! One shared socket rather than one SO_REUSEPORT socket per thread: reuseport spreads by
//! flow, and a few busy peers (an SBC sends everything from one address) would then load
//! one thread while the other idles; a shared queue keeps every thread busy (measured:
//! ~1.5x the sustained rate of reuseport in the proxy benchmark).
//!
//! Plain threads rather than tokio tasks: tokio's UDP socket has no batched receive or
//! send, and a syscall per datagram is what would cap the proxy. The control plane
//! (health, trunk sweeps, signals) stays on tokio.

use std::{
    collections::HashMap,
    io,
    mem::{size_of, zeroed},
    net::{IpAddr, SocketAddr, UdpSocket},
    os::fd::{AsRawFd, FromRawFd, IntoRawFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Instant,
};

use anyhow::Context;
use socket2::{Domain, Protocol, Socket, Type};
use tracing::{debug, warn};

use super::{
    Action, Egress, Inbound, Proxy, ProxyCounters, Tally,
    core::{MAX_DATAGRAM, MAX_SEND},
    counters::ProxyCounter,
    tcp::Streams,
};

/// Datagrams per `recvmmsg` / `sendmmsg`.
const BATCH: usize = 64;
/// Socket buffers: room for bursts while a worker is busy with a batch.
const SOCKET_BUFFER: usize = 8 << 20;
/// How often a blocked worker wakes to see whether it should stop.
const POLL_MS: i32 = 200;

/// The running workers; dropping it stops and joins them.
pub struct Workers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// One per local address, for [`Workers::sockets`].
    sockets: Vec<UdpSocket>,
}

impl Workers {
    /// Binds one socket per local address and starts `workers` threads reading them all.
    pub fn start(
        proxy: Arc<Proxy>,
        counters: Arc<ProxyCounters>,
        workers: usize,
    ) -> anyhow::Result<Self> {
        Self::start_with_tcp(proxy, counters, workers, None)
    }

    /// As [`Workers::start`]; what must leave over TCP goes to `tcp`.
    pub fn start_with_tcp(
        proxy: Arc<Proxy>,
        counters: Arc<ProxyCounters>,
        workers: usize,
        tcp: Option<Arc<Streams>>,
    ) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut per_worker: Vec<Vec<UdpSocket>> = (0..workers).map(|_| Vec::new()).collect();
        let mut kept = Vec::new();
        for &addr in proxy.locals() {
            let socket = bind(addr).with_context(|| format!("binding the proxy to {addr}"))?;
            for sockets in per_worker.iter_mut() {
                sockets.push(socket.try_clone()?);
            }
            kept.push(socket);
        }
        let mut threads = Vec::with_capacity(workers);
        for (i, sockets) in per_worker.into_iter().enumerate() {
            let proxy = Arc::clone(&proxy);
            let counters = Arc::clone(&counters);
            let stop = Arc::clone(&stop);
            let tcp = tcp.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("proxy-{i}"))
                    .spawn(move || Worker::new(proxy, counters, sockets, tcp).run(&stop))
                    .context("starting a proxy thread")?,
            );
        }
        Ok(Self {
            stop,
            threads,
            sockets: kept,
        })
    }

    /// The sockets, one per local address (in the proxy's order), for sending from
    /// elsewhere (TCP connections forwarding over UDP).
    pub fn sockets(&self) -> io::Result<Vec<UdpSocket>> {
        self.sockets.iter().map(UdpSocket::try_clone).collect()
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Room for bursts. The *FORCE options pass net.core.{r,w}mem_max (the daemon runs with
    // CAP_NET_ADMIN to load XDP anyway); without the capability, the capped size will do.
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        let size = SOCKET_BUFFER as libc::c_int;
        let set = |option| {
            // SAFETY: a valid fd and an int option of the size passed.
            unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::SOL_SOCKET,
                    option,
                    (&size as *const libc::c_int).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                )
            }
        };
        if set(force) != 0 {
            set(plain);
        }
    }
    socket.bind(&addr.into())?;
    // ICMP errors (a trunk's port unreachable) are queued for us to read with MSG_ERRQUEUE.
    let (level, name) = if addr.is_ipv6() {
        (libc::IPPROTO_IPV6, libc::IPV6_RECVERR)
    } else {
        (libc::IPPROTO_IP, libc::IP_RECVERR)
    };
    let on: libc::c_int = 1;
    // SAFETY: a valid fd and a c_int option of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // Safe conversion through the raw fd keeps socket2 out of the worker's types.
    // SAFETY: the fd is owned and valid; ownership moves into the UdpSocket.
    Ok(unsafe { UdpSocket::from_raw_fd(socket.into_raw_fd()) })
}

/// Learns, per destination, which of our addresses the kernel would send from, by asking
/// it once (a connected probe socket) and caching the answer.
pub(super) struct RouteCache {
    locals: Vec<SocketAddr>,
    cache: HashMap<IpAddr, Option<usize>>,
    /// Most datagrams in a row go to the same next hop (the trunk): skip the hash.
    last: Option<(IpAddr, Option<usize>)>,
}

impl RouteCache {
    const MAX: usize = 4096;

    pub(super) fn new(locals: Vec<SocketAddr>) -> Self {
        Self {
            locals,
            cache: HashMap::new(),
            last: None,
        }
    }
}

impl Egress for RouteCache {
    fn local_for(&mut self, dest: SocketAddr) -> Option<usize> {
        if let Some((ip, hit)) = self.last
            && ip == dest.ip()
        {
            return hit;
        }
        if let Some(&hit) = self.cache.get(&dest.ip()) {
            self.last = Some((dest.ip(), hit));
            return hit;
        }
        let source = probe_source(dest).ok();
        let same_family = |l: &SocketAddr| l.is_ipv4() == dest.is_ipv4();
        let index = source
            .and_then(|ip| self.locals.iter().position(|l| l.ip() == ip))
            .or_else(|| self.locals.iter().position(same_family));
        if self.cache.len() >= Self::MAX {
            self.cache.clear();
        }
        self.cache.insert(dest.ip(), index);
        index
    }
}

fn probe_source(dest: SocketAddr) -> io::Result<IpAddr> {
    let any: SocketAddr = if dest.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let probe = UdpSocket::bind(any)?;
    probe.connect(dest)?; // no packet is sent: connect only picks the route
    Ok(probe.local_addr()?.ip())
}

struct Worker {
    proxy: Arc<Proxy>,
    counters: Arc<ProxyCounters>,
    sockets: Vec<UdpSocket>,
    egress: RouteCache,
    tally: Tally,
    recv: Batch,
    outs: Vec<Vec<u8>>,
    /// Per datagram of the batch: which socket sends it, and to where.
    sends: Vec<(usize, SocketAddr)>,
    out: SendBatch,
    latency: crate::metrics::LocalProxyLatency,
    tcp: Option<Arc<Streams>>,
}

/// `sendmmsg` headers, reused from batch to batch.
struct SendBatch {
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    names: Vec<(libc::sockaddr_storage, libc::socklen_t)>,
}

// SAFETY: the raw pointers are rewritten before every use and only point into the
// Worker's own buffers; one thread uses it.
unsafe impl Send for SendBatch {}

impl SendBatch {
    fn new() -> Self {
        // SAFETY: plain C structs; zero is empty.
        Self {
            hdrs: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            iovs: (0..BATCH)
                .map(|_| libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                })
                .collect(),
            names: (0..BATCH).map(|_| (unsafe { zeroed() }, 0)).collect(),
        }
    }
}

impl Worker {
    fn new(
        proxy: Arc<Proxy>,
        counters: Arc<ProxyCounters>,
        sockets: Vec<UdpSocket>,
        tcp: Option<Arc<Streams>>,
    ) -> Self {
        let locals = proxy.locals().to_vec();
        let latency = counters.latency.local();
        Self {
            proxy,
            counters,
            sockets,
            egress: RouteCache {
                locals,
                cache: HashMap::new(),
                last: None,
            },
            tally: Tally::default(),
            recv: Batch::new(),
            outs: (0..BATCH)
                .map(|_| Vec::with_capacity(MAX_DATAGRAM + 1024))
                .collect(),
            sends: Vec::with_capacity(BATCH),
            out: SendBatch::new(),
            latency,
            tcp,
        }
    }

    fn run(mut self, stop: &AtomicBool) {
        if let Err(error) = self.serve(stop) {
            warn!(%error, "proxy worker stopped");
        }
    }

    /// Waits on every socket with its own epoll set. EPOLLEXCLUSIVE: a datagram wakes one
    /// idle worker, not all of them, while busy workers keep draining.
    fn serve(&mut self, stop: &AtomicBool) -> io::Result<()> {
        // SAFETY: plain syscall; the fd is closed by the OwnedFd below.
        let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epfd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: epfd is a fresh fd we own.
        let _owner = unsafe { std::os::fd::OwnedFd::from_raw_fd(epfd) };
        for (i, socket) in self.sockets.iter().enumerate() {
            let mut event = libc::epoll_event {
                events: (libc::EPOLLIN | libc::EPOLLERR | libc::EPOLLEXCLUSIVE) as u32,
                u64: i as u64,
            };
            // SAFETY: valid fds and event.
            if unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, socket.as_raw_fd(), &mut event) }
                != 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; self.sockets.len()];
        while !stop.load(Ordering::Relaxed) {
            // SAFETY: events has room for the count passed.
            let ready = unsafe {
                libc::epoll_wait(
                    epfd,
                    events.as_mut_ptr(),
                    events.len() as libc::c_int,
                    POLL_MS,
                )
            };
            for event in events.iter().take(ready.max(0) as usize) {
                let (flags, i) = (event.events, event.u64 as usize);
                if flags & libc::EPOLLERR as u32 != 0 {
                    self.unreachable(i);
                }
                if flags & libc::EPOLLIN as u32 != 0 {
                    self.drain(i);
                }
            }
        }
        Ok(())
    }

    /// Reads socket `i` until it is empty (bounded: a full batch at a time).
    fn drain(&mut self, i: usize) {
        loop {
            let n = match self.recv.receive(&self.sockets[i]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    self.unreachable(i);
                    continue;
                }
                Err(e) => {
                    debug!(error = %e, "recvmmsg");
                    return;
                }
            };
            self.process(i, n);
            if n < BATCH {
                return;
            }
        }
    }

    fn process(&mut self, socket: usize, n: usize) {
        // The batch's receipt: `recvmmsg` just returned.
        let received = Instant::now();
        let now = self.proxy.trunks().now();
        self.sends.clear();
        for k in 0..n {
            let Some(src) = self.recv.source(k) else {
                continue;
            };
            let (data, truncated) = self.recv.data(k);
            let input = Inbound {
                data,
                src,
                truncated,
            };
            let out = &mut self.outs[self.sends.len()];
            match self
                .proxy
                .handle(&input, now, &mut self.egress, out, &mut self.tally)
            {
                Action::Forward { to, local } => self.sends.push((local, to)),
                Action::Reply { to } => self.sends.push((socket, to)),
                Action::ForwardTcp { to, connect, local } => match &self.tcp {
                    Some(tcp) => tcp.send(to, connect, local, out),
                    None => debug!(%src, "dropped: TCP next hop without TCP"),
                },
                Action::Drop(why) => debug!(%src, why, "dropped"),
            }
        }
        self.flush();
        let (requests, responses) = self.tally.sent_by_kind();
        self.latency
            .observe_batch(received.elapsed(), requests, responses);
        self.counters.absorb(&mut self.tally);
    }

    /// Sends the batch's datagrams, one `sendmmsg` per socket that has any.
    fn flush(&mut self) {
        for s in 0..self.sockets.len() {
            let out = &mut self.out;
            let mut count = 0;
            for (k, &(local, to)) in self.sends.iter().enumerate() {
                if local != s || self.outs[k].len() > MAX_SEND {
                    continue;
                }
                out.names[count] = sockaddr(to);
                out.iovs[count] = libc::iovec {
                    iov_base: self.outs[k].as_mut_ptr().cast(),
                    iov_len: self.outs[k].len(),
                };
                count += 1;
            }
            if count == 0 {
                continue;
            }
            for k in 0..count {
                let h = &mut out.hdrs[k].msg_hdr;
                h.msg_name = (&mut out.names[k].0 as *mut libc::sockaddr_storage).cast();
                h.msg_namelen = out.names[k].1;
                h.msg_iov = &mut out.iovs[k];
                h.msg_iovlen = 1;
            }
            let fd = self.sockets[s].as_raw_fd();
            let mut sent = 0;
            // Bounded: each failed call skips one datagram or consumes one pending error.
            let mut attempts = 2 * count + 2;
            while sent < count && attempts > 0 {
                attempts -= 1;
                // SAFETY: hdrs[sent..count] point at live iovecs, buffers and addresses.
                let r = unsafe {
                    libc::sendmmsg(
                        fd,
                        self.out.hdrs[sent..].as_mut_ptr(),
                        (count - sent) as u32,
                        0,
                    )
                };
                if r > 0 {
                    sent += r as usize;
                    continue;
                }
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => {}
                    // A pending ICMP error of an earlier datagram, reported now.
                    io::ErrorKind::ConnectionRefused => self.unreachable(s),
                    _ => {
                        // Skip the datagram the kernel refused and go on with the rest.
                        self.tally.bump(ProxyCounter::SendErrors);
                        debug!(error = %e, "sendmmsg");
                        sent += 1;
                    }
                }
            }
        }
    }

    /// ICMP errors came back on socket `i`: the error queue says for which destinations.
    fn unreachable(&mut self, i: usize) {
        // Bounded: whatever is left raises POLLERR again on the next poll.
        for _ in 0..BATCH {
            if !self.read_error(i) {
                return;
            }
        }
    }

    /// One entry of the error queue; false when it is empty.
    fn read_error(&mut self, i: usize) -> bool {
        let fd = self.sockets[i].as_raw_fd();
        let mut name: libc::sockaddr_storage = unsafe { zeroed() };
        let mut control = [0u8; 256];
        let mut buf = [0u8; 64];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: msghdr is plain C; zeroed is empty.
        let mut hdr: libc::msghdr = unsafe { zeroed() };
        hdr.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
        hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as u32;
        hdr.msg_iov = &mut iov;
        hdr.msg_iovlen = 1;
        hdr.msg_control = control.as_mut_ptr().cast();
        hdr.msg_controllen = control.len();
        // SAFETY: all pointers in hdr are valid for the call.
        let r = unsafe { libc::recvmsg(fd, &mut hdr, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
        if r < 0 {
            return false;
        }
        if let Some(dest) = socket_addr(&name, hdr.msg_namelen) {
            warn!(%dest, "ICMP unreachable");
            let now = self.proxy.trunks().now();
            self.proxy.trunks().unreachable(dest, now);
        }
        true
    }
}

/// Receive buffers and headers for one `recvmmsg`.
struct Batch {
    bufs: Vec<Vec<u8>>,
    iovs: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_storage>,
    hdrs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers inside point into the Batch's own heap buffers, which move
// with it; it is only used by the one thread that owns it.
unsafe impl Send for Batch {}

impl Batch {
    fn new() -> Self {
        let mut bufs: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0u8; MAX_DATAGRAM]).collect();
        let iovs = bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        // SAFETY: plain C structs, zero is empty.
        let names = (0..BATCH).map(|_| unsafe { zeroed() }).collect();
        let hdrs = (0..BATCH).map(|_| unsafe { zeroed() }).collect();
        Self {
            bufs,
            iovs,
            names,
            hdrs,
        }
    }

    fn receive(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        for k in 0..BATCH {
            let h = &mut self.hdrs[k].msg_hdr;
            h.msg_name = (&mut self.names[k] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as u32;
            h.msg_iov = &mut self.iovs[k];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
            self.hdrs[k].msg_len = 0;
        }
        // SAFETY: every header points at this batch's live buffers.
        let r = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(r as usize)
    }

    fn source(&self, k: usize) -> Option<SocketAddr> {
        socket_addr(&self.names[k], self.hdrs[k].msg_hdr.msg_namelen)
    }

    fn data(&self, k: usize) -> (&[u8], bool) {
        let len = (self.hdrs[k].msg_len as usize).min(MAX_DATAGRAM);
        let truncated = self.hdrs[k].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        (&self.bufs[k][..len], truncated)
    }
}

/// `addr` as a C socket address and its length.
pub fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: zeroed sockaddr_storage is a valid empty address.
    let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large enough and aligned for sockaddr_in.
            let sin = unsafe {
                &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            (storage, size_of::<libc::sockaddr_in>() as libc::socklen_t)
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe {
                &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_scope_id = a.scope_id();
            (storage, size_of::<libc::sockaddr_in6>() as libc::socklen_t)
        }
    }
}

/// The address the kernel wrote into `storage` (`len` bytes), if IPv4 or IPv6.
fn socket_addr(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET if len as usize >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says it is a sockaddr_in, and storage is large enough.
            let a =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::new(ip.into(), u16::from_be(a.sin_port)))
        }
        libc::AF_INET6 if len as usize >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, a sockaddr_in6.
            let a = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::new(ip.into(), u16::from_be(a.sin6_port)))
        }
        _ => None,
    }
}
