//! SIPp (Debian's `sip-tester`) as the caller's UAC and the peer's / carrier's UAS,
//! each run inside a namespace of a [`Topology`], in the foreground, under a guard.
//!
//! Results come from SIPp's statistics file (`-trace_stat`): a `;`-separated CSV whose
//! first line names the columns and whose last line, written at exit, holds the
//! cumulative counters (`…(C)` columns). A UAS's calls are counted from its message log
//! (`-trace_msg`) instead: SIPp opens a "call" for any message of an unknown Call-ID,
//! an ACK included, and the statistics cannot tell those apart from INVITEs.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::net::{IpAddr, SocketAddr};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tempfile::TempDir;

use crate::netns::{Host, Topology};
use crate::process::ChildGuard;

/// INVITE, optional 100/180, 200, ACK with the INVITE's Request-URI; no BYE.
pub const UAC_SCENARIO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/uac_invite.xml");
/// INVITE in, 180, 200, ACK in.
pub const UAS_SCENARIO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/uas_answer.xml");

/// INVITE, 180, CANCEL, 200 (CANCEL), 487, ACK: a call given up while it rings.
pub const UAC_CANCEL_SCENARIO: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/uac_cancel.xml");
/// INVITE in, 180, then CANCEL in, 200 and 487 out, ACK in.
pub const UAS_CANCEL_SCENARIO: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/uas_cancel.xml");

/// How SIPp carries SIP: `-t u1` (one UDP socket) or `-t t1` (one TCP connection).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SipTransport {
    #[default]
    Udp,
    Tcp,
}

impl SipTransport {
    fn flag(self) -> &'static str {
        match self {
            SipTransport::Udp => "u1",
            SipTransport::Tcp => "t1",
        }
    }

    /// The `/proc/PID/net` tables that list this transport's sockets.
    fn proc_tables(self) -> [&'static str; 2] {
        match self {
            SipTransport::Udp => ["udp", "udp6"],
            SipTransport::Tcp => ["tcp", "tcp6"],
        }
    }
}

/// Cumulative counters in SIPp's statistics file.
pub const STAT_INCOMING: &str = "IncomingCall(C)";
pub const STAT_OUTGOING: &str = "OutgoingCall(C)";
pub const STAT_SUCCESSFUL: &str = "SuccessfulCall(C)";
pub const STAT_FAILED: &str = "FailedCall(C)";
pub const STAT_RETRANSMISSIONS: &str = "Retransmissions(C)";

/// Slack on top of SIPp's own `-timeout` before its guard kills it.
const EXIT_SLACK: Duration = Duration::from_secs(5);
/// How long a UAS may take to open its socket.
const BIND_WAIT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UasReport {
    /// Calls whose INVITE arrived (distinct Call-IDs; retransmissions are not counted).
    pub calls_received: u64,
    /// ACKs for calls whose INVITE never arrived here: the gateway is stateless, so a
    /// reload that moves a number between an INVITE and its ACK sends the ACK by the
    /// new route (the scenario ends the call SIPp opens for it at once, as failed).
    pub stray_acks: u64,
    /// Calls that reached the end of the scenario (the ACK arrived).
    pub successful: u64,
    pub failed: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UacReport {
    /// Calls placed (INVITEs sent, not counting retransmissions).
    pub created: u64,
    /// Calls that got their 200 and sent the ACK.
    pub successful: u64,
    /// All others: failed, or still open when SIPp's global timeout struck.
    pub failed: u64,
    /// INVITEs sent again for want of a response in time (RFC 3261 Timer A).
    pub retransmissions: u64,
}

/// A SIPp UAS answering calls in one namespace until [`Uas::finish`], `max_calls`
/// calls, or its timeout.
#[derive(Debug)]
pub struct Uas {
    guard: ChildGuard,
    run: RunDir,
    deadline: Instant,
}

impl Uas {
    /// Starts the UAS bound to `bind_ip:port` in `host`'s namespace and returns once
    /// its socket is open. It exits by itself after `max_calls` calls or `timeout`.
    pub fn start(
        topology: &Topology,
        host: Host,
        bind_ip: IpAddr,
        port: u16,
        max_calls: u32,
        timeout: Duration,
    ) -> Result<Uas> {
        Self::start_scenario(
            topology,
            host,
            bind_ip,
            port,
            max_calls,
            timeout,
            UAS_SCENARIO,
        )
    }

    /// As [`Uas::start`] with another scenario file (e.g. [`UAS_CANCEL_SCENARIO`]).
    pub fn start_scenario(
        topology: &Topology,
        host: Host,
        bind_ip: IpAddr,
        port: u16,
        max_calls: u32,
        timeout: Duration,
        scenario: &str,
    ) -> Result<Uas> {
        Self::start_over(
            topology,
            host,
            (bind_ip, port),
            max_calls,
            timeout,
            scenario,
            SipTransport::Udp,
        )
    }

    /// As [`Uas::start_scenario`], listening on `transport`.
    pub fn start_over(
        topology: &Topology,
        host: Host,
        (bind_ip, port): (IpAddr, u16),
        max_calls: u32,
        timeout: Duration,
        scenario: &str,
        transport: SipTransport,
    ) -> Result<Uas> {
        let run = RunDir::new("uas")?;
        let mut args = common_args(scenario, bind_ip, max_calls, timeout, &run);
        args.extend(["-p".into(), port.to_string()]);
        args.extend(["-t".into(), transport.flag().into()]);
        let mut guard = run.spawn(topology, host, &args)?;
        wait_until_bound(&mut guard, &run, port, transport)?;
        Ok(Uas {
            guard,
            run,
            deadline: Instant::now() + timeout + EXIT_SLACK,
        })
    }

    /// The SIP messages the UAS has sent and received so far (SIPp's `-trace_msg` log).
    pub fn messages(&self) -> Result<String> {
        self.run.read("messages.log")
    }

    /// Stops the UAS gracefully (SIGUSR1: no new calls, let open calls end) and
    /// reports its counters.
    pub fn finish(mut self) -> Result<UasReport> {
        if self.guard.try_wait()?.is_none() {
            self.guard.signal(libc::SIGUSR1)?;
        }
        let left = self.deadline.saturating_duration_since(Instant::now());
        match self.guard.wait_timeout(left.max(Duration::from_secs(1)))? {
            Some(status) => self.run.check_exit(status)?,
            None => {
                // SIPp waits for its open calls, and a call it opened for a message it did
                // not expect (an ACK that a reload sent by a new route: seen in CI) never
                // ended before the scenario learnt to end it. Should another such call
                // stay open, its statistics (written every second) still count every call
                // that ended long before we asked: kill it, say so, and let the caller's
                // checks on those counts decide.
                eprintln!(
                    "fastpath-tests: SIPp UAS did not stop by its deadline; killed it. \
                     Last screen: {}",
                    self.run.tail("stdout.log", 12)
                );
                self.guard.stop()?;
            }
        }
        let stats = self.run.stats()?;
        let traffic = Traffic::parse(&self.messages()?);
        Ok(UasReport {
            calls_received: traffic.invites.len() as u64,
            stray_acks: traffic.acks.difference(&traffic.invites).count() as u64,
            successful: stats.get(STAT_SUCCESSFUL)?,
            failed: stats.get(STAT_FAILED)?,
        })
    }
}

/// Places `calls` calls at `rate` calls/s from `local_ip` in `host`'s namespace to
/// `number` at `remote` (Request-URI `sip:NUMBER@REMOTE`), and waits for them to end.
/// Unanswered calls fail after 3 s (see the scenario); SIPp stops after `timeout` in
/// any case. Failed calls are reported, not an error; a SIPp that cannot run is.
#[allow(clippy::too_many_arguments)] // mirrors SIPp's own command line
pub fn uac_call(
    topology: &Topology,
    host: Host,
    local_ip: IpAddr,
    remote: SocketAddr,
    number: &str,
    calls: u32,
    rate: u32,
    timeout: Duration,
) -> Result<UacReport> {
    uac_call_scenario(
        topology,
        host,
        local_ip,
        remote,
        number,
        calls,
        rate,
        timeout,
        UAC_SCENARIO,
    )
}

/// As [`uac_call`] with another scenario file (e.g. [`UAC_CANCEL_SCENARIO`]).
#[allow(clippy::too_many_arguments)] // mirrors SIPp's own command line
pub fn uac_call_scenario(
    topology: &Topology,
    host: Host,
    local_ip: IpAddr,
    remote: SocketAddr,
    number: &str,
    calls: u32,
    rate: u32,
    timeout: Duration,
    scenario: &str,
) -> Result<UacReport> {
    uac_call_over(
        topology,
        host,
        local_ip,
        remote,
        number,
        (calls, rate),
        timeout,
        scenario,
        SipTransport::Udp,
    )
}

/// As [`uac_call_scenario`] over `transport` (`(calls, rate)` as there).
#[allow(clippy::too_many_arguments)] // mirrors SIPp's own command line
pub fn uac_call_over(
    topology: &Topology,
    host: Host,
    local_ip: IpAddr,
    remote: SocketAddr,
    number: &str,
    (calls, rate): (u32, u32),
    timeout: Duration,
    scenario: &str,
    transport: SipTransport,
) -> Result<UacReport> {
    ensure!(calls > 0 && rate > 0, "calls and rate must be positive");
    let run = RunDir::new("uac")?;
    let mut args = common_args(scenario, local_ip, calls, timeout, &run);
    args.extend(["-t".into(), transport.flag().into()]);
    // SocketAddr's Display already writes `[v6]:port`, which is what SIPp expects.
    args.extend([
        "-s".into(),
        number.into(),
        "-r".into(),
        rate.to_string(),
        "-timeout_error".into(),
        remote.to_string(),
    ]);
    let mut guard = run.spawn(topology, host, &args)?;
    let status = guard
        .wait_timeout(timeout + EXIT_SLACK)?
        .with_context(|| format!("SIPp UAC did not stop; {}", run.stderr_tail()))?;
    // -timeout_error makes a run cut short by the global timeout exit 255, like a
    // fatal error; the statistics file tells the two apart.
    let stats = match run.check_exit(status) {
        Ok(()) => run.stats()?,
        Err(e) => run.stats().map_err(|_| e)?,
    };
    let created = stats.get(STAT_OUTGOING)?;
    let successful = stats.get(STAT_SUCCESSFUL)?;
    Ok(UacReport {
        created,
        successful,
        failed: created.saturating_sub(successful),
        retransmissions: stats.get(STAT_RETRANSMISSIONS)?,
    })
}

/// Arguments both roles share. `-nd`: an aborted call ends quietly, without the
/// CANCEL or BYE that SIPp would otherwise send through the gateway.
fn common_args(
    scenario: &str,
    ip: IpAddr,
    max_calls: u32,
    timeout: Duration,
    run: &RunDir,
) -> Vec<String> {
    let secs = timeout.as_secs_f64().ceil().max(1.0);
    let mut args: Vec<String> = vec!["sipp".into(), "-sf".into(), scenario.into()];
    args.extend(
        [
            "-i", // a v6 address goes bare here; SIPp brackets it in messages
            &ip.to_string(),
            "-bind_local", // send from and listen on exactly this address
            "-m",
            &max_calls.to_string(),
            "-timeout",
            &format!("{secs}s"),
            "-nd",
            // Answer OPTIONS (the gateway's health checks) with 200 instead of taking them
            // for a new call.
            "-aa",
            "-nostdin",
            "-trace_stat",
            "-stf",
            &run.path("stats.csv"),
            "-fd",
            "1",
            "-trace_msg",
            "-message_file",
            &run.path("messages.log"),
        ]
        .map(String::from),
    );
    args
}

/// Waits until the UAS has its socket open, reading `/proc/PID/net/{udp,tcp}{,6}`,
/// which shows the sockets of the process's own namespace.
fn wait_until_bound(
    guard: &mut ChildGuard,
    run: &RunDir,
    port: u16,
    transport: SipTransport,
) -> Result<()> {
    let needle = format!(":{port:04X}");
    let deadline = Instant::now() + BIND_WAIT;
    while Instant::now() < deadline {
        if let Some(status) = guard.try_wait()? {
            bail!("SIPp UAS exited at start ({status}); {}", run.stderr_tail());
        }
        let bound = transport.proc_tables().iter().any(|t| {
            fs::read_to_string(format!("/proc/{}/net/{t}", guard.pid()))
                // Skip the header; the local address is the second column.
                .map(|s| {
                    s.lines().skip(1).any(|l| {
                        l.split_whitespace()
                            .nth(1)
                            .is_some_and(|a| a.ends_with(&needle))
                    })
                })
                .unwrap_or(false)
        });
        if bound {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("SIPp UAS did not bind port {port}; {}", run.stderr_tail())
}

/// A scratch directory for one SIPp run: its working directory, logs and stats.
#[derive(Debug)]
struct RunDir {
    dir: TempDir,
    role: &'static str,
}

impl RunDir {
    fn new(role: &'static str) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("fastpath-sipp-{role}-"))
            .tempdir()
            .context("creating a SIPp run directory")?;
        Ok(Self { dir, role })
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }

    fn spawn(&self, topology: &Topology, host: Host, args: &[String]) -> Result<ChildGuard> {
        let file = |name: &str| -> Result<File> {
            File::create(self.dir.path().join(name)).with_context(|| format!("creating {name}"))
        };
        let mut cmd = topology.command(host, args);
        // SIPp's screen goes to a file: a terminal is not needed in the foreground.
        cmd.current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(file("stdout.log")?)
            .stderr(file("stderr.log")?);
        ChildGuard::spawn(&mut cmd).with_context(|| format!("starting SIPp {}", self.role))
    }

    fn read(&self, name: &str) -> Result<String> {
        let p = self.dir.path().join(name);
        fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
    }

    fn stderr_tail(&self) -> String {
        format!("SIPp {} stderr: {}", self.role, self.tail("stderr.log", 5))
    }

    /// The last `lines` lines of one of SIPp's files, on one line.
    fn tail(&self, name: &str, lines: usize) -> String {
        let text = self.read(name).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join(" | ")
    }

    /// SIPp exits 0 when all calls succeeded, 1 when some failed, 97 when told to
    /// stop, 99 when it ended without calls: all normal ends of a run.
    fn check_exit(&self, status: ExitStatus) -> Result<()> {
        match status.code() {
            Some(0 | 1 | 97 | 99) => Ok(()),
            _ => bail!(
                "SIPp {} ended with {status}; {}",
                self.role,
                self.stderr_tail()
            ),
        }
    }

    fn stats(&self) -> Result<Stats> {
        Stats::parse(&self.read("stats.csv")?)
            .with_context(|| format!("SIPp {} statistics", self.role))
    }
}

/// The requests a SIPp message log (`-trace_msg`) shows as received, by Call-ID.
#[derive(Debug, Default)]
struct Traffic {
    invites: HashSet<String>,
    acks: HashSet<String>,
}

impl Traffic {
    /// Records are separated by a line of dashes; a received one opens with `UDP message
    /// received [N] bytes :` (or TCP), then a blank line and the message. SIPp logs an
    /// unexpected message a second time, under `Unexpected … received:`, which is skipped.
    fn parse(log: &str) -> Self {
        let mut traffic = Traffic::default();
        for record in log.split("\n-----------------------------------------------") {
            let mut lines = record.lines().map(str::trim).filter(|l| !l.is_empty());
            // The rest of the separator line: empty or a timestamp.
            let heading = lines.find(|l| l.contains("message"));
            if !heading
                .is_some_and(|h| h.contains("message received") && !h.starts_with("Unexpected"))
            {
                continue;
            }
            let Some(method) = lines.next().and_then(|l| l.split(' ').next()) else {
                continue;
            };
            let call_id = lines.find_map(|l| {
                let (name, value) = l.split_once(':')?;
                let name = name.trim();
                (name.eq_ignore_ascii_case("Call-ID") || name.eq_ignore_ascii_case("i"))
                    .then(|| value.trim().to_owned())
            });
            let set = match method {
                "INVITE" => &mut traffic.invites,
                "ACK" => &mut traffic.acks,
                _ => continue,
            };
            set.extend(call_id);
        }
        traffic
    }
}

/// The last row of a SIPp statistics file, by column name.
#[derive(Debug)]
struct Stats(HashMap<String, String>);

impl Stats {
    fn parse(csv: &str) -> Result<Self> {
        let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
        let header = lines.next().context("empty statistics file")?;
        let last = lines
            .next_back()
            .context("statistics file has no data row")?;
        let row = header
            .split(';')
            .zip(last.split(';'))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Ok(Stats(row))
    }

    fn get(&self, column: &str) -> Result<u64> {
        let v = self
            .0
            .get(column)
            .with_context(|| format!("no column {column}"))?;
        v.parse().with_context(|| format!("{column} = {v:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn parses_stats_by_header_name() -> Result<()> {
        let csv = "StartTime;IncomingCall(C);SuccessfulCall(C);FailedCall(C);\n\
                   2026-01-01\t00:00:00;0;0;0;\n\
                   2026-01-01\t00:00:01;5;4;1;\n";
        let s = Stats::parse(csv)?;
        assert_eq!(s.get(STAT_INCOMING)?, 5);
        assert_eq!(s.get(STAT_SUCCESSFUL)?, 4);
        assert_eq!(s.get(STAT_FAILED)?, 1);
        assert!(s.get(STAT_OUTGOING).is_err());
        assert!(Stats::parse("StartTime;IncomingCall(C);\n").is_err());
        Ok(())
    }

    #[test]
    fn counts_received_invites_and_stray_acks_by_call_id() {
        let message = |method: &str, call_id: &str| {
            format!(
                "{method} sip:15550100002@192.0.2.1:5060 SIP/2.0\n\
                 Via: SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bK1\n\
                 Call-ID: {call_id}\nCSeq: 1 {method}\nContent-Length: 0\n\n"
            )
        };
        let dashes = "-----------------------------------------------";
        let record = |heading: &str, body: &str| {
            format!("{dashes} 2026-11-23 21:09:48\n{heading}\n\n{body}\n")
        };
        let log = [
            record(
                "UDP message received [306] bytes :",
                &message("INVITE", "a@x"),
            ),
            // A retransmission: the same call.
            record(
                "UDP message received [306] bytes :",
                &message("INVITE", "a@x"),
            ),
            record(
                "UDP message sent (288 bytes):",
                "SIP/2.0 180 Ringing\nCall-ID: a@x\n",
            ),
            record("UDP message received [303] bytes :", &message("ACK", "a@x")),
            // An INVITE sent (not received) does not count; an ACK without its INVITE does.
            record("UDP message sent (300 bytes):", &message("INVITE", "b@x")),
            record("UDP message received [303] bytes :", &message("ACK", "c@x")),
            format!(
                "{dashes}\nUnexpected UDP message received:\n\n{}",
                message("INVITE", "d@x")
            ),
            record(
                "TCP message received [306] bytes :",
                &message("INVITE", "e@x").replace("Call-ID", "i"),
            ),
        ]
        .concat();
        let traffic = Traffic::parse(&log);
        let sorted = |set: &HashSet<String>| {
            let mut v: Vec<_> = set.iter().cloned().collect();
            v.sort();
            v
        };
        assert_eq!(sorted(&traffic.invites), ["a@x", "e@x"]);
        assert_eq!(sorted(&traffic.acks), ["a@x", "c@x"]);
        assert!(Traffic::parse("").invites.is_empty());
    }

    #[test]
    fn scenarios_exist() {
        assert!(Path::new(UAC_SCENARIO).is_file());
        assert!(Path::new(UAS_SCENARIO).is_file());
    }
}
