//! IPv6: only datagrams whose next header is UDP itself are candidates.

use aya_ebpf::programs::XdpContext;
use fastpath_common::{Counter, maps::FAMILY_IPV6};
use network_types::{ip::Ipv6Hdr, udp::UdpHdr};

use crate::{
    checksum::ChecksumUpdate,
    eth::L2,
    forward::{self, FibQuery},
    ref_at::{ref_mut_at, remaining, set_word, words},
    sip, stats, udp,
};

const IPPROTO_UDP: u8 = 17;

#[inline(always)]
pub(crate) fn try_handle(ctx: &XdpContext, l2: &L2) -> Result<u32, Counter> {
    // SAFETY: plain data; the UDP header reference taken below does not overlap it.
    let ip = unsafe { ref_mut_at::<Ipv6Hdr>(ctx, l2.l3) }?;
    if ip.vcf[0] >> 4 != 6 {
        return Err(Counter::Malformed);
    }
    if ip.next_hdr != IPPROTO_UDP {
        return Err(if is_extension_header(ip.next_hdr) {
            Counter::IpOptions
        } else {
            Counter::NotSip
        });
    }
    let payload_len = u16::from_be_bytes(ip.payload_len) as usize;
    if payload_len < UdpHdr::LEN || payload_len > remaining(ctx, l2.l3 + Ipv6Hdr::LEN) {
        return Err(Counter::Malformed);
    }
    let request = udp::parse_sip(ctx, l2.l3 + Ipv6Hdr::LEN, payload_len)?;
    if request.udp.check == [0, 0] {
        // Mandatory over IPv6 (RFC 8200 §8.1): the kernel will drop it, not us.
        return Err(Counter::Malformed);
    }
    let peer = sip::peer_for(&request.key, FAMILY_IPV6)?;
    sip::addressed_to_us(request.local, sip::Destination::v6(&ip.dst_addr))?;
    stop_after!("stop-after-local-check");
    if ip.hop_limit <= 1 {
        return Err(Counter::TtlExpired);
    }
    let flowinfo = u32::from_ne_bytes(ip.vcf) & 0x0fff_ffff_u32.to_be();
    let query = FibQuery::V6 {
        src: &ip.src_addr,
        dst: peer.addr,
        flowinfo,
    };
    // The FIB's MTU check wants the whole datagram, header included (like IPv4's tot_len).
    let tot_len = (Ipv6Hdr::LEN + payload_len).min(u16::MAX as usize) as u16;
    let hop = forward::next_hop(ctx, &peer, query, tot_len, l2.tagged)?;
    stop_after!("stop-after-next-hop");

    // Committed: from here on the packet is rewritten completely. The hop limit is not
    // covered by any checksum.
    let udp = request.udp;
    let new_port = peer.port.to_be_bytes();
    udp.check = ChecksumUpdate::new(udp.check)
        .replace_words(words(&ip.dst_addr), peer.addr)
        .replace_pair(udp.dst, new_port)
        .finish_udp();
    udp.dst = new_port;
    ip.hop_limit -= 1;
    for (i, &value) in peer.addr.iter().enumerate() {
        set_word(&mut ip.dst_addr, i, value);
    }

    stats::count_peer(peer.id, remaining(ctx, 0));
    forward::send(ctx, &hop)
}

/// Next-header values that are IPv6 extension headers (RFC 8200 §4, RFC 7045).
#[inline(always)]
fn is_extension_header(next_hdr: u8) -> bool {
    matches!(
        next_hdr,
        0 | 43 | 44 | 50 | 51 | 60 | 135 | 139 | 140 | 253 | 254
    )
}
