//! Verification flows end to end (issue #4, item 3): the daemon side runs in the gateway
//! namespace, SIPp plays the carrier trunk and the owner's phone in the carrier namespace
//! (203.0.113.2), and a few raw RTP / UDP senders stand in for what SIPp cannot send.

mod common;

use std::{
    fs::File,
    future::Future,
    net::{IpAddr, SocketAddr, UdpSocket as StdUdpSocket},
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use fastpath::sip::{Message, OwnedMessage};
use fastpath::verify::{
    Channel, Failure, MissedCall, SipTrunkChannel, Timers,
    dtmf::{self, RtpEvent},
    missed_call,
};
use fastpath_common::normalize_number;
use fastpath_tests::netns::in_netns;
use fastpath_tests::{ChildGuard, Host, Topology, netns::*};
use tempfile::TempDir;
use tokio::sync::mpsc;

/// The number being verified, and the gateway's verification number.
const OWNER: &str = "15550100001";
const VERIFY_NUMBER: &str = "15550109000";
/// The verification UAC's port and the missed-call listener's, on the gateway.
const UAC_PORT: u16 = 5070;
const LISTEN_PORT: u16 = 5080;
/// Bounds every SIPp run; calls take well under a second on an idle box.
const SIPP_TIMEOUT: Duration = Duration::from_secs(30);

fn trunk() -> SocketAddr {
    SocketAddr::new(CARRIER_V4.into(), SIP_PORT)
}

fn uac_local() -> SocketAddr {
    SocketAddr::new(GW_CARRIER_V4.into(), UAC_PORT)
}

fn scenario(name: &str) -> String {
    format!("{}/../tests/scenarios/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// One SIPp run in a namespace of the topology, under a guard, logging its messages.
struct Sipp {
    guard: ChildGuard,
    dir: TempDir,
}

impl Sipp {
    fn start(topology: &Topology, host: Host, args: &[String]) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("fastpath-sipp-verify-")
            .tempdir()?;
        let log = dir.path().join("messages.log");
        let mut all: Vec<String> = vec!["sipp".into()];
        all.extend_from_slice(args);
        all.extend(
            [
                "-m",
                "1",
                "-nd",
                "-nostdin",
                "-bind_local",
                "-trace_msg",
                "-message_file",
            ]
            .map(String::from),
        );
        all.push(log.to_string_lossy().into_owned());
        all.extend(["-timeout".into(), format!("{}s", SIPP_TIMEOUT.as_secs())]);
        let mut cmd = topology.command(host, &all);
        cmd.current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(File::create(dir.path().join("stdout.log"))?)
            .stderr(File::create(dir.path().join("stderr.log"))?);
        Ok(Self {
            guard: ChildGuard::spawn(&mut cmd)?,
            dir,
        })
    }

    /// SIPp as the trunk, answering at 203.0.113.2:5060 with `scenario` and `-key`s.
    fn trunk(topology: &Topology, name: &str, keys: &[(&str, &str)]) -> Result<Self> {
        Self::trunk_at(topology, CARRIER_V4.into(), scenario(name), keys)
    }

    /// SIPp as the trunk answering with a final `status`: written into a copy of the
    /// scenario, because SIPp checks status codes before it applies `-key`.
    fn trunk_answering(topology: &Topology, name: &str, status: u16, reason: &str) -> Result<Self> {
        Self::trunk_answering_at(topology, CARRIER_V4.into(), name, status, reason)
    }

    fn trunk_answering_at(
        topology: &Topology,
        ip: IpAddr,
        name: &str,
        status: u16,
        reason: &str,
    ) -> Result<Self> {
        let text = std::fs::read_to_string(scenario(name))?
            .replace("[status]", &status.to_string())
            .replace("[reason]", reason);
        let dir = tempfile::Builder::new()
            .prefix("fastpath-verify-scenario-")
            .tempdir()?;
        let path = dir.path().join(name);
        std::fs::write(&path, text)?;
        // SIPp reads the scenario at start; the copy may go once it has bound its port.
        Self::trunk_at(topology, ip, path.to_string_lossy().into_owned(), &[])
    }

    fn trunk_at(
        topology: &Topology,
        ip: IpAddr,
        scenario: String,
        keys: &[(&str, &str)],
    ) -> Result<Self> {
        let mut args = vec![
            "-sf".into(),
            scenario,
            "-i".into(),
            ip.to_string(),
            "-p".into(),
            SIP_PORT.to_string(),
        ];
        for (key, value) in keys {
            args.extend(["-key".into(), (*key).into(), (*value).into()]);
        }
        let mut sipp = Self::start(topology, Host::Carrier, &args)?;
        sipp.wait_until_bound(SIP_PORT)?;
        Ok(sipp)
    }

    /// SIPp placing the owner's call to the verification number at the listener, from
    /// `local` in `host`'s namespace.
    fn missed_call(topology: &Topology, host: Host, local: IpAddr) -> Result<Self> {
        let listener = SocketAddr::new(GW_CARRIER_V4.into(), LISTEN_PORT);
        let args: Vec<String> = vec![
            "-sf".into(),
            scenario("verify_caller_missed_call.xml"),
            "-i".into(),
            local.to_string(),
            "-p".into(),
            SIP_PORT.to_string(),
            "-s".into(),
            VERIFY_NUMBER.into(),
            "-key".into(),
            "caller".into(),
            OWNER.into(),
            // Unanswered, SIPp would retransmit for 31.5 s; three sends say enough.
            "-max_invite_retrans".into(),
            "2".into(),
            listener.to_string(),
        ];
        Self::start(topology, host, &args)
    }

    fn wait_until_bound(&mut self, port: u16) -> Result<()> {
        let needle = format!(":{port:04X} ");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(status) = self.guard.try_wait()? {
                bail!(
                    "SIPp exited at start ({status}): {}",
                    self.read("stderr.log")
                );
            }
            let bound = ["udp", "udp6"].iter().any(|table| {
                std::fs::read_to_string(format!("/proc/{}/net/{table}", self.guard.pid()))
                    .unwrap_or_default()
                    .lines()
                    .skip(1)
                    .any(|l| l.contains(&needle))
            });
            if bound {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("SIPp did not bind port {port}")
    }

    /// SIPp's exit code: 0 when its one call went through the whole scenario.
    fn finish(&mut self) -> Result<i32> {
        let status = self
            .guard
            .wait_timeout(SIPP_TIMEOUT + Duration::from_secs(5))?
            .context("SIPp did not stop")?;
        status.code().context("SIPp killed by a signal")
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    fn messages(&self) -> String {
        self.read("messages.log")
    }

    /// Asserts that the scenario completed, with SIPp's log in the error otherwise.
    fn assert_completed(&mut self) -> Result<()> {
        let code = self.finish()?;
        ensure!(
            code == 0,
            "SIPp scenario failed (exit {code}); stderr: {}\nmessages:\n{}",
            self.read("stderr.log"),
            self.messages()
        );
        Ok(())
    }
}

/// Runs `body` on a tokio runtime on a thread inside the gateway's namespace: sockets it
/// binds live there, as the daemon's would.
fn on_gateway<T, F, Fut>(topology: &Topology, body: F) -> Result<T>
where
    T: Send,
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = Result<T>>,
{
    in_netns(&topology.ns_name(Host::Gateway), || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        runtime.block_on(body())
    })
}

/// Binds the channel on the gateway with short timers (T1 = 100 ms: timer F = 6.4 s).
async fn channel() -> Result<SipTrunkChannel> {
    let timers = Timers {
        t1: Duration::from_millis(100),
        t2: Duration::from_millis(800),
    };
    Ok(SipTrunkChannel::with_timers(uac_local(), trunk(), timers).await?)
}

/// Calls the owner through SIPp's `scenario`, returns what `collect_dtmf` returned once
/// SIPp has run the scenario to its end (the hang-up included).
fn call(
    topology: &Topology,
    sipp: &mut Sipp,
    digits: usize,
    timeout: Duration,
) -> Result<Result<String, Failure>> {
    on_gateway(topology, || async {
        let channel = channel().await?;
        let result = channel.collect_dtmf(OWNER, digits, timeout).await;
        // Keep the runtime (and the BYE it sends in the background) alive until the
        // trunk has finished.
        let done = tokio::task::block_in_place(|| sipp.assert_completed());
        done.map(|()| result)
    })
}

#[test]
fn message_delivered_carries_the_code() -> Result<()> {
    let topology = Topology::new("vf0")?;
    let mut sipp = Sipp::trunk_answering(&topology, "verify_trunk_message.xml", 200, "OK")?;
    let text = "Your fastpath verification code is 428135";
    let result = on_gateway(&topology, || async {
        Ok(channel().await?.send_message(OWNER, text).await)
    })?;
    assert_eq!(result, Ok(()));
    sipp.assert_completed()?;
    let log = sipp.messages();
    assert!(
        log.contains(&format!("MESSAGE sip:{OWNER}@{} SIP/2.0", trunk())),
        "{log}"
    );
    assert!(log.contains("Content-Type: text/plain"), "{log}");
    assert!(log.contains(text), "the body carries the code:\n{log}");
    Ok(())
}

#[test]
fn message_over_ipv6() -> Result<()> {
    let topology = Topology::new("vfe")?;
    let mut sipp = Sipp::trunk_answering_at(
        &topology,
        CARRIER_V6.into(),
        "verify_trunk_message.xml",
        200,
        "OK",
    )?;
    let trunk = SocketAddr::new(CARRIER_V6.into(), SIP_PORT);
    let local = SocketAddr::new(GW_CARRIER_V6.into(), UAC_PORT);
    let result = on_gateway(&topology, || async move {
        let channel = SipTrunkChannel::bind(local, trunk).await?;
        Ok(channel.send_message(OWNER, "code 7").await)
    })?;
    assert_eq!(result, Ok(()));
    sipp.assert_completed()?;
    let log = sipp.messages();
    assert!(
        log.contains(&format!("MESSAGE sip:{OWNER}@[{CARRIER_V6}]:5060 SIP/2.0")),
        "{log}"
    );
    assert!(
        log.contains(&format!("Via: SIP/2.0/UDP [{GW_CARRIER_V6}]:5070;")),
        "{log}"
    );
    Ok(())
}

#[test]
fn message_refused_means_the_number_is_gone() -> Result<()> {
    let topology = Topology::new("vf1")?;
    let mut sipp = Sipp::trunk_answering(&topology, "verify_trunk_message.xml", 404, "Not Found")?;
    let result = on_gateway(&topology, || async {
        Ok(channel().await?.send_message(OWNER, "code 1").await)
    })?;
    assert_eq!(result, Err(Failure::NumberGone(404)));
    sipp.assert_completed()
}

#[test]
fn message_without_a_trunk_times_out() -> Result<()> {
    // Nothing listens at the trunk address: the MESSAGE is retransmitted until timer F.
    let topology = Topology::new("vf9")?;
    let started = Instant::now();
    let result = on_gateway(&topology, || async {
        Ok(channel().await?.send_message(OWNER, "code 1").await)
    })?;
    assert_eq!(result, Err(Failure::NoAnswer(Duration::from_millis(6400))));
    assert!(started.elapsed() >= Duration::from_millis(6400));
    Ok(())
}

#[test]
fn call_answered_and_digits_typed_as_sip_info() -> Result<()> {
    let topology = Topology::new("vf2")?;
    let keys = [
        ("d1", "4"),
        ("d2", "2"),
        ("d3", "8"),
        ("d4", "1"),
        ("d5", "3"),
        ("d6", "5"),
    ];
    let mut sipp = Sipp::trunk(&topology, "verify_trunk_dtmf_info.xml", &keys)?;
    let result = call(&topology, &mut sipp, 6, Duration::from_secs(20))?;
    assert_eq!(result, Ok("428135".to_owned()));
    // The call ended with our BYE, which SIPp's scenario waited for and answered.
    assert!(
        sipp.messages().contains("BYE sip:phone@"),
        "{}",
        sipp.messages()
    );
    Ok(())
}

#[test]
fn call_answered_with_wrong_digits_returns_them() -> Result<()> {
    // The channel only reports what was typed; the registry compares it with the code.
    let topology = Topology::new("vf4")?;
    let keys = [
        ("d1", "9"),
        ("d2", "*"),
        ("d3", "0"),
        ("d4", "#"),
        ("d5", "11"),
        ("d6", "A"),
    ];
    let mut sipp = Sipp::trunk(&topology, "verify_trunk_dtmf_info.xml", &keys)?;
    let result = call(&topology, &mut sipp, 6, Duration::from_secs(20))?;
    assert_eq!(result, Ok("9*0##A".to_owned()));
    Ok(())
}

/// Waits until the trunk's SIPp has received our ACK and returns the RTP port our
/// INVITE's SDP offered.
fn offered_rtp_port(sipp: &Sipp) -> Result<u16> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let log = sipp.messages();
        if log.contains("ACK sip:") {
            let port = log
                .split("m=audio ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .context("no m=audio line in the INVITE")?;
            return Ok(port.parse()?);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("the call was not answered and ACKed:\n{}", sipp.messages())
}

/// Waits until the trunk's SIPp log shows `needle`.
fn wait_for_message(sipp: &Sipp, needle: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if sipp.messages().contains(needle) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("no {needle:?} in the trunk's log:\n{}", sipp.messages())
}

/// The packets of one key press as a phone sends them: three updates, then the end
/// packet three times (RFC 4733 §2.5.1.4), all with the event's start timestamp.
fn key_press(ssrc: u32, seq: &mut u16, timestamp: u32, digit: char) -> Vec<Vec<u8>> {
    let mut packets = Vec::new();
    for (i, end) in [false, false, false, true, true, true]
        .into_iter()
        .enumerate()
    {
        let event = RtpEvent {
            ssrc,
            timestamp,
            digit,
            end,
        };
        let duration = 160 * (i as u16 + 1).min(4);
        packets.push(dtmf::rtp_event_packet(
            *seq,
            event,
            dtmf::TELEPHONE_EVENT_PT,
            duration,
        ));
        *seq = seq.wrapping_add(1);
    }
    packets
}

fn send_from(
    topology: &Topology,
    host: Host,
    from: SocketAddr,
    to: SocketAddr,
    packets: &[Vec<u8>],
) -> Result<()> {
    in_netns(&topology.ns_name(host), || {
        let socket = StdUdpSocket::bind(from)?;
        for packet in packets {
            socket.send_to(packet, to)?;
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    })
}

#[test]
fn call_answered_and_digits_typed_as_rfc4733_events() -> Result<()> {
    let topology = Topology::new("vf3")?;
    let mut sipp = Sipp::trunk(&topology, "verify_trunk_answer.xml", &[])?;
    std::thread::scope(|scope| {
        let phone = scope.spawn(|| -> Result<()> {
            let port = offered_rtp_port(&sipp)?;
            let gateway = SocketAddr::new(GW_CARRIER_V4.into(), port);
            // A key press from an address the answer did not name: not the phone.
            let mut seq = 1;
            let spoof = key_press(0xbad, &mut seq, 80, '9');
            let caller = SocketAddr::new(CALLER_V4.into(), 40_000);
            send_from(&topology, Host::Caller, caller, gateway, &spoof)?;
            let mut packets = vec![b"not rtp".to_vec(), vec![0x80, 0, 0, 1]];
            for (i, digit) in "31#7".chars().enumerate() {
                packets.extend(key_press(0x5eed, &mut seq, 1000 + 800 * i as u32, digit));
            }
            let phone = SocketAddr::new(CARRIER_V4.into(), 40_000);
            send_from(&topology, Host::Carrier, phone, gateway, &packets)
        });
        let result = on_gateway(&topology, || async {
            let channel = channel().await?;
            let result = channel
                .collect_dtmf(OWNER, 4, Duration::from_secs(20))
                .await;
            // Keep the runtime, and the BYE it sends in the background, until the
            // trunk has the BYE.
            tokio::task::block_in_place(|| wait_for_message(&sipp, "BYE sip:phone@"))?;
            Ok(result)
        });
        phone.join().expect("phone thread")?;
        assert_eq!(result?, Ok("31#7".to_owned()));
        Ok::<_, anyhow::Error>(())
    })?;
    sipp.assert_completed()
}

#[test]
fn no_answer_times_out_and_cancels() -> Result<()> {
    let topology = Topology::new("vf5")?;
    let mut sipp = Sipp::trunk(&topology, "verify_trunk_no_answer.xml", &[])?;
    let timeout = Duration::from_secs(2);
    let result = call(&topology, &mut sipp, 6, timeout)?;
    assert_eq!(result, Err(Failure::NoAnswer(timeout)));
    let log = sipp.messages();
    assert!(log.contains("CANCEL sip:"), "no CANCEL sent:\n{log}");
    let ack = log
        .split("ACK sip:")
        .nth(1)
        .context("the 487 was not ACKed")?;
    let to = ack
        .lines()
        .find(|l| l.starts_with("To:"))
        .context("ACK without To")?;
    assert!(to.contains(";tag="), "{to}");
    Ok(())
}

#[test]
fn busy_is_reported() -> Result<()> {
    let topology = Topology::new("vf6")?;
    let mut sipp = Sipp::trunk_answering(&topology, "verify_trunk_reject.xml", 486, "Busy Here")?;
    let result = call(&topology, &mut sipp, 6, Duration::from_secs(10))?;
    assert_eq!(result, Err(Failure::Busy));
    // The ACK of an error response carries the To tag of that response (RFC 3261 §17.1.1.3).
    let log = sipp.messages();
    let ack = log.split("ACK sip:").nth(1).context("no ACK")?;
    let to = ack
        .lines()
        .find(|l| l.starts_with("To:"))
        .context("ACK without To")?;
    assert!(to.contains(";tag="), "{to}");
    Ok(())
}

#[test]
fn far_end_hanging_up_early_leaves_the_digits_incomplete() -> Result<()> {
    let topology = Topology::new("vf7")?;
    let mut sipp = Sipp::trunk(&topology, "verify_trunk_hangup_early.xml", &[("d1", "4")])?;
    let result = call(&topology, &mut sipp, 6, Duration::from_secs(20))?;
    assert_eq!(result, Err(Failure::IncompleteDigits { got: 1, want: 6 }));
    Ok(())
}

#[test]
fn missed_call_only_from_the_trunk() -> Result<()> {
    let topology = Topology::new("vf8")?;
    let number = normalize_number(VERIFY_NUMBER.as_bytes()).expect("a valid number");
    let topology = &topology;
    on_gateway(topology, || async move {
        let socket = tokio::net::UdpSocket::bind((GW_CARRIER_V4, LISTEN_PORT)).await?;
        let (tx, mut rx) = mpsc::channel(8);
        let listener = tokio::spawn(missed_call::listen(socket, trunk(), number, tx));

        // The very same INVITE from the caller's side: not the trunk, so ignored.
        let untrusted = tokio::task::block_in_place(|| -> Result<(i32, String)> {
            let mut sipp = Sipp::missed_call(topology, Host::Caller, CALLER_V4.into())?;
            Ok((sipp.finish()?, sipp.messages()))
        })?;
        ensure!(untrusted.0 != 0, "an untrusted INVITE was answered");
        ensure!(!untrusted.1.contains("SIP/2.0 603"), "{}", untrusted.1);
        ensure!(
            rx.try_recv().is_err(),
            "an untrusted INVITE verified a number"
        );

        // From the trunk: declined (SIPp's scenario needs the 603) and reported once.
        tokio::task::block_in_place(|| {
            Sipp::missed_call(topology, Host::Carrier, CARRIER_V4.into())?.assert_completed()
        })?;
        let missed = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await?;
        ensure!(
            missed
                == Some(MissedCall {
                    caller: OWNER.into()
                }),
            "got {missed:?}"
        );
        ensure!(rx.try_recv().is_err(), "one call, one missed call");
        drop(rx);
        // The listener ends once nobody listens to it.
        tokio::time::timeout(Duration::from_secs(5), listener).await??;
        Ok(())
    })
}

/// A hand-driven trunk in the carrier namespace, for what SIPp cannot do on cue: stay
/// silent, send garbage, retransmit a 2xx.
struct FakeTrunk {
    socket: StdUdpSocket,
}

impl FakeTrunk {
    fn new() -> Result<Self> {
        let socket = StdUdpSocket::bind(trunk())?;
        socket.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Self { socket })
    }

    /// The next message from the UAC that `wanted` accepts; others (our 481s to the
    /// garbage below, for one) are skipped.
    fn expect(&self, what: &str, wanted: impl Fn(&Message) -> bool) -> Result<OwnedMessage> {
        let mut buf = [0u8; 65_535];
        loop {
            let (len, _) = self
                .socket
                .recv_from(&mut buf)
                .with_context(|| format!("waiting for {what}"))?;
            let message = OwnedMessage::parse(&buf[..len])
                .map_err(|e| anyhow::anyhow!("the UAC sent an unparsable message: {e:?}"))?;
            ensure!(
                message.message().error.is_none(),
                "the UAC sent a malformed message: {message:?}"
            );
            if wanted(&message.message()) {
                return Ok(message);
            }
        }
    }

    fn expect_request(&self, method: &str) -> Result<OwnedMessage> {
        self.expect(method, |m| m.method() == method.as_bytes())
    }

    fn send(&self, bytes: &[u8]) -> Result<()> {
        self.socket.send_to(bytes, uac_local())?;
        Ok(())
    }

    /// Every RFC 4475 torture message, plus bytes that are no SIP at all.
    fn send_garbage(&self) -> Result<()> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/sip-torture/rfc4475");
        for entry in std::fs::read_dir(&dir).with_context(|| format!("{}", dir.display()))? {
            self.send(&std::fs::read(entry?.path())?)?;
        }
        for junk in [&b""[..], b"\r\n\r\n", b"SIP/2.0 200", &[0xff; 1400]] {
            self.send(junk)?;
        }
        Ok(())
    }
}

/// A response to `request` with `status`, the To tagged, and extra header lines.
fn respond(request: &OwnedMessage, status: &str, extra: &str) -> Vec<u8> {
    let request = request.message();
    let text =
        |name: &str| String::from_utf8_lossy(request.header(name.as_bytes()).unwrap_or_default());
    let vias: String = request
        .header_values(b"via")
        .map(|v| format!("Via: {}\r\n", String::from_utf8_lossy(v)))
        .collect();
    format!(
        "SIP/2.0 {status}\r\n{vias}From: {}\r\nTo: {};tag=trunk1\r\nCall-ID: {}\r\n\
         CSeq: {}\r\n{extra}",
        text("from"),
        text("to"),
        text("call-id"),
        text("cseq"),
    )
    .into_bytes()
}

/// The `branch` of a message's top Via, as text.
fn branch(message: &OwnedMessage) -> String {
    String::from_utf8_lossy(message.message().top_branch().unwrap_or_default()).into_owned()
}

#[test]
fn message_survives_garbage_and_retransmits() -> Result<()> {
    let topology = Topology::new("vfa")?;
    let topology = &topology;
    std::thread::scope(|scope| {
        let trunk = scope.spawn(|| {
            in_netns(&topology.ns_name(Host::Carrier), || {
                let fake = FakeTrunk::new()?;
                let first = fake.expect_request("MESSAGE")?;
                // Silence: timer E must send the same request again.
                let again = fake.expect_request("MESSAGE")?;
                ensure!(
                    branch(&again) == branch(&first),
                    "a retransmission keeps its branch"
                );
                ensure!(again.message().body_bytes() == first.message().body_bytes());
                fake.send_garbage()?;
                // A final response for another transaction must not end this one.
                let other =
                    String::from_utf8(respond(&first, "200 OK", "Content-Length: 0\r\n\r\n"))?
                        .replacen(&branch(&first), "z9hG4bKnotours", 1);
                fake.send(other.as_bytes())?;
                fake.send(&respond(&first, "100 Trying", "Content-Length: 0\r\n\r\n"))?;
                fake.send(&respond(&first, "410 Gone", "Content-Length: 0\r\n\r\n"))?;
                Ok(())
            })
        });
        let result = on_gateway(topology, || async {
            Ok(channel().await?.send_message(OWNER, "code 1").await)
        });
        trunk.join().expect("trunk thread")?;
        ensure!(result? == Err(Failure::NumberGone(410)));
        Ok(())
    })
}

#[test]
fn call_retransmits_invite_reacks_2xx_and_checks_dialog() -> Result<()> {
    let topology = Topology::new("vfb")?;
    let topology = &topology;
    std::thread::scope(|scope| {
        let trunk = scope.spawn(|| {
            in_netns(&topology.ns_name(Host::Carrier), || {
                let fake = FakeTrunk::new()?;
                let first = fake.expect_request("INVITE")?;
                let again = fake.expect_request("INVITE")?;
                ensure!(branch(&again) == branch(&first), "timer A resends the INVITE");
                let sdp = "v=0\r\nc=IN IP4 203.0.113.2\r\nm=audio 6000 RTP/AVP 0 101\r\n\
                           a=rtpmap:101 telephone-event/8000\r\n";
                let ok = respond(
                    &first,
                    "200 OK",
                    &format!(
                        "Contact: <sip:phone@{}>\r\nContent-Type: application/sdp\r\n\
                         Content-Length: {}\r\n\r\n{sdp}",
                        trunk(),
                        sdp.len()
                    ),
                );
                fake.send(&ok)?;
                let ack = fake.expect_request("ACK")?;
                ensure!(ack.message().to_tag() == Some(&b"trunk1"[..]), "the ACK is in the dialog");
                // Our 2xx again, as if the ACK were lost: it must be ACKed again.
                fake.send(&ok)?;
                fake.expect_request("ACK")?;
                fake.send_garbage()?;

                let info = |cseq: u32, to_tag: &str, digit: char| {
                    format!(
                        "INFO sip:fastpath@{} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKi{cseq}\r\n\
                         From: <sip:phone@203.0.113.2>;tag=trunk1\r\nTo: <sip:fastpath@{}>;tag={to_tag}\r\n\
                         Call-ID: {}\r\nCSeq: {cseq} INFO\r\nContent-Type: application/dtmf-relay\r\n\
                         Content-Length: 10\r\n\r\nSignal={digit}\r\n",
                        uac_local(),
                        trunk(),
                        uac_local(),
                        String::from_utf8_lossy(first.message().text(first.message().call_id))
                    )
                };
                let our_tag =
                    String::from_utf8_lossy(first.message().from_tag().unwrap_or_default()).into_owned();
                let answer_to = |cseq: u32| {
                    move |m: &Message| m.status().is_some() && m.cseq_number() == Some(cseq)
                };
                let status = |m: OwnedMessage| m.message().status();
                // Outside the dialog (wrong tag): refused, and no digit.
                fake.send(info(10, "forged", '9').as_bytes())?;
                ensure!(status(fake.expect("481", answer_to(10))?) == Some(481));
                fake.send(info(11, &our_tag, '7').as_bytes())?;
                ensure!(status(fake.expect("200", answer_to(11))?) == Some(200));
                // Not a DTMF body: 415.
                let text = info(12, &our_tag, '1').replace("application/dtmf-relay", "text/plain");
                fake.send(text.as_bytes())?;
                ensure!(status(fake.expect("415", answer_to(12))?) == Some(415));
                fake.send(info(13, &our_tag, '3').as_bytes())?;
                ensure!(status(fake.expect("200", answer_to(13))?) == Some(200));
                let bye = fake.expect_request("BYE")?;
                ensure!(bye.message().to_tag() == Some(&b"trunk1"[..]));
                ensure!(bye.message().uri() == format!("sip:phone@{}", trunk()).as_bytes());
                fake.send(&respond(&bye, "200 OK", "Content-Length: 0\r\n\r\n"))?;
                Ok(())
            })
        });
        let result = on_gateway(topology, || async {
            let channel = channel().await?;
            let result = channel
                .collect_dtmf(OWNER, 2, Duration::from_secs(20))
                .await;
            // Until the trunk saw the BYE the runtime must live (the BYE goes out in the
            // background); the trunk thread ends after answering it.
            while !trunk.is_finished() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(result)
        });
        trunk.join().expect("trunk thread")?;
        ensure!(result? == Ok("73".to_owned()), "digits");
        Ok(())
    })
}

#[test]
fn missed_call_retransmissions_count_once() -> Result<()> {
    let topology = Topology::new("vfc")?;
    let number = normalize_number(VERIFY_NUMBER.as_bytes()).expect("a valid number");
    let listener_addr = SocketAddr::new(GW_CARRIER_V4.into(), LISTEN_PORT);
    let invite = |to: &str, call_id: &str| {
        format!(
            "INVITE sip:+{to}@{listener_addr} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK{call_id}\r\n\
             From: <tel:+1-555-010-0001>;tag=o\r\nTo: <sip:+{to}@{listener_addr}>\r\n\
             Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
            trunk()
        )
    };
    let topology = &topology;
    on_gateway(topology, || async move {
        let socket = tokio::net::UdpSocket::bind(listener_addr).await?;
        let (tx, mut rx) = mpsc::channel(8);
        let listener = tokio::spawn(missed_call::listen(socket, trunk(), number, tx));
        let replies = tokio::task::block_in_place(|| {
            in_netns(&topology.ns_name(Host::Carrier), || {
                let fake = FakeTrunk::new()?;
                fake.socket
                    .set_read_timeout(Some(Duration::from_millis(500)))?;
                let send = |bytes: &[u8]| fake.socket.send_to(bytes, listener_addr);
                let dir =
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/sip-torture/rfc4475");
                for entry in std::fs::read_dir(&dir)? {
                    send(&std::fs::read(entry?.path())?)?;
                }
                // Another number: not a verification call, not answered.
                send(invite("15550109001", "other").as_bytes())?;
                // The same INVITE three times (timer A): one missed call, one answer.
                for _ in 0..3 {
                    send(invite(VERIFY_NUMBER, "call-1").as_bytes())?;
                }
                let mut replies = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok((len, _)) = fake.socket.recv_from(&mut buf) {
                    replies.push(
                        OwnedMessage::parse(&buf[..len])
                            .map_err(|e| anyhow::anyhow!("an unparsable reply: {e:?}"))?,
                    );
                }
                Ok(replies)
            })
        })?;
        ensure!(
            replies.len() == 3,
            "one reply per INVITE copy, got {replies:?}"
        );
        let first_tag = replies[0].message().to_tag();
        for reply in &replies {
            let m = reply.message();
            ensure!(m.status() == Some(603) && m.error.is_none(), "{reply:?}");
            ensure!(m.text(m.call_id) == b"call-1");
            ensure!(m.to_tag().is_some() && m.to_tag() == first_tag);
        }
        let missed = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await?;
        ensure!(
            missed
                == Some(MissedCall {
                    caller: OWNER.into()
                }),
            "got {missed:?}"
        );
        ensure!(
            rx.try_recv().is_err(),
            "retransmissions are not new missed calls"
        );
        drop(rx);
        tokio::time::timeout(Duration::from_secs(5), listener).await??;
        Ok(())
    })
}

#[test]
fn concurrent_messages_get_their_own_answers() -> Result<()> {
    // One socket, two deliveries in flight: each answer reaches the delivery it belongs to.
    let topology = Topology::new("vfd")?;
    let topology = &topology;
    std::thread::scope(|scope| {
        let trunk = scope.spawn(|| {
            in_netns(&topology.ns_name(Host::Carrier), || {
                let fake = FakeTrunk::new()?;
                let to_a =
                    |m: &Message| m.method() == b"MESSAGE" && m.body_bytes().ends_with(b"for a");
                let a = fake.expect("MESSAGE for a", to_a)?;
                let b = fake.expect("MESSAGE for b", |m| {
                    m.method() == b"MESSAGE" && m.body_bytes().ends_with(b"for b")
                })?;
                // Answered in the opposite order.
                fake.send(&respond(&b, "404 Not Found", "Content-Length: 0\r\n\r\n"))?;
                fake.send(&respond(&a, "202 Accepted", "Content-Length: 0\r\n\r\n"))?;
                Ok(())
            })
        });
        let results = on_gateway(topology, || async {
            let channel = channel().await?;
            let a = channel.send_message(OWNER, "code for a");
            let b = async {
                // Any order works (the trunk picks each by body, retransmissions cover
                // what it skips); a short lead for a just makes the usual order.
                tokio::time::sleep(Duration::from_millis(50)).await;
                channel.send_message("15550100002", "code for b").await
            };
            Ok(tokio::join!(a, b))
        });
        trunk.join().expect("trunk thread")?;
        ensure!(results? == (Ok(()), Err(Failure::NumberGone(404))));
        Ok(())
    })
}
