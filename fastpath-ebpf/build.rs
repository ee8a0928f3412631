//! Link-time settings for the BPF object (bpf-linker generates the code).
fn main() {
    // Eight-byte loads at any offset (the classifier's window reads, the payload copy)
    // instead of eight byte loads and seven shifts each. The kernel verifier accepts
    // unaligned packet and map-value access on every architecture with efficient unaligned
    // access (x86-64, arm64); elsewhere it refuses the program at load, never misreads.
    println!("cargo::rustc-link-arg=--cpu-features=+allows-misaligned-mem-access");
}
