//! Installs, idempotently, what a fresh Debian machine lacks to build and test fastpath.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::step;

/// Debian packages: the LLVM bpf-linker links against, SIPp, and the network tools the
/// tests and the demo drive.
const PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "sip-tester",
    "bpftool",
    "nftables",
    "iproute2",
    "ethtool",
    "iputils-ping",
    "util-linux",
    // The incumbent the proxy benchmark measures against (`kamailio_invites_per_s`).
    "kamailio",
];
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

pub fn run() -> Result<()> {
    install_packages()?;
    install_rust_src()?;
    install_bpf_linker()?;
    install_promtool()?;
    mount_bpffs()
}

fn install_packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|p| !package_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    step(&format!(
        "installing Debian packages: {}",
        missing.join(" ")
    ));
    sh("apt-get", &["update", "-q"])?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(&missing);
    Command::new("apt-get")
        .args(&args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get")?
        .success()
        .then_some(())
        .context("apt-get install failed (are you root?)")
}

fn package_installed(name: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", name])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn install_rust_src() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains("rust-src")
        });
    if installed {
        return Ok(());
    }
    step("installing the nightly toolchain's rust-src (the eBPF target builds core from it)");
    sh(
        "rustup",
        &["toolchain", "install", "nightly", "--profile", "minimal"],
    )?;
    sh(
        "rustup",
        &["component", "add", "rust-src", "--toolchain", "nightly"],
    )
}

fn install_bpf_linker() -> Result<()> {
    let current = Command::new("bpf-linker").arg("--version").output();
    if current.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION)) {
        return Ok(());
    }
    step(&format!(
        "building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about a minute)"
    ));
    let status = Command::new("cargo")
        .args(["install", "--locked", "--force"])
        .arg(format!("bpf-linker@{BPF_LINKER_VERSION}"))
        .args(["--no-default-features", "--features", "llvm-22"])
        // Without LLVM_PREFIX it picks up an older LLVM and fails (DESIGN.md §4).
        .env("LLVM_SYS_221_PREFIX", LLVM_PREFIX)
        .env("LLVM_PREFIX", LLVM_PREFIX)
        .status()
        .context("running cargo install")?;
    if !status.success() {
        bail!("cargo install bpf-linker failed");
    }
    Ok(())
}

/// `promtool`, which the metrics tests run, is in Debian's prometheus package; installing
/// that would also install (and on some machines start) a Prometheus server, so only the
/// one binary is taken out of the package.
fn install_promtool() -> Result<()> {
    let present = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if present {
        return Ok(());
    }
    step("installing promtool (from Debian's prometheus package, without its server)");
    let dir = std::env::temp_dir().join(format!("fastpath-promtool-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = (|| {
        let download = |dir: &std::path::Path| {
            Command::new("apt-get")
                .args(["download", "-q", "prometheus"])
                .current_dir(dir)
                .status()
                .is_ok_and(|s| s.success())
        };
        if !download(&dir) {
            sh("apt-get", &["update", "-q"])?;
            download(&dir)
                .then_some(())
                .context("apt-get download prometheus failed")?;
        }
        let deb = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "deb"))
            .context("no .deb downloaded")?;
        let root = dir.join("root");
        sh(
            "dpkg-deb",
            &["-x", &deb.to_string_lossy(), &root.to_string_lossy()],
        )?;
        std::fs::copy(root.join("usr/bin/promtool"), "/usr/local/bin/promtool")
            .context("copying promtool to /usr/local/bin")?;
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn mount_bpffs() -> Result<()> {
    let mounted = std::fs::read_to_string("/proc/mounts").is_ok_and(|m| {
        m.lines()
            .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf") && l.contains(" bpf "))
    });
    if mounted {
        return Ok(());
    }
    step("mounting the bpf filesystem at /sys/fs/bpf");
    sh("mount", &["-t", "bpf", "bpf", "/sys/fs/bpf"])
}

fn sh(program: &str, args: &[&str]) -> Result<()> {
    let status = Command::new(program)
        .args(args)
        .status()
        .with_context(|| format!("running {program}"))?;
    if !status.success() {
        bail!("{program} {} failed ({status})", args.join(" "));
    }
    Ok(())
}
