//! Builds the XDP program (`fastpath-ebpf`) for the BPF target and leaves the object in
//! `OUT_DIR`, where `include_bytes_aligned!` embeds it into the daemon.
fn main() -> anyhow::Result<()> {
    let package = aya_build::Package {
        name: "fastpath-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../fastpath-ebpf"),
        ..Default::default()
    };
    println!("cargo:rerun-if-changed=../fastpath-common/src");
    aya_build::build_ebpf([package], aya_build::Toolchain::default())
}
