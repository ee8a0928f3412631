//! Programs of a few instructions, loaded and run through raw `bpf(2)` calls because aya
//! only loads programs from ELF objects: the `XDP_DROP` baseline, and the veth benchmark's
//! live-frames source (`crate::generator`).
//!
//! The attribute structs below are prefixes of the kernel's `union bpf_attr` members; the
//! kernel accepts a shorter `size` and treats the missing tail as zero.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::Context;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `enum bpf_attach_type`: BPF_XDP.
const BPF_XDP: u32 = 37;
const XDP_FLAGS_SKB_MODE: u32 = 2;
const XDP_FLAGS_DRV_MODE: u32 = 4;
/// `bpf_attr.test.flags`: run the program on live frames and act on its verdicts.
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

/// `r0 = XDP_DROP (1); exit` as `struct bpf_insn` (code, dst/src regs, off, imm), little-endian.
const DROP_INSNS: [u64; 2] = [
    // BPF_ALU64 | BPF_MOV | BPF_K (0xb7), dst r0, imm 1
    u64::from_le_bytes([0xb7, 0x00, 0, 0, 1, 0, 0, 0]),
    // BPF_JMP | BPF_EXIT (0x95)
    u64::from_le_bytes([0x95, 0x00, 0, 0, 0, 0, 0, 0]),
];

/// `bpf_attr` for `BPF_PROG_LOAD`, up to `expected_attach_type`.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `bpf_attr.test` for `BPF_PROG_TEST_RUN`, up to `batch_size` (80 bytes with padding).
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    /// Explicit, so that it is zero: the kernel refuses non-zero bytes past the last field
    /// it knows, and implicit padding would be left uninitialized.
    _pad: u32,
}

impl TestRunAttr {
    /// A run of `prog` on `repeat` copies of `frame` with the `xdp_md` `ctx` (may be empty);
    /// the buffers must outlive the call.
    fn new(prog: &OwnedFd, frame: &[u8], ctx: &[u8], repeat: u32) -> Self {
        Self {
            prog_fd: prog.as_raw_fd() as u32,
            data_size_in: frame.len() as u32,
            data_in: frame.as_ptr() as u64,
            ctx_size_in: ctx.len() as u32,
            // An empty slice's pointer is dangling, not null: say "no context" explicitly.
            ctx_in: if ctx.is_empty() {
                0
            } else {
                ctx.as_ptr() as u64
            },
            repeat,
            ..Default::default()
        }
    }
}

/// `bpf_attr.link_create` for an XDP link: the fields before the per-type union.
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

/// A loaded XDP program that returns `XDP_DROP`; closed on drop.
pub struct DropProgram {
    fd: OwnedFd,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_int> {
    // SAFETY: `attr` is a live, initialized `repr(C)` prefix of `union bpf_attr` matching
    // `cmd`, and its size is passed alongside; every pointer inside it is either 0 or points
    // into a buffer the caller keeps alive (and, for outputs, writable) for this call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc as libc::c_int)
    }
}

/// Loads `insns` as an XDP program named `name` (at most 15 bytes).
pub fn load_xdp(name: &str, insns: &[u64]) -> anyhow::Result<OwnedFd> {
    let license = c"GPL";
    let mut prog_name = [0u8; 16];
    prog_name[..name.len().min(15)].copy_from_slice(&name.as_bytes()[..name.len().min(15)]);
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name,
        expected_attach_type: BPF_XDP,
        ..Default::default()
    };
    let fd = bpf(BPF_PROG_LOAD, &mut attr).with_context(|| format!("BPF_PROG_LOAD of {name}"))?;
    // SAFETY: on success BPF_PROG_LOAD returns a new file descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// One `BPF_PROG_TEST_RUN` in live-frames mode (`BPF_F_TEST_XDP_LIVE_FRAMES`): the program
/// runs on `repeat` copies of `frame` as if received on `ctx`'s ingress interface, and the
/// kernel carries out what it returns (`XDP_TX` sends the frame out of that interface).
pub fn run_live(prog: &OwnedFd, frame: &[u8], ctx: &[u8], repeat: u32) -> anyhow::Result<()> {
    let mut attr = TestRunAttr {
        flags: BPF_F_TEST_XDP_LIVE_FRAMES,
        ..TestRunAttr::new(prog, frame, ctx, repeat)
    };
    bpf(BPF_PROG_TEST_RUN, &mut attr).context("BPF_PROG_TEST_RUN with live frames")?;
    Ok(())
}

impl DropProgram {
    pub fn load() -> anyhow::Result<Self> {
        Ok(Self {
            fd: load_xdp("fp_bench_drop", &DROP_INSNS)?,
        })
    }

    /// Attaches the program in generic mode to `ifindex` (of the calling thread's network
    /// namespace) through a bpf_link, which detaches when the returned fd is closed.
    pub fn attach_generic(&self, ifindex: u32) -> anyhow::Result<OwnedFd> {
        self.attach(ifindex, XDP_FLAGS_SKB_MODE)
    }

    /// [`DropProgram::attach_generic`] in native (driver) mode.
    pub fn attach_native(&self, ifindex: u32) -> anyhow::Result<OwnedFd> {
        self.attach(ifindex, XDP_FLAGS_DRV_MODE)
    }

    fn attach(&self, ifindex: u32, flags: u32) -> anyhow::Result<OwnedFd> {
        let mut attr = LinkCreateAttr {
            prog_fd: self.fd.as_raw_fd() as u32,
            target_ifindex: ifindex,
            attach_type: BPF_XDP,
            flags,
        };
        let fd =
            bpf(BPF_LINK_CREATE, &mut attr).context("BPF_LINK_CREATE for the XDP_DROP baseline")?;
        // SAFETY: on success BPF_LINK_CREATE returns a new file descriptor that we now own.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// One `BPF_PROG_TEST_RUN`: the program's return value and the kernel's mean duration
    /// per repetition in ns (truncated to an integer by the kernel).
    pub fn test_run(&self, frame: &[u8], ctx: &[u8], repeat: u32) -> anyhow::Result<(u32, u32)> {
        let mut attr = TestRunAttr::new(&self.fd, frame, ctx, repeat);
        bpf(BPF_PROG_TEST_RUN, &mut attr).context("BPF_PROG_TEST_RUN on the XDP_DROP baseline")?;
        Ok((attr.retval, attr.duration))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_layouts_match_the_kernel() {
        assert_eq!(std::mem::size_of::<ProgLoadAttr>(), 72);
        assert_eq!(std::mem::size_of::<TestRunAttr>(), 80);
        assert_eq!(std::mem::offset_of!(TestRunAttr, repeat), 32);
        assert_eq!(std::mem::offset_of!(TestRunAttr, ctx_in), 48);
        assert_eq!(std::mem::offset_of!(TestRunAttr, batch_size), 72);
    }
}
