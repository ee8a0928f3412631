//! What only the running daemon knows, for `fastpath status`: the interfaces it attached
//! and how, peers and trunks with their health, the route table the proxy reads, and the
//! configuration reloads. Served as JSON at `GET /status` beside `/metrics`; the pinned
//! maps (counters, `ROUTES`) are read by the CLI itself, so they show even with the
//! daemon down.

use std::{
    path::PathBuf,
    sync::{Arc, atomic::Ordering::Relaxed},
};

use serde::{Deserialize, Serialize};

use crate::{
    proxy::trunks::{TrunkStatus, Trunks},
    reload::ReloadCounters,
    routing::RouteTable,
};

/// `GET /status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub version: String,
    pub config: PathBuf,
    /// Where the XDP program is attached; empty: the proxy takes every call.
    pub interfaces: Vec<Interface>,
    /// Routes in the table the proxy reads (static and registered).
    pub routes: usize,
    pub peers: Vec<PeerStatus>,
    /// Empty when the proxy is off.
    pub trunks: Vec<TrunkStatus>,
    pub reloads: Reloads,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    pub ifindex: u32,
    /// `native`, `generic`, `offload`, or `adopted` (taken over from an earlier daemon's
    /// pinned link, in whatever mode it had).
    pub mode: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub name: String,
    pub address: std::net::SocketAddr,
    pub up: bool,
    /// Named in the config file.
    pub configured: bool,
    /// Some registered number routes to it.
    pub registered: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reloads {
    pub succeeded: u64,
    pub failed: u64,
    /// Unix seconds of the last applied reload; 0: none yet.
    pub last_success: u64,
}

/// The daemon's parts the status is read from, at request time.
pub struct StatusSource {
    pub config: PathBuf,
    pub interfaces: Vec<Interface>,
    pub table: Arc<RouteTable>,
    pub trunks: Option<Arc<Trunks>>,
    pub reloads: Arc<ReloadCounters>,
}

impl StatusSource {
    pub fn read(&self) -> DaemonStatus {
        let peers = self
            .table
            .peers()
            .iter()
            .filter(|p| p.active())
            .map(|p| PeerStatus {
                name: p.name.clone(),
                address: p.address,
                up: p.up,
                configured: p.configured,
                registered: p.registered,
            })
            .collect();
        let trunks = self
            .trunks
            .as_ref()
            .map_or_else(Vec::new, |t| t.status(t.now()));
        DaemonStatus {
            version: env!("CARGO_PKG_VERSION").into(),
            config: self.config.clone(),
            interfaces: self.interfaces.clone(),
            routes: self.table.route_count(),
            peers,
            trunks,
            reloads: Reloads {
                succeeded: self.reloads.succeeded.load(Relaxed),
                failed: self.reloads.failed.load(Relaxed),
                last_success: self.reloads.last_success.load(Relaxed),
            },
        }
    }
}

impl std::fmt::Display for DaemonStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "daemon: fastpath {}, config {}",
            self.version,
            self.config.display()
        )?;
        if self.interfaces.is_empty() {
            writeln!(f, "xdp: off (the proxy takes every call)")?;
        }
        for i in &self.interfaces {
            writeln!(f, "xdp: {} (ifindex {}) {}", i.name, i.ifindex, i.mode)?;
        }
        writeln!(f, "route table: {} routes", self.routes)?;
        let state = |up: bool| if up { "up" } else { "DOWN" };
        if self.peers.is_empty() {
            writeln!(f, "peers: none")?;
        }
        for p in &self.peers {
            let from = match (p.configured, p.registered) {
                (true, true) => "config, registry",
                (true, false) => "config",
                _ => "registry",
            };
            writeln!(
                f,
                "peer {} at {}: {} ({from})",
                p.name,
                p.address,
                state(p.up)
            )?;
        }
        if self.trunks.is_empty() {
            writeln!(f, "trunks: none")?;
        }
        for t in &self.trunks {
            write!(
                f,
                "trunk {} at {} (priority {}, weight {}): {}",
                t.name,
                t.address,
                t.priority,
                t.weight,
                state(t.up)
            )?;
            if !t.up {
                write!(f, ", retried in {:.1} s", t.retry_in_ms as f64 / 1000.0)?;
            }
            writeln!(f)?;
        }
        writeln!(
            f,
            "reloads: {} applied, {} refused",
            self.reloads.succeeded, self.reloads.failed
        )
    }
}

/// `GET /status` (JSON), and the proxy's route table as `fastpath routes` prints it
/// (`GET /routes`, `GET /routes/{number}`): served beside `/metrics`. The CLI reads the
/// pinned maps when the fast path runs and asks here when it does not.
pub fn router(source: Arc<StatusSource>) -> axum::Router {
    use axum::{extract::Path, http::StatusCode, routing::get};
    let status = Arc::clone(&source);
    let all = Arc::clone(&source);
    axum::Router::new()
        .route(
            "/status",
            get(move || {
                let source = Arc::clone(&status);
                async move { axum::Json(source.read()) }
            }),
        )
        .route(
            "/routes",
            get(move || {
                let table = Arc::clone(&all.table);
                async move {
                    let peers = table.peers();
                    let mut text = String::new();
                    for (key, id) in table.routes() {
                        text += &route_line(key, id, &peers);
                        text.push('\n');
                    }
                    text
                }
            }),
        )
        .route(
            "/routes/{number}",
            get(move |Path(number): Path<String>| {
                let table = Arc::clone(&source.table);
                async move {
                    let Ok(key) = fastpath_common::normalize_number(number.as_bytes()) else {
                        return (
                            StatusCode::BAD_REQUEST,
                            format!("'{number}' is not a number"),
                        );
                    };
                    match table.route(&key) {
                        Some(id) => (StatusCode::OK, route_line(key, id, &table.peers()) + "\n"),
                        None => (StatusCode::NOT_FOUND, format!("{number}: not registered")),
                    }
                }
            }),
        )
}

/// One route of the table as `fastpath routes` prints it.
fn route_line(key: fastpath_common::RouteKey, id: u32, peers: &[crate::routing::Peer]) -> String {
    let peer = peers.get(id as usize).map(|p| (p.address, p.up));
    crate::stats::route_line(key, id, peer)
}

/// `fastpath routes list|get` against the daemon at `addr`; `number` selects one.
pub fn fetch_routes(addr: &str, number: Option<&str>) -> anyhow::Result<String> {
    let url = match number {
        // Normalized here: the path carries digits only, whatever the operator typed.
        Some(n) => {
            let key = fastpath_common::normalize_number(n.as_bytes())
                .map_err(|e| anyhow::anyhow!("'{n}' is not a number: {e}"))?;
            format!("http://{addr}/routes/{key}")
        }
        None => format!("http://{addr}/routes"),
    };
    let agent = crate::api::client::local_agent(std::time::Duration::from_secs(30));
    let mut answer = agent.get(&url).call()?;
    let text = answer
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_string()?;
    match answer.status().as_u16() {
        200 => Ok(text),
        404 => anyhow::bail!("{}: not registered", number.unwrap_or_default()),
        _ => anyhow::bail!("{}", text.trim()),
    }
}

/// The running daemon's status from its HTTP endpoint at `addr`.
pub fn fetch(addr: &str) -> anyhow::Result<DaemonStatus> {
    let url = format!("http://{addr}/status");
    let agent = crate::api::client::local_agent(std::time::Duration::from_secs(3));
    let mut answer = agent.get(&url).call()?;
    anyhow::ensure!(
        answer.status() == 200,
        "GET {url}: HTTP {}",
        answer.status()
    );
    Ok(answer.body_mut().read_json()?)
}
