//! The `[proxy]`, `[health]` and `[[trunks]]` sections of the configuration file.

use std::{net::SocketAddr, time::Duration};

use anyhow::{bail, ensure};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySection {
    /// The gateway's own SIP addresses; the proxy answers on each and names it in its Via.
    #[serde(default)]
    listen: Vec<SocketAddr>,
    /// Threads (one socket each per address, SO_REUSEPORT); default: one per core.
    workers: Option<usize>,
    /// An INVITE to a trunk unanswered this long takes the trunk out.
    #[serde(default = "default_trunk_timeout_ms")]
    trunk_timeout_ms: u64,
    /// First back-off before a failed trunk is tried again; doubles per failure.
    #[serde(default = "default_trunk_retry_ms")]
    trunk_retry_ms: u64,
    #[serde(default = "default_trunk_retry_max_ms")]
    trunk_retry_max_ms: u64,
}

/// No `[proxy]` section: the proxy is off, with the same defaults as an empty one.
impl Default for ProxySection {
    fn default() -> Self {
        Self {
            listen: Vec::new(),
            workers: None,
            trunk_timeout_ms: default_trunk_timeout_ms(),
            trunk_retry_ms: default_trunk_retry_ms(),
            trunk_retry_max_ms: default_trunk_retry_max_ms(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSection {
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default = "default_interval_ms")]
    interval_ms: u64,
    /// Consecutive unanswered pings (or 5xx to calls) that take a peer down.
    #[serde(default = "default_misses")]
    misses: u32,
}

impl Default for HealthSection {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_ms: default_interval_ms(),
            misses: default_misses(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkEntry {
    name: String,
    address: SocketAddr,
    /// Lower is preferred; trunks of the next priority only take over when all of these
    /// are down.
    #[serde(default)]
    priority: u32,
    /// Share of calls among trunks of the same priority.
    #[serde(default = "one")]
    weight: u32,
}

fn yes() -> bool {
    true
}
fn one() -> u32 {
    1
}
fn default_trunk_timeout_ms() -> u64 {
    2000
}
fn default_trunk_retry_ms() -> u64 {
    5000
}
fn default_trunk_retry_max_ms() -> u64 {
    60_000
}
fn default_interval_ms() -> u64 {
    1000
}
fn default_misses() -> u32 {
    3
}

/// A carrier SIP trunk: the standard route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trunk {
    pub name: String,
    pub address: SocketAddr,
    pub priority: u32,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    pub enabled: bool,
    pub interval: Duration,
    pub misses: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    pub listen: Vec<SocketAddr>,
    pub workers: usize,
    pub trunks: Vec<Trunk>,
    pub trunk_timeout: Duration,
    pub trunk_retry: Duration,
    pub trunk_retry_max: Duration,
    pub health: HealthConfig,
}

impl ProxyConfig {
    /// One line for `fastpath check-config`.
    pub fn summary(&self) -> String {
        if self.listen.is_empty() {
            return "off (no [proxy] listen addresses)".into();
        }
        let listen: Vec<String> = self.listen.iter().map(ToString::to_string).collect();
        let trunks: Vec<String> = self
            .trunks
            .iter()
            .map(|t| format!("{} {}", t.name, t.address))
            .collect();
        format!(
            "on {}, {} workers, trunks [{}]",
            listen.join(" "),
            self.workers,
            trunks.join(", ")
        )
    }

    pub fn validate(
        proxy: ProxySection,
        health: HealthSection,
        trunks: Vec<TrunkEntry>,
    ) -> anyhow::Result<Self> {
        for (i, addr) in proxy.listen.iter().enumerate() {
            ensure!(addr.port() != 0, "proxy.listen[{i}]: port 0");
            ensure!(
                !addr.ip().is_unspecified(),
                "proxy.listen[{i}]: {addr} is a wildcard; name the address the proxy puts in its Via"
            );
        }
        let workers = match proxy.workers {
            Some(0) => bail!("proxy.workers: at least 1"),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        ensure!(
            proxy.trunk_timeout_ms > 0 && proxy.trunk_retry_ms > 0,
            "proxy.trunk_timeout_ms and proxy.trunk_retry_ms: at least 1"
        );
        ensure!(
            proxy.trunk_retry_max_ms >= proxy.trunk_retry_ms,
            "proxy.trunk_retry_max_ms: at least proxy.trunk_retry_ms"
        );
        ensure!(health.interval_ms >= 10, "health.interval_ms: at least 10");
        ensure!(health.misses >= 1, "health.misses: at least 1");
        let mut out = Vec::with_capacity(trunks.len());
        for (i, t) in trunks.into_iter().enumerate() {
            ensure!(t.address.port() != 0, "trunks[{i}].address: port 0");
            ensure!(t.weight >= 1, "trunks[{i}].weight: at least 1");
            ensure!(
                !out.iter().any(|o: &Trunk| o.name == t.name),
                "trunks[{i}].name: duplicate trunk '{}'",
                t.name
            );
            out.push(Trunk {
                name: t.name,
                address: t.address,
                priority: t.priority,
                weight: t.weight,
            });
        }
        Ok(Self {
            listen: proxy.listen,
            workers,
            trunks: out,
            trunk_timeout: Duration::from_millis(proxy.trunk_timeout_ms),
            trunk_retry: Duration::from_millis(proxy.trunk_retry_ms),
            trunk_retry_max: Duration::from_millis(proxy.trunk_retry_max_ms),
            health: HealthConfig {
                enabled: health.enabled,
                interval: Duration::from_millis(health.interval_ms),
                misses: health.misses,
            },
        })
    }
}
