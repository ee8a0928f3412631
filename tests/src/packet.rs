//! Ethernet frames for `BPF_PROG_TEST_RUN`, and checks on what comes back.
//!
//! Frames are serialized with etherparse; the checks use a parser and an RFC 1071
//! checksum of their own, so that a bug in one cannot hide a bug in the other, and so
//! that they also read frames etherparse would reject (fragments, bad checksums).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::{Context, Result, bail, ensure};
use etherparse::{
    EtherType, Ethernet2Header, IpFragOffset, IpNumber, Ipv4Header, Ipv4Options, Ipv6FlowLabel,
    Ipv6Header, Ipv6RawExtHeader, SingleVlanHeader, UdpHeader, VlanId, VlanPcp,
};

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_QINQ: u16 = 0x88a8;

/// Default MACs: locally administered, so they can never be a real NIC's.
pub const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vlan {
    /// One 802.1Q tag.
    Single(u16),
    /// 802.1ad outer (S-tag, 0x88a8) then 802.1Q inner (C-tag).
    Stacked { outer: u16, inner: u16 },
}

/// An IPv6 extension header to put between the IPv6 header and UDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ipv6Ext {
    HopByHop,
    DestinationOptions,
}

/// Describes one UDP-in-IP Ethernet frame; [`FrameSpec::build`] serializes it with
/// correct lengths and checksums unless told otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameSpec {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub vlan: Option<Vlan>,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub payload: Vec<u8>,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// Raw IPv4 options (multiple of 4 bytes, at most 40): IHL > 5.
    pub ipv4_options: Vec<u8>,
    /// IPv4 fragment: (more fragments, offset in 8-byte units). The UDP header is
    /// written anyway; in a non-first fragment it is just payload bytes.
    pub ipv4_fragment: Option<(bool, u16)>,
    pub ipv6_ext: Option<Ipv6Ext>,
    /// Write 0 ("no checksum", legal for IPv4 only) instead of the UDP checksum.
    pub zero_udp_checksum: bool,
}

impl FrameSpec {
    /// A plain, valid UDP frame from `src` to `dst` (both v4 or both v6).
    pub fn udp(src: SocketAddr, dst: SocketAddr, payload: impl Into<Vec<u8>>) -> Self {
        Self {
            src_mac: SRC_MAC,
            dst_mac: DST_MAC,
            vlan: None,
            src,
            dst,
            payload: payload.into(),
            ttl: 64,
            ipv4_options: Vec::new(),
            ipv4_fragment: None,
            ipv6_ext: None,
            zero_udp_checksum: false,
        }
    }

    pub fn macs(mut self, src: [u8; 6], dst: [u8; 6]) -> Self {
        (self.src_mac, self.dst_mac) = (src, dst);
        self
    }

    pub fn vlan(mut self, id: u16) -> Self {
        self.vlan = Some(Vlan::Single(id));
        self
    }

    pub fn qinq(mut self, outer: u16, inner: u16) -> Self {
        self.vlan = Some(Vlan::Stacked { outer, inner });
        self
    }

    pub fn ttl(mut self, ttl: u8) -> Self {
        self.ttl = ttl;
        self
    }

    pub fn ipv4_options(mut self, options: &[u8]) -> Self {
        self.ipv4_options = options.to_vec();
        self
    }

    pub fn ipv4_fragment(mut self, more_fragments: bool, offset_units: u16) -> Self {
        self.ipv4_fragment = Some((more_fragments, offset_units));
        self
    }

    pub fn ipv6_ext(mut self, ext: Ipv6Ext) -> Self {
        self.ipv6_ext = Some(ext);
        self
    }

    pub fn zero_udp_checksum(mut self) -> Self {
        self.zero_udp_checksum = true;
        self
    }

    pub fn build(&self) -> Result<Vec<u8>> {
        let ip_type = if self.src.is_ipv4() {
            EtherType::IPV4
        } else {
            EtherType::IPV6
        };
        let mut out = Vec::with_capacity(128 + self.payload.len());
        let first_type = match self.vlan {
            None => ip_type,
            Some(Vlan::Single(_)) => EtherType::VLAN_TAGGED_FRAME,
            Some(Vlan::Stacked { .. }) => EtherType::PROVIDER_BRIDGING,
        };
        Ethernet2Header {
            source: self.src_mac,
            destination: self.dst_mac,
            ether_type: first_type,
        }
        .write(&mut out)?;
        match self.vlan {
            None => {}
            Some(Vlan::Single(id)) => vlan_tag(id, ip_type)?.write(&mut out)?,
            Some(Vlan::Stacked { outer, inner }) => {
                vlan_tag(outer, EtherType::VLAN_TAGGED_FRAME)?.write(&mut out)?;
                vlan_tag(inner, ip_type)?.write(&mut out)?;
            }
        }
        match (self.src.ip(), self.dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => self.write_v4(&mut out, s, d)?,
            (IpAddr::V6(s), IpAddr::V6(d)) => self.write_v6(&mut out, s, d)?,
            _ => bail!("source and destination differ in IP version"),
        }
        Ok(out)
    }

    fn write_v4(&self, out: &mut Vec<u8>, src: Ipv4Addr, dst: Ipv4Addr) -> Result<()> {
        ensure!(
            self.ipv6_ext.is_none(),
            "IPv6 extension header on an IPv4 frame"
        );
        let udp_len = UdpHeader::LEN + self.payload.len();
        let mut ip = Ipv4Header::new(
            u16::try_from(udp_len).context("payload too long")?,
            self.ttl,
            IpNumber::UDP,
            src.octets(),
            dst.octets(),
        )?;
        ip.options = Ipv4Options::try_from(self.ipv4_options.as_slice())
            .map_err(|e| anyhow::anyhow!("IPv4 options: {e}"))?;
        // Options count in the total length as well.
        ip.set_payload_len(udp_len)?;
        if let Some((more, offset)) = self.ipv4_fragment {
            ip.dont_fragment = false;
            ip.more_fragments = more;
            ip.fragment_offset = IpFragOffset::try_new(offset)?;
            ip.identification = 0x5eed;
        }
        let udp = if self.zero_udp_checksum {
            UdpHeader::without_ipv4_checksum(self.src.port(), self.dst.port(), self.payload.len())?
        } else {
            UdpHeader::with_ipv4_checksum(self.src.port(), self.dst.port(), &ip, &self.payload)?
        };
        ip.write(out)?; // computes the header checksum
        udp.write(out)?;
        out.extend_from_slice(&self.payload);
        Ok(())
    }

    fn write_v6(&self, out: &mut Vec<u8>, src: Ipv6Addr, dst: Ipv6Addr) -> Result<()> {
        ensure!(
            self.ipv4_options.is_empty() && self.ipv4_fragment.is_none(),
            "IPv4 options or fragment on an IPv6 frame"
        );
        // One PadN option (type 1, length 4) fills the 8-byte header.
        const PADN: [u8; 6] = [1, 4, 0, 0, 0, 0];
        let ext = match self.ipv6_ext {
            None => None,
            Some(Ipv6Ext::HopByHop) => Some((
                IpNumber::IPV6_HEADER_HOP_BY_HOP,
                Ipv6RawExtHeader::new_raw(IpNumber::UDP, &PADN)?,
            )),
            Some(Ipv6Ext::DestinationOptions) => Some((
                IpNumber::IPV6_DESTINATION_OPTIONS,
                Ipv6RawExtHeader::new_raw(IpNumber::UDP, &PADN)?,
            )),
        };
        let ext_len = ext.as_ref().map_or(0, |(_, h)| h.header_len());
        let mut ip = Ipv6Header {
            traffic_class: 0,
            flow_label: Ipv6FlowLabel::ZERO,
            payload_length: 0,
            next_header: ext.as_ref().map_or(IpNumber::UDP, |(n, _)| *n),
            hop_limit: self.ttl,
            source: src.octets(),
            destination: dst.octets(),
        };
        ip.set_payload_length(ext_len + UdpHeader::LEN + self.payload.len())?;
        let mut udp =
            UdpHeader::with_ipv6_checksum(self.src.port(), self.dst.port(), &ip, &self.payload)?;
        if self.zero_udp_checksum {
            udp.checksum = 0;
        }
        ip.write(out)?;
        if let Some((_, h)) = ext {
            h.write(out)?;
        }
        udp.write(out)?;
        out.extend_from_slice(&self.payload);
        Ok(())
    }
}

fn vlan_tag(id: u16, inner: EtherType) -> Result<SingleVlanHeader> {
    Ok(SingleVlanHeader {
        pcp: VlanPcp::ZERO,
        drop_eligible_indicator: false,
        vlan_id: VlanId::try_new(id)?,
        ether_type: inner,
    })
}

/// Where the layers of a frame start, as read by this module's own parser.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Offset of the IP header.
    pub l3: usize,
    /// 4 or 6.
    pub ip_version: u8,
    /// Offset of the UDP header; `None` if the frame is not UDP or is a non-first
    /// fragment (no UDP header there).
    pub l4: Option<usize>,
}

/// Parses Ethernet, up to two VLAN tags, IPv4 or IPv6 (skipping extension headers).
pub fn layout(frame: &[u8]) -> Result<Layout> {
    let mut off = 12;
    let mut ethertype = be16(frame, off)?;
    off += 2;
    for _ in 0..2 {
        if !matches!(ethertype, ETHERTYPE_VLAN | ETHERTYPE_QINQ | 0x9100) {
            break;
        }
        ethertype = be16(frame, off + 2)?;
        off += 4;
    }
    let l3 = off;
    match ethertype {
        ETHERTYPE_IPV4 => {
            let vihl = byte(frame, l3)?;
            ensure!(vihl >> 4 == 4, "not IPv4");
            let ihl = usize::from(vihl & 0xf) * 4;
            ensure!(ihl >= 20 && frame.len() >= l3 + ihl, "bad IHL");
            let frag_offset = be16(frame, l3 + 6)? & 0x1fff;
            let udp = byte(frame, l3 + 9)? == 17 && frag_offset == 0;
            Ok(Layout {
                l3,
                ip_version: 4,
                l4: udp.then_some(l3 + ihl),
            })
        }
        ETHERTYPE_IPV6 => {
            ensure!(byte(frame, l3)? >> 4 == 6, "not IPv6");
            let mut next = byte(frame, l3 + 6)?;
            let mut off = l3 + 40;
            // Bounded like the XDP program's own walk.
            for _ in 0..8 {
                match next {
                    0 | 43 | 60 => {
                        let len = (usize::from(byte(frame, off + 1)?) + 1) * 8;
                        next = byte(frame, off)?;
                        off += len;
                    }
                    44 => {
                        let frag_offset = be16(frame, off + 2)? >> 3;
                        if frag_offset != 0 {
                            next = 59; // nothing to read past a non-first fragment
                        } else {
                            next = byte(frame, off)?;
                        }
                        off += 8;
                    }
                    _ => break,
                }
            }
            Ok(Layout {
                l3,
                ip_version: 6,
                l4: (next == 17).then_some(off),
            })
        }
        other => bail!("ethertype {other:#06x} is not IP"),
    }
}

pub fn dst_mac(frame: &[u8]) -> Option<[u8; 6]> {
    frame.get(0..6)?.try_into().ok()
}

pub fn src_mac(frame: &[u8]) -> Option<[u8; 6]> {
    frame.get(6..12)?.try_into().ok()
}

pub fn src_ip(frame: &[u8]) -> Option<IpAddr> {
    ip_at(frame, 12, 8)
}

pub fn dst_ip(frame: &[u8]) -> Option<IpAddr> {
    ip_at(frame, 16, 24)
}

fn ip_at(frame: &[u8], v4_off: usize, v6_off: usize) -> Option<IpAddr> {
    let l = layout(frame).ok()?;
    if l.ip_version == 4 {
        let b: [u8; 4] = frame
            .get(l.l3 + v4_off..l.l3 + v4_off + 4)?
            .try_into()
            .ok()?;
        Some(Ipv4Addr::from(b).into())
    } else {
        let b: [u8; 16] = frame
            .get(l.l3 + v6_off..l.l3 + v6_off + 16)?
            .try_into()
            .ok()?;
        Some(Ipv6Addr::from(b).into())
    }
}

pub fn src_port(frame: &[u8]) -> Option<u16> {
    be16(frame, layout(frame).ok()?.l4?).ok()
}

pub fn dst_port(frame: &[u8]) -> Option<u16> {
    be16(frame, layout(frame).ok()?.l4? + 2).ok()
}

/// The UDP checksum field as written (0 means "none" in IPv4).
pub fn udp_checksum_field(frame: &[u8]) -> Option<u16> {
    be16(frame, layout(frame).ok()?.l4? + 6).ok()
}

/// The UDP payload, bounded by the UDP length field.
pub fn udp_payload(frame: &[u8]) -> Option<&[u8]> {
    let l4 = layout(frame).ok()?.l4?;
    let len = usize::from(be16(frame, l4 + 4).ok()?);
    frame.get(l4 + 8..l4 + len.max(8))
}

/// IPv4 TTL; `None` for IPv6.
pub fn ttl(frame: &[u8]) -> Option<u8> {
    let l = layout(frame).ok()?;
    (l.ip_version == 4).then(|| byte(frame, l.l3 + 8).ok())?
}

/// IPv6 hop limit; `None` for IPv4.
pub fn hop_limit(frame: &[u8]) -> Option<u8> {
    let l = layout(frame).ok()?;
    (l.ip_version == 6).then(|| byte(frame, l.l3 + 7).ok())?
}

/// True if the frame is IPv4 and its header checksum verifies.
pub fn ipv4_header_checksum_ok(frame: &[u8]) -> bool {
    let Ok(l) = layout(frame) else { return false };
    if l.ip_version != 4 {
        return false;
    }
    let ihl = usize::from(frame[l.l3] & 0xf) * 4;
    fold(sum16(&frame[l.l3..l.l3 + ihl], 0)) == 0xffff
}

/// True if the frame holds a whole UDP datagram whose checksum verifies, or an IPv4
/// one that carries no checksum (0). RFC 768 pseudo-header for IPv4, RFC 8200 §8.1
/// for IPv6 (where 0 is invalid).
pub fn udp_checksum_ok(frame: &[u8]) -> bool {
    let Ok(Layout {
        l3,
        ip_version,
        l4: Some(l4),
    }) = layout(frame)
    else {
        return false;
    };
    let Ok(udp_len) = be16(frame, l4 + 4) else {
        return false;
    };
    let Some(datagram) = frame.get(l4..l4 + usize::from(udp_len)) else {
        return false;
    };
    if udp_len < 8 {
        return false;
    }
    let checksum = u16::from_be_bytes([datagram[6], datagram[7]]);
    let pseudo = if ip_version == 4 {
        if checksum == 0 {
            return true;
        }
        sum16(&frame[l3 + 12..l3 + 20], 0)
    } else {
        sum16(&frame[l3 + 8..l3 + 40], 0)
    };
    let pseudo = pseudo + 17 + u32::from(udp_len);
    checksum != 0 && fold(sum16(datagram, pseudo)) == 0xffff
}

/// RFC 1071 one's-complement sum of 16-bit big-endian words, odd byte zero-padded.
fn sum16(data: &[u8], initial: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    let mut sum = initial;
    for w in &mut chunks {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
        sum = (sum & 0xffff) + (sum >> 16); // fold as we go: never overflows
    }
    if let [b] = chunks.remainder() {
        sum += u32::from(*b) << 8;
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

fn byte(frame: &[u8], off: usize) -> Result<u8> {
    frame.get(off).copied().context("frame truncated")
}

fn be16(frame: &[u8], off: usize) -> Result<u16> {
    let b = frame.get(off..off + 2).context("frame truncated")?;
    Ok(u16::from_be_bytes([b[0], b[1]]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netns::{CALLER_V4, CALLER_V6, PEER_V4, PEER_V6, SIP_PORT};
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    const SIP: &[u8] = b"INVITE sip:15551234567@198.51.100.2:5060 SIP/2.0\r\n\r\n";

    fn v4() -> FrameSpec {
        FrameSpec::udp(
            SocketAddr::new(CALLER_V4.into(), 5062),
            SocketAddr::new(PEER_V4.into(), SIP_PORT),
            SIP,
        )
    }

    fn v6() -> FrameSpec {
        FrameSpec::udp(
            SocketAddr::new(CALLER_V6.into(), 5062),
            SocketAddr::new(PEER_V6.into(), SIP_PORT),
            SIP,
        )
    }

    /// etherparse must read back what we built, and agree with our own checks.
    fn cross_check(frame: &[u8]) -> Result<()> {
        let p = SlicedPacket::from_ethernet(frame)?;
        let Some(TransportSlice::Udp(udp)) = p.transport else {
            bail!("etherparse found no UDP")
        };
        assert_eq!(udp.payload(), SIP);
        assert_eq!(Some(udp.destination_port()), dst_port(frame));
        assert_eq!(Some(udp.source_port()), src_port(frame));
        assert_eq!(udp_payload(frame), Some(SIP));
        match p.net {
            Some(NetSlice::Ipv4(ip)) => {
                let h = ip.header();
                assert_eq!(h.header_checksum(), h.to_header().calc_header_checksum());
                assert_eq!(Some(IpAddr::V4(h.destination_addr())), dst_ip(frame));
                let want = udp
                    .to_header()
                    .calc_checksum_ipv4(&h.to_header(), udp.payload())?;
                assert!(udp.checksum() == 0 || udp.checksum() == want);
            }
            Some(NetSlice::Ipv6(ip)) => {
                let h = ip.header();
                assert_eq!(Some(IpAddr::V6(h.destination_addr())), dst_ip(frame));
                let want = udp
                    .to_header()
                    .calc_checksum_ipv6(&h.to_header(), udp.payload())?;
                assert_eq!(udp.checksum(), want);
            }
            _ => bail!("etherparse found no IP"),
        }
        Ok(())
    }

    #[test]
    fn plain_ipv4() -> Result<()> {
        let f = v4().ttl(17).build()?;
        assert_eq!(f.len(), 14 + 20 + 8 + SIP.len());
        cross_check(&f)?;
        assert!(ipv4_header_checksum_ok(&f));
        assert!(udp_checksum_ok(&f));
        assert_eq!(ttl(&f), Some(17));
        assert_eq!(hop_limit(&f), None);
        assert_eq!(dst_ip(&f), Some(PEER_V4.into()));
        assert_eq!(src_ip(&f), Some(CALLER_V4.into()));
        assert_eq!(dst_mac(&f), Some(DST_MAC));
        assert_eq!(src_mac(&f), Some(SRC_MAC));
        Ok(())
    }

    #[test]
    fn corruption_is_detected() -> Result<()> {
        let f = v4().build()?;
        let l = layout(&f)?;
        let mut bad_ip = f.clone();
        bad_ip[l.l3 + 8] -= 1; // TTL changed without fixing the checksum
        assert!(!ipv4_header_checksum_ok(&bad_ip));
        let mut bad_udp = f.clone();
        *bad_udp.last_mut().context("empty")? ^= 0x40;
        assert!(!udp_checksum_ok(&bad_udp));
        let mut bad6 = v6().build()?;
        let off = layout(&bad6)?.l3 + 39; // last byte of the destination
        bad6[off] ^= 1;
        assert!(!udp_checksum_ok(&bad6));
        Ok(())
    }

    #[test]
    fn plain_ipv6() -> Result<()> {
        let f = v6().ttl(3).build()?;
        assert_eq!(f.len(), 14 + 40 + 8 + SIP.len());
        cross_check(&f)?;
        assert!(udp_checksum_ok(&f));
        assert!(!ipv4_header_checksum_ok(&f));
        assert_eq!(hop_limit(&f), Some(3));
        assert_eq!(ttl(&f), None);
        assert_eq!(src_ip(&f), Some(CALLER_V6.into()));
        Ok(())
    }

    #[test]
    fn vlan_and_qinq() -> Result<()> {
        let f = v4().vlan(100).build()?;
        assert_eq!(be16(&f, 12)?, ETHERTYPE_VLAN);
        assert_eq!(be16(&f, 14)? & 0x0fff, 100);
        assert_eq!(be16(&f, 16)?, ETHERTYPE_IPV4);
        assert_eq!(layout(&f)?.l3, 18);
        cross_check(&f)?;

        let f = v6().qinq(10, 20).build()?;
        assert_eq!(be16(&f, 12)?, ETHERTYPE_QINQ);
        assert_eq!(be16(&f, 14)? & 0x0fff, 10);
        assert_eq!(be16(&f, 16)?, ETHERTYPE_VLAN);
        assert_eq!(be16(&f, 18)? & 0x0fff, 20);
        assert_eq!(be16(&f, 20)?, ETHERTYPE_IPV6);
        assert_eq!(layout(&f)?.l3, 22);
        cross_check(&f)?;
        assert!(udp_checksum_ok(&f));
        Ok(())
    }

    #[test]
    fn ipv4_options_raise_ihl() -> Result<()> {
        // Router Alert (RFC 2113): 4 bytes.
        let f = v4().ipv4_options(&[0x94, 0x04, 0, 0]).build()?;
        assert_eq!(f[14], 0x46);
        assert_eq!(be16(&f, 16)?, (24 + 8 + SIP.len()) as u16);
        assert_eq!(layout(&f)?.l4, Some(14 + 24));
        cross_check(&f)?;
        assert!(ipv4_header_checksum_ok(&f));
        assert!(udp_checksum_ok(&f));
        assert!(v4().ipv4_options(&[1, 1, 1]).build().is_err());
        Ok(())
    }

    #[test]
    fn ipv4_fragments() -> Result<()> {
        let first = v4().ipv4_fragment(true, 0).build()?;
        assert_eq!(be16(&first, 20)?, 0x2000); // MF, offset 0
        assert!(ipv4_header_checksum_ok(&first));
        assert_eq!(dst_port(&first), Some(SIP_PORT));

        let later = v4().ipv4_fragment(false, 185).build()?;
        assert_eq!(be16(&later, 20)?, 185);
        assert!(ipv4_header_checksum_ok(&later));
        assert_eq!(layout(&later)?.l4, None);
        assert_eq!(dst_port(&later), None);
        Ok(())
    }

    #[test]
    fn ipv6_extension_headers() -> Result<()> {
        for (ext, next) in [(Ipv6Ext::HopByHop, 0), (Ipv6Ext::DestinationOptions, 60)] {
            let f = v6().ipv6_ext(ext).build()?;
            assert_eq!(f[14 + 6], next);
            assert_eq!(f[14 + 40], 17); // the extension header's next header
            assert_eq!(be16(&f, 14 + 4)?, (8 + 8 + SIP.len()) as u16);
            assert_eq!(layout(&f)?.l4, Some(14 + 48));
            cross_check(&f)?;
            assert!(udp_checksum_ok(&f));
        }
        Ok(())
    }

    #[test]
    fn zero_udp_checksum() -> Result<()> {
        let f = v4().zero_udp_checksum().build()?;
        assert_eq!(udp_checksum_field(&f), Some(0));
        assert!(udp_checksum_ok(&f)); // legal in IPv4
        cross_check(&f)?;
        let f6 = v6().zero_udp_checksum().build()?;
        assert!(!udp_checksum_ok(&f6)); // never legal in IPv6
        Ok(())
    }

    #[test]
    fn rejects_mixed_families() {
        let s = FrameSpec::udp(
            SocketAddr::new(CALLER_V4.into(), 1),
            SocketAddr::new(PEER_V6.into(), 2),
            SIP,
        );
        assert!(s.build().is_err());
    }

    #[test]
    fn checksum_of_odd_length() {
        // RFC 1071 §3 example words, plus an odd trailing byte padded with zero.
        assert_eq!(
            fold(sum16(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7], 0)),
            0xddf2
        );
        assert_eq!(fold(sum16(&[0xff], 0)), 0xff00);
    }
}
