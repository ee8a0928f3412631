//! `cargo xtask setup | build | run | demo | test | ablation | profile | bench`: the
//! project's own commands.
//! Every command first installs what a fresh machine lacks (idempotently).

mod ablation;
mod demo;
mod profile;
mod setup;

use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "fastpath developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install packages, the nightly rust-src, bpf-linker; mount bpffs.
    Setup,
    /// Build the daemon (with its XDP program) in release mode.
    Build,
    /// Build and run the daemon: `cargo xtask run -- --iface eth0 --config fastpath.toml`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build a netns topology, place real SIPp calls through the gateway, show where they went.
    Demo,
    /// Run every test (root needed: netns, XDP, BPF_PROG_TEST_RUN).
    Test,
    /// Build the XDP program's ablation variants and measure their hit path beside the
    /// full program in one benchmark run (extra arguments go to `fastpath-bench`).
    Ablation {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Profile the XDP program with perf while the per-packet benchmark runs: the kernel
    /// symbols that took the time and the program's hottest instructions.
    Profile {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the benchmarks: `cargo xtask bench --json FILE`.
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> Result<()> {
    started();
    let result = task(Cli::parse().command);
    step(if result.is_ok() { "done" } else { "failed" });
    result
}

fn task(task: Task) -> Result<()> {
    match task {
        Task::Setup => setup::run(),
        Task::Build => {
            setup::run()?;
            build()
        }
        Task::Run { args } => {
            setup::run()?;
            build()?;
            cargo(&["run", "--release", "-p", "fastpath", "--"], &args)
        }
        Task::Demo => {
            setup::run()?;
            build()?;
            demo::run()
        }
        Task::Test => {
            setup::run()?;
            step("running the tests");
            // The eBPF crate only builds for the BPF target (through fastpath's build.rs).
            cargo(
                &[
                    "test",
                    "--workspace",
                    "--exclude",
                    "fastpath-ebpf",
                    "--all-targets",
                ],
                &[],
            )
        }
        Task::Ablation { args } => {
            setup::run()?;
            let root = repo_root();
            let out = root.join("target/ablation");
            ablation::build(&root, &out)?;
            step("measuring the variants");
            let mut all = vec![
                "--variants".to_string(),
                out.display().to_string(),
                "--skip-proxy".into(),
                "--skip-sync".into(),
                "--skip-veth".into(),
                "--only-size".into(),
                "1m".into(),
            ];
            all.extend(args);
            cargo(&["run", "--release", "-p", "fastpath-bench", "--"], &all)
        }
        Task::Profile { args } => {
            setup::run()?;
            let root = repo_root();
            profile::run(&root, &args)
        }
        Task::Bench { args } => {
            setup::run()?;
            step("running the benchmarks");
            cargo(&["run", "--release", "-p", "fastpath-bench", "--"], &args)
        }
    }
}

/// The workspace root (xtask lives one level down).
fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn build() -> Result<()> {
    step("building fastpath (release, with the XDP program)");
    cargo(&["build", "--release", "-p", "fastpath"], &[])
}

/// Announces a step with the time since the task started, so a long run (a fresh
/// machine's installs and builds) shows where it is and how long each step took; the
/// steps themselves (apt, cargo) print their own progress below.
pub(crate) fn step(what: &str) {
    let elapsed = started().elapsed().as_secs_f64();
    eprintln!("==> [{elapsed:>6.1} s] {what}");
}

fn started() -> std::time::Instant {
    static STARTED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *STARTED.get_or_init(std::time::Instant::now)
}

fn cargo(args: &[&str], extra: &[String]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(args)
        .args(extra)
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}
