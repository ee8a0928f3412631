//! The registry driving the real fast path in a netns gateway: numbers loaded from the
//! registry at start take calls to the peer; revocation (through the CLI and API) and
//! expiry take them off the pinned `ROUTES` map within one second, after which calls no
//! longer reach the peer; drift injected into the pinned map is repaired.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::Output,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use aya::maps::{HashMap, Map, MapData};
use fastpath::registry::{
    Method, NumberRecord, PeerAddress, SqliteStore, State, Transport, now_ms, number::route_key,
};
use fastpath_common::{RouteKey, maps::RouteValue};
use fastpath_tests::{Gateway, Host, Topology, Uas, netns::*, uac_call};

const TOKEN: &str = "registry-e2e-token-0123";
const REVOKED: &str = "15550100001";
const EXPIRING: &str = "15550100002";
const KEPT: &str = "15550100003";
const ROGUE: &str = "15550109999";

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_fastpath"))
}

fn verified(number: &str, expires_at: i64) -> NumberRecord {
    NumberRecord {
        number: number.into(),
        account: "acme".into(),
        peer: PeerAddress {
            host: PEER_V4.into(),
            port: SIP_PORT,
            transport: Transport::Udp,
        },
        state: State::Verified,
        opt_in: true,
        verification_method: Some(Method::Message),
        verified_at: Some(now_ms()),
        expires_at: Some(expires_at),
        last_failure: None,
        created_at: now_ms(),
        updated_at: now_ms(),
    }
}

fn config(db: &Path) -> String {
    format!(
        "[registry]\npath = \"{}\"\nreconcile_interval = \"1s\"\n\n\
         [api]\nlisten = \"127.0.0.1:8080\"\ntoken = \"{TOKEN}\"\n",
        db.display()
    )
}

fn routes(pin_dir: &Path) -> Result<HashMap<MapData, RouteKey, RouteValue>> {
    let data = MapData::from_pin(pin_dir.join("ROUTES"))?;
    Ok(HashMap::try_from(Map::from_map_data(data)?)?)
}

fn key(number: &str) -> Result<RouteKey> {
    route_key(number).context("route key")
}

fn in_map(pin_dir: &Path, number: &str) -> Result<bool> {
    Ok(routes(pin_dir)?.get(&key(number)?, 0).is_ok())
}

/// Polls the pinned map (every millisecond) until `number`'s presence is `want`;
/// returns how long that took.
fn wait_in_map(pin_dir: &Path, number: &str, want: bool, limit: Duration) -> Result<Duration> {
    let map = routes(pin_dir)?;
    let k = key(number)?;
    let start = Instant::now();
    while start.elapsed() < limit {
        if map.get(&k, 0).is_ok() == want {
            return Ok(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    bail!(
        "{number} still {} ROUTES after {limit:?}",
        if want { "missing from" } else { "in" }
    )
}

/// The log without its ANSI colours.
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte (a letter).
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `fastpath numbers ARGS` inside the gateway namespace, against its API on loopback.
fn cli(topology: &Topology, args: &[&str]) -> Result<Output> {
    let mut cmd = topology.command(Host::Gateway, [binary().as_os_str()]);
    cmd.args([
        "numbers",
        "--api",
        "http://127.0.0.1:8080",
        "--token",
        TOKEN,
    ])
    .args(args);
    Ok(cmd.stdin(std::process::Stdio::null()).output()?)
}

fn cli_ok(topology: &Topology, args: &[&str]) -> Result<String> {
    let out = cli(topology, args)?;
    ensure!(
        out.status.success(),
        "fastpath numbers {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// Whether `fastpath numbers ARGS` succeeded, and all it printed (errors go to stderr).
fn cli_result(topology: &Topology, args: &[&str]) -> Result<(bool, String)> {
    let out = cli(topology, args)?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

/// `calls` calls to `number` from the caller; how many reached the peer.
fn calls_reaching_peer(topology: &Topology, number: &str, calls: u32) -> Result<u64> {
    let uas = Uas::start(
        topology,
        Host::Peer,
        IpAddr::V4(PEER_V4),
        SIP_PORT,
        calls,
        Duration::from_secs(30),
    )?;
    uac_call(
        topology,
        Host::Caller,
        IpAddr::V4(CALLER_V4),
        SocketAddr::new(GW_CALLER_V4.into(), SIP_PORT),
        number,
        calls,
        20,
        Duration::from_secs(15),
    )?;
    Ok(uas.finish()?.calls_received)
}

#[test]
fn revocation_expiry_and_drift_reach_the_pinned_map() -> Result<()> {
    let topology = Topology::new("rg1")?;
    topology.resolve_neighbors()?;
    topology.gw_forward_drop_from_caller()?;
    let dir = tempfile::tempdir()?;
    let db: PathBuf = dir.path().join("registry.db");
    // The expiring number lasts long enough for the daemon to start and calls to pass.
    let expires_at = now_ms() + 15_000;
    {
        let mut store = SqliteStore::open(&db)?;
        store.import(
            &[
                verified(REVOKED, i64::MAX),
                verified(EXPIRING, expires_at),
                verified(KEPT, i64::MAX),
            ],
            "fixture",
        )?;
    }
    let gateway = Gateway::start(&topology, binary(), &config(&db))?;
    let pin_dir = gateway.pin_dir().to_owned();
    ensure!(
        gateway
            .log_text()
            .contains("routes loaded from the registry"),
        "{}",
        gateway.log_text()
    );
    for n in [REVOKED, EXPIRING, KEPT] {
        ensure!(in_map(&pin_dir, n)?, "{n} not loaded into ROUTES");
    }

    // Expiry first (it runs on the clock): calls pass before, the number leaves the map
    // within a second of its expiry, and calls stop.
    let left = expires_at - now_ms();
    ensure!(
        left > 8_000,
        "the daemon took too long to start: {left} ms left before the expiry under test"
    );
    let before = calls_reaching_peer(&topology, EXPIRING, 2)?;
    ensure!(
        before == 2,
        "{before} of 2 calls reached the peer before expiry"
    );
    let wait = u64::try_from(expires_at - now_ms()).unwrap_or(0);
    std::thread::sleep(Duration::from_millis(wait));
    let took = wait_in_map(&pin_dir, EXPIRING, false, Duration::from_secs(1))?;
    eprintln!("expiry reached ROUTES {took:?} after the expiry time");
    let after = calls_reaching_peer(&topology, EXPIRING, 2)?;
    ensure!(after == 0, "{after} calls reached the peer after expiry");
    let shown = cli_ok(&topology, &["show", EXPIRING])?;
    ensure!(shown.contains("expired"), "{shown}");

    // Before: calls to the registered number reach the peer through XDP.
    let before = calls_reaching_peer(&topology, REVOKED, 3)?;
    ensure!(
        before == 3,
        "{before} of 3 calls reached the peer before revocation"
    );

    // Revocation through the CLI: off the map within a second, and calls stop.
    let out = cli_ok(&topology, &["revoke", REVOKED, "--reason", "e2e"])?;
    ensure!(out.contains("revoked"), "{out}");
    let took = wait_in_map(&pin_dir, REVOKED, false, Duration::from_secs(1))?;
    eprintln!("revocation reached ROUTES in {took:?}");
    let after = calls_reaching_peer(&topology, REVOKED, 3)?;
    ensure!(
        after == 0,
        "{after} calls reached the peer after revocation"
    );
    ensure!(
        in_map(&pin_dir, KEPT)?,
        "revoking one number removed another"
    );

    // The CLI reports bad input with one line and a non-zero exit.
    let out = cli(&topology, &["show", "alice"])?;
    ensure!(!out.status.success(), "show alice succeeded");
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(err.contains("E.164") && err.lines().count() == 1, "{err}");
    let out = cli(&topology, &["show", "15550100077"])?;
    ensure!(
        String::from_utf8_lossy(&out.stderr).contains("not registered"),
        "{out:?}"
    );
    // Add, list, show through the CLI; a pending number is not routed.
    cli_ok(
        &topology,
        &[
            "add",
            "+1 555 010 0004",
            "--account",
            "acme",
            "--peer",
            "198.51.100.2:5060",
        ],
    )?;
    let list = cli_ok(&topology, &["list", "--account", "acme"])?;
    ensure!(
        list.contains("+15550100004") && list.contains("pending"),
        "{list}"
    );
    ensure!(
        !in_map(&pin_dir, "15550100004")?,
        "a pending number is in ROUTES"
    );
    // Without a trunk the delivery fails, with the reason recorded on the number.
    let out = cli(&topology, &["verify", "15550100004", "--method", "message"])?;
    ensure!(
        !out.status.success(),
        "verification without a trunk succeeded"
    );
    let shown = cli_ok(&topology, &["show", "15550100004"])?;
    ensure!(shown.contains("no SIP trunk"), "{shown}");

    // Drift behind the daemon's back: a rogue route added, a real one deleted. The
    // one-second reconcile repairs both.
    {
        let mut map = routes(&pin_dir)?;
        map.insert(
            key(ROGUE)?,
            RouteValue {
                peer_id: 0,
                generation: 0,
            },
            0,
        )?;
        map.remove(&key(KEPT)?)?;
    }
    wait_in_map(&pin_dir, ROGUE, false, Duration::from_secs(5))?;
    wait_in_map(&pin_dir, KEPT, true, Duration::from_secs(5))?;
    // The map is repaired before the reconcile logs it.
    let logged = Instant::now();
    while !gateway.log_text().contains("reconcile repaired drift") {
        ensure!(
            logged.elapsed() < Duration::from_secs(5),
            "no repair logged:\n{}",
            gateway.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    gateway.stop()?;
    Ok(())
}

/// A daemon killed with SIGKILL in the middle of a call load loses no call to a
/// registered number: the pinned program keeps forwarding while no daemon runs, and the
/// next daemon adopts the link and maps (and reconciles without rewriting them).
#[test]
fn daemon_sigkill_under_call_load_loses_no_registered_call() -> Result<()> {
    const CALLS: u32 = 150;
    const RATE: u32 = 25;
    let topology = Topology::new("rg2")?;
    topology.resolve_neighbors()?;
    topology.gw_forward_drop_from_caller()?;
    let dir = tempfile::tempdir()?;
    let db: PathBuf = dir.path().join("registry.db");
    SqliteStore::open(&db)?.import(&[verified(KEPT, i64::MAX)], "fixture")?;
    let config = config(&db);
    let first = Gateway::start(&topology, binary(), &config)?;

    let uas = Uas::start(
        &topology,
        Host::Peer,
        IpAddr::V4(PEER_V4),
        SIP_PORT,
        CALLS,
        Duration::from_secs(60),
    )?;
    let (uac, second) = std::thread::scope(|scope| -> Result<_> {
        let load = scope.spawn(|| {
            uac_call(
                &topology,
                Host::Caller,
                IpAddr::V4(CALLER_V4),
                SocketAddr::new(GW_CALLER_V4.into(), SIP_PORT),
                KEPT,
                CALLS,
                RATE,
                Duration::from_secs(40),
            )
        });
        // A third of the way into the load: crash, then a new daemon.
        std::thread::sleep(Duration::from_secs(2));
        first.kill()?;
        let second = Gateway::start_with(&topology, binary(), &config, &[], false);
        let uac = load
            .join()
            .map_err(|_| anyhow::anyhow!("the UAC thread panicked"))?;
        Ok((uac?, second?))
    })?;
    let received = uas.finish()?.calls_received;
    ensure!(
        second.log_text().contains("adopted the pinned XDP link"),
        "{}",
        second.log_text()
    );
    let log = plain(&second.log_text());
    ensure!(
        log.contains("routes loaded from the registry routes=1 added=0 changed=0 removed=0"),
        "the new daemon rewrote routes on adoption:\n{log}"
    );
    ensure!(
        uac.successful == u64::from(CALLS) && received == u64::from(CALLS),
        "{} of {CALLS} calls answered, {received} reached the peer across the crash",
        uac.successful
    );
    second.stop()?;
    Ok(())
}

/// Missed-call verification through the whole daemon: a number registered through the
/// CLI, a missed-call verification started, the owner's call delivered by the trunk (SIPp
/// in the carrier namespace) to the daemon's listener and declined with 603; the number is
/// then verified and in the pinned `ROUTES` map. The same call from a non-trunk address
/// verifies nothing.
#[test]
fn missed_call_verifies_a_number_through_the_daemon() -> Result<()> {
    const OWNER: &str = "15550100042";
    const VERIFY_NUMBER: &str = "15550109000";
    let topology = Topology::new("rg3")?;
    topology.resolve_neighbors()?;
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("registry.db");
    let listener = SocketAddr::new(GW_CARRIER_V4.into(), 5071);
    let config = format!(
        "{}\n[verification]\ntrunk = \"{}\"\nnumber = \"+{VERIFY_NUMBER}\"\n\
         local = \"{}\"\nmissed_call_listen = \"{listener}\"\n",
        config(&db),
        SocketAddr::new(CARRIER_V4.into(), SIP_PORT),
        SocketAddr::new(GW_CARRIER_V4.into(), 5070),
    );
    let gateway = Gateway::start(&topology, binary(), &config)?;
    let pin_dir = gateway.pin_dir().to_path_buf();

    let run = |args: &[&str]| cli_ok(&topology, args);
    run(&[
        "add",
        OWNER,
        "--account",
        "acme",
        "--peer",
        &format!("{PEER_V4}:{SIP_PORT}"),
    ])?;
    run(&["verify", OWNER, "--method", "missed-call"])?;
    ensure!(
        !in_map(&pin_dir, OWNER)?,
        "pending number already in ROUTES"
    );

    // The owner's call, as the trunk delivers it: from the caller's namespace first
    // (untrusted, ignored), then from the trunk's own address.
    let call = |host: Host, local: IpAddr| -> Result<(bool, String)> {
        let scenario = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/scenarios/verify_caller_missed_call.xml");
        let log_dir = tempfile::tempdir()?;
        let messages = log_dir.path().join("messages.log");
        let out = topology
            .command(host, ["sipp"])
            .args(["-sf", &scenario.to_string_lossy()])
            .args(["-i", &local.to_string(), "-p", &SIP_PORT.to_string()])
            .args(["-s", VERIFY_NUMBER, "-key", "caller", OWNER])
            .args([
                "-m",
                "1",
                "-max_invite_retrans",
                "2",
                "-timeout",
                "15s",
                "-timeout_error",
            ])
            .args(["-trace_msg", "-message_file", &messages.to_string_lossy()])
            .arg(listener.to_string())
            .stdin(std::process::Stdio::null())
            .output()?;
        Ok((
            out.status.success(),
            std::fs::read_to_string(&messages).unwrap_or_default(),
        ))
    };
    let (answered, log) = call(Host::Caller, CALLER_V4.into())?;
    ensure!(
        !answered && !log.contains("SIP/2.0 603"),
        "untrusted call answered:\n{log}"
    );
    std::thread::sleep(Duration::from_millis(300));
    ensure!(
        !in_map(&pin_dir, OWNER)?,
        "an untrusted call verified the number"
    );

    let (answered, log) = call(Host::Carrier, CARRIER_V4.into())?;
    ensure!(
        answered && log.contains("SIP/2.0 603"),
        "the trunk's call was not declined:\n{log}"
    );
    wait_in_map(&pin_dir, OWNER, true, Duration::from_secs(5))?;
    let shown = run(&["show", OWNER])?;
    ensure!(shown.contains("verified"), "{shown}");
    gateway.stop()?;
    Ok(())
}

/// Verification by message through the whole daemon, with the carrier trunk played by
/// SIPp: the code goes out in a SIP MESSAGE, a wrong code is refused, the right one
/// verifies the number into `ROUTES`; after too many wrong codes even the right one is
/// refused.
#[test]
fn message_verification_through_the_daemon() -> Result<()> {
    const OWNER: &str = "15550100051";
    const GUESSER: &str = "15550100052";
    let topology = Topology::new("rg4")?;
    topology.resolve_neighbors()?;
    let dir = tempfile::tempdir()?;

    // The trunk: answers two MESSAGEs with 200 and logs them.
    let scenario = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/scenarios/verify_trunk_message.xml"),
    )?
    .replace("[status]", "200")
    .replace("[reason]", "OK");
    let scenario_path = dir.path().join("trunk.xml");
    std::fs::write(&scenario_path, scenario)?;
    let messages = dir.path().join("messages.log");
    let mut trunk = topology.spawn(
        Host::Carrier,
        [
            "sipp".to_string(),
            "-sf".into(),
            scenario_path.to_string_lossy().into_owned(),
            "-i".into(),
            CARRIER_V4.to_string(),
            "-p".into(),
            SIP_PORT.to_string(),
            "-m".into(),
            "2".into(),
            "-timeout".into(),
            "60s".into(),
            "-trace_msg".into(),
            "-message_file".into(),
            messages.to_string_lossy().into_owned(),
        ],
    )?;

    let db = dir.path().join("registry.db");
    let config = format!(
        "{}\n[verification]\ntrunk = \"{}\"\nnumber = \"+15550109000\"\nlocal = \"{}\"\n",
        config(&db),
        SocketAddr::new(CARRIER_V4.into(), SIP_PORT),
        SocketAddr::new(GW_CARRIER_V4.into(), 5070),
    );
    let gateway = Gateway::start(&topology, binary(), &config)?;
    let pin_dir = gateway.pin_dir().to_path_buf();
    let run = |args: &[&str]| cli_result(&topology, args);
    // The code of the `nth` MESSAGE the trunk received (the digits run in its body).
    let code_sent = |nth: usize| -> Result<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = std::fs::read_to_string(&messages).unwrap_or_default();
            let codes: Vec<String> = log
                .split("MESSAGE sip:")
                .skip(1)
                .filter_map(|m| {
                    let body = m
                        .split("\r\n\r\n")
                        .nth(1)
                        .or_else(|| m.split("\n\n").nth(1))?;
                    let digits: String = body
                        .chars()
                        .skip_while(|c| !c.is_ascii_digit())
                        .take_while(char::is_ascii_digit)
                        .collect();
                    (digits.len() >= 4).then_some(digits)
                })
                .collect();
            if let Some(code) = codes.get(nth) {
                return Ok(code.clone());
            }
            if Instant::now() > deadline {
                bail!("no code in MESSAGE #{nth}:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let peer = format!("{PEER_V4}:{SIP_PORT}");

    for number in [OWNER, GUESSER] {
        let (ok, text) = run(&["add", number, "--account", "acme", "--peer", &peer])?;
        ensure!(ok, "{text}");
    }
    let (ok, text) = run(&["verify", OWNER, "--method", "message"])?;
    ensure!(ok, "{text}");
    let code = code_sent(0)?;
    let wrong = altered(&code);
    let (ok, text) = run(&["verify", OWNER, "--code", &wrong])?;
    ensure!(!ok, "a wrong code was accepted: {text}");
    ensure!(
        !in_map(&pin_dir, OWNER)?,
        "a wrong code put the number in ROUTES"
    );
    let (ok, text) = run(&["verify", OWNER, "--code", &code])?;
    ensure!(ok, "the right code was refused: {text}");
    wait_in_map(&pin_dir, OWNER, true, Duration::from_secs(1))?;

    let (ok, text) = run(&["verify", GUESSER, "--method", "message"])?;
    ensure!(ok, "{text}");
    let code = code_sent(1)?;
    let wrong = altered(&code);
    let mut last = String::new();
    for _ in 0..5 {
        let (ok, text) = run(&["verify", GUESSER, "--code", &wrong])?;
        ensure!(!ok, "a wrong code was accepted: {text}");
        last = text;
    }
    ensure!(
        last.to_lowercase().contains("attempt"),
        "the fifth wrong code did not end the verification: {last}"
    );
    // The verification is over: the right code now has nothing to match.
    let (ok, text) = run(&["verify", GUESSER, "--code", &code])?;
    ensure!(
        !ok,
        "the right code after 5 wrong ones was accepted: {text}"
    );
    ensure!(text.contains("no verification in progress"), "{text}");
    std::thread::sleep(Duration::from_millis(200));
    ensure!(!in_map(&pin_dir, GUESSER)?, "a guessed number is in ROUTES");

    gateway.stop()?;
    let _ = trunk.stop();
    Ok(())
}

/// `code` with its last digit changed: a code that is wrong by one key.
fn altered(code: &str) -> String {
    let mut digits: Vec<char> = code.chars().collect();
    if let Some(last) = digits.last_mut() {
        *last = if *last == '1' { '2' } else { '1' };
    }
    digits.into_iter().collect()
}

/// The state of the pinned `PEERS` slot of the peer at `address`.
fn peer_up(pin_dir: &Path, address: SocketAddr) -> Result<Option<bool>> {
    use fastpath_common::maps::{PEER_UP, PeerValue};
    let data = MapData::from_pin(pin_dir.join("PEERS"))?;
    let peers: aya::maps::Array<MapData, PeerValue> =
        aya::maps::Array::try_from(Map::from_map_data(data)?)?;
    let wanted = fastpath::maps::peer_value_for(address);
    for id in 0..fastpath_common::maps::MAX_PEERS {
        let peer = peers.get(&id, 0)?;
        if (peer.addr, peer.port, peer.family) == (wanted.addr, wanted.port, wanted.family) {
            return Ok(Some(peer.state == PEER_UP));
        }
    }
    Ok(None)
}

/// A peer known only from the registry is health-checked like a configured one: while it
/// does not answer OPTIONS its `PEERS` slot is down (its calls leave the fast path), and
/// once it answers it is up again.
#[test]
fn registry_peers_are_health_checked() -> Result<()> {
    let topology = Topology::new("rg5")?;
    topology.resolve_neighbors()?;
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("registry.db");
    SqliteStore::open(&db)?.import(&[verified(KEPT, i64::MAX)], "fixture")?;
    let config = format!(
        "{}\n[proxy]\nlisten = [\"{GW_CALLER_V4}:{SIP_PORT}\"]\n\
         [[trunks]]\nname = \"carrier\"\naddress = \"{CARRIER_V4}:{SIP_PORT}\"\n\
         [health]\ninterval_ms = 200\nmisses = 2\n",
        config(&db)
    );
    let gateway = Gateway::start(&topology, binary(), &config)?;
    let pin_dir = gateway.pin_dir().to_path_buf();
    let peer = SocketAddr::new(PEER_V4.into(), SIP_PORT);
    let wait_state = |want: bool| -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if peer_up(&pin_dir, peer)? == Some(want) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "peer {peer} not {} after 10 s:\n{}",
            if want { "up" } else { "down" },
            plain(&gateway.log_text())
        )
    };
    // Nothing listens at the peer: its pings go unanswered.
    wait_state(false)?;
    // A SIP peer comes up there (SIPp answers OPTIONS), and the slot follows.
    let uas = Uas::start(
        &topology,
        Host::Peer,
        PEER_V4.into(),
        SIP_PORT,
        1000,
        Duration::from_secs(15),
    )?;
    wait_state(true)?;
    drop(uas);
    gateway.stop()?;
    Ok(())
}

/// Without the XDP program the proxy routes registered numbers itself, from the same
/// registry: a verified number's calls reach its peer, and after revocation the trunk.
#[test]
fn without_xdp_the_proxy_routes_registered_numbers() -> Result<()> {
    let topology = Topology::new("rg6")?;
    topology.resolve_neighbors()?;
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("registry.db");
    SqliteStore::open(&db)?.import(&[verified(KEPT, i64::MAX)], "fixture")?;
    let config = format!(
        "{}\n[proxy]\nlisten = [\"{GW_CALLER_V4}:{SIP_PORT}\"]\n\
         [[trunks]]\nname = \"carrier\"\naddress = \"{CARRIER_V4}:{SIP_PORT}\"\n\
         [health]\nenabled = false\n",
        config(&db)
    );
    let gateway = Gateway::start_with(&topology, binary(), &config, &["--no-xdp"], true)?;
    ensure!(
        calls_reaching_peer(&topology, KEPT, 3)? == 3,
        "a registered number's calls reach its peer through the proxy:\n{}",
        plain(&gateway.log_text())
    );
    // Revoked through the API: the proxy's table follows the registry at once.
    cli_ok(&topology, &["revoke", KEPT, "--reason", "e2e"])?;
    let carrier = Uas::start(
        &topology,
        Host::Carrier,
        IpAddr::V4(CARRIER_V4),
        SIP_PORT,
        3,
        Duration::from_secs(30),
    )?;
    ensure!(calls_reaching_peer(&topology, KEPT, 3)? == 0);
    ensure!(
        carrier.finish()?.calls_received == 3,
        "revoked: the trunk takes them"
    );
    gateway.stop()?;
    Ok(())
}

/// The value of the series `series` (name and labels, as exposed) in a scrape.
fn series_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Scrapes until every `(series, value)` holds (the state counts are cached for up to
/// 2 s), and returns that scrape; fails with the last scrape after 20 s.
fn scrape_until(gateway: &Gateway, want: &[(&str, f64)]) -> Result<String> {
    let metrics: SocketAddr = "127.0.0.1:9477".parse()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = gateway.http_get(metrics, "/metrics")?;
        let missing: Vec<_> = want
            .iter()
            .filter(|(series, value)| series_value(&text, series) != Some(*value))
            .collect();
        if missing.is_empty() {
            return Ok(text);
        }
        if Instant::now() > deadline {
            bail!("never got {missing:?} in\n{text}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `/metrics` moves with real actions: a registration and a message verification move
/// the state gauge, the attempt counter and the outcome counters (a wrong code, then the
/// right one); the verification's change moves the sync's latency histogram; requests the
/// proxy answers move its handling-time histogram. The exposition passes promtool.
#[test]
fn metrics_follow_registry_verification_sync_and_proxy() -> Result<()> {
    const OWNER: &str = "15550100061";
    let topology = Topology::new("mt1")?;
    topology.resolve_neighbors()?;
    let dir = tempfile::tempdir()?;

    // The trunk answers the one MESSAGE with 200 and logs it.
    let scenario = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/scenarios/verify_trunk_message.xml"),
    )?
    .replace("[status]", "200")
    .replace("[reason]", "OK");
    let scenario_path = dir.path().join("trunk.xml");
    std::fs::write(&scenario_path, scenario)?;
    let messages = dir.path().join("messages.log");
    let mut trunk = topology.spawn(
        Host::Carrier,
        [
            "sipp".to_string(),
            "-sf".into(),
            scenario_path.to_string_lossy().into_owned(),
            "-i".into(),
            CARRIER_V4.to_string(),
            "-p".into(),
            SIP_PORT.to_string(),
            "-m".into(),
            "1".into(),
            "-timeout".into(),
            "60s".into(),
            "-trace_msg".into(),
            "-message_file".into(),
            messages.to_string_lossy().into_owned(),
        ],
    )?;

    let db = dir.path().join("registry.db");
    let gw_sip = SocketAddr::new(GW_CALLER_V4.into(), SIP_PORT);
    let config = format!(
        "{}\n[verification]\ntrunk = \"{}\"\nnumber = \"+15550109000\"\nlocal = \"{}\"\n\n\
         [proxy]\nlisten = [\"{gw_sip}\"]\nworkers = 2\n\n[health]\nenabled = false\n",
        config(&db),
        SocketAddr::new(CARRIER_V4.into(), SIP_PORT),
        SocketAddr::new(GW_CARRIER_V4.into(), 5070),
    );
    let gateway = Gateway::start(&topology, binary(), &config)?;
    let pin_dir = gateway.pin_dir().to_path_buf();
    let run = |args: &[&str]| cli_result(&topology, args);
    const PENDING: &str = "fastpath_registry_numbers{state=\"pending\"}";
    const VERIFIED: &str = "fastpath_registry_numbers{state=\"verified\"}";
    const STARTED: &str = "fastpath_verification_attempts_total{method=\"message\"}";
    const WRONG: &str =
        "fastpath_verification_outcomes_total{method=\"message\",outcome=\"wrong_code\"}";
    const OK: &str =
        "fastpath_verification_outcomes_total{method=\"message\",outcome=\"verified\"}";
    const UPDATES: &str = "fastpath_sync_update_seconds_count";
    const REQUESTS: &str = "fastpath_proxy_handle_seconds_count{kind=\"request\"}";
    const RESPONSES: &str = "fastpath_proxy_handle_seconds_count{kind=\"response\"}";

    // A fresh daemon: every series is there, at zero.
    let fresh = scrape_until(
        &gateway,
        &[
            (PENDING, 0.0),
            (VERIFIED, 0.0),
            (STARTED, 0.0),
            (WRONG, 0.0),
            (OK, 0.0),
            (UPDATES, 0.0),
            (REQUESTS, 0.0),
            (RESPONSES, 0.0),
        ],
    )?;
    fastpath_tests::promtool_check_metrics(&fresh)?;

    let peer = format!("{PEER_V4}:{SIP_PORT}");
    let (ok, text) = run(&["add", OWNER, "--account", "acme", "--peer", &peer])?;
    ensure!(ok, "{text}");
    scrape_until(&gateway, &[(PENDING, 1.0), (VERIFIED, 0.0)])?;

    let (ok, text) = run(&["verify", OWNER, "--method", "message"])?;
    ensure!(ok, "{text}");
    scrape_until(&gateway, &[(STARTED, 1.0)])?;
    // The code, from the body of the MESSAGE the trunk received.
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        let log = std::fs::read_to_string(&messages).unwrap_or_default();
        let code: String = log
            .split("MESSAGE sip:")
            .nth(1)
            .and_then(|m| m.split("verification code is ").nth(1))
            .map(|rest| rest.chars().take_while(char::is_ascii_digit).collect())
            .unwrap_or_default();
        if code.len() >= 4 {
            break code;
        }
        ensure!(Instant::now() < deadline, "no code in the MESSAGE:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let (ok, text) = run(&["verify", OWNER, "--code", &altered(&code)])?;
    ensure!(!ok, "a wrong code was accepted: {text}");
    scrape_until(&gateway, &[(WRONG, 1.0), (OK, 0.0)])?;
    let (ok, text) = run(&["verify", OWNER, "--code", &code])?;
    ensure!(ok, "the right code was refused: {text}");
    wait_in_map(&pin_dir, OWNER, true, Duration::from_secs(1))?;
    // The one change that altered ROUTES was timed from its commit.
    scrape_until(
        &gateway,
        &[
            (OK, 1.0),
            (WRONG, 1.0),
            (PENDING, 0.0),
            (VERIFIED, 1.0),
            (UPDATES, 1.0),
        ],
    )?;

    // Requests the proxy answers itself (Max-Forwards 0: 483) are timed, as requests.
    let me = SocketAddr::new(CALLER_V4.into(), 5099);
    let socket = topology.udp_socket(Host::Caller, me)?;
    socket.set_read_timeout(Some(Duration::from_secs(3)))?;
    const ASKED: u32 = 3;
    for i in 0..ASKED {
        let request = format!(
            "INVITE sip:{ROGUE}@{GW_CALLER_V4} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {me};branch=z9hG4bK-metrics-{i}\r\n\
             Max-Forwards: 0\r\n\
             From: <sip:caller@{me}>;tag=t{i}\r\n\
             To: <sip:{ROGUE}@{GW_CALLER_V4}>\r\n\
             Call-ID: metrics-{i}@test\r\n\
             CSeq: 1 INVITE\r\n\
             Content-Length: 0\r\n\r\n"
        );
        socket.send_to(request.as_bytes(), gw_sip)?;
        let mut buf = [0u8; 4096];
        let n = socket.recv(&mut buf).context("no answer from the proxy")?;
        let answer = String::from_utf8_lossy(&buf[..n]);
        ensure!(answer.starts_with("SIP/2.0 483 "), "{answer}");
    }
    let last = scrape_until(&gateway, &[(REQUESTS, f64::from(ASKED)), (RESPONSES, 0.0)])?;
    fastpath_tests::promtool_check_metrics(&last)?;

    gateway.stop()?;
    let _ = trunk.stop();
    Ok(())
}
