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

/// One key set from outside the file: `xdp.sip_ports=[5060,5080]`, `api.listen=127.0.0.1:8080`,
/// `peers.0.address=198.51.100.9:5060`. The value is TOML, or else taken as a string.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    path: Vec<String>,
    value: toml::Value,
}

impl std::str::FromStr for Override {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Self> {
        let (key, value) = text
            .split_once('=')
            .with_context(|| format!("'{text}': expected KEY=VALUE, e.g. xdp.sip_ports=[5060]"))?;
        let path: Vec<String> = key.trim().split('.').map(str::to_owned).collect();
        if path.iter().any(String::is_empty) {
            bail!("'{key}': not a key like section.name");
        }
        let value = value.trim();
        let value = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.to_owned()));
        Ok(Self { path, value })
    }
}

impl Override {
    /// `FASTPATH__XDP__SIP_PORTS=[5060]` and the like, in name order.
    pub fn from_env() -> anyhow::Result<Vec<Self>> {
        let mut vars: Vec<(String, String)> = std::env::vars()
            .filter_map(|(k, v)| Some((k.strip_prefix("FASTPATH__")?.to_owned(), v)))
            .collect();
        vars.sort();
        vars.into_iter()
            .map(|(k, v)| format!("{}={v}", k.to_lowercase().replace("__", ".")).parse())
            .collect()
    }

    fn apply(&self, table: &mut toml::Table) -> anyhow::Result<()> {
        let key = self.path.join(".");
        let (last, parents) = self.path.split_last().context("empty key")?;
        if last.parse::<usize>().is_ok() {
            bail!("{key}: set a key of the element, like {key}.address");
        }
        let mut here = table;
        let mut parts = parents.iter().peekable();
        while let Some(part) = parts.next() {
            let entry = here
                .entry(part.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            // A numeric part picks an element of an array of tables (`peers.0.address`).
            let index = parts.peek().and_then(|p| p.parse::<usize>().ok());
            here = match (entry, index) {
                (toml::Value::Table(t), None) => t,
                (toml::Value::Array(items), Some(index)) => {
                    parts.next();
                    match items.get_mut(index) {
                        Some(toml::Value::Table(t)) => t,
                        _ => bail!("{key}: no element {index} in {part}"),
                    }
                }
                _ => bail!("{key}: {part} is not a section"),
            };
        }
        here.insert(last.clone(), self.value.clone());
        Ok(())
    }
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
        Self::load_with(path, &[])
    }

    /// The file at `path`, with `FASTPATH__SECTION__KEY` environment variables and then
    /// `overrides` (from `--set`) applied over it: any key can be set either way.
    pub fn load_with(path: &Path, overrides: &[Override]) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        let mut all = Override::from_env()?;
        all.extend_from_slice(overrides);
        Self::parse_with(&text, &all).with_context(|| format!("invalid config {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        Self::parse_with(text, &[])
    }

    /// [`Config::parse`] with `overrides` applied to the file before it is read.
    pub fn parse_with(text: &str, overrides: &[Override]) -> anyhow::Result<Self> {
        let mut table: toml::Table = text.parse()?;
        for o in overrides {
            o.apply(&mut table)?;
        }
        let file: File = toml::Value::Table(table).try_into()?;
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
    fn any_key_can_be_set_from_outside_the_file() {
        let set = |o: &[&str]| {
            let o: Vec<Override> = o.iter().map(|t| t.parse().unwrap()).collect();
            Config::parse_with(GOOD, &o)
        };
        let config = set(&[
            "xdp.sip_ports=[5070]",
            "xdp.local_only=false",
            "peers.1.address=[2001:db8:e::9]:5060",
            "metrics.listen=127.0.0.1:9999",
            "registry.path=/var/lib/fastpath/r.db",
            "api.listen=127.0.0.1:8081",
        ])
        .unwrap();
        assert_eq!(config.sip_ports, [5070]);
        assert!(!config.local_only);
        assert_eq!(
            config.peers[1].address,
            "[2001:db8:e::9]:5060".parse().unwrap()
        );
        assert_eq!(
            config.metrics_listen,
            Some("127.0.0.1:9999".parse().unwrap())
        );
        assert_eq!(config.api.unwrap().listen.port(), 8081);
        // Bad overrides name their key.
        for (o, key) in [
            ("xdp.sip_ports=[0]", "xdp.sip_ports"),
            ("peers.7.address=1.2.3.4:5", "peers.7"),
            ("xdp.max_routes=many", "max_routes"),
            ("xdp.sip_ports.0=1", "xdp.sip_ports.0"),
        ] {
            let error = format!("{:#}", set(&[o]).unwrap_err());
            assert!(error.contains(key), "{o}: {error}");
        }
        assert!("no-equals-sign".parse::<Override>().is_err());
        assert!("a..b=1".parse::<Override>().is_err());
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
            (
                "[proxy]\ntcp_max_connections = 0",
                "proxy.tcp_max_connections",
            ),
            (
                "[proxy]\ntcp_max_connections = 10\ntcp_max_connections_per_ip = 11",
                "proxy.tcp_max_connections_per_ip",
            ),
            (
                "[proxy]\ntcp_idle_timeout_ms = 5",
                "proxy.tcp_idle_timeout_ms",
            ),
            (
                "[proxy]\ntcp_connect_timeout_ms = 0",
                "proxy.tcp_connect_timeout_ms",
            ),
            ("[proxy]\ntcp = \"yes\"", "tcp"),
            (
                "[proxy]\ntcp = false\n[[trunks]]\nname = \"t\"\naddress = \"203.0.113.2:5060\"\ntransport = \"tcp\"",
                "trunks[0].transport",
            ),
            (
                "[[trunks]]\nname = \"t\"\naddress = \"203.0.113.2:5060\"\ntransport = \"sctp\"",
                "transport",
            ),
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
