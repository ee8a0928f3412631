//! The frames each path runs on; all four have the same length, so only the program's
//! work differs.

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, ensure};
use fastpath_common::{Verdict, classify_bytes, normalize_number};
use fastpath_tests::{
    FrameSpec,
    netns::{CALLER_V4, CALLER_V6, GW_CALLER_V4, GW_CALLER_V6, SIP_PORT},
    packet,
};

/// Registered in every table size (generated number 0, see `route_key`).
pub const HIT_NUMBER: &str = "22654435761";
/// Never registered: generated numbers all start with 2.
pub const MISS_NUMBER: &str = "15550100999";
/// Registered to the IPv6 peer (the generated numbers all go to the IPv4 one).
pub const HIT6_NUMBER: &str = "15550100006";
/// A hit decrements it once per repetition of the reused buffer.
pub const TTL: u8 = 255;
/// A UDP port that is not configured as SIP.
pub const OTHER_PORT: u16 = 5070;

pub struct Frames {
    /// INVITE to a registered number, UDP to 5060.
    pub hit: Vec<u8>,
    /// The same INVITE to an unregistered number of the same length.
    pub miss: Vec<u8>,
    /// The hit's INVITE to UDP port 5070.
    pub other_port: Vec<u8>,
    /// An ICMP echo request of the same size: not UDP at all.
    pub icmp: Vec<u8>,
    /// INVITE over IPv6 to the number registered to the IPv6 peer.
    pub hit6: Vec<u8>,
    /// The miss's INVITE over IPv6.
    pub miss6: Vec<u8>,
}

/// A typical INVITE without a body; only the request line matters to the classifier.
fn invite(number: &str) -> Vec<u8> {
    format!(
        "INVITE sip:+{number}@192.0.2.1:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.2:5062;branch=z9hG4bK-bench-0001\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@192.0.2.2>;tag=bench-0001\r\n\
         To: <sip:+{number}@192.0.2.1>\r\n\
         Call-ID: bench-0001@192.0.2.2\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:alice@192.0.2.2:5062>\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// From the caller to the gateway's caller-side address, over IPv4 or (`v6`) IPv6.
fn udp(payload: Vec<u8>, dst_port: u16, v6: bool) -> anyhow::Result<Vec<u8>> {
    let (caller, gateway): (IpAddr, IpAddr) = if v6 {
        (CALLER_V6.into(), GW_CALLER_V6.into())
    } else {
        (CALLER_V4.into(), GW_CALLER_V4.into())
    };
    FrameSpec::udp(
        SocketAddr::new(caller, 5062),
        SocketAddr::new(gateway, dst_port),
        payload,
    )
    .ttl(TTL)
    .build()
}

impl Frames {
    pub fn build() -> anyhow::Result<Self> {
        let hit = udp(invite(HIT_NUMBER), SIP_PORT, false)?;
        let miss = udp(invite(MISS_NUMBER), SIP_PORT, false)?;
        let other_port = udp(invite(HIT_NUMBER), OTHER_PORT, false)?;
        let icmp = to_icmp_echo(&hit)?;
        let hit6 = udp(invite(HIT6_NUMBER), SIP_PORT, true)?;
        let miss6 = udp(invite(MISS_NUMBER), SIP_PORT, true)?;
        for (frame, number) in [
            (&hit, HIT_NUMBER),
            (&miss, MISS_NUMBER),
            (&hit6, HIT6_NUMBER),
            (&miss6, MISS_NUMBER),
        ] {
            let payload = packet::udp_payload(frame).context("no UDP payload")?;
            let key = normalize_number(number.as_bytes()).map_err(|e| anyhow::anyhow!("{e}"))?;
            ensure!(
                matches!(classify_bytes(payload), Verdict::Candidate { key: k, .. } if k == key),
                "the classifier does not read {number} from the INVITE"
            );
        }
        ensure!(
            [&miss, &other_port, &icmp]
                .iter()
                .all(|f| f.len() == hit.len())
                && miss6.len() == hit6.len(),
            "frames of one family differ in length"
        );
        Ok(Self {
            hit,
            miss,
            other_port,
            icmp,
            hit6,
            miss6,
        })
    }
}

/// The same IPv4 frame as ICMP echo request: protocol 1, the UDP header replaced by an
/// echo header, both checksums recomputed.
fn to_icmp_echo(udp_frame: &[u8]) -> anyhow::Result<Vec<u8>> {
    let layout = packet::layout(udp_frame)?;
    let (l3, l4) = (layout.l3, layout.l4.context("not UDP")?);
    let mut f = udp_frame.to_vec();
    f[l3 + 9] = 1; // IPPROTO_ICMP
    f[l3 + 10..l3 + 12].fill(0);
    let ip_check = checksum(&f[l3..l4]);
    f[l3 + 10..l3 + 12].copy_from_slice(&ip_check.to_be_bytes());
    // type 8 (echo request), code 0, checksum, identifier, sequence
    f[l4..l4 + 8].copy_from_slice(&[8, 0, 0, 0, 0xbe, 0x0c, 0, 1]);
    let icmp_check = checksum(&f[l4..]);
    f[l4 + 2..l4 + 4].copy_from_slice(&icmp_check.to_be_bytes());
    ensure!(packet::ipv4_header_checksum_ok(&f), "bad ICMP frame");
    Ok(f)
}

/// RFC 1071 Internet checksum.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_build_and_icmp_checksums_verify() -> anyhow::Result<()> {
        let frames = Frames::build()?;
        let l4 = packet::layout(&frames.hit)?.l4.context("udp")?;
        assert_eq!(checksum(&frames.icmp[l4..]), 0);
        assert_eq!(packet::layout(&frames.icmp)?.l4, None);
        assert_eq!(packet::dst_port(&frames.other_port), Some(OTHER_PORT));
        Ok(())
    }

    #[test]
    fn hit_number_is_generated_number_zero() -> anyhow::Result<()> {
        let hit = normalize_number(HIT_NUMBER.as_bytes()).map_err(|e| anyhow::anyhow!("{e}"))?;
        assert_eq!(crate::route_key(0)?, hit);
        let miss = normalize_number(MISS_NUMBER.as_bytes()).map_err(|e| anyhow::anyhow!("{e}"))?;
        assert_eq!(miss.len(), hit.len());
        Ok(())
    }
}
