//! Prometheus exposition: the XDP program's counters, read from the pinned maps at scrape
//! time, and whatever the daemon's parts register beside them.
//!
//! Names follow Prometheus conventions: a `fastpath_` prefix, `_total` on counters, base
//! units (`_bytes`, `_seconds`).

use std::{
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
};

use aya::maps::{Array, Map};
use fastpath_common::{
    Counter,
    maps::{self, PeerValue},
};
use prometheus::{
    Encoder, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
    core::{Collector, Desc},
    proto::MetricFamily,
};
use tracing::warn;

use crate::stats::{Counters, PeerTraffic};

/// Everything `/metrics` shows.
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// A registry with the fast path's counters (from the maps pinned in `pin_dir`, when
    /// the fast path runs) and the daemon process's own (CPU, memory, file descriptors).
    pub fn new(pin_dir: Option<PathBuf>) -> anyhow::Result<Self> {
        let registry = Registry::new();
        if let Some(pin_dir) = pin_dir {
            registry.register(Box::new(XdpCollector::new(pin_dir)?))?;
        }
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Self { registry })
    }

    /// Where the daemon's parts register their metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// A counter whose value `read` gives at scrape time.
    fn live_counter(
        &self,
        name: &str,
        help: &str,
        read: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> anyhow::Result<()> {
        let metric = LiveKind::Counter(prometheus::IntCounter::new(name, help)?);
        self.register_live(metric, read)
    }

    /// A gauge whose value `read` gives at scrape time.
    fn live_gauge(
        &self,
        name: &str,
        help: &str,
        read: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> anyhow::Result<()> {
        self.register_live(LiveKind::Gauge(IntGauge::new(name, help)?), read)
    }

    fn register_live(
        &self,
        metric: LiveKind,
        read: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> anyhow::Result<()> {
        self.registry.register(Box::new(Live {
            metric,
            read: Box::new(read),
        }))?;
        Ok(())
    }

    /// The proxy's outcome and health-transition counters, as `fastpath_<name>`.
    pub fn register_proxy(
        &self,
        counters: Arc<crate::proxy::counters::ProxyCounters>,
    ) -> anyhow::Result<()> {
        use crate::proxy::counters::ProxyCounter;
        for &counter in ProxyCounter::ALL {
            let counters = Arc::clone(&counters);
            self.live_counter(
                &format!("fastpath_{}", counter.name()),
                counter.help(),
                move || counters.get(counter),
            )?;
        }
        Ok(())
    }

    /// Without a registry: the number of static routes the config put in `ROUTES`.
    pub fn register_static_routes(&self, routes: usize) -> anyhow::Result<()> {
        let gauge = IntGauge::new(
            "fastpath_routes",
            "Numbers in the ROUTES map (registry and static).",
        )?;
        gauge.set(routes as i64);
        self.registry.register(Box::new(gauge))?;
        Ok(())
    }

    /// The registry sync's state: routes and peers in the maps, updates, reconciles and the
    /// drift they repaired.
    pub fn register_sync(&self, counters: Arc<crate::sync::SyncCounters>) -> anyhow::Result<()> {
        use std::sync::atomic::AtomicU64;
        let read = |field: fn(&crate::sync::SyncCounters) -> &AtomicU64| {
            let counters = Arc::clone(&counters);
            move || field(&counters).load(Ordering::Relaxed)
        };
        self.live_gauge(
            "fastpath_routes",
            "Numbers in the ROUTES map (registry and static).",
            read(|c| &c.routes),
        )?;
        self.live_gauge(
            "fastpath_peers",
            "Distinct peer paths the routes point at.",
            read(|c| &c.peers),
        )?;
        self.live_counter(
            "fastpath_sync_updates_total",
            "Registry changes applied to the maps as they committed.",
            read(|c| &c.updates),
        )?;
        self.live_counter(
            "fastpath_sync_reconciles_total",
            "Full comparisons of the maps with the registry.",
            read(|c| &c.reconciles),
        )?;
        self.live_counter(
            "fastpath_sync_repairs_total",
            "Map entries a reconcile found wrong (missing, stale or extra) and fixed.",
            read(|c| &c.repairs),
        )
    }

    /// The text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            warn!(%error, "encoding metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Reads the XDP counters at each scrape: the maps are the truth, and a scrape costs one
/// lookup per counter plus one per peer slot.
struct XdpCollector {
    pin_dir: PathBuf,
    packets: IntCounterVec,
    peer_packets: IntCounterVec,
    peer_bytes: IntCounterVec,
    routes_capacity: IntGauge,
    descs: Vec<Desc>,
}

impl XdpCollector {
    fn new(pin_dir: PathBuf) -> anyhow::Result<Self> {
        let packets = IntCounterVec::new(
            Opts::new(
                "fastpath_xdp_packets_total",
                "Packets seen by the XDP program, by outcome (hit = sent to a peer in the kernel).",
            ),
            &["outcome"],
        )?;
        let peer_packets = IntCounterVec::new(
            Opts::new(
                "fastpath_xdp_peer_packets_total",
                "Packets the XDP program sent to each peer.",
            ),
            &["peer"],
        )?;
        let peer_bytes = IntCounterVec::new(
            Opts::new(
                "fastpath_xdp_peer_bytes_total",
                "Bytes (whole frames) the XDP program sent to each peer.",
            ),
            &["peer"],
        )?;
        let routes_capacity = IntGauge::new(
            "fastpath_routes_capacity",
            "Entries the ROUTES map can hold.",
        )?;
        let descs = [
            packets.desc(),
            peer_packets.desc(),
            peer_bytes.desc(),
            routes_capacity.desc(),
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
        Ok(Self {
            pin_dir,
            packets,
            peer_packets,
            peer_bytes,
            routes_capacity,
            descs,
        })
    }

    fn refresh(&self) -> anyhow::Result<()> {
        let counters = Counters::read_pinned(&self.pin_dir)?;
        for counter in Counter::ALL {
            let metric = self.packets.with_label_values(&[counter.name()]);
            metric.reset();
            metric.inc_by(counters.get(counter));
        }
        let peers = Array::<_, PeerValue>::try_from(Map::Array(crate::maps::open_pinned(
            &self.pin_dir,
            maps::PEERS,
        )?))?;
        self.peer_packets.reset();
        self.peer_bytes.reset();
        for traffic in PeerTraffic::read_pinned(&self.pin_dir)? {
            let peer = peers
                .get(&traffic.peer_id, 0)
                .map_or_else(|_| format!("#{}", traffic.peer_id), |p| peer_label(&p));
            self.peer_packets
                .with_label_values(&[&peer])
                .inc_by(traffic.packets);
            self.peer_bytes
                .with_label_values(&[&peer])
                .inc_by(traffic.bytes);
        }
        let routes = crate::maps::open_pinned(&self.pin_dir, maps::ROUTES)?;
        self.routes_capacity
            .set(routes.info()?.max_entries().into());
        Ok(())
    }
}

impl Collector for XdpCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        if let Err(error) = self.refresh() {
            // No program loaded (e.g. --no-xdp): the families are simply absent.
            warn!(%error, "reading the XDP counters");
            return Vec::new();
        }
        [
            self.packets.collect(),
            self.peer_packets.collect(),
            self.peer_bytes.collect(),
            self.routes_capacity.collect(),
        ]
        .concat()
    }
}

/// A peer as `address:port`, the way operators configure it.
pub(crate) fn peer_label(peer: &PeerValue) -> String {
    crate::maps::peer_address(peer).map_or_else(|| "unknown".into(), |a| a.to_string())
}

/// `GET /metrics` (and the routes of `extra`) on `listener` until the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    extra: axum::Router,
) -> anyhow::Result<()> {
    use axum::{Router, http::header, routing::get};
    let app = extra.route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move {
                // Reading the maps is a few thousand syscalls: off the async threads.
                let text = tokio::task::spawn_blocking(move || metrics.render())
                    .await
                    .unwrap_or_default();
                ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
            }
        }),
    );
    let app: Router = app;
    axum::serve(listener, app).await?;
    Ok(())
}

/// A counter or gauge whose value lives elsewhere (an atomic), read at scrape time.
struct Live {
    metric: LiveKind,
    read: Box<dyn Fn() -> u64 + Send + Sync>,
}

enum LiveKind {
    Counter(prometheus::IntCounter),
    Gauge(IntGauge),
}

impl Collector for Live {
    fn desc(&self) -> Vec<&Desc> {
        match &self.metric {
            LiveKind::Counter(c) => c.desc(),
            LiveKind::Gauge(g) => g.desc(),
        }
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let value = (self.read)();
        match &self.metric {
            LiveKind::Counter(c) => {
                c.reset();
                c.inc_by(value);
                c.collect()
            }
            LiveKind::Gauge(g) => {
                g.set(value as i64);
                g.collect()
            }
        }
    }
}
