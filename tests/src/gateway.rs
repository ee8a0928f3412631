//! The fastpath daemon running in a topology's gateway namespace.
//!
//! It is entered with `nsenter --net` rather than `ip netns exec`: the latter mounts a
//! fresh /sys, which hides /sys/fs/bpf and with it the pinned maps that `fastpath stats`
//! must see.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{ChildGuard, Host, Iface, Topology, netns::run};

/// A running `fastpath run` attached to the gateway's three interfaces. Dropping it stops
/// the daemon (SIGTERM, which detaches the program) and removes its pin directory.
pub struct Gateway {
    daemon: ChildGuard,
    binary: PathBuf,
    netns: PathBuf,
    pin_dir: PathBuf,
    log: PathBuf,
    keep_pins: bool,
    /// Started with `--keep-attached`: a clean stop leaves its links and maps to adopt.
    keep_attached: bool,
    _dir: tempfile::TempDir,
}

impl Gateway {
    /// Starts `binary run` with `config` (TOML) on fresh maps and waits until it runs.
    pub fn start(topology: &Topology, binary: &Path, config: &str) -> Result<Self> {
        Self::start_with(topology, binary, config, &[], true)
    }

    /// As [`Gateway::start`] with extra `run` arguments; `fresh` removes maps and links
    /// pinned by an earlier daemon, otherwise the new daemon adopts them.
    pub fn start_with(
        topology: &Topology,
        binary: &Path,
        config: &str,
        extra: &[&str],
        fresh: bool,
    ) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let config_path = dir.path().join("fastpath.toml");
        fs::write(&config_path, config)?;
        let log = dir.path().join("fastpath.log");
        let netns = PathBuf::from(format!("/run/netns/{}", topology.ns_name(Host::Gateway)));
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/fastpath-test-{}", topology.prefix()));
        if fresh {
            let _ = fs::remove_dir_all(&pin_dir);
        }
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", netns.display()))
            .arg(binary)
            .arg("run");
        for iface in [Iface::GwCaller, Iface::GwPeer, Iface::GwCarrier] {
            cmd.arg("--iface").arg(topology.ifname(iface));
        }
        cmd.arg("--config")
            .arg(&config_path)
            .arg("--pin-dir")
            .arg(&pin_dir)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.path().join("stdout"))?)
            .stderr(fs::File::create(&log)?);
        let daemon = ChildGuard::spawn(&mut cmd)?.with_grace(Duration::from_secs(5));
        let mut gateway = Gateway {
            daemon,
            binary: binary.into(),
            netns,
            pin_dir,
            log,
            keep_pins: false,
            keep_attached: extra.contains(&"--keep-attached"),
            _dir: dir,
        };
        gateway.wait_running(Duration::from_secs(60))?;
        Ok(gateway)
    }

    fn wait_running(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let log = self.log_text();
            // "proxy running …" when the daemon runs without the XDP program.
            if log.contains("fast path running") || log.contains("proxy running") {
                return Ok(());
            }
            if let Some(status) = self.daemon.try_wait()? {
                bail!("fastpath exited with {status}:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "fastpath did not start within {timeout:?}:\n{}",
            self.log_text()
        )
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET path` from the daemon's HTTP endpoint at `addr` (inside the gateway namespace);
    /// the body of a 200 answer.
    pub fn http_get(&self, addr: std::net::SocketAddr, path: &str) -> Result<String> {
        use std::io::{Read, Write};
        let ns = self
            .netns
            .file_name()
            .and_then(|n| n.to_str())
            .context("namespace path")?;
        crate::netns::in_netns(ns, || {
            let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            stream.set_read_timeout(Some(Duration::from_secs(10)))?;
            write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer)?;
            let (head, body) = answer.split_once("\r\n\r\n").context("no end of headers")?;
            if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
                bail!("GET {path}: {head}");
            }
            Ok(body.to_string())
        })
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Writes `config` over the daemon's config file, sends SIGHUP and waits until the
    /// daemon has dealt with it: `Ok(true)` if it applied the file, `Ok(false)` if it
    /// refused it (and kept the running configuration).
    pub fn reload(&mut self, config: &str) -> Result<bool> {
        let count = |log: &str| {
            (
                log.matches("configuration reloaded").count(),
                log.matches("reload failed").count(),
            )
        };
        let before = count(&self.log_text());
        fs::write(self._dir.path().join("fastpath.toml"), config)?;
        self.daemon.signal(libc::SIGHUP)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let now = count(&self.log_text());
            if now.0 > before.0 {
                return Ok(true);
            }
            if now.1 > before.1 {
                return Ok(false);
            }
            if let Some(status) = self.daemon.try_wait()? {
                bail!(
                    "fastpath exited with {status} on SIGHUP:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("no reload within 20 s of SIGHUP:\n{}", self.log_text())
    }

    /// `fastpath COMMAND --pin-dir PIN_DIR ARGS…` in the gateway's namespace (with
    /// /sys/fs/bpf visible); what it printed, or an error if it failed.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let (command, rest) = args.split_first().context("no command")?;
        let out = run(Command::new("nsenter")
            .arg(format!("--net={}", self.netns.display()))
            .arg(&self.binary)
            .arg(command)
            .arg("--pin-dir")
            .arg(&self.pin_dir)
            .args(rest))?;
        Ok(String::from_utf8(out.stdout)?)
    }

    /// The XDP outcome counters (`fastpath stats --json`), by name.
    pub fn counters(&self) -> Result<HashMap<String, u64>> {
        let text = self.cli(&["stats", "--json"])?;
        serde_json::from_str(&text).with_context(|| format!("parsing stats {text:?}"))
    }

    /// One counter; a missing name is an error, not a zero.
    pub fn counter(&self, name: &str) -> Result<u64> {
        self.counters()?
            .get(name)
            .copied()
            .with_context(|| format!("no counter {name}"))
    }

    /// Stops the daemon and checks that it exited cleanly. A `--keep-attached` daemon's pin
    /// directory stays, with the links and maps the next daemon adopts; any other's goes
    /// (its `ROUTES` map alone holds kernel memory for a million routes).
    pub fn stop(mut self) -> Result<String> {
        self.keep_pins = self.keep_attached;
        let status = self.daemon.stop()?;
        let log = self.log_text();
        if !status.success() {
            bail!("fastpath exited with {status}:\n{log}");
        }
        Ok(log)
    }
}

impl Gateway {
    /// Kills the daemon with SIGKILL (a crash): nothing of it runs, and everything it
    /// pinned (program link, maps) stays for the next `fresh = false` start to adopt.
    pub fn kill(mut self) -> Result<()> {
        self.keep_pins = true;
        self.daemon.signal(libc::SIGKILL)?;
        self.daemon
            .wait_timeout(Duration::from_secs(10))?
            .context("fastpath survived SIGKILL")?;
        Ok(())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.daemon.stop();
        if !self.keep_pins {
            let _ = fs::remove_dir_all(&self.pin_dir);
        }
    }
}
