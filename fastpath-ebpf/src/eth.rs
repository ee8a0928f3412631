//! Ethernet, with at most one 802.1Q or 802.1ad tag.

use aya_ebpf::programs::XdpContext;
use fastpath_common::Counter;
use network_types::eth::EthHdr;

use crate::ref_at::{ref_mut_at, set_word};

pub(crate) const ETH_P_IPV4: u16 = 0x0800;
pub(crate) const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const VLAN_HDR_LEN: usize = 4;

pub(crate) struct L2 {
    /// Host byte order, after any tag.
    pub(crate) ether_type: u16,
    /// Offset of the L3 header.
    pub(crate) l3: usize,
    /// A tagged frame may only go back out where it came from (see `forward`).
    pub(crate) tagged: bool,
}

#[repr(C)]
struct VlanHdr {
    tci: [u8; 2],
    ether_type: [u8; 2],
}

#[inline(always)]
pub(crate) fn parse(ctx: &XdpContext) -> Result<L2, Counter> {
    // SAFETY: EthHdr is plain data; no other reference is live.
    let eth = unsafe { ref_mut_at::<EthHdr>(ctx, 0) }?;
    let ether_type = u16::from_be(eth.ether_type);
    if !is_vlan(ether_type) {
        return Ok(L2 {
            ether_type,
            l3: EthHdr::LEN,
            tagged: false,
        });
    }
    // SAFETY: as above.
    let tag = unsafe { ref_mut_at::<VlanHdr>(ctx, EthHdr::LEN) }?;
    let inner = u16::from_be_bytes(tag.ether_type);
    if is_vlan(inner) {
        // Stacked tags (QinQ): the carrier's business, not ours.
        return Err(Counter::Malformed);
    }
    Ok(L2 {
        ether_type: inner,
        l3: EthHdr::LEN + VLAN_HDR_LEN,
        tagged: true,
    })
}

#[inline(always)]
fn is_vlan(ether_type: u16) -> bool {
    ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD
}

/// A next hop's MACs as a frame starts with them: destination, then source.
///
/// Three words in the packet's byte order, so that the hit path moves them as words between
/// the per-CPU cache, the next-hop decision and the packet; as two `[u8; 6]` they were
/// copied a byte at a time, three times over.
#[derive(Clone, Copy)]
pub(crate) struct Macs([u32; 3]);

impl Macs {
    #[inline(always)]
    pub(crate) fn new(src: &[u8; 6], dst: &[u8; 6]) -> Self {
        let mut bytes = [0u8; 12];
        bytes[..6].copy_from_slice(dst);
        bytes[6..].copy_from_slice(src);
        let word = |i: usize| {
            u32::from_ne_bytes([
                bytes[4 * i],
                bytes[4 * i + 1],
                bytes[4 * i + 2],
                bytes[4 * i + 3],
            ])
        };
        Self([word(0), word(1), word(2)])
    }
}

/// Points the frame at the next hop found by the FIB lookup: three word stores, where a
/// byte array took twelve.
#[inline(always)]
pub(crate) fn set_macs(ctx: &XdpContext, macs: &Macs) -> Result<(), Counter> {
    // SAFETY: parsed before; no other reference to the Ethernet header is live.
    let addrs = unsafe { ref_mut_at::<[u8; 12]>(ctx, 0) }?;
    for (i, &value) in macs.0.iter().enumerate() {
        set_word(addrs, i, value);
    }
    Ok(())
}
