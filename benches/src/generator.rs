//! The veth benchmark's frame source: live frames (`BPF_PROG_TEST_RUN` with
//! `BPF_F_TEST_XDP_LIVE_FRAMES`, DESIGN.md §7), as the kernel's own XDP traffic generator
//! makes them.
//!
//! A program of a few instructions runs on each copy of a prebuilt frame as if the sender's
//! veth had received it, and returns `XDP_TX`: the kernel hands the frame to that veth's
//! `ndo_xdp_xmit`, which puts it straight into the other end's ring, where the program
//! under test runs on it in that end's NAPI. No socket, no skb: an AF_PACKET `sendmmsg`
//! source made about 0.4M frames/s here, which capped every phase it fed.
//!
//! The frames come from a page pool that the kernel recycles without copying the frame in
//! again, and the program under test rewrites a hit in place (addresses, port, TTL,
//! checksums). So the source's program first writes the frame's headers back from the
//! template, as immediates: every frame leaves as the template says.

use std::{
    os::fd::OwnedFd,
    time::{Duration, Instant},
};

use anyhow::ensure;

use crate::rawbpf;

/// Bytes of the template the source rewrites in every frame: Ethernet, IPv4 and UDP
/// headers (42 bytes), rounded up to whole words.
const HEADER_WORDS: usize = 6;
/// Frames per `BPF_PROG_TEST_RUN` call: small enough to check the time limit often.
const CHUNK: u64 = 65_536;

const XDP_DROP: i32 = 1;
const XDP_TX: i32 = 3;

/// What one bounded send did.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    /// Frames the source made and handed over.
    pub frames: u64,
    /// Wall-clock time of the whole send.
    pub secs: f64,
}

/// The source for one template frame.
pub struct Generator {
    prog: OwnedFd,
    frame: Vec<u8>,
}

impl Generator {
    /// Loads the source's program for `frame`, which must hold whole headers.
    pub fn new(frame: &[u8]) -> anyhow::Result<Self> {
        ensure!(
            frame.len() >= 8 * HEADER_WORDS,
            "a {}-byte frame is shorter than its headers",
            frame.len()
        );
        Ok(Self {
            prog: rawbpf::load_xdp("fp_bench_src", &source_program(frame))?,
            frame: frame.to_vec(),
        })
    }

    /// Sends the frame `count` times out of `ifindex` (of the calling thread's network
    /// namespace), or as many as `limit` allows.
    pub fn send(&self, ifindex: u32, count: u64, limit: Duration) -> anyhow::Result<Sent> {
        let ctx = crate::xdp_md(self.frame.len(), ifindex);
        let (start, mut sent) = (Instant::now(), 0u64);
        while sent < count && start.elapsed() < limit {
            let n = (count - sent).min(CHUNK);
            rawbpf::run_live(&self.prog, &self.frame, &ctx, n as u32)?;
            sent += n;
        }
        Ok(Sent {
            frames: sent,
            secs: start.elapsed().as_secs_f64(),
        })
    }
}

/// `struct bpf_insn` (opcode, dst and src registers, offset, immediate) as a little-endian
/// `u64`.
const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    let off = off.to_le_bytes();
    let imm = imm.to_le_bytes();
    u64::from_le_bytes([
        code,
        (src << 4) | dst,
        off[0],
        off[1],
        imm[0],
        imm[1],
        imm[2],
        imm[3],
    ])
}

/// The source's program: write the template's headers into the frame, then `XDP_TX`
/// (`XDP_DROP` for a frame too short to hold them, which the kernel never makes here).
fn source_program(template: &[u8]) -> Vec<u64> {
    let mut insns = vec![
        insn(0x61, 2, 1, 0, 0),                           // r2 = ctx->data
        insn(0x61, 3, 1, 4, 0),                           // r3 = ctx->data_end
        insn(0xbf, 4, 2, 0, 0),                           // r4 = r2
        insn(0x07, 4, 0, 0, 8 * HEADER_WORDS as i32),     // r4 += header bytes
        insn(0x2d, 4, 3, 3 * HEADER_WORDS as i16 + 2, 0), // if r4 > r3 goto short
    ];
    for (k, word) in template.chunks_exact(8).take(HEADER_WORDS).enumerate() {
        let word = u64::from_le_bytes(word.try_into().unwrap_or_default());
        // r5 = word (a 64-bit immediate takes two instructions)
        insns.push(insn(0x18, 5, 0, 0, word as u32 as i32));
        insns.push(insn(0, 0, 0, 0, (word >> 32) as u32 as i32));
        insns.push(insn(0x7b, 2, 5, 8 * k as i16, 0)); // *(u64 *)(r2 + 8k) = r5
    }
    insns.extend([
        insn(0xb7, 0, 0, 0, XDP_TX),   // r0 = XDP_TX
        insn(0x95, 0, 0, 0, 0),        // exit
        insn(0xb7, 0, 0, 0, XDP_DROP), // short: r0 = XDP_DROP
        insn(0x95, 0, 0, 0, 0),        // exit
    ]);
    insns
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_short_branch_lands_on_the_drop() {
        let program = source_program(&[0xab; 64]);
        let branch = 4;
        let off = i16::from_le_bytes([
            program[branch].to_le_bytes()[2],
            program[branch].to_le_bytes()[3],
        ]);
        let target = branch + 1 + off as usize;
        assert_eq!(program[target], insn(0xb7, 0, 0, 0, XDP_DROP));
        assert_eq!(program.len(), target + 2);
    }
}
