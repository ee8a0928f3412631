//! The daemon's configuration file (TOML), validated into what the maps need.

use std::{collections::HashMap, net::SocketAddr, path::Path};

use anyhow::{Context, bail};
use fastpath_common::{
    RouteKey,
    maps::{DEFAULT_MAX_ROUTES, DEFAULT_SIP_PORT, MAX_PEERS, MAX_SIP_PORTS},
    normalize_number,
};
use serde::Deserialize;

/// As written by the operator.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    xdp: XdpSection,
    #[serde(default)]
    peers: Vec<PeerEntry>,
    #[serde(default)]
    routes: Vec<RouteEntry>,
    #[serde(default)]
    proxy: crate::proxy::settings::ProxySection,
    #[serde(default)]
    health: crate::proxy::settings::HealthSection,
    #[serde(default)]
    trunks: Vec<crate::proxy::settings::TrunkEntry>,
    #[serde(default)]
    verification: Option<VerificationSection>,
    registry: Option<RegistrySection>,
    api: Option<ApiSection>,
    #[serde(default)]
    metrics: MetricsSection,
}

/// `[metrics]`: where Prometheus scrapes `/metrics`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsSection {
    /// `"off"` turns the endpoint off.
    #[serde(default = "default_metrics_listen")]
    listen: String,
}

impl Default for MetricsSection {
    fn default() -> Self {
        Self {
            listen: default_metrics_listen(),
        }
    }
}

fn default_metrics_listen() -> String {
    "127.0.0.1:9477".into()
}

/// Ownership verification over the carrier trunk (optional).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VerificationSection {
    trunk: SocketAddr,
    number: String,
    local: SocketAddr,
    /// Where the carrier delivers calls to `number` (missed-call verification).
    #[serde(default)]
    missed_call_listen: Option<SocketAddr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistrySection {
    path: std::path::PathBuf,
    verified_ttl: Option<String>,
    reconcile_interval: Option<String>,
    missed_call_number: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiSection {
    #[serde(default = "default_api_listen")]
    listen: SocketAddr,
    token: Option<String>,
}

fn default_api_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

/// `[registry]`: the number registry and its sync into the fast path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    pub path: std::path::PathBuf,
    /// How long a verification holds (default 90 days).
    pub verified_ttl: std::time::Duration,
    /// How often the sync compares the map with the registry (default 60 s).
    pub reconcile_interval: std::time::Duration,
    /// The number owners call for missed-call verification, E.164 digits.
    pub missed_call_number: Option<String>,
}

/// `[api]`: the enrollment and admin HTTP API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    /// Bearer token; `FASTPATH_API_TOKEN` is used when absent.
    pub token: Option<String>,
}

fn duration(
    key: &str,
    text: Option<&str>,
    default: std::time::Duration,
) -> anyhow::Result<std::time::Duration> {
    let Some(text) = text else { return Ok(default) };
    let d = humantime::parse_duration(text).map_err(|e| {
        anyhow::anyhow!("{key}: '{text}' is not a duration like \"90d\" or \"30s\": {e}")
    })?;
    if d.is_zero() {
        bail!("{key}: must be longer than zero");
    }
    Ok(d)
}

impl RegistrySection {
    fn validate(self) -> anyhow::Result<RegistryConfig> {
        let missed_call_number = self
            .missed_call_number
            .map(|n| crate::registry::number::parse_e164(&n))
            .transpose()
            .map_err(|e| anyhow::anyhow!("registry.missed_call_number: {e}"))?;
        Ok(RegistryConfig {
            path: self.path,
            verified_ttl: duration(
                "registry.verified_ttl",
                self.verified_ttl.as_deref(),
                std::time::Duration::from_secs(90 * 24 * 3600),
            )?,
            reconcile_interval: duration(
                "registry.reconcile_interval",
                self.reconcile_interval.as_deref(),
                std::time::Duration::from_secs(60),
            )?,
            missed_call_number,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct XdpSection {
    #[serde(default = "default_ports")]
    sip_ports: Vec<u16>,
    #[serde(default = "default_max_routes")]
    max_routes: u32,
    /// Take only requests addressed to the gateway's own addresses; `false` also redirects
    /// transit SIP crossing the box (a bump-in-the-wire deployment).
    #[serde(default = "yes")]
    local_only: bool,
}

impl Default for XdpSection {
    fn default() -> Self {
        Self {
            sip_ports: default_ports(),
            max_routes: default_max_routes(),
            local_only: true,
        }
    }
}

fn yes() -> bool {
    true
}

fn default_ports() -> Vec<u16> {
    vec![DEFAULT_SIP_PORT]
}

fn default_max_routes() -> u32 {
    DEFAULT_MAX_ROUTES
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PeerEntry {
    name: String,
    address: SocketAddr,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteEntry {
    number: String,
    peer: String,
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub sip_ports: Vec<u16>,
    pub max_routes: u32,
    /// See `[xdp] local_only`.
    pub local_only: bool,
    /// Peer id (index into `PEERS`) is the position in this list.
    pub peers: Vec<Peer>,
    pub routes: Vec<Route>,
    /// The userspace proxy: its addresses, the standard route's trunks, peer health.
    pub proxy: crate::proxy::settings::ProxyConfig,
    pub verification: Option<Verification>,
    pub registry: Option<RegistryConfig>,
    pub api: Option<ApiConfig>,
    /// Where `/metrics` is served (`[metrics] listen`), unless turned off.
    pub metrics_listen: Option<SocketAddr>,
}

/// Where verification codes go out and missed calls come in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// The carrier's SIP trunk; missed calls are trusted from its address only.
    pub trunk: SocketAddr,
    /// The number owners call for a missed-call verification.
    pub number: RouteKey,
    /// The verification UAC's own address (goes into Via, Contact and SDP).
    pub local: SocketAddr,
    /// Where the carrier delivers calls to `number`; they are declined and verify the
    /// caller's number. `None`: no missed-call verification.
    pub missed_call_listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    pub address: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub number: String,
    pub key: RouteKey,
    pub peer_id: u32,
}

impl Config {
    /// What the daemon would set up, one line per part (for `fastpath check-config`).
    pub fn summary(&self) -> String {
        let mut out = format!(
            "xdp: SIP ports {:?}, room for {} routes, {}\n",
            self.sip_ports,
            self.max_routes,
            if self.local_only {
                "requests to the gateway's own addresses only"
            } else {
                "transit requests too"
            }
        );
        out += &format!(
            "static routes: {} to {} peers\n",
            self.routes.len(),
            self.peers.len()
        );
        for peer in &self.peers {
            out += &format!("  peer {} at {}\n", peer.name, peer.address);
        }
        out += &format!("proxy: {}\n", self.proxy.summary());
        if let Some(registry) = &self.registry {
            out += &format!("registry: {}\n", registry.path.display());
        }
        if let Some(api) = &self.api {
            out += &format!("api: {}\n", api.listen);
        }
        if let Some(v) = &self.verification {
            out += &format!("verification: trunk {}, from {}", v.trunk, v.local);
            if let Some(listen) = v.missed_call_listen {
                out += &format!(", missed calls on {listen}");
            }
            out += "\n";
        }
        match self.metrics_listen {
            Some(listen) => out += &format!("metrics: http://{listen}/metrics\n"),
            None => out += "metrics: off\n",
        }
        out
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid config {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let file: File = toml::from_str(text)?;
        let ports = file.xdp.sip_ports;
        if ports.is_empty() || ports.len() > MAX_SIP_PORTS {
            bail!(
                "xdp.sip_ports: between 1 and {MAX_SIP_PORTS} ports, got {}",
                ports.len()
            );
        }
        if ports.contains(&0) {
            bail!("xdp.sip_ports: port 0 is not a port");
        }
        if file.xdp.max_routes == 0 {
            bail!("xdp.max_routes: must be at least 1");
        }
        if file.peers.len() > MAX_PEERS as usize {
            bail!("peers: at most {MAX_PEERS} peers, got {}", file.peers.len());
        }
        let mut peer_ids = HashMap::new();
        for (id, peer) in file.peers.iter().enumerate() {
            if peer.address.port() == 0 {
                bail!("peers[{id}].address: port 0 for peer '{}'", peer.name);
            }
            if peer_ids.insert(peer.name.as_str(), id as u32).is_some() {
                bail!("peers[{id}].name: duplicate peer '{}'", peer.name);
            }
        }
        let mut seen = HashMap::new();
        let mut routes = Vec::with_capacity(file.routes.len());
        for (i, route) in file.routes.iter().enumerate() {
            let key = normalize_number(route.number.as_bytes())
                .map_err(|e| anyhow::anyhow!("routes[{i}].number '{}': {e}", route.number))?;
            let Some(&peer_id) = peer_ids.get(route.peer.as_str()) else {
                bail!("routes[{i}].peer: no peer named '{}'", route.peer);
            };
            if let Some(first) = seen.insert(key, i) {
                bail!(
                    "routes[{i}].number '{}': same number as routes[{first}]",
                    route.number
                );
            }
            routes.push(Route {
                number: route.number.clone(),
                key,
                peer_id,
            });
        }
        if routes.len() > file.xdp.max_routes as usize {
            bail!(
                "routes: {} routes exceed xdp.max_routes = {}",
                routes.len(),
                file.xdp.max_routes
            );
        }
        let proxy =
            crate::proxy::settings::ProxyConfig::validate(file.proxy, file.health, file.trunks)?;
        let verification = file.verification.map(verification).transpose()?;
        let peers = file
            .peers
            .into_iter()
            .map(|p| Peer {
                name: p.name,
                address: p.address,
            })
            .collect();
        let registry = file.registry.map(RegistrySection::validate).transpose()?;
        let metrics_listen = match file.metrics.listen.as_str() {
            "off" => None,
            text => Some(text.parse().map_err(|_| {
                anyhow::anyhow!("metrics.listen: '{text}' is neither an address:port nor \"off\"")
            })?),
        };
        let api = file.api.map(|a| ApiConfig {
            listen: a.listen,
            token: a.token,
        });
        if api.is_some() && registry.is_none() {
            bail!("api: needs a [registry] section (the API manages the registry)");
        }
        Ok(Self {
            sip_ports: ports,
            max_routes: file.xdp.max_routes,
            local_only: file.xdp.local_only,
            peers,
            routes,
            proxy,
            verification,
            registry,
            api,
            metrics_listen,
        })
    }
}

fn verification(section: VerificationSection) -> anyhow::Result<Verification> {
    let number = normalize_number(section.number.as_bytes())
        .map_err(|e| anyhow::anyhow!("verification.number '{}': {e}", section.number))?;
    if section.trunk.port() == 0 || section.trunk.ip().is_unspecified() {
        bail!(
            "verification.trunk: {} is not a trunk address",
            section.trunk
        );
    }
    if section.local.port() == 0 || section.local.ip().is_unspecified() {
        bail!(
            "verification.local: {} must be a specific address and port (it goes into SIP headers)",
            section.local
        );
    }
    if let Some(listen) = section.missed_call_listen
        && (listen.port() == 0 || listen == section.local)
    {
        bail!(
            "verification.missed_call_listen: {listen} needs a port of its own (not verification.local's)"
        );
    }
    Ok(Verification {
        trunk: section.trunk,
        number,
        local: section.local,
        missed_call_listen: section.missed_call_listen,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [xdp]
        sip_ports = [5060, 5080]

        [[peers]]
        name = "alice-pbx"
        address = "198.51.100.2:5060"

        [[peers]]
        name = "v6-pbx"
        address = "[2001:db8:e::2]:5060"

        [[routes]]
        number = "+1 555 010 0001"
        peer = "alice-pbx"

        [[routes]]
        number = "0044 20 7946 0000"
        peer = "v6-pbx"
    "#;

    #[test]
    fn parses_a_full_config() {
        let config = Config::parse(GOOD).unwrap();
        assert_eq!(config.sip_ports, [5060, 5080]);
        assert_eq!(config.max_routes, DEFAULT_MAX_ROUTES);
        assert_eq!(config.peers.len(), 2);
        assert_eq!(
            config.routes[0].key,
            normalize_number(b"15550100001").unwrap()
        );
        assert_eq!(config.routes[1].peer_id, 1);
    }

    #[test]
    fn parses_the_verification_section() {
        let config = Config::parse(
            "[verification]\ntrunk = \"203.0.113.2:5060\"\nnumber = \"+1 555 010 9000\"\n\
             local = \"203.0.113.1:5070\"\n",
        )
        .unwrap();
        let v = config.verification.unwrap();
        assert_eq!(v.trunk, "203.0.113.2:5060".parse().unwrap());
        assert_eq!(v.number, normalize_number(b"15550109000").unwrap());
        assert_eq!(v.local, "203.0.113.1:5070".parse().unwrap());
        assert_eq!(Config::parse(GOOD).unwrap().verification, None);
    }

    #[test]
    fn registry_and_api_sections() {
        let config = Config::parse(
            "[registry]\npath = \"/var/lib/fastpath/registry.db\"\nverified_ttl = \"30d\"\n\
             [api]\nlisten = \"127.0.0.1:9090\"\ntoken = \"s3cret\"\n",
        )
        .unwrap();
        let registry = config.registry.unwrap();
        assert_eq!(registry.verified_ttl.as_secs(), 30 * 24 * 3600);
        assert_eq!(registry.reconcile_interval.as_secs(), 60);
        let api = config.api.unwrap();
        assert_eq!(api.listen.port(), 9090);
        assert_eq!(api.token.as_deref(), Some("s3cret"));
        assert!(Config::parse("").unwrap().registry.is_none());
    }

    #[test]
    fn empty_file_means_defaults() {
        let config = Config::parse("").unwrap();
        assert_eq!(config.sip_ports, [DEFAULT_SIP_PORT]);
        assert!(config.routes.is_empty());
        assert!(
            config.proxy.listen.is_empty(),
            "no [proxy]: the proxy is off"
        );
        assert_eq!(config.proxy.trunk_timeout.as_millis(), 2000);
        assert!(config.proxy.health.enabled);
    }

    fn error_of(text: &str) -> String {
        format!("{:#}", Config::parse(text).unwrap_err())
    }

    #[test]
    fn errors_name_the_key() {
        let peer = "[[peers]]\nname = \"p\"\naddress = \"198.51.100.2:5060\"\n";
        let cases = [
            ("[xdp]\nsip_ports = []", "xdp.sip_ports"),
            ("[xdp]\nsip_ports = [0]", "xdp.sip_ports"),
            ("[xdp]\nmax_routes = 0", "xdp.max_routes"),
            (
                "[[routes]]\nnumber = \"1\"\npeer = \"nobody\"",
                "routes[0].peer",
            ),
            (
                &format!("{peer}[[routes]]\nnumber = \"alice\"\npeer = \"p\""),
                "routes[0].number",
            ),
            (&format!("{peer}{peer}"), "peers[1].name"),
            (
                &format!(
                    "{peer}[[routes]]\nnumber=\"+1\"\npeer=\"p\"\n[[routes]]\nnumber=\"1\"\npeer=\"p\""
                ),
                "routes[1].number",
            ),
            (
                "[[peers]]\nname = \"p\"\naddress = \"not an address\"",
                "address",
            ),
            ("bogus = 1", "bogus"),
            ("[proxy]\nlisten = [\"0.0.0.0:5060\"]", "proxy.listen[0]"),
            ("[proxy]\nworkers = 0", "proxy.workers"),
            ("[health]\nmisses = 0", "health.misses"),
            (
                "[[trunks]]\nname = \"t\"\naddress = \"203.0.113.2:5060\"\nweight = 0",
                "trunks[0].weight",
            ),
            (
                "[[trunks]]\nname = \"t\"\naddress = \"203.0.113.2:5060\"\n[[trunks]]\nname = \"t\"\naddress = \"203.0.113.3:5060\"",
                "trunks[1].name",
            ),
            (
                "[verification]\ntrunk = \"203.0.113.2:5060\"\nnumber = \"x\"\nlocal = \"203.0.113.1:5070\"",
                "verification.number",
            ),
            (
                "[verification]\ntrunk = \"203.0.113.2:5060\"\nnumber = \"1\"\nlocal = \"0.0.0.0:5070\"",
                "verification.local",
            ),
            (
                "[verification]\ntrunk = \"203.0.113.2:0\"\nnumber = \"1\"\nlocal = \"203.0.113.1:5070\"",
                "verification.trunk",
            ),
            ("[verification]\ntrunk = \"203.0.113.2:5060\"", "number"),
            (
                "[registry]\npath = \"r.db\"\nverified_ttl = \"soon\"",
                "registry.verified_ttl",
            ),
            (
                "[registry]\npath = \"r.db\"\nreconcile_interval = \"0s\"",
                "registry.reconcile_interval",
            ),
            (
                "[registry]\npath = \"r.db\"\nmissed_call_number = \"x\"",
                "registry.missed_call_number",
            ),
            ("[api]\ntoken = \"t\"", "api"),
            ("[metrics]\nlisten = \"9100\"", "metrics.listen"),
            (
                "[registry]\npath = \"r.db\"\n[api]\nlisten = \"nowhere\"",
                "listen",
            ),
        ];
        for (text, key) in cases {
            let error = error_of(text);
            assert!(
                error.contains(key),
                "{text:?}: error {error:?} does not name {key}"
            );
        }
    }
}
