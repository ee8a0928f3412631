//! `SIGHUP`: re-read the configuration and apply what can change without a restart —
//! peers, static routes and trunks — without dropping a call.
//!
//! The new file is validated whole before anything changes; an invalid one changes
//! nothing (the error is logged and counted). Then, in an order that keeps every packet
//! right at every moment:
//! 1. the route table (peers keep their ids and up/down state by address, routes change
//!    one by one: a call is never routed by a half-empty table);
//! 2. the kernel's maps: from the table when the config owns the routes, or through the
//!    registry's sync, which owns them when there is a registry;
//! 3. the trunks (a trunk kept at the same address keeps its state).
//!
//! Keys that cannot change while running (addresses listened on, the XDP program's
//! settings, the registry) are named in a warning and keep their old values until the
//! next restart.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::{
    config::Config,
    proxy::trunks::Trunks,
    registry::daemon::static_routes,
    routing::{RouteChanges, RouteTable},
    sync::StaticRoutes,
};

/// Reload outcomes, for `/metrics` and `fastpath status`.
#[derive(Debug, Default)]
pub struct ReloadCounters {
    pub succeeded: AtomicU64,
    pub failed: AtomicU64,
    /// Unix seconds of the last reload that applied.
    pub last_success: AtomicU64,
}

impl ReloadCounters {
    pub fn record(&self, ok: bool) {
        if ok {
            self.succeeded.fetch_add(1, Relaxed);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            self.last_success.store(now, Relaxed);
        } else {
            self.failed.fetch_add(1, Relaxed);
        }
    }
}

/// The parts of the running daemon a reload changes.
pub struct Targets<'a> {
    pub table: &'a RouteTable,
    pub trunks: Option<&'a Trunks>,
    /// With a registry: its sync takes the static routes (it owns the maps' routes).
    pub registry_routes: Option<&'a tokio::sync::watch::Sender<StaticRoutes>>,
}

/// What a reload changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Route changes in the table; with a registry, its sync reports them instead.
    pub routes: RouteChanges,
    /// Keys that differ but need a restart (their old values stay in force).
    pub needs_restart: Vec<&'static str>,
}

/// Applies `new` over `old` to the running parts, and returns the configuration now in
/// force: `new`, with `old`'s values for the keys only a restart changes. The caller
/// writes the kernel's maps from the table afterwards when there is no registry (see
/// `maps::sync_table`).
pub fn apply(old: &Config, mut new: Config, targets: &Targets) -> (Config, Applied) {
    let needs_restart = keep_restart_keys(old, &mut new);
    let routes = match targets.registry_routes {
        // The sync reconciles the maps and the table with the new static routes; the
        // table only learns which peers the config names.
        Some(sync) => {
            targets.table.set_config_peers(&new);
            sync.send_replace(static_routes(&new));
            RouteChanges::default()
        }
        None => targets.table.apply_config(&new),
    };
    if let Some(trunks) = targets.trunks {
        trunks.reload(&new.proxy);
    }
    let applied = Applied {
        routes,
        needs_restart,
    };
    (new, applied)
}

/// Puts `old`'s values back into `new` for every key only a restart changes; returns the
/// names of those that differed.
fn keep_restart_keys(old: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut differed = Vec::new();
    macro_rules! keep {
        ($($name:literal => $($field:ident).+;)*) => {$(
            if old.$($field).+ != new.$($field).+ {
                differed.push($name);
                new.$($field).+ = old.$($field).+.clone();
            }
        )*};
    }
    keep! {
        "xdp.sip_ports" => sip_ports;
        "xdp.max_routes" => max_routes;
        "xdp.local_only" => local_only;
        "proxy.listen" => proxy.listen;
        "proxy.workers" => proxy.workers;
        "proxy.tcp*" => proxy.tcp;
        "health" => proxy.health;
        "verification" => verification;
        "registry" => registry;
        "api" => api;
        "metrics.listen" => metrics_listen;
    }
    differed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::counters::ProxyCounters;
    use fastpath_common::normalize_number;
    use std::sync::Arc;

    const BASE: &str = r#"
[[peers]]
name = "pbx"
address = "198.51.100.2:5060"

[[routes]]
number = "15550100001"
peer = "pbx"

[proxy]
listen = ["192.0.2.1:5060"]

[[trunks]]
name = "carrier"
address = "203.0.113.2:5060"
"#;

    #[test]
    fn routes_peers_and_trunks_change_and_other_keys_wait_for_a_restart() {
        let old = Config::parse(BASE).unwrap();
        let table = RouteTable::from_config(&old);
        let trunks = Trunks::new(&old.proxy, Arc::new(ProxyCounters::default()));
        let text = BASE
            .replace("15550100001", "15550100002")
            .replace("203.0.113.2:5060", "203.0.113.3:5060")
            + "[xdp]\nsip_ports = [5080]\n";
        let new = Config::parse(&text).unwrap();
        let (now, applied) = apply(
            &old,
            new,
            &Targets {
                table: &table,
                trunks: Some(&trunks),
                registry_routes: None,
            },
        );
        assert_eq!((applied.routes.added, applied.routes.removed), (1, 1));
        assert_eq!(applied.needs_restart, vec!["xdp.sip_ports"]);
        assert_eq!(now.sip_ports, vec![5060], "the running value stays");
        assert_eq!(now.routes[0].number, "15550100002");
        let key = |d: &str| normalize_number(d.as_bytes()).unwrap();
        assert_eq!(
            table.lookup(&key("15550100001")),
            crate::routing::Lookup::Miss
        );
        assert!(matches!(
            table.lookup(&key("15550100002")),
            crate::routing::Lookup::Peer { id: 0, .. }
        ));
        assert_eq!(
            trunks.status(1)[0].address,
            "203.0.113.3:5060".parse().unwrap()
        );
    }

    #[test]
    fn with_a_registry_the_sync_gets_the_static_routes() {
        let old = Config::parse(BASE).unwrap();
        let table = RouteTable::from_config(&old);
        let (tx, rx) = tokio::sync::watch::channel(static_routes(&old));
        let new = Config::parse(&BASE.replace("15550100001", "15550100009")).unwrap();
        let (_, applied) = apply(
            &old,
            new,
            &Targets {
                table: &table,
                trunks: None,
                registry_routes: Some(&tx),
            },
        );
        assert_eq!(applied, Applied::default());
        let key = normalize_number(b"15550100009").unwrap();
        assert_eq!(rx.borrow()[0].0, key);
        assert_eq!(table.route_count(), 1, "the table waits for the sync");
    }
}
