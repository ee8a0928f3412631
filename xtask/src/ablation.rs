//! `cargo xtask ablation`: the XDP program built once per ablation feature of
//! `fastpath-ebpf` (each takes one piece out of the hit path), then measured side by side
//! with the daemon's object in one `fastpath-bench` run.

use std::{path::Path, process::Command};

use anyhow::{Context, Result, bail};

use crate::step;

/// (variant name, `fastpath-ebpf` features).
const VARIANTS: &[(&str, &str)] = &[
    ("no-local-check", "ablate-local-check"),
    ("no-peer-stats", "ablate-peer-stats"),
    ("no-hop-check", "ablate-hop-check"),
    ("no-outcome-stats", "ablate-outcome-stats"),
    ("copy-64", "copy-64"),
    ("xdp-tx", "xdp-tx"),
    (
        "none-of-these",
        "ablate-local-check,ablate-peer-stats,ablate-hop-check,ablate-outcome-stats,copy-64",
    ),
];

/// Builds every variant into `out_dir` (one object file per variant name).
pub fn build(root: &Path, out_dir: &Path) -> Result<()> {
    std::fs::create_dir_all(out_dir)?;
    // One target directory for all variants: `core` is built once.
    let target_dir = root.join("target/ablation-build");
    for (name, features) in VARIANTS {
        step(&format!(
            "building the XDP program without {name} ({features})"
        ));
        // What aya-build runs, plus the features.
        let status = Command::new("rustup")
            .args([
                "run",
                "nightly",
                "cargo",
                "build",
                "--package",
                "fastpath-ebpf",
            ])
            .args(["--bins", "--release", "--target", "bpfel-unknown-none"])
            .args(["-Z", "build-std=core", "--features", features])
            .arg("--target-dir")
            .arg(&target_dir)
            .env(
                "CARGO_ENCODED_RUSTFLAGS",
                "--cfg=bpf_target_arch=\"x86_64\"\x1f-Cdebuginfo=2\x1f-Clink-arg=--btf",
            )
            .env_remove("RUSTC")
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .current_dir(root)
            .status()
            .context("running cargo for fastpath-ebpf")?;
        if !status.success() {
            bail!("building variant {name} failed ({status})");
        }
        let built = target_dir.join("bpfel-unknown-none/release/fastpath");
        std::fs::copy(&built, out_dir.join(name))
            .with_context(|| format!("copying {}", built.display()))?;
    }
    Ok(())
}
