//! IPv4: only plain, unfragmented datagrams without options are candidates.

use aya_ebpf::programs::XdpContext;
use fastpath_common::{Counter, maps::FAMILY_IPV4};
use network_types::{ip::Ipv4Hdr, udp::UdpHdr};

use crate::{
    checksum::ChecksumUpdate,
    eth::L2,
    forward::{self, FibQuery},
    ref_at::{ref_mut_at, remaining, set_word, word},
    sip, stats, udp,
};

const IPPROTO_UDP: u8 = 17;
/// More-fragments flag and fragment offset.
const FRAGMENT_MASK: u16 = 0x3fff;

#[inline(always)]
pub(crate) fn try_handle(ctx: &XdpContext, l2: &L2) -> Result<u32, Counter> {
    // SAFETY: plain data; the UDP header reference taken below does not overlap it.
    let ip = unsafe { ref_mut_at::<Ipv4Hdr>(ctx, l2.l3) }?;
    if ip.vihl >> 4 != 4 {
        return Err(Counter::Malformed);
    }
    if ip.proto != IPPROTO_UDP {
        return Err(Counter::NotSip);
    }
    if u16::from_be_bytes(ip.frags) & FRAGMENT_MASK != 0 {
        return Err(Counter::Fragment);
    }
    match ip.vihl & 0x0f {
        5 => {}
        // Shorter than the fixed header: not options, a broken header.
        0..5 => return Err(Counter::Malformed),
        _ => return Err(Counter::IpOptions),
    }
    let tot_len = u16::from_be_bytes(ip.tot_len);
    let total = tot_len as usize;
    // Trailing Ethernet padding is fine; a datagram longer than the frame is not.
    if total < Ipv4Hdr::LEN + UdpHdr::LEN || total > remaining(ctx, l2.l3) {
        return Err(Counter::Malformed);
    }
    let request = udp::parse_sip(ctx, l2.l3 + Ipv4Hdr::LEN, total - Ipv4Hdr::LEN)?;
    let peer = sip::peer_for(&request.key, FAMILY_IPV4)?;
    sip::addressed_to_us(request.local, sip::Destination::v4(&ip.dst_addr))?;
    stop_after!("stop-after-local-check");
    if ip.ttl <= 1 {
        return Err(Counter::TtlExpired);
    }
    let new_dst = peer.addr[0];
    let query = FibQuery::V4 {
        src: &ip.src_addr,
        dst: new_dst,
        tos: ip.tos,
    };
    let hop = forward::next_hop(ctx, &peer, query, tot_len, l2.tagged)?;
    stop_after!("stop-after-next-hop");

    // Committed: from here on the packet is rewritten completely.
    let udp = request.udp;
    let new_port = peer.port.to_be_bytes();
    let old_dst = word(&ip.dst_addr, 0);
    if udp.check != [0, 0] {
        // A zero checksum means "none" and stays zero.
        udp.check = ChecksumUpdate::new(udp.check)
            .replace_words([old_dst], [new_dst])
            .replace_pair(udp.dst, new_port)
            .finish_udp();
    }
    udp.dst = new_port;

    let old_ttl_proto = [ip.ttl, ip.proto];
    ip.ttl -= 1;
    ip.check = ChecksumUpdate::new(ip.check)
        .replace_words([old_dst], [new_dst])
        .replace_pair(old_ttl_proto, [ip.ttl, ip.proto])
        .finish();
    set_word(&mut ip.dst_addr, 0, new_dst);

    stats::count_peer(peer.id, remaining(ctx, 0));
    forward::send(ctx, &hop)
}
