//! The machine code the kernel's JIT made of a loaded program, for `cargo xtask profile`:
//! one file per function (the program and its BPF-to-BPF callees), and where each one
//! lives in the kernel, so that perf's samples can be placed on its instructions.

use std::{
    fmt::Write as _,
    os::fd::{AsFd, AsRawFd},
    path::Path,
};

use anyhow::{Context, Result, ensure};
use aya::programs::Xdp;

/// The head of `struct bpf_prog_info` (include/uapi/linux/bpf.h), up to the fields read
/// here; the kernel fills what fits in the length it is given.
#[repr(C)]
#[derive(Default)]
struct ProgInfo {
    prog_type: u32,
    id: u32,
    tag: [u8; 8],
    jited_prog_len: u32,
    xlated_prog_len: u32,
    jited_prog_insns: u64,
    xlated_prog_insns: u64,
    load_time: u64,
    created_by_uid: u32,
    nr_map_ids: u32,
    map_ids: u64,
    name: [u8; 16],
    ifindex: u32,
    gpl_compatible: u32,
    netns_dev: u64,
    netns_ino: u64,
    nr_jited_ksyms: u32,
    nr_jited_func_lens: u32,
    jited_ksyms: u64,
    jited_func_lens: u64,
}

/// `bpf(BPF_OBJ_GET_INFO_BY_FD)` into `info`.
fn get_info(fd: i32, info: &mut ProgInfo) -> Result<()> {
    #[repr(C)]
    struct Attr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    let attr = Attr {
        bpf_fd: fd as u32,
        info_len: std::mem::size_of::<ProgInfo>() as u32,
        info: info as *mut ProgInfo as u64,
    };
    // SAFETY: `attr` points at `info`, valid for its whole length, and lives through the
    // call; the kernel writes only within `info_len` and the buffers `info` names.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &attr as *const Attr,
            std::mem::size_of::<Attr>(),
        )
    };
    ensure!(
        rc == 0,
        "BPF_OBJ_GET_INFO_BY_FD: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// Writes `DIR/<symbol>.bin` for each function of `prog` and `DIR/layout.tsv` (symbol,
/// kernel address in hex, length), the symbols as `/proc/kallsyms` names them.
pub fn dump(prog: &Xdp, dir: &Path) -> Result<()> {
    let fd = prog.fd()?.as_fd().as_raw_fd();
    let mut info = ProgInfo::default();
    get_info(fd, &mut info)?;
    let mut image = vec![0u8; info.jited_prog_len as usize];
    let mut addrs = vec![0u64; info.nr_jited_ksyms as usize];
    let mut lens = vec![0u32; info.nr_jited_func_lens as usize];
    let mut want = ProgInfo {
        jited_prog_len: info.jited_prog_len,
        jited_prog_insns: image.as_mut_ptr() as u64,
        nr_jited_ksyms: info.nr_jited_ksyms,
        jited_ksyms: addrs.as_mut_ptr() as u64,
        nr_jited_func_lens: info.nr_jited_func_lens,
        jited_func_lens: lens.as_mut_ptr() as u64,
        ..ProgInfo::default()
    };
    get_info(fd, &mut want)?;
    ensure!(
        !image.is_empty() && addrs.len() == lens.len(),
        "no JIT image (is net.core.bpf_jit_enable on, and are we root?)"
    );
    let symbols = kallsyms()?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut layout = String::new();
    let mut start = 0usize;
    for (addr, len) in addrs.iter().zip(&lens) {
        let len = *len as usize;
        let name = symbols
            .iter()
            .find(|(a, _)| a == addr)
            .map_or_else(|| format!("bpf_{addr:x}"), |(_, n)| n.clone());
        let code = image
            .get(start..start + len)
            .context("JIT image shorter than its functions")?;
        std::fs::write(dir.join(format!("{name}.bin")), code)?;
        writeln!(layout, "{name}\t{addr:x}\t{len}")?;
        start += len;
    }
    std::fs::write(dir.join("layout.tsv"), layout)?;
    Ok(())
}

/// BPF symbols in `/proc/kallsyms`: (address, name). Addresses read as zero unless root.
fn kallsyms() -> Result<Vec<(u64, String)>> {
    let text = std::fs::read_to_string("/proc/kallsyms").context("reading /proc/kallsyms")?;
    Ok(text
        .lines()
        .filter(|l| l.ends_with("[bpf]"))
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let addr = u64::from_str_radix(fields.next()?, 16).ok()?;
            let name = fields.nth(1)?.to_string();
            Some((addr, name))
        })
        .collect())
}
