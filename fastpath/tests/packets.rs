//! The XDP program on crafted frames through `BPF_PROG_TEST_RUN`: every class of bad input
//! passes untouched with the right counter, and hits are rewritten exactly (checked inside
//! the gateway namespace of a test topology, where `bpf_fib_lookup` can succeed).
//!
//! Needs root and a bpffs at /sys/fs/bpf; does not skip. Each test pins its maps in a
//! directory of its own and builds its own topology (unique prefix), so they run side by side.

mod common;

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
};

use anyhow::{Context, Result, ensure};
use common::*;
use fastpath_common::{Counter, SCAN_LEN, Verdict, classify_bytes};
use fastpath_tests::{
    FrameSpec, Host, Iface, Topology,
    netns::{CALLER_V4, CALLER_V6, PEER_V4, PEER_V6, in_netns},
    packet::{self, Ipv6Ext},
};

/// `BPF_PROG_TEST_RUN` refuses frames shorter than an Ethernet header (EINVAL): the
/// program never sees them.
const ETH_HLEN: usize = 14;

fn hit_v4() -> Vec<u8> {
    build(&v4_frame(&invite(V4_NUMBER)))
}

fn hit_v6() -> Vec<u8> {
    build(&v6_frame(&invite(V6_NUMBER)))
}

/// Payload for a request line followed by a short header section.
fn line(text: &[u8]) -> Vec<u8> {
    let mut out = text.to_vec();
    out.extend_from_slice(
        b"Via: SIP/2.0/UDP 192.0.2.2:5062;branch=z9hG4bK-bad\r\nContent-Length: 0\r\n\r\n",
    );
    out
}

// ---------------------------------------------------------------------------------------
// Bad input: XDP_PASS, the frame unchanged, one counter. No topology needed: none of these
// reaches the FIB lookup.
// ---------------------------------------------------------------------------------------

#[test]
fn ipv4_fragments_pass() -> Result<()> {
    let mut xdp = Harness::new("frag")?;
    let payload = invite(V4_NUMBER);
    // (more fragments, offset in 8-byte units)
    for (mf, offset) in [
        (true, 0),
        (false, 1),
        (false, 185),
        (true, 185),
        (true, 8191),
    ] {
        let frame = build(&v4_frame(&payload).ipv4_fragment(mf, offset));
        xdp.assert_pass(
            &format!("MF={mf} offset={offset}"),
            &frame,
            None,
            Counter::Fragment,
        );
    }
    // The same datagram unfragmented (DF set, as built) is a hit that only fails at the FIB.
    xdp.assert_pass(
        "control",
        &build(&v4_frame(&payload)),
        None,
        Counter::FibFailed,
    );
    Ok(())
}

#[test]
fn ipv4_options_pass() -> Result<()> {
    let mut xdp = Harness::new("opts")?;
    let payload = invite(V4_NUMBER);
    let cases: [(&str, Vec<u8>); 4] = [
        ("router alert", vec![0x94, 0x04, 0, 0]),
        ("NOPs + EOL", vec![1, 1, 1, 0]),
        (
            "timestamp, 12 bytes",
            vec![0x44, 12, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ),
        ("40 bytes of NOP", vec![1; 40]),
    ];
    for (what, options) in cases {
        let frame = build(&v4_frame(&payload).ipv4_options(&options));
        assert!(frame[14] & 0x0f > 5, "{what}: IHL not raised");
        xdp.assert_pass(what, &frame, None, Counter::IpOptions);
    }
    // IHL below 5 is not a header at all: malformed, not options.
    for ihl in 0..5u8 {
        let mut frame = hit_v4();
        frame[14] = 0x40 | ihl;
        fix_ipv4_checksum(&mut frame);
        xdp.assert_pass(&format!("IHL {ihl}"), &frame, None, Counter::Malformed);
    }
    Ok(())
}

#[test]
fn ipv6_extension_headers_pass() -> Result<()> {
    let mut xdp = Harness::new("ext6")?;
    let payload = invite(V6_NUMBER);
    for (what, ext, next_header) in [
        ("hop-by-hop", Ipv6Ext::HopByHop, 0),
        ("destination options", Ipv6Ext::DestinationOptions, 60),
        // Same 8-byte layout, other types: the program must not look past any of them.
        ("routing", Ipv6Ext::DestinationOptions, 43),
        ("fragment", Ipv6Ext::DestinationOptions, 44),
        ("mobility", Ipv6Ext::DestinationOptions, 135),
    ] {
        let mut frame = build(&v6_frame(&payload).ipv6_ext(ext));
        frame[14 + 6] = next_header;
        xdp.assert_pass(what, &frame, None, Counter::IpOptions);
    }
    Ok(())
}

/// A valid hit frame cut at every length: below the Ethernet header the kernel refuses to
/// run it; from there on every header or length check must catch the cut.
#[test]
fn truncated_frames_pass() -> Result<()> {
    let mut xdp = Harness::new("trunc")?;
    let frames = [
        ("IPv4", hit_v4()),
        ("IPv6", hit_v6()),
        ("IPv4 802.1Q", build(&v4_frame(&invite(V4_NUMBER)).vlan(7))),
        ("IPv6 802.1Q", build(&v6_frame(&invite(V6_NUMBER)).vlan(7))),
    ];
    let mut runs = 0;
    for (what, frame) in &frames {
        for len in 0..frame.len() {
            let cut = &frame[..len];
            if len < ETH_HLEN {
                assert!(
                    xdp.run(cut, None).is_err(),
                    "{what} cut at {len}: the kernel ran it"
                );
                continue;
            }
            xdp.assert_pass(
                &format!("{what} cut at {len}"),
                cut,
                None,
                Counter::Malformed,
            );
            runs += 1;
        }
    }
    eprintln!("truncated frames run: {runs}");
    Ok(())
}

/// Consistent headers around a request line cut at every length: the classifier must
/// never take a partial line.
#[test]
fn truncated_request_line_passes() -> Result<()> {
    let mut xdp = Harness::new("trline")?;
    let payload = invite(V4_NUMBER);
    let line_len = payload
        .windows(2)
        .position(|w| w == b"\r\n")
        .context("no CRLF")?
        + 2;
    for len in 0..line_len {
        let expected = if len < "INVITE ".len() {
            Counter::OtherMethod
        } else {
            Counter::NotNumber
        };
        let frame = build(&v4_frame(&payload[..len]));
        xdp.assert_pass(
            &format!("request line cut at {len}"),
            &frame,
            None,
            expected,
        );
        let frame = build(&v6_frame(&payload[..len]));
        xdp.assert_pass(
            &format!("IPv6, request line cut at {len}"),
            &frame,
            None,
            expected,
        );
    }
    // The whole line, no headers: a hit (that cannot be forwarded outside a topology).
    let frame = build(&v4_frame(&payload[..line_len]));
    xdp.assert_pass("complete request line", &frame, None, Counter::FibFailed);
    Ok(())
}

#[test]
fn stacked_vlans_pass() -> Result<()> {
    let mut xdp = Harness::new("qinq")?;
    let v4 = build(&v4_frame(&invite(V4_NUMBER)).qinq(10, 20));
    let v6 = build(&v6_frame(&invite(V6_NUMBER)).qinq(10, 20));
    xdp.assert_pass("IPv4 802.1ad + 802.1Q", &v4, None, Counter::Malformed);
    xdp.assert_pass("IPv6 802.1ad + 802.1Q", &v6, None, Counter::Malformed);
    // Other stackings of the two tag types.
    for (outer, inner) in [(0x8100u16, 0x8100u16), (0x88a8, 0x88a8), (0x8100, 0x88a8)] {
        let mut frame = v4.clone();
        frame[12..14].copy_from_slice(&outer.to_be_bytes());
        frame[16..18].copy_from_slice(&inner.to_be_bytes());
        xdp.assert_pass(
            &format!("{outer:#06x} + {inner:#06x}"),
            &frame,
            None,
            Counter::Malformed,
        );
    }
    Ok(())
}

#[test]
fn other_udp_ports_pass() -> Result<()> {
    let mut xdp = Harness::new("port")?;
    let payload = invite(V4_NUMBER);
    for port in [5061, 5059, 0, 53, 80, 65535] {
        let frame = build(&FrameSpec::udp(caller_v4(), gw_v4(port), payload.clone()));
        xdp.assert_pass(
            &format!("IPv4 to port {port}"),
            &frame,
            None,
            Counter::NotSip,
        );
        let frame = build(&FrameSpec::udp(caller_v6(), gw_v6(port), invite(V6_NUMBER)));
        xdp.assert_pass(
            &format!("IPv6 to port {port}"),
            &frame,
            None,
            Counter::NotSip,
        );
    }
    // From a SIP port to another port (a reply's direction) is not ours either.
    let from_sip = SocketAddr::new(caller_v4().ip(), SIP_PORT);
    let frame = build(&FrameSpec::udp(from_sip, gw_v4(5062), payload));
    xdp.assert_pass("IPv4 from 5060 to 5062", &frame, None, Counter::NotSip);
    Ok(())
}

#[test]
fn non_udp_passes() -> Result<()> {
    let mut xdp = Harness::new("noudp")?;
    for proto in [1u8, 6, 47, 50, 132, 255] {
        let mut frame = hit_v4();
        frame[14 + 9] = proto;
        fix_ipv4_checksum(&mut frame);
        xdp.assert_pass(
            &format!("IPv4 protocol {proto}"),
            &frame,
            None,
            Counter::NotSip,
        );
    }
    for next in [6u8, 58, 59, 132] {
        let mut frame = hit_v6();
        frame[14 + 6] = next;
        xdp.assert_pass(
            &format!("IPv6 next header {next}"),
            &frame,
            None,
            Counter::NotSip,
        );
    }
    for ether_type in [0x0806u16, 0x88cc, 0x8847, 0x0000, 0xffff] {
        let mut frame = hit_v4();
        frame[12..14].copy_from_slice(&ether_type.to_be_bytes());
        xdp.assert_pass(
            &format!("ethertype {ether_type:#06x}"),
            &frame,
            None,
            Counter::NotSip,
        );
    }
    // The ethertype says IP but the version nibble does not agree.
    let mut frame = hit_v4();
    frame[14] = 0x65;
    xdp.assert_pass(
        "IPv4 ethertype, version 6",
        &frame,
        None,
        Counter::Malformed,
    );
    let mut frame = hit_v6();
    frame[14] = 0x40 | (frame[14] & 0x0f);
    xdp.assert_pass(
        "IPv6 ethertype, version 4",
        &frame,
        None,
        Counter::Malformed,
    );
    Ok(())
}

/// Request lines that carry a registered number but are not quite right.
#[test]
fn malformed_request_lines_pass() -> Result<()> {
    use Counter::{Malformed, NotNumber, OtherMethod};
    let mut xdp = Harness::new("lines")?;
    let table: &[(&str, &[u8], Counter)] = &[
        (
            "lowercase method",
            b"invite sip:+15550100001@192.0.2.1 SIP/2.0\r\n",
            OtherMethod,
        ),
        (
            "mixed-case method",
            b"Invite sip:+15550100001@192.0.2.1 SIP/2.0\r\n",
            OtherMethod,
        ),
        (
            "lowercase ack",
            b"ack sip:+15550100001@192.0.2.1 SIP/2.0\r\n",
            OtherMethod,
        ),
        (
            "method prefix",
            b"INVITEX sip:+15550100001@192.0.2.1 SIP/2.0\r\n",
            OtherMethod,
        ),
        (
            "leading space",
            b" INVITE sip:+15550100001@192.0.2.1 SIP/2.0\r\n",
            OtherMethod,
        ),
        (
            "tab after method",
            b"INVITE\tsip:+15550100001@192.0.2.1 SIP/2.0\r\n",
            OtherMethod,
        ),
        (
            "other method",
            b"OPTIONS sip:+15550100001@192.0.2.1 SIP/2.0\r\n",
            OtherMethod,
        ),
        (
            "BYE",
            b"BYE sip:+15550100001@192.0.2.1 SIP/2.0\r\n",
            OtherMethod,
        ),
        ("response", b"SIP/2.0 200 OK\r\n", OtherMethod),
        (
            "double space after method",
            b"INVITE  sip:+15550100001@192.0.2.1 SIP/2.0\r\n",
            Malformed,
        ),
        (
            "double space before version",
            b"INVITE sip:+15550100001@192.0.2.1  SIP/2.0\r\n",
            Malformed,
        ),
        (
            "trailing space after version",
            b"INVITE sip:+15550100001@192.0.2.1 SIP/2.0 \r\n",
            Malformed,
        ),
        (
            "<sip:..>",
            b"INVITE <sip:+15550100001@192.0.2.1> SIP/2.0\r\n",
            NotNumber,
        ),
        (
            "bad version SIP/3.0",
            b"INVITE sip:+15550100001@192.0.2.1 SIP/3.0\r\n",
            Malformed,
        ),
        (
            "bad version SIP/2.1",
            b"INVITE sip:+15550100001@192.0.2.1 SIP/2.1\r\n",
            Malformed,
        ),
        (
            "lowercase version",
            b"INVITE sip:+15550100001@192.0.2.1 sip/2.0\r\n",
            Malformed,
        ),
        (
            "LF only",
            b"INVITE sip:+15550100001@192.0.2.1 SIP/2.0\n",
            Malformed,
        ),
        (
            "CR only",
            b"INVITE sip:+15550100001@192.0.2.1 SIP/2.0\r",
            Malformed,
        ),
        (
            "no version",
            b"INVITE sip:+15550100001@192.0.2.1\r\n",
            Malformed,
        ),
        ("no URI", b"INVITE SIP/2.0\r\n", NotNumber),
        (
            "alice",
            b"INVITE sip:alice@192.0.2.1 SIP/2.0\r\n",
            NotNumber,
        ),
        (
            "digits then letters",
            b"INVITE sip:15550100001abc@192.0.2.1 SIP/2.0\r\n",
            NotNumber,
        ),
        (
            "plus inside",
            b"INVITE sip:1555+0100001@192.0.2.1 SIP/2.0\r\n",
            NotNumber,
        ),
        (
            "%2B inside",
            b"INVITE sip:1%2B5550100001@192.0.2.1 SIP/2.0\r\n",
            NotNumber,
        ),
        (
            "two plus",
            b"INVITE sip:++15550100001@192.0.2.1 SIP/2.0\r\n",
            NotNumber,
        ),
        (
            "escaped @",
            b"INVITE sip:+15550100001%40192.0.2.1 SIP/2.0\r\n",
            NotNumber,
        ),
        (
            "bad escape",
            b"INVITE sip:%2G15550100001@192.0.2.1 SIP/2.0\r\n",
            Malformed,
        ),
        (
            "phone-context",
            b"INVITE sip:15550100001;phone-context=+1@192.0.2.1;user=phone SIP/2.0\r\n",
            NotNumber,
        ),
        (
            "tel phone-context",
            b"INVITE tel:15550100001;phone-context=example.com SIP/2.0\r\n",
            NotNumber,
        ),
        (
            "tel extension",
            b"INVITE tel:+15550100001;ext=22 SIP/2.0\r\n",
            NotNumber,
        ),
        (
            "16 digits",
            b"INVITE sip:+1555010000100000@192.0.2.1 SIP/2.0\r\n",
            NotNumber,
        ),
        (
            "18 digits (tel)",
            b"INVITE tel:+155501000010000000 SIP/2.0\r\n",
            NotNumber,
        ),
        (
            "no user part",
            b"INVITE sip:192.0.2.1 SIP/2.0\r\n",
            NotNumber,
        ),
        (
            "only a plus",
            b"INVITE sip:+@192.0.2.1 SIP/2.0\r\n",
            NotNumber,
        ),
        ("empty tel", b"INVITE tel: SIP/2.0\r\n", NotNumber),
        (
            "unknown scheme",
            b"INVITE sipx:+15550100001@192.0.2.1 SIP/2.0\r\n",
            NotNumber,
        ),
        (
            "im: scheme",
            b"INVITE im:+15550100001@192.0.2.1 SIP/2.0\r\n",
            NotNumber,
        ),
        (
            "empty host",
            b"INVITE sip:+15550100001@ SIP/2.0\r\n",
            Malformed,
        ),
        (
            "escaped headers",
            b"INVITE sip:+15550100001@192.0.2.1?Route=x SIP/2.0\r\n",
            Malformed,
        ),
        (
            "quote in host",
            b"INVITE sip:+15550100001@192.0.2.1\" SIP/2.0\r\n",
            Malformed,
        ),
        (
            "NUL in host",
            b"INVITE sip:+15550100001@192.0\x00.2.1 SIP/2.0\r\n",
            Malformed,
        ),
        (
            "DEL in host",
            b"INVITE sip:+15550100001@192.0\x7f.2.1 SIP/2.0\r\n",
            Malformed,
        ),
        (
            "tab in user",
            b"INVITE sip:+1555\t0100001@192.0.2.1 SIP/2.0\r\n",
            Malformed,
        ),
        (
            "space in tel",
            b"INVITE tel:+1555 0100001 SIP/2.0\r\n",
            Malformed,
        ),
    ];
    for (what, text, expected) in table {
        let payload = line(text);
        // The table is about the request line: the host classifier must agree with it.
        let host = match classify_bytes(&payload) {
            Verdict::Pass(reason) => reason.counter(),
            verdict => panic!("{what}: host classifier says {verdict:?}"),
        };
        assert_eq!(host, *expected, "{what}: host classifier");
        xdp.assert_pass(
            &format!("IPv4: {what}"),
            &build(&v4_frame(&payload)),
            None,
            *expected,
        );
        xdp.assert_pass(
            &format!("IPv6: {what}"),
            &build(&v6_frame(&payload)),
            None,
            *expected,
        );
        let alt = build(&FrameSpec::udp(
            caller_v4(),
            gw_v4(ALT_SIP_PORT),
            payload.clone(),
        ));
        xdp.assert_pass(
            &format!("port {ALT_SIP_PORT}: {what}"),
            &alt,
            None,
            *expected,
        );
    }
    // An empty payload has no request line at all.
    xdp.assert_pass(
        "IPv4: empty payload",
        &build(&v4_frame(b"")),
        None,
        OtherMethod,
    );
    xdp.assert_pass(
        "IPv6: empty payload",
        &build(&v6_frame(b"")),
        None,
        OtherMethod,
    );
    eprintln!("malformed request lines: {}", table.len());
    Ok(())
}

/// The request line must end within the scan window: exactly `SCAN_LEN` bytes is a hit,
/// one more is not.
#[test]
fn oversized_request_line_passes() -> Result<()> {
    let mut xdp = Harness::new("long")?;
    let with_host = |host_len: usize| {
        let text = format!(
            "INVITE sip:+{V4_NUMBER}@{} SIP/2.0\r\n",
            "h".repeat(host_len)
        );
        line(text.as_bytes())
    };
    let fits = with_host(SCAN_LEN - "INVITE sip:+15550100001@ SIP/2.0\r\n".len());
    assert_eq!(fits.iter().position(|&b| b == b'\n'), Some(SCAN_LEN - 1));
    xdp.assert_pass(
        "line of SCAN_LEN bytes (a hit)",
        &build(&v4_frame(&fits)),
        None,
        Counter::FibFailed,
    );
    for extra in [1, 2, 10, 100, 1000] {
        let long = with_host(SCAN_LEN - "INVITE sip:+15550100001@ SIP/2.0\r\n".len() + extra);
        xdp.assert_pass(
            &format!("line of SCAN_LEN+{extra} bytes"),
            &build(&v4_frame(&long)),
            None,
            Counter::NotNumber,
        );
        xdp.assert_pass(
            &format!("IPv6, line of SCAN_LEN+{extra} bytes"),
            &build(&v6_frame(&long)),
            None,
            Counter::NotNumber,
        );
    }
    // The number itself runs past the window.
    let digits = format!("INVITE sip:+{}@192.0.2.1 SIP/2.0\r\n", "1".repeat(70));
    xdp.assert_pass(
        "70 digits",
        &build(&v4_frame(&line(digits.as_bytes()))),
        None,
        Counter::NotNumber,
    );
    Ok(())
}

/// Lengths that disagree: the UDP length against the IP payload, the IP length against
/// the frame.
#[test]
fn inconsistent_lengths_pass() -> Result<()> {
    let mut xdp = Harness::new("lens")?;
    let v4 = hit_v4();
    let v6 = hit_v6();
    let (udp4, udp6) = (14 + 20, 14 + 40);
    let udp_len = |frame: &[u8], at: usize| u16::from_be_bytes([frame[at + 4], frame[at + 5]]);
    for delta in [1i32, 2, 100, -1, -2, 1000] {
        for (what, frame, at) in [("IPv4", &v4, udp4), ("IPv6", &v6, udp6)] {
            let mut bad = frame.clone();
            let len = (i32::from(udp_len(frame, at)) + delta) as u16;
            bad[at + 4..at + 6].copy_from_slice(&len.to_be_bytes());
            xdp.assert_pass(
                &format!("{what}: UDP length {delta:+}"),
                &bad,
                None,
                Counter::Malformed,
            );
        }
    }
    for len in [0u16, 7] {
        let mut bad = v4.clone();
        bad[udp4 + 4..udp4 + 6].copy_from_slice(&len.to_be_bytes());
        xdp.assert_pass(
            &format!("IPv4: UDP length {len}"),
            &bad,
            None,
            Counter::Malformed,
        );
    }
    // IPv4 total length past the frame, or too short for IP + UDP.
    let tot = u16::from_be_bytes([v4[16], v4[17]]);
    for len in [tot + 1, tot + 500, 65535, 27, 20, 0] {
        let mut bad = v4.clone();
        bad[16..18].copy_from_slice(&len.to_be_bytes());
        fix_ipv4_checksum(&mut bad);
        xdp.assert_pass(
            &format!("IPv4 total length {len} (frame holds {tot})"),
            &bad,
            None,
            Counter::Malformed,
        );
    }
    // IPv6 payload length past the frame, or shorter than a UDP header.
    let plen = u16::from_be_bytes([v6[18], v6[19]]);
    for len in [plen + 1, 65535, 7, 0] {
        let mut bad = v6.clone();
        bad[18..20].copy_from_slice(&len.to_be_bytes());
        xdp.assert_pass(
            &format!("IPv6 payload length {len} (frame holds {plen})"),
            &bad,
            None,
            Counter::Malformed,
        );
    }
    // UDP length larger than the IP payload, IP length matching the frame: grow both the
    // UDP length and the frame by trailing bytes that the IP header does not cover.
    let mut padded = v4.clone();
    padded.extend_from_slice(&[0; 16]);
    let len = udp_len(&v4, udp4) + 16;
    padded[udp4 + 4..udp4 + 6].copy_from_slice(&len.to_be_bytes());
    xdp.assert_pass(
        "IPv4: UDP length covers Ethernet padding",
        &padded,
        None,
        Counter::Malformed,
    );
    Ok(())
}

#[test]
fn ttl_expiring_passes() -> Result<()> {
    let mut xdp = Harness::new("ttl")?;
    for ttl in [1, 0] {
        let frame = build(&v4_frame(&invite(V4_NUMBER)).ttl(ttl));
        xdp.assert_pass(
            &format!("IPv4 TTL {ttl}"),
            &frame,
            None,
            Counter::TtlExpired,
        );
        let frame = build(&v6_frame(&invite(V6_NUMBER)).ttl(ttl));
        xdp.assert_pass(
            &format!("IPv6 hop limit {ttl}"),
            &frame,
            None,
            Counter::TtlExpired,
        );
    }
    // TTL 2 still leaves 1 after the hop: forwarded (here: only as far as the FIB).
    let frame = build(&v4_frame(&invite(V4_NUMBER)).ttl(2));
    xdp.assert_pass("IPv4 TTL 2", &frame, None, Counter::FibFailed);
    Ok(())
}

#[test]
fn ipv6_zero_udp_checksum_passes() -> Result<()> {
    let mut xdp = Harness::new("zero6")?;
    let frame = build(&v6_frame(&invite(V6_NUMBER)).zero_udp_checksum());
    assert_eq!(packet::udp_checksum_field(&frame), Some(0));
    xdp.assert_pass("IPv6, UDP checksum 0", &frame, None, Counter::Malformed);
    Ok(())
}

#[test]
fn unregistered_numbers_miss() -> Result<()> {
    let mut xdp = Harness::new("miss")?;
    let v4 = build(&v4_frame(&invite(UNREGISTERED)));
    xdp.assert_pass("IPv4, unregistered", &v4, None, Counter::Miss);
    let v6 = build(&v6_frame(&invite(UNREGISTERED)));
    xdp.assert_pass("IPv6, unregistered", &v6, None, Counter::Miss);
    // Leading zeros are part of the number: 0044… is registered, 44… and 044… are not.
    let v4 = build(&v4_frame(&invite("44207946001")));
    xdp.assert_pass("0044… registered, 44… dialed", &v4, None, Counter::Miss);
    let v4 = build(&v4_frame(&invite("044207946001")));
    xdp.assert_pass("0044… registered, 044… dialed", &v4, None, Counter::Miss);
    // A prefix or an extension of a registered number is another number.
    let v4 = build(&v4_frame(&invite("1555010000")));
    xdp.assert_pass("prefix of a registered number", &v4, None, Counter::Miss);
    let v4 = build(&v4_frame(&invite("155501000012")));
    xdp.assert_pass("extension of a registered number", &v4, None, Counter::Miss);
    Ok(())
}

/// A transparent rewrite cannot change the address family.
#[test]
fn peer_of_the_other_family_is_unavailable() -> Result<()> {
    let mut xdp = Harness::new("family")?;
    let frame = build(&v6_frame(&invite(V4_NUMBER)));
    xdp.assert_pass(
        "IPv6 call to an IPv4 peer",
        &frame,
        None,
        Counter::PeerUnavailable,
    );
    let frame = build(&v4_frame(&invite(V6_NUMBER)));
    xdp.assert_pass(
        "IPv4 call to an IPv6 peer",
        &frame,
        None,
        Counter::PeerUnavailable,
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Inside the gateway namespace of a topology: the FIB lookup succeeds, hits are rewritten.
// ---------------------------------------------------------------------------------------

/// What the gateway namespace looks like from the program's side.
struct Gateway {
    xdp: Harness,
    /// `{p}gc`, where frames come in.
    md: XdpMd,
    /// Where a hit for the peer must go.
    to_peer: Egress,
    /// Where a hit for a peer on the caller's side must go (back out of `{p}gc`).
    to_caller: Egress,
}

/// How a forwarded frame must leave.
#[derive(Clone, Copy, Debug)]
struct Egress {
    action: u32,
    v4: IpAddr,
    v6: IpAddr,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
}

fn mac_of(topo: &Topology, iface: Iface) -> Result<[u8; 6]> {
    let path = format!("/sys/class/net/{}/address", topo.ifname(iface));
    let out = topo.exec(iface.host(), ["cat", path.as_str()])?;
    parse_mac(&String::from_utf8_lossy(&out.stdout))
}

/// Builds a topology, then runs `f` with the program loaded in its gateway namespace,
/// `{p}gp` in EGRESS.
fn with_gateway(prefix: &str, f: impl FnOnce(&mut Gateway) -> Result<()> + Send) -> Result<()> {
    with_gateway_config(prefix, &config(), f)
}

/// [`with_gateway`] with the program's maps filled from `config`.
fn with_gateway_config(
    prefix: &str,
    config: &fastpath::config::Config,
    f: impl FnOnce(&mut Gateway) -> Result<()> + Send,
) -> Result<()> {
    let topo = Topology::new(prefix)?;
    topo.resolve_neighbors()?;
    let to_peer = Egress {
        action: XDP_REDIRECT,
        v4: PEER_V4.into(),
        v6: PEER_V6.into(),
        src_mac: mac_of(&topo, Iface::GwPeer)?,
        dst_mac: mac_of(&topo, Iface::Peer)?,
    };
    let to_caller = Egress {
        action: XDP_TX,
        v4: CALLER_V4.into(),
        v6: CALLER_V6.into(),
        src_mac: mac_of(&topo, Iface::GwCaller)?,
        dst_mac: mac_of(&topo, Iface::Caller)?,
    };
    let (gc, gp) = (topo.ifname(Iface::GwCaller), topo.ifname(Iface::GwPeer));
    in_netns(&topo.ns_name(Host::Gateway), || {
        let gc = fastpath::xdp::ifindex(&gc)?;
        let gp = fastpath::xdp::ifindex(&gp)?;
        let mut xdp = Harness::with_config(prefix, config)?;
        xdp.set_egress(&[gp])?;
        let md = XdpMd {
            ingress_ifindex: gc,
            rx_queue_index: 0,
        };
        f(&mut Gateway {
            xdp,
            md,
            to_peer,
            to_caller,
        })
    })
}

impl Gateway {
    /// Runs `spec`, which must be forwarded to the peer.
    fn assert_forwarded(&mut self, what: &str, spec: &FrameSpec) -> Result<Vec<u8>> {
        let to = self.to_peer;
        self.assert_sent(what, spec, to)
    }

    /// Runs `spec`, which must leave as `to` says: every field checked one by one, then
    /// the whole frame against the same frame built from scratch for that destination.
    fn assert_sent(&mut self, what: &str, spec: &FrameSpec, to: Egress) -> Result<Vec<u8>> {
        self.assert_sent_patched(what, spec, to, |_| {})
    }

    /// [`Gateway::assert_sent`], with `patch` applied to both the input frame and the
    /// expected output after they are built.
    fn assert_sent_patched(
        &mut self,
        what: &str,
        spec: &FrameSpec,
        to: Egress,
        patch: impl Fn(&mut Vec<u8>),
    ) -> Result<Vec<u8>> {
        let mut input = spec.build()?;
        patch(&mut input);
        let (outcome, moved) = self.xdp.run_counted(&input, Some(self.md))?;
        let out = &outcome.frame;
        ensure!(
            outcome.action == to.action,
            "{what}: action {} (counted {moved:?})",
            outcome.action
        );
        ensure!(moved == Counter::Hit, "{what}: counted {moved:?}");
        ensure!(
            out.len() == input.len(),
            "{what}: length {} -> {}",
            input.len(),
            out.len()
        );

        let peer = if spec.src.is_ipv4() { to.v4 } else { to.v6 };
        ensure!(
            packet::dst_ip(out) == Some(peer),
            "{what}: dst IP {:?}",
            packet::dst_ip(out)
        );
        ensure!(
            packet::dst_port(out) == Some(SIP_PORT),
            "{what}: dst port {:?}",
            packet::dst_port(out)
        );
        ensure!(
            packet::src_ip(out) == Some(spec.src.ip()),
            "{what}: src IP changed"
        );
        ensure!(
            packet::src_port(out) == Some(spec.src.port()),
            "{what}: src port changed"
        );
        ensure!(
            packet::dst_mac(out) == Some(to.dst_mac),
            "{what}: dst MAC {:02x?}",
            packet::dst_mac(out)
        );
        ensure!(
            packet::src_mac(out) == Some(to.src_mac),
            "{what}: src MAC {:02x?}",
            packet::src_mac(out)
        );
        ensure!(
            packet::udp_payload(out) == Some(&spec.payload[..]),
            "{what}: payload changed"
        );
        let want_hops = Some(spec.ttl - 1);
        if spec.src.is_ipv4() {
            ensure!(
                packet::ttl(out) == want_hops,
                "{what}: TTL {:?}",
                packet::ttl(out)
            );
            ensure!(
                packet::ipv4_header_checksum_ok(out),
                "{what}: IPv4 header checksum"
            );
        } else {
            ensure!(
                packet::hop_limit(out) == want_hops,
                "{what}: hop limit {:?}",
                packet::hop_limit(out)
            );
        }
        ensure!(packet::udp_checksum_ok(out), "{what}: UDP checksum");
        if spec.zero_udp_checksum {
            ensure!(
                packet::udp_checksum_field(out) == Some(0),
                "{what}: zero UDP checksum was filled in"
            );
        } else {
            ensure!(
                packet::udp_checksum_field(out) != Some(0),
                "{what}: UDP checksum zeroed"
            );
        }

        let mut expected = spec.clone().macs(to.src_mac, to.dst_mac).ttl(spec.ttl - 1);
        expected.dst = SocketAddr::new(peer, SIP_PORT);
        let mut expected = expected.build()?;
        patch(&mut expected);
        ensure!(
            *out == expected,
            "{what}: rewritten frame\n got: {out:02x?}\nwant: {expected:02x?}"
        );
        Ok(outcome.frame)
    }
}

#[test]
fn ipv4_hit_is_rewritten() -> Result<()> {
    with_gateway("pk4", |gw| {
        let mut hits = 0;
        for (number, port, ttl) in [
            (V4_NUMBER, SIP_PORT, 64),
            (V4_NUMBER, ALT_SIP_PORT, 64),
            (ZERO_NUMBER, SIP_PORT, 2),
            (ZERO_NUMBER, ALT_SIP_PORT, 255),
        ] {
            let spec = FrameSpec::udp(caller_v4(), gw_v4(port), invite(number)).ttl(ttl);
            gw.assert_forwarded(&format!("{number} to port {port}, TTL {ttl}"), &spec)?;
            hits += 1;
        }
        // Spellings of the same number.
        for uri in [
            "sip:15550100001@192.0.2.1",
            "sips:+1-555-010-0001@gw.example:5061;lr",
            "SIP:%2B1(555)0100001@192.0.2.1",
            "tel:+1.555.010.0001",
        ] {
            let spec = v4_frame(&sip_request("INVITE", uri));
            gw.assert_forwarded(uri, &spec)?;
            hits += 1;
        }
        // Varied payload sizes move the UDP checksum around.
        for pad in [0usize, 1, 2, 3, 500, 1000] {
            let mut payload = invite(V4_NUMBER);
            payload.extend(std::iter::repeat_n(b'x', pad));
            gw.assert_forwarded(&format!("{pad} bytes of body"), &v4_frame(&payload))?;
            hits += 1;
        }
        let counters = gw.xdp.counters()?;
        ensure!(
            counters.get(Counter::Hit) == hits,
            "hit counter {} != {hits}",
            counters.get(Counter::Hit)
        );
        eprintln!("IPv4 hits rewritten: {hits}");
        Ok(())
    })
}

#[test]
fn ipv4_zero_udp_checksum_stays_zero() -> Result<()> {
    with_gateway("pkz", |gw| {
        for port in [SIP_PORT, ALT_SIP_PORT] {
            let spec =
                FrameSpec::udp(caller_v4(), gw_v4(port), invite(V4_NUMBER)).zero_udp_checksum();
            assert_eq!(packet::udp_checksum_field(&spec.build()?), Some(0));
            gw.assert_forwarded(&format!("zero UDP checksum to port {port}"), &spec)?;
        }
        let hits = gw.xdp.counters()?.get(Counter::Hit);
        ensure!(hits == 2, "hit counter {hits} != 2");
        Ok(())
    })
}

#[test]
fn ipv6_hit_is_rewritten() -> Result<()> {
    with_gateway("pk6", |gw| {
        let mut hits = 0;
        for (port, ttl) in [
            (SIP_PORT, 64),
            (ALT_SIP_PORT, 64),
            (SIP_PORT, 2),
            (SIP_PORT, 255),
        ] {
            let spec = FrameSpec::udp(caller_v6(), gw_v6(port), invite(V6_NUMBER)).ttl(ttl);
            gw.assert_forwarded(&format!("IPv6 to port {port}, hop limit {ttl}"), &spec)?;
            hits += 1;
        }
        for pad in [1usize, 777] {
            let mut payload = invite(V6_NUMBER);
            payload.extend(std::iter::repeat_n(b'y', pad));
            gw.assert_forwarded(&format!("IPv6, {pad} bytes of body"), &v6_frame(&payload))?;
            hits += 1;
        }
        let counters = gw.xdp.counters()?;
        ensure!(
            counters.get(Counter::Hit) == hits,
            "hit counter {} != {hits}",
            counters.get(Counter::Hit)
        );
        Ok(())
    })
}

/// The FIB lookup checks the egress MTU against the whole IP datagram: a hit that does not
/// fit is left to the kernel (fragmentation or ICMP "too big"), never sent to be dropped.
#[test]
fn hits_over_the_egress_mtu_pass() -> Result<()> {
    // IP datagram of exactly `total` bytes carrying an INVITE for `number`.
    fn sized(v6: bool, total: usize) -> FrameSpec {
        let (number, header) = if v6 { (V6_NUMBER, 40) } else { (V4_NUMBER, 20) };
        let mut payload = invite(number);
        payload.resize(total - header - 8, b'z');
        if v6 {
            v6_frame(&payload)
        } else {
            v4_frame(&payload)
        }
    }
    with_gateway("pkmtu", |gw| {
        let md = Some(gw.md);
        for v6 in [false, true] {
            let family = if v6 { "IPv6" } else { "IPv4" };
            gw.assert_forwarded(&format!("{family}, 1500-byte datagram"), &sized(v6, 1500))?;
            for total in [1501, 1520, 1540, 1541, 2000] {
                let frame = build(&sized(v6, total));
                gw.xdp.assert_pass(
                    &format!("{family}, {total}-byte datagram"),
                    &frame,
                    md,
                    Counter::FibFailed,
                );
            }
        }
        Ok(())
    })
}

/// A peer on the caller's side of the gateway: the FIB says "out where it came in", and
/// the frame goes back by XDP_TX, a tagged one too (its tag belongs to that link).
#[test]
fn hit_back_out_of_the_ingress_goes_by_tx() -> Result<()> {
    with_gateway("pktx", |gw| {
        let to = gw.to_caller;
        gw.assert_sent("untagged", &v4_frame(&invite(TX_NUMBER)), to)?;
        let out = gw.assert_sent(
            "802.1Q tag 100",
            &v4_frame(&invite(TX_NUMBER)).vlan(100),
            to,
        )?;
        ensure!(
            out[12..16] == [0x81, 0x00, 0x00, 100],
            "tag not kept: {:02x?}",
            &out[12..16]
        );
        let hits = gw.xdp.counters()?.get(Counter::Hit);
        ensure!(hits == 2, "hit counter {hits} != 2");
        Ok(())
    })
}

/// The program keeps each peer's FIB answer for a while; a peer that moves must not be
/// sent to its old next hop: the very next packet goes to the new address.
#[test]
fn a_moved_peer_gets_a_new_next_hop_at_once() -> Result<()> {
    with_gateway("pkmov", |gw| {
        let spec = v4_frame(&invite(V4_NUMBER));
        gw.assert_forwarded("before the move", &spec)?;
        gw.assert_forwarded("from the cached next hop", &spec)?;
        let moved = CONFIG.replace("198.51.100.2:5060", "192.0.2.2:5060");
        let config = fastpath::config::Config::parse(&moved)?;
        fastpath::maps::apply_config(&mut gw.xdp.ebpf, &config, 2)?;
        let to = gw.to_caller;
        gw.assert_sent("after the move", &spec, to)?;
        Ok(())
    })
}

/// Every forwarded frame is counted for its peer, packets and bytes; nothing else is.
#[test]
fn forwarded_frames_are_counted_per_peer() -> Result<()> {
    with_gateway("pkpst", |gw| {
        let v4 = build(&v4_frame(&invite(V4_NUMBER)));
        let v6 = build(&v6_frame(&invite(V6_NUMBER)));
        for _ in 0..3 {
            gw.assert_forwarded("IPv4", &v4_frame(&invite(V4_NUMBER)))?;
        }
        gw.assert_forwarded("IPv6", &v6_frame(&invite(V6_NUMBER)))?;
        gw.xdp.assert_pass(
            "a miss",
            &build(&v4_frame(&invite(UNREGISTERED))),
            Some(gw.md),
            Counter::Miss,
        );
        let mut traffic = fastpath::stats::PeerTraffic::read_pinned(gw.xdp.pin_dir())?;
        traffic.sort_by_key(|t| t.packets);
        let seen: Vec<(u64, u64)> = traffic.iter().map(|t| (t.packets, t.bytes)).collect();
        ensure!(
            seen == [(1, v6.len() as u64), (3, 3 * v4.len() as u64)],
            "per-peer counters {traffic:?}"
        );
        ensure!(traffic[0].peer_id != traffic[1].peer_id);
        Ok(())
    })
}

/// `/metrics` shows the outcome and per-peer counters as they stand in the pinned maps,
/// in an exposition that `promtool check metrics` accepts.
#[test]
fn metrics_expose_the_pinned_counters() -> Result<()> {
    with_gateway("pkmet", |gw| {
        let v4 = build(&v4_frame(&invite(V4_NUMBER)));
        for _ in 0..2 {
            gw.assert_forwarded("IPv4", &v4_frame(&invite(V4_NUMBER)))?;
        }
        gw.xdp.assert_pass(
            "a miss",
            &build(&v4_frame(&invite(UNREGISTERED))),
            Some(gw.md),
            Counter::Miss,
        );
        let metrics = fastpath::metrics::Metrics::new(Some(gw.xdp.pin_dir().to_path_buf()))?;
        let text = metrics.render();
        for line in [
            "fastpath_xdp_packets_total{outcome=\"hit\"} 2".to_string(),
            "fastpath_xdp_packets_total{outcome=\"miss\"} 1".to_string(),
            "fastpath_xdp_packets_total{outcome=\"not_sip\"} 0".to_string(),
            "fastpath_xdp_peer_packets_total{peer=\"198.51.100.2:5060\"} 2".to_string(),
            format!(
                "fastpath_xdp_peer_bytes_total{{peer=\"198.51.100.2:5060\"}} {}",
                2 * v4.len()
            ),
            "fastpath_routes_capacity 1024".to_string(),
            // 1024 routes: the smallest index, 2^13 buckets of 64 bytes, every route in it.
            "fastpath_route_index_bytes 524288".to_string(),
            format!("fastpath_route_index_numbers {}", config().routes.len()),
            "fastpath_route_index_overflowed_buckets 0".to_string(),
        ] {
            ensure!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
        }
        fastpath_tests::promtool_check_metrics(&text)?;

        // With the sync's and the proxy's counters too, every metric the Grafana dashboard
        // in the repository draws exists.
        metrics.register_sync(Default::default())?;
        metrics.register_proxy(Default::default())?;
        let registry = fastpath::registry::Registry::new(
            fastpath::registry::SqliteStore::in_memory()?,
            fastpath::registry::daemon::NoTrunk,
            Default::default(),
        );
        metrics.register_registry(std::sync::Arc::new(registry))?;
        let config = fastpath::config::Config::parse(
            "[proxy]\nlisten = [\"192.0.2.1:5060\"]\n\n\
             [[peers]]\nname = \"pbx\"\naddress = \"198.51.100.2:5060\"\n\n\
             [[trunks]]\nname = \"carrier\"\naddress = \"203.0.113.2:5060\"\n",
        )?;
        metrics.register_daemon(std::sync::Arc::new(fastpath::control::StatusSource {
            config: "fastpath.toml".into(),
            interfaces: Vec::new(),
            table: std::sync::Arc::new(fastpath::routing::RouteTable::from_config(&config)),
            trunks: Some(std::sync::Arc::new(fastpath::proxy::trunks::Trunks::new(
                &config.proxy,
                Default::default(),
            ))),
            reloads: Default::default(),
        }))?;
        let text = metrics.render();
        let dashboard = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../deploy/grafana-dashboard.json"),
        )?;
        serde_json::from_str::<serde_json::Value>(&dashboard)?;
        let names: std::collections::BTreeSet<&str> = dashboard
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("fastpath_") || w.starts_with("process_"))
            .collect();
        ensure!(names.len() > 10, "dashboard names {names:?}");
        for name in names {
            // A histogram's series are its family's name with a suffix.
            let histogram = ["_bucket", "_sum", "_count"]
                .iter()
                .filter_map(|suffix| name.strip_suffix(suffix))
                .any(|family| text.contains(&format!("# TYPE {family} histogram")));
            ensure!(
                histogram || text.contains(&format!("# TYPE {name} ")),
                "the dashboard draws {name}, which /metrics does not have"
            );
        }
        fastpath_tests::promtool_check_metrics(&text)
    })
}

/// A registered number's INVITE addressed to another host is transit traffic: it passes
/// (counted `not_local`) unless the operator turned `local_only` off.
#[test]
fn transit_requests_pass_unless_local_only_is_off() -> Result<()> {
    let transit_v4: SocketAddr = "203.0.113.99:5060".parse()?;
    let transit_v6: SocketAddr = "[2001:db8:f::99]:5060".parse()?;
    let v4 = build(&FrameSpec::udp(caller_v4(), transit_v4, invite(V4_NUMBER)));
    let v6 = build(&FrameSpec::udp(caller_v6(), transit_v6, invite(V6_NUMBER)));
    with_gateway("pkloc", |gw| {
        gw.xdp
            .assert_pass("IPv4 transit", &v4, Some(gw.md), Counter::NotLocal);
        gw.xdp
            .assert_pass("IPv6 transit", &v6, Some(gw.md), Counter::NotLocal);
        // The same numbers addressed to the gateway still go the fast way.
        gw.assert_forwarded("IPv4 to us", &v4_frame(&invite(V4_NUMBER)))?;
        gw.assert_forwarded("IPv4 to us, again", &v4_frame(&invite(V4_NUMBER)))?;
        // An address the gateway gives up is transit from the next packet on.
        fastpath::maps::set_local_addrs(gw.xdp.pin_dir(), &[gw_v6(0).ip()])?;
        let to_us = build(&v4_frame(&invite(V4_NUMBER)));
        gw.xdp.assert_pass(
            "IPv4 to a former address",
            &to_us,
            Some(gw.md),
            Counter::NotLocal,
        );
        fastpath::maps::set_local_addrs(gw.xdp.pin_dir(), &[gw_v4(0).ip()])?;
        gw.assert_forwarded("IPv4 to a new address", &v4_frame(&invite(V4_NUMBER)))?;
        Ok(())
    })?;
    let config =
        fastpath::config::Config::parse(&CONFIG.replace("[xdp]\n", "[xdp]\nlocal_only = false\n"))?;
    ensure!(!config.local_only);
    with_gateway_config("pkloa", &config, |gw| {
        for (what, frame) in [("IPv4", &v4), ("IPv6", &v6)] {
            let (outcome, moved) = gw.xdp.run_counted(frame, Some(gw.md))?;
            ensure!(
                moved == Counter::Hit && outcome.action == XDP_REDIRECT,
                "{what} transit with local_only = false: action {}, counted {moved:?}",
                outcome.action
            );
        }
        Ok(())
    })
}

/// `fastpath routes get|list` and `fastpath stats --watch` read the pinned maps of a
/// loaded program.
#[test]
fn routes_and_watch_read_the_pinned_maps() -> Result<()> {
    let harness = Harness::new("pkcli")?;
    let pin = harness.pin_dir().to_string_lossy().into_owned();
    let cli = |args: &[&str]| -> Result<(bool, String)> {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_fastpath"))
            .args([args[0], "--pin-dir", &pin])
            .args(&args[1..])
            .output()?;
        Ok((
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ))
    };
    let (ok, text) = cli(&["routes", "get", "+1 (555) 010-0001"])?;
    ensure!(
        ok && text.trim() == "+15550100001 -> 198.51.100.2:5060 (up)",
        "{text}"
    );
    let (ok, text) = cli(&["routes", "get", UNREGISTERED])?;
    ensure!(!ok && text.contains("not registered"), "{text}");
    let (ok, text) = cli(&["routes", "get", "alice"])?;
    ensure!(!ok && text.contains("not a number"), "{text}");
    let (ok, text) = cli(&["routes", "list"])?;
    ensure!(ok, "{text}");
    ensure!(text.lines().count() == config().routes.len(), "{text}");
    ensure!(
        text.contains("+442079460000 -> [2001:db8:e::2]:5060 (up)"),
        "{text}"
    );
    let (ok, text) = cli(&["stats", "--watch", "--count", "2"])?;
    ensure!(ok, "{text}");
    ensure!(text.matches("per second").count() == 2, "{text}");
    ensure!(text.lines().any(|l| l.starts_with("hit")), "{text}");
    Ok(())
}

/// RFC 1071 sum of `data` folded to 16 bits, starting from `sum`.
fn ones_sum(data: &[u8], mut sum: u32) -> u16 {
    for word in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([word[0], *word.get(1).unwrap_or(&0)]));
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The word that, added to a datagram whose UDP sum (pseudo-header included, checksum
/// field zero) is `frame`'s, makes that sum 0xffff: a computed checksum of 0, sent as 0xffff.
fn udp_word_for_zero_checksum(frame: &[u8]) -> u16 {
    let l4 = packet::layout(frame).expect("layout").l4.expect("UDP");
    let len = u16::from_be_bytes([frame[l4 + 4], frame[l4 + 5]]);
    let (src, dst_end) = if frame[14] >> 4 == 4 {
        (14 + 12, 14 + 20)
    } else {
        (14 + 8, 14 + 40)
    };
    let mut datagram = frame[l4..l4 + usize::from(len)].to_vec();
    datagram[6] = 0;
    datagram[7] = 0;
    let pseudo = u32::from(ones_sum(&frame[src..dst_end], 0)) + 17 + u32::from(len);
    !ones_sum(&datagram, pseudo)
}

/// The incremental checksum updates (RFC 1624) on many random frames, and on the edge
/// values: a UDP checksum of 0xffff (a computed 0) going in or coming out, and an IPv4
/// header checksum of 0 going in or coming out.
#[test]
fn rewritten_checksums_are_exact() -> Result<()> {
    let seed = 0x5eed_c0de_u64;
    eprintln!("seed {seed:#x}");
    with_gateway("pkcs", |gw| {
        let mut rng = Rng::new(seed);
        let mut hits = 0u64;
        for i in 0..2000 {
            let v6 = i % 2 == 1;
            let port = rng.pick(&[SIP_PORT, ALT_SIP_PORT]);
            let src = if v6 {
                let mut octets = CALLER_V6.octets();
                rng.next_u64()
                    .to_be_bytes()
                    .iter()
                    .enumerate()
                    .for_each(|(k, b)| octets[8 + k] = *b);
                SocketAddr::new(IpAddr::from(octets), rng.next_u64() as u16)
            } else {
                let host = 2 + rng.below(252) as u8;
                SocketAddr::new(IpAddr::from([192, 0, 2, host]), rng.next_u64() as u16)
            };
            let dst = if v6 { gw_v6(port) } else { gw_v4(port) };
            let mut payload = invite(if v6 { V6_NUMBER } else { V4_NUMBER });
            let body = rng.below(300);
            payload.extend((0..body).map(|_| rng.byte()));
            let ttl = 2 + rng.below(254) as u8;
            let mut spec = FrameSpec::udp(src, dst, payload).ttl(ttl);
            if !v6 && rng.chance(10) {
                spec = spec.zero_udp_checksum();
            }
            gw.assert_sent(&format!("random frame {i}: {spec:?}"), &spec, gw.to_peer)?;
            hits += 1;
        }
        // UDP checksum 0xffff in the input, then in the output.
        for v6 in [false, true] {
            for output in [false, true] {
                let (number, gw_addr) = if v6 {
                    (V6_NUMBER, gw_v6(ALT_SIP_PORT))
                } else {
                    (V4_NUMBER, gw_v4(ALT_SIP_PORT))
                };
                let src = if v6 { caller_v6() } else { caller_v4() };
                let mut payload = invite(number);
                if payload.len() % 2 == 1 {
                    payload.push(b' ');
                }
                let at = payload.len();
                payload.extend([0, 0]);
                let mut spec = FrameSpec::udp(src, gw_addr, payload);
                let mut probe = spec.clone();
                if output {
                    let peer = if v6 { gw.to_peer.v6 } else { gw.to_peer.v4 };
                    probe.dst = SocketAddr::new(peer, SIP_PORT);
                }
                let word = udp_word_for_zero_checksum(&probe.build()?);
                spec.payload[at..at + 2].copy_from_slice(&word.to_be_bytes());
                let which = if output { "output" } else { "input" };
                let input = spec.build()?;
                if !output {
                    ensure!(
                        packet::udp_checksum_field(&input) == Some(0xffff),
                        "crafting the input failed"
                    );
                }
                let out = gw.assert_forwarded(
                    &format!("v6={v6}: UDP checksum 0xffff in the {which}"),
                    &spec,
                )?;
                if output {
                    ensure!(
                        packet::udp_checksum_field(&out) == Some(0xffff),
                        "crafting the output failed"
                    );
                }
                hits += 1;
            }
        }
        // IPv4 header checksum 0 in the input, then in the output, by choosing the
        // identification field.
        for output in [false, true] {
            let spec = v4_frame(&invite(V4_NUMBER));
            let mut probe = spec.clone();
            if output {
                probe = probe.ttl(spec.ttl - 1);
                probe.dst = SocketAddr::new(gw.to_peer.v4, SIP_PORT);
            }
            let mut header = probe.build()?[14..34].to_vec();
            header[10] = 0;
            header[11] = 0;
            header[4] = 0;
            header[5] = 0;
            let id = !ones_sum(&header, 0);
            let patch = move |frame: &mut Vec<u8>| {
                frame[18..20].copy_from_slice(&id.to_be_bytes());
                fix_ipv4_checksum(frame);
            };
            let which = if output { "output" } else { "input" };
            let mut input = spec.build()?;
            patch(&mut input);
            if !output {
                ensure!(input[24..26] == [0, 0], "crafting the input failed");
            }
            let to = gw.to_peer;
            let out = gw.assert_sent_patched(
                &format!("IPv4 header checksum 0 in the {which}"),
                &spec,
                to,
                patch,
            )?;
            if output {
                ensure!(
                    out[24..26] == [0, 0],
                    "crafting the output failed: {:02x?}",
                    &out[24..26]
                );
            }
            hits += 1;
        }
        let counted = gw.xdp.counters()?.get(Counter::Hit);
        ensure!(counted == hits, "hit counter {counted} != {hits}");
        eprintln!("checksums verified on {hits} rewritten frames");
        Ok(())
    })
}

/// A tag belongs to the ingress link: a tagged hit may only leave by XDP_TX, so with the
/// peer behind another interface it passes unchanged.
#[test]
fn vlan_tagged_hit_passes() -> Result<()> {
    with_gateway("pkv", |gw| {
        let md = Some(gw.md);
        let v4 = build(&v4_frame(&invite(V4_NUMBER)).vlan(100));
        gw.xdp
            .assert_pass("IPv4, 802.1Q tag", &v4, md, Counter::FibFailed);
        let v6 = build(&v6_frame(&invite(V6_NUMBER)).vlan(100));
        gw.xdp
            .assert_pass("IPv6, 802.1Q tag", &v6, md, Counter::FibFailed);
        // The same frames untagged are forwarded: the tag alone made the difference.
        gw.assert_forwarded("IPv4, untagged", &v4_frame(&invite(V4_NUMBER)))?;
        gw.assert_forwarded("IPv6, untagged", &v6_frame(&invite(V6_NUMBER)))?;
        Ok(())
    })
}

/// The FIB may answer with an interface the daemon does not manage (not in `EGRESS`): the
/// program cannot redirect there, so the hit passes unchanged for the kernel to route,
/// while a hit back out of the ingress (XDP_TX, no redirect) is still forwarded.
#[test]
fn hits_towards_an_unmanaged_egress_pass() -> Result<()> {
    with_gateway("pkun", |gw| {
        gw.xdp.set_egress(&[])?;
        let md = Some(gw.md);
        let v4 = build(&v4_frame(&invite(V4_NUMBER)));
        gw.xdp.assert_pass("IPv4", &v4, md, Counter::FibFailed);
        let v6 = build(&v6_frame(&invite(V6_NUMBER)));
        gw.xdp.assert_pass("IPv6", &v6, md, Counter::FibFailed);
        let to = gw.to_caller;
        gw.assert_sent("back out of the ingress", &v4_frame(&invite(TX_NUMBER)), to)?;
        Ok(())
    })
}

/// The verifier processes at most 1M instructions per program; this one needs about 0.53M
/// (DESIGN §4: keep the scan bounded). A change that eats most of the headroom fails here,
/// on the kernel the project targets, rather than as a load error on a gateway whose
/// verifier counts a little differently. `cargo xtask bench` prints the count too.
#[test]
fn the_program_verifies_with_headroom() -> Result<()> {
    const CEILING: u32 = 750_000;
    let mut xdp = Harness::new("pkvf")?;
    let program = fastpath::xdp::program(&mut xdp.ebpf)?;
    let processed = program
        .info()?
        .verified_instruction_count()
        .context("the kernel reports no verified instruction count")?;
    ensure!(
        processed <= CEILING,
        "the verifier processed {processed} instructions, over {CEILING} of its 1M budget"
    );
    Ok(())
}

/// `ROUTE_INDEX` follows the route capacity: a restart with another `xdp.max_routes`
/// replaces the pinned index with one of the new size, the daemon fills it, and the
/// program reads it at that size (were the two to disagree, registered numbers would be
/// taken for unregistered ones: a miss here instead of the hit that only fails at the FIB).
#[test]
fn a_new_route_capacity_resizes_the_route_index() -> Result<()> {
    let mut xdp = Harness::new("pkcap")?;
    // 1024 routes: the smallest index, 2^13 buckets; 100k: one per two routes, 2^16.
    let capacities = [(1024, 1 << 13), (100_000, 1 << 16), (1024, 1 << 13)];
    for (restart, (max_routes, buckets)) in capacities.into_iter().enumerate() {
        if restart > 0 {
            // What a program left attached by the earlier run would still read: emptied
            // when it is replaced, so that such a program asks the proxy for every number.
            let old = fastpath::route_index::RouteIndex::map_pinned(xdp.pin_dir())?;
            ensure!(old.occupancy().numbers == config().routes.len() as u64);
            xdp = xdp.reloaded(&config(), max_routes)?;
            ensure!(old.occupancy().numbers == 0, "the old index still routes");
        }
        let index = fastpath::maps::open_pinned(xdp.pin_dir(), fastpath_common::maps::ROUTE_INDEX)?;
        ensure!(
            index.info()?.max_entries() == buckets,
            "{max_routes} routes: {} buckets",
            index.info()?.max_entries()
        );
        let hit = build(&v4_frame(&invite(V4_NUMBER)));
        xdp.assert_pass("registered", &hit, None, Counter::FibFailed);
        let miss = build(&v4_frame(&invite(UNREGISTERED)));
        xdp.assert_pass("unregistered", &miss, None, Counter::Miss);
    }
    Ok(())
}

/// A number whose `ROUTE_INDEX` bucket is full lives in `ROUTES` only: the program finds
/// the bucket's mark and asks the hash map. Ten numbers of one bucket (it holds seven):
/// every one hits (up to the FIB, which this test has no topology for), and an
/// unregistered number of the same bucket misses after the hash map said no.
#[test]
fn numbers_of_a_full_index_bucket_hit_through_routes() -> Result<()> {
    use fastpath_common::route_index::{Place, SLOTS, bucket_bits};
    // The harness's capacity: 1024 routes, the smallest index.
    let bits = bucket_bits(1024);
    let bucket = |n: &String| Place::of(key(n), bits).bucket;
    let crowded = bucket(&"15550000000".to_string());
    let mut crowd: Vec<String> = (0..)
        .map(|n| format!("1555{n:07}"))
        .filter(|n| bucket(n) == crowded)
        .take(SLOTS + 4)
        .collect();
    let unregistered = crowd.pop().context("the bucket's numbers")?;
    let registered = crowd;
    let mut text = CONFIG.to_string();
    for n in &registered {
        text += &format!("\n[[routes]]\nnumber = \"{n}\"\npeer = \"v4-pbx\"\n");
    }
    let mut xdp = Harness::with_config("pkfull", &fastpath::config::Config::parse(&text)?)?;
    let index = fastpath::route_index::RouteIndex::map_pinned(xdp.pin_dir())?.occupancy();
    ensure!(index.overflowed == 1, "{index:?}");
    for n in &registered {
        let frame = build(&v4_frame(&invite(n)));
        xdp.assert_pass(&format!("registered {n}"), &frame, None, Counter::FibFailed);
    }
    let frame = build(&v4_frame(&invite(&unregistered)));
    xdp.assert_pass("unregistered, same bucket", &frame, None, Counter::Miss);
    Ok(())
}

/// The daemon changes a number's `ROUTE_INDEX` slot with one atomic store while the
/// program reads it: moved back and forth between a peer and an empty peer slot under
/// traffic, the number is always found, at one or the other (a hit up to the FIB, which
/// this test has no topology for, or "peer unavailable"), never missed or half-read.
#[test]
fn a_number_moved_under_traffic_is_always_found() -> Result<()> {
    const RUNS: usize = 20_000;
    let mut xdp = Harness::new("pkmove")?;
    let mut index = fastpath::route_index::RouteIndex::map_pinned(xdp.pin_dir())?;
    let number = key(V4_NUMBER);
    let fastpath_common::route_index::Found::Peer(peer) = index.find(number) else {
        anyhow::bail!("{V4_NUMBER} is not in the index");
    };
    let empty_slot = fastpath_common::maps::MAX_PEERS - 1;
    let frame = build(&v4_frame(&invite(V4_NUMBER)));
    let done = std::sync::atomic::AtomicBool::new(false);
    let (outcomes, moves) = std::thread::scope(|scope| -> Result<_> {
        let mover = scope.spawn(|| {
            let mut moves = 0u64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) && moves < 100_000_000 {
                index.insert(
                    number,
                    if moves.is_multiple_of(2) {
                        empty_slot
                    } else {
                        peer
                    },
                );
                moves += 1;
            }
            index.insert(number, peer);
            moves
        });
        let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
        for _ in 0..RUNS {
            let (_, counter) = xdp.run_counted(&frame, None)?;
            *outcomes.entry(format!("{counter:?}")).or_default() += 1;
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok((outcomes, mover.join().expect("the mover")))
    })?;
    ensure!(moves > 1000, "the slot moved only {moves} times");
    let expected = ["FibFailed", "PeerUnavailable"];
    ensure!(
        outcomes.keys().all(|k| expected.contains(&k.as_str())),
        "{outcomes:?} over {moves} moves"
    );
    Ok(())
}

#[test]
fn invite_ack_cancel_all_hit() -> Result<()> {
    with_gateway("pkm", |gw| {
        let uri = format!("sip:+{V4_NUMBER}@192.0.2.1:5060");
        let uri6 = format!("sip:+{V6_NUMBER}@[2001:db8:c::1]");
        let mut hits = 0;
        for method in ["INVITE", "ACK", "CANCEL"] {
            gw.assert_forwarded(method, &v4_frame(&sip_request(method, &uri)))?;
            gw.assert_forwarded(
                &format!("IPv6 {method}"),
                &v6_frame(&sip_request(method, &uri6)),
            )?;
            hits += 2;
        }
        // The rest of the dialog is the proxy's.
        for method in [
            "BYE", "OPTIONS", "REGISTER", "PRACK", "UPDATE", "INFO", "MESSAGE",
        ] {
            let frame = build(&v4_frame(&sip_request(method, &uri)));
            gw.xdp
                .assert_pass(method, &frame, Some(gw.md), Counter::OtherMethod);
        }
        let counters = gw.xdp.counters()?;
        ensure!(
            counters.get(Counter::Hit) == hits,
            "hit counter {} != {hits}",
            counters.get(Counter::Hit)
        );
        ensure!(
            counters.get(Counter::OtherMethod) == 7,
            "other_method {}",
            counters.get(Counter::OtherMethod)
        );
        Ok(())
    })
}

/// Bad input inside the topology behaves as outside: the FIB is never consulted.
#[test]
fn bad_input_passes_in_the_gateway_too() -> Result<()> {
    with_gateway("pkb", |gw| {
        let md = Some(gw.md);
        let payload = invite(V4_NUMBER);
        let cases = [
            (
                "fragment",
                build(&v4_frame(&payload).ipv4_fragment(true, 0)),
                Counter::Fragment,
            ),
            (
                "options",
                build(&v4_frame(&payload).ipv4_options(&[1, 1, 1, 1])),
                Counter::IpOptions,
            ),
            (
                "TTL 1",
                build(&v4_frame(&payload).ttl(1)),
                Counter::TtlExpired,
            ),
            (
                "QinQ",
                build(&v4_frame(&payload).qinq(1, 2)),
                Counter::Malformed,
            ),
            (
                "hop-by-hop",
                build(&v6_frame(&invite(V6_NUMBER)).ipv6_ext(Ipv6Ext::HopByHop)),
                Counter::IpOptions,
            ),
            (
                "IPv6 zero checksum",
                build(&v6_frame(&invite(V6_NUMBER)).zero_udp_checksum()),
                Counter::Malformed,
            ),
            (
                "unregistered",
                build(&v4_frame(&invite(UNREGISTERED))),
                Counter::Miss,
            ),
            (
                "lowercase",
                build(&v4_frame(&line(b"invite sip:+15550100001@gw SIP/2.0\r\n"))),
                Counter::OtherMethod,
            ),
        ];
        for (what, frame, counter) in &cases {
            gw.xdp.assert_pass(what, frame, md, *counter);
        }
        let hit = hit_v4();
        for len in ETH_HLEN..hit.len() {
            gw.xdp.assert_pass(
                &format!("cut at {len}"),
                &hit[..len],
                md,
                Counter::Malformed,
            );
        }
        Ok(())
    })
}

fn torture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/sip-torture")
}

/// Every RFC 4475 message as the payload of a UDP datagram to port 5060: none carries a
/// number in its Request-URI, so all pass untouched, counted as the host classifier says.
#[test]
fn rfc4475_torture_messages_pass() -> Result<()> {
    let dir = torture_dir();
    let index = std::fs::read_to_string(dir.join("expected.tsv"))
        .with_context(|| format!("the RFC 4475 messages are missing from {}", dir.display()))?;
    let names: Vec<String> = index
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split('\t').next().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        names.len(),
        49,
        "expected.tsv lists {} messages",
        names.len()
    );
    let messages: Vec<(String, Vec<u8>)> = names
        .iter()
        .map(|name| {
            let path = dir.join(name);
            std::fs::read(&path)
                .map(|b| (name.clone(), b))
                .with_context(|| format!("reading {}", path.display()))
        })
        .collect::<Result<_>>()?;

    with_gateway("pkt", |gw| {
        let md = Some(gw.md);
        let mut seen = std::collections::BTreeMap::<&str, u32>::new();
        for (name, payload) in &messages {
            let host = match classify_bytes(payload) {
                Verdict::Pass(reason) => reason.counter(),
                verdict => panic!("{name}: the host classifier found a number: {verdict:?}"),
            };
            for (family, frame) in [
                ("IPv4", build(&v4_frame(payload))),
                ("IPv6", build(&v6_frame(payload))),
            ] {
                let what = format!("{name} over {family}");
                let (outcome, moved) = gw.xdp.run_counted(&frame, md)?;
                assert_eq!(outcome.action, XDP_PASS, "{what}: action");
                assert!(outcome.frame == frame, "{what}: frame changed");
                // BPF_PROG_TEST_RUN puts what does not fit one page of linear data into
                // fragments, which this (non-frags) program does not read: the IP length
                // then exceeds the linear part and the frame passes as malformed.
                let expected = if frame.len() > LINEAR_XDP_DATA {
                    Counter::Malformed
                } else {
                    host
                };
                assert_eq!(moved, expected, "{what}: counter ({} bytes)", frame.len());
                *seen.entry(moved.name()).or_default() += 1;
            }
        }
        eprintln!(
            "RFC 4475: {} messages x 2 families: {seen:?}",
            messages.len()
        );
        Ok(())
    })
}

/// PAGE_SIZE - XDP_PACKET_HEADROOM - aligned skb_shared_info on x86_64.
const LINEAR_XDP_DATA: usize = 4096 - 256 - 320;
