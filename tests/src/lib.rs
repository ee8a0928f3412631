//! Test support for fastpath: network-namespace topologies (DESIGN.md §5), SIPp
//! drivers, process guards, and Ethernet frame builders for `BPF_PROG_TEST_RUN`.
//!
//! Everything that touches the network needs root and runs only inside namespaces
//! created by [`netns::Topology`].

pub mod gateway;
pub mod netns;
pub mod packet;
pub mod process;
pub mod promtool;
pub mod sipp;

pub use gateway::Gateway;
pub use netns::{Host, Iface, Topology};
pub use packet::FrameSpec;
pub use process::ChildGuard;
pub use promtool::promtool_check_metrics;
pub use sipp::{UacReport, Uas, UasReport, uac_call};
