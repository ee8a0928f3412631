//! `cargo xtask ablation`: the XDP program built once per ablation feature of
//! `fastpath-ebpf` (each takes one piece out of the hit path) and once per stage of the
//! waterfall (the hit path cut short after that stage), then measured side by side with
//! the daemon's object in one `fastpath-bench` run. The waterfall's steps are what each
//! stage costs; the ablations say what one piece costs in place.

use std::{path::Path, process::Command};

use anyhow::{Context, Result, bail};

use crate::step;

/// (variant name, `fastpath-ebpf` features).
const VARIANTS: &[(&str, &str)] = &[
    ("no-local-check", "ablate-local-check"),
    ("no-peer-stats", "ablate-peer-stats"),
    ("no-hop-check", "ablate-hop-check"),
    ("no-outcome-stats", "ablate-outcome-stats"),
    ("no-route-index", "ablate-route-index"),
    ("xdp-tx", "xdp-tx"),
    // Not an ablation: the full program plus eight empty calls (see the bench's report).
    ("calibrate-8-calls", "calibrate-calls"),
    (
        "none-of-these",
        "ablate-local-check,ablate-peer-stats,ablate-hop-check,ablate-outcome-stats",
    ),
    // The waterfall: the hit path cut short after each stage, in order (names sort so).
    ("stop-1-after-headers", "stop-after-headers"),
    ("stop-2-after-copy", "stop-after-copy"),
    ("stop-3-after-classify", "stop-after-classify"),
    ("stop-4-after-route", "stop-after-route"),
    ("stop-5-after-local-check", "stop-after-local-check"),
    ("stop-6-after-next-hop", "stop-after-next-hop"),
];

/// Builds every variant into `out_dir` (one object file per variant name).
pub fn build(root: &Path, out_dir: &Path) -> Result<()> {
    // Only this list's variants: one an earlier checkout built (no-route-filter, say) would
    // be measured beside them, or fail to load, with no source left to say what it was.
    if out_dir.exists() {
        std::fs::remove_dir_all(out_dir)
            .with_context(|| format!("clearing {}", out_dir.display()))?;
    }
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
