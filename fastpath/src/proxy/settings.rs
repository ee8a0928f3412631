//! The `[proxy]`, `[health]` and `[[trunks]]` sections of the configuration file.

use std::{net::SocketAddr, time::Duration};

use anyhow::{bail, ensure};
use serde::Deserialize;

use super::core::Transport;

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
    /// Also listen on TCP at every `listen` address (RFC 3261 §18).
    #[serde(default = "yes")]
    tcp: bool,
    /// Open TCP connections, inbound and outbound together.
    #[serde(default = "default_tcp_max_connections")]
    tcp_max_connections: usize,
    /// Open TCP connections from one remote address.
    #[serde(default = "default_tcp_max_connections_per_ip")]
    tcp_max_connections_per_ip: usize,
    /// A connection that carries no whole message (or keep-alive) for this long is closed.
    #[serde(default = "default_tcp_idle_timeout_ms")]
    tcp_idle_timeout_ms: u64,
    /// How long opening a connection to a next hop may take before it counts as a failure.
    #[serde(default = "default_tcp_connect_timeout_ms")]
    tcp_connect_timeout_ms: u64,
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
            tcp: true,
            tcp_max_connections: default_tcp_max_connections(),
            tcp_max_connections_per_ip: default_tcp_max_connections_per_ip(),
            tcp_idle_timeout_ms: default_tcp_idle_timeout_ms(),
            tcp_connect_timeout_ms: default_tcp_connect_timeout_ms(),
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
    /// `udp` or `tcp`: how requests reach this trunk.
    #[serde(default)]
    transport: TransportName,
}

#[derive(Debug, Default, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum TransportName {
    #[default]
    Udp,
    Tcp,
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
fn default_tcp_max_connections() -> usize {
    1024
}
fn default_tcp_max_connections_per_ip() -> usize {
    64
}
fn default_tcp_idle_timeout_ms() -> u64 {
    120_000
}
fn default_tcp_connect_timeout_ms() -> u64 {
    2000
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
    pub transport: Transport,
}

/// How the proxy serves TCP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpConfig {
    pub enabled: bool,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
}

impl Default for TcpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_connections: default_tcp_max_connections(),
            max_connections_per_ip: default_tcp_max_connections_per_ip(),
            idle_timeout: Duration::from_millis(default_tcp_idle_timeout_ms()),
            connect_timeout: Duration::from_millis(default_tcp_connect_timeout_ms()),
        }
    }
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
    pub tcp: TcpConfig,
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
            .map(|t| match t.transport {
                Transport::Udp => format!("{} {}", t.name, t.address),
                Transport::Tcp => format!("{} {} over TCP", t.name, t.address),
            })
            .collect();
        let transports = if self.tcp.enabled {
            format!(
                "UDP and TCP (at most {} connections, {} per address)",
                self.tcp.max_connections, self.tcp.max_connections_per_ip
            )
        } else {
            "UDP".into()
        };
        format!(
            "on {} over {transports}, {} workers, trunks [{}]",
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
        ensure!(
            proxy.tcp_max_connections >= 1,
            "proxy.tcp_max_connections: at least 1"
        );
        ensure!(
            (1..=proxy.tcp_max_connections).contains(&proxy.tcp_max_connections_per_ip),
            "proxy.tcp_max_connections_per_ip: between 1 and proxy.tcp_max_connections"
        );
        ensure!(
            proxy.tcp_idle_timeout_ms >= 100,
            "proxy.tcp_idle_timeout_ms: at least 100"
        );
        ensure!(
            proxy.tcp_connect_timeout_ms >= 10,
            "proxy.tcp_connect_timeout_ms: at least 10"
        );
        ensure!(health.interval_ms >= 10, "health.interval_ms: at least 10");
        ensure!(health.misses >= 1, "health.misses: at least 1");
        let mut out = Vec::with_capacity(trunks.len());
        for (i, t) in trunks.into_iter().enumerate() {
            ensure!(t.address.port() != 0, "trunks[{i}].address: port 0");
            ensure!(t.weight >= 1, "trunks[{i}].weight: at least 1");
            let transport = match t.transport {
                TransportName::Udp => Transport::Udp,
                TransportName::Tcp => Transport::Tcp,
            };
            ensure!(
                proxy.tcp || transport == Transport::Udp,
                "trunks[{i}].transport: tcp, but proxy.tcp is false"
            );
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
                transport,
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
            tcp: TcpConfig {
                enabled: proxy.tcp,
                max_connections: proxy.tcp_max_connections,
                max_connections_per_ip: proxy.tcp_max_connections_per_ip,
                idle_timeout: Duration::from_millis(proxy.tcp_idle_timeout_ms),
                connect_timeout: Duration::from_millis(proxy.tcp_connect_timeout_ms),
            },
        })
    }
}
