//! The veth benchmark's frame generator: one `AF_PACKET` socket that sends a prebuilt
//! frame a bounded number of times with `sendmmsg`, in batches, past the qdisc layer
//! (`PACKET_QDISC_BYPASS`: a veth has no queue to shape, and the bypass hands each frame
//! straight to the driver's transmit, the cheapest way to make an skb without pktgen).
//!
//! The socket has protocol 0, so it receives nothing (no tap on the namespace's traffic);
//! every message names its interface, so one socket serves every interface of the
//! namespace it was made in.

use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

/// Messages per `sendmmsg` call.
const BATCH: usize = 64;
/// Send buffer: room for many frames in flight in the veth's ring (SO_SNDBUFFORCE, root).
const SNDBUF: libc::c_int = 8 << 20;

/// What one bounded send did.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    /// Frames the kernel accepted.
    pub frames: u64,
    /// Wall-clock time of the whole send.
    pub secs: f64,
    /// Calls refused for lack of room (ENOBUFS, EAGAIN) and retried.
    pub busy: u64,
}

pub struct Generator {
    fd: OwnedFd,
}

impl Generator {
    /// A packet socket in the calling thread's network namespace.
    pub fn open() -> anyhow::Result<Self> {
        // SAFETY: plain socket(2); the result is checked before use.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error()).context("socket(AF_PACKET)");
        }
        // SAFETY: a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        set_int(&fd, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1)
            .context("PACKET_QDISC_BYPASS")?;
        set_int(&fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, SNDBUF).context("SO_SNDBUFFORCE")?;
        Ok(Self { fd })
    }

    /// Sends `frame` `count` times out of `ifindex`, or as many as fit in `limit`.
    pub fn send(
        &self,
        ifindex: u32,
        frame: &[u8],
        count: u64,
        limit: Duration,
    ) -> anyhow::Result<Sent> {
        // SAFETY: sockaddr_ll is plain data; all-zero is valid.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = (libc::ETH_P_IP as u16).to_be();
        addr.sll_ifindex = ifindex as i32;
        let mut iov = libc::iovec {
            iov_base: frame.as_ptr() as *mut libc::c_void,
            iov_len: frame.len(),
        };
        // SAFETY: msghdr is plain data; the fields that matter are set below.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for m in &mut msgs {
            m.msg_hdr.msg_name = (&raw mut addr).cast();
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            m.msg_hdr.msg_iov = &raw mut iov;
            m.msg_hdr.msg_iovlen = 1;
        }
        let (start, mut sent, mut busy) = (Instant::now(), 0u64, 0u64);
        while sent < count && start.elapsed() < limit {
            let n = (count - sent).min(BATCH as u64) as u32;
            // SAFETY: `msgs[..n]` point at `addr` and `iov`, which point at `frame`; all
            // outlive the call, and the kernel only reads them.
            let rc = unsafe { libc::sendmmsg(self.fd.as_raw_fd(), msgs.as_mut_ptr(), n, 0) };
            if rc >= 0 {
                sent += rc as u64;
                continue;
            }
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::ENOBUFS | libc::EAGAIN) => {
                    busy += 1;
                    std::thread::yield_now();
                }
                Some(libc::EINTR) => {}
                _ => bail!("sendmmsg on ifindex {ifindex}: {err}"),
            }
        }
        Ok(Sent {
            frames: sent,
            secs: start.elapsed().as_secs_f64(),
            busy,
        })
    }
}

fn set_int(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> std::io::Result<()> {
    // SAFETY: `value` is a live c_int and its size is passed with it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
