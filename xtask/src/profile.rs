//! `cargo xtask profile`: where the XDP program's time goes, instruction by instruction.
//!
//! `perf record` samples the whole machine while `fastpath-bench` runs the per-packet
//! benchmark (1M routes, every path in turn); the bench writes the JIT's machine code of the
//! daemon's program (`--jit-dump`). The report lists the kernel symbols that took the time
//! (the program, the map and redirect functions it calls, the test harness), then, for each
//! of the program's functions, its hottest instructions. A sample lands on the instruction
//! after the one that stalled: after a call, the time is the call's return.

use std::{collections::HashMap, path::Path, process::Command};

use anyhow::{Context, Result, bail};

use crate::{cargo, step};

/// Instructions shown per function.
const HOTTEST: usize = 24;

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let perf_ok = Command::new("perf")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !perf_ok {
        bail!("`perf` is needed (Debian: apt-get install linux-perf)");
    }
    step("building fastpath-bench");
    cargo(&["build", "--release", "-p", "fastpath-bench"], &[])?;
    let out = root.join("target/profile");
    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("clearing {}", out.display()))?;
    }
    std::fs::create_dir_all(&out)?;
    let data = out.join("perf.data");
    let jit = out.join("jit");

    step("sampling the machine while the benchmark runs");
    // 60 rounds (about 10 s of packets) unless the caller says otherwise.
    let rounds: &[&str] = if args.iter().any(|a| a.starts_with("--rounds")) {
        &[]
    } else {
        &["--rounds", "60"]
    };
    let status = Command::new("perf")
        .args(["record", "-e", "cpu-clock", "-F", "4999", "-a", "-q", "-o"])
        .arg(&data)
        .arg("--")
        .arg(root.join("target/release/fastpath-bench"))
        .args([
            "--skip-veth",
            "--skip-proxy",
            "--skip-sync",
            "--only-size",
            "1m",
        ])
        .args(rounds)
        .arg("--jit-dump")
        .arg(&jit)
        .args(args)
        .status()
        .context("running perf record")?;
    if !status.success() {
        bail!("perf record failed ({status})");
    }

    step("kernel symbols by share of all samples (the whole run, setup included)");
    let report = output(
        Command::new("perf")
            .args(["report", "--stdio", "--sort", "sym", "-i"])
            .arg(&data),
    )?;
    for line in report
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .take(25)
    {
        println!("{line}");
    }

    let samples = samples_by_address(&data)?;
    let layout =
        std::fs::read_to_string(jit.join("layout.tsv")).context("reading the JIT dump's layout")?;
    for line in layout.lines() {
        let [name, addr, _len] = line.split('\t').collect::<Vec<_>>()[..] else {
            continue;
        };
        let addr = u64::from_str_radix(addr, 16).context("address in layout.tsv")?;
        annotate(name, addr, &jit.join(format!("{name}.bin")), &samples)?;
    }
    Ok(())
}

/// Sample counts by instruction address, from `perf script`.
fn samples_by_address(data: &Path) -> Result<HashMap<u64, u64>> {
    let script = output(
        Command::new("perf")
            .args(["script", "-F", "ip", "-i"])
            .arg(data),
    )?;
    let mut counts = HashMap::new();
    for ip in script
        .lines()
        .filter_map(|l| u64::from_str_radix(l.trim(), 16).ok())
    {
        *counts.entry(ip).or_insert(0) += 1;
    }
    Ok(counts)
}

/// Prints the function's samples and its hottest instructions, each after the two before
/// it.
fn annotate(name: &str, addr: u64, code: &Path, samples: &HashMap<u64, u64>) -> Result<()> {
    let arch = if cfg!(target_arch = "aarch64") {
        "aarch64"
    } else {
        "i386:x86-64"
    };
    let listing = output(
        Command::new("objdump")
            .args(["-D", "-b", "binary", "-m", arch, "--no-show-raw-insn"])
            .arg(format!("--adjust-vma={addr:#x}"))
            .arg(code),
    )?;
    // "ffffffffc00010d4:\tpush   %rbp"
    let insns: Vec<(u64, &str)> = listing
        .lines()
        .filter_map(|l| {
            let (at, text) = l.trim().split_once(":\t")?;
            Some((u64::from_str_radix(at, 16).ok()?, text.trim()))
        })
        .collect();
    let count = |at: u64| samples.get(&at).copied().unwrap_or(0);
    let total: u64 = insns.iter().map(|&(at, _)| count(at)).sum();
    step(&format!("{name}: {total} samples"));
    let mut hottest: Vec<usize> = (0..insns.len())
        .filter(|&i| count(insns[i].0) > 0)
        .collect();
    hottest.sort_by_key(|&i| std::cmp::Reverse(count(insns[i].0)));
    for &i in hottest.iter().take(HOTTEST) {
        let (at, text) = insns[i];
        let before: Vec<&str> = insns[i.saturating_sub(2)..i].iter().map(|p| p.1).collect();
        println!(
            "{:>6} {:>5.1}%  +{:<5x} {text:<32} after: {}",
            count(at),
            100.0 * count(at) as f64 / total.max(1) as f64,
            at - addr,
            before.join(" ; ")
        );
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
