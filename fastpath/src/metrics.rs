//! Prometheus exposition: the XDP program's counters, read from the pinned maps at scrape
//! time, and whatever the daemon's parts register beside them.
//!
//! Names follow Prometheus conventions: a `fastpath_` prefix, `_total` on counters, base
//! units (`_bytes`, `_seconds`).

use std::{
    path::PathBuf,
    sync::{Arc, Mutex, atomic::Ordering},
    time::{Duration, Instant},
};

use aya::maps::{Array, Map};
use fastpath_common::{
    Counter,
    maps::{self, PeerValue},
};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
    core::{Collector, Desc},
    local::LocalHistogram,
    proto::MetricFamily,
};
use tracing::warn;

use crate::{
    registry::counts::{RegistryReadings, StateCounts},
    route_index::RouteIndex,
    stats::{Counters, PeerTraffic},
};

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

    /// Peer and trunk health (1 up, 0 down) and the configuration reloads, from what
    /// `fastpath status` reads too.
    pub fn register_daemon(&self, status: Arc<crate::control::StatusSource>) -> anyhow::Result<()> {
        let reloads = Arc::clone(&status.reloads);
        let read = move |f: fn(&crate::reload::ReloadCounters) -> &std::sync::atomic::AtomicU64| {
            let reloads = Arc::clone(&reloads);
            move || f(&reloads).load(Ordering::Relaxed)
        };
        self.live_counter(
            "fastpath_config_reloads_total",
            "Configuration reloads (SIGHUP) applied.",
            read(|r| &r.succeeded),
        )?;
        self.live_counter(
            "fastpath_config_reload_failures_total",
            "Configuration reloads refused (the file did not validate; nothing changed).",
            read(|r| &r.failed),
        )?;
        self.live_gauge(
            "fastpath_config_last_reload_success_timestamp_seconds",
            "When the last reload was applied (Unix time; 0: none since start).",
            read(|r| &r.last_success),
        )?;
        self.registry
            .register(Box::new(HealthCollector::new(status)?))?;
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
        self.registry
            .register(Box::new(counters.latency.histograms.clone()))?;
        Ok(())
    }

    /// The registry's numbers by state and its verifications by method and outcome.
    pub fn register_registry(&self, source: Arc<dyn RegistryReadings>) -> anyhow::Result<()> {
        self.registry
            .register(Box::new(RegistryCollector::new(source)?))?;
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
        )?;
        self.registry
            .register(Box::new(counters.latency.update.clone()))?;
        self.registry
            .register(Box::new(counters.latency.reconcile.clone()))?;
        Ok(())
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
    index_bytes: IntGauge,
    index_numbers: IntGauge,
    index_overflowed: IntGauge,
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
        let index_bytes = IntGauge::new(
            "fastpath_route_index_bytes",
            "Size of ROUTE_INDEX, the routes in buckets the XDP program reads instead of \
             ROUTES (one 64-byte bucket per two routes of capacity, a power of two).",
        )?;
        let index_numbers = IntGauge::new(
            "fastpath_route_index_numbers",
            "Numbers in ROUTE_INDEX's slots (the rest of ROUTES cost a hash-map lookup).",
        )?;
        let index_overflowed = IntGauge::new(
            "fastpath_route_index_overflowed_buckets",
            "ROUTE_INDEX buckets marked full: numbers of theirs not in the slots cost a \
             ROUTES lookup.",
        )?;
        let descs = [
            packets.desc(),
            peer_packets.desc(),
            peer_bytes.desc(),
            routes_capacity.desc(),
            index_bytes.desc(),
            index_numbers.desc(),
            index_overflowed.desc(),
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
            index_bytes,
            index_numbers,
            index_overflowed,
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
        // The whole index per scrape, read in place: 32 MiB at the default capacity, a few
        // milliseconds.
        let index = RouteIndex::map_pinned(&self.pin_dir)?.occupancy();
        self.index_bytes.set(index.bytes as i64);
        self.index_numbers.set(index.numbers as i64);
        self.index_overflowed.set(index.overflowed as i64);
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
            self.index_bytes.collect(),
            self.index_numbers.collect(),
            self.index_overflowed.collect(),
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

/// `fastpath_peer_up` and `fastpath_trunk_up`, read from the route table and the trunks
/// at scrape time: the set of peers and trunks changes with the registry and reloads, so
/// the gauges are rebuilt each time rather than kept.
struct HealthCollector {
    status: Arc<crate::control::StatusSource>,
    peers: IntGaugeVec,
    trunks: IntGaugeVec,
}

impl HealthCollector {
    fn new(status: Arc<crate::control::StatusSource>) -> anyhow::Result<Self> {
        Ok(Self {
            status,
            peers: IntGaugeVec::new(
                Opts::new(
                    "fastpath_peer_up",
                    "Whether a peer path answers its health checks (1) or not (0).",
                ),
                &["peer", "address"],
            )?,
            trunks: IntGaugeVec::new(
                Opts::new(
                    "fastpath_trunk_up",
                    "Whether a carrier trunk takes calls (1) or is out after a failure (0).",
                ),
                &["trunk", "address"],
            )?,
        })
    }
}

impl Collector for HealthCollector {
    fn desc(&self) -> Vec<&Desc> {
        [self.peers.desc(), self.trunks.desc()].concat()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let status = self.status.read();
        self.peers.reset();
        for p in &status.peers {
            self.peers
                .with_label_values(&[p.name.as_str(), &p.address.to_string()])
                .set(i64::from(p.up));
        }
        self.trunks.reset();
        for t in &status.trunks {
            self.trunks
                .with_label_values(&[t.name.as_str(), &t.address.to_string()])
                .set(i64::from(t.up));
        }
        [self.peers.collect(), self.trunks.collect()].concat()
    }
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

/// Buckets from 5 µs to 100 ms: a proxied datagram takes tens of microseconds; the tail
/// shows a worker stalled (scheduling, a slow `sendmmsg`).
const PROXY_BUCKETS: &[f64] = &[
    5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1,
];
/// Buckets from 10 µs to 1 s: a change reaches the map in microseconds unless the sync is
/// busy with a reconcile.
const SYNC_UPDATE_BUCKETS: &[f64] = &[
    1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1, 0.25, 1.0,
];
/// Buckets from 1 ms to 30 s: a reconcile of a few numbers takes milliseconds, of a
/// million about a second.
const SYNC_RECONCILE_BUCKETS: &[f64] = &[
    1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The proxy's message kinds, the `kind` label of `fastpath_proxy_handle_seconds`.
const KINDS: [&str; 2] = ["request", "response"];

fn histogram(name: &str, help: &str, buckets: &[f64]) -> Histogram {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
        .expect("constant histogram options are valid")
}

/// The sync's latencies, observed by [`crate::sync::Syncer::run`] (a few atomics per
/// observation; there are at most a few thousand a second).
#[derive(Debug, Clone)]
pub struct SyncLatency {
    /// Registry commit → `ROUTES` written, per change that altered the map.
    pub update: Histogram,
    /// Each periodic full reconcile (registry read, compare, repair).
    pub reconcile: Histogram,
}

impl Default for SyncLatency {
    fn default() -> Self {
        Self {
            update: histogram(
                "fastpath_sync_update_seconds",
                "Time from a registry commit to its ROUTES map write, per change that altered the map.",
                SYNC_UPDATE_BUCKETS,
            ),
            reconcile: histogram(
                "fastpath_sync_reconcile_seconds",
                "Duration of each periodic full reconcile of the maps with the registry.",
                SYNC_RECONCILE_BUCKETS,
            ),
        }
    }
}

/// `fastpath_proxy_handle_seconds{kind}`: from a datagram's receipt (the `recvmmsg` that
/// read it returned) to its send (the `sendmmsg` that sent it returned), for every datagram
/// the proxy forwarded or answered.
///
/// The hot path must stay cheap (~150k datagrams/s on 2 cores), so each worker keeps a
/// [`LocalProxyLatency`] (plain, unshared buckets) and times a whole batch with two clock
/// reads: every datagram of a batch is received by one `recvmmsg` and sent by the
/// `sendmmsg` calls that end it, so they share one latency. The worker's buckets are
/// merged into the shared histogram once per batch (a handful of atomic adds).
#[derive(Debug, Clone)]
pub struct ProxyLatency {
    histograms: HistogramVec,
}

impl Default for ProxyLatency {
    fn default() -> Self {
        let opts = HistogramOpts::new(
            "fastpath_proxy_handle_seconds",
            "Time from the receipt of a datagram the proxy forwarded or answered to its send, by the kind of the datagram received.",
        )
        .buckets(PROXY_BUCKETS.to_vec());
        let histograms =
            HistogramVec::new(opts, &["kind"]).expect("constant histogram options are valid");
        // Both series exist from the start (at zero), before any traffic: dashboards and
        // rate() see them at once.
        for kind in KINDS {
            histograms.with_label_values(&[kind]);
        }
        Self { histograms }
    }
}

impl ProxyLatency {
    /// A worker's own copy; every kind is created now, so each series exists (at zero)
    /// before the first datagram.
    pub fn local(&self) -> LocalProxyLatency {
        let [request, response] = KINDS.map(|k| self.histograms.with_label_values(&[k]).local());
        LocalProxyLatency { request, response }
    }
}

/// One worker's buckets (see [`ProxyLatency`]).
pub struct LocalProxyLatency {
    request: LocalHistogram,
    response: LocalHistogram,
}

impl LocalProxyLatency {
    /// `requests` requests and `responses` responses received together were sent `took`
    /// later; merges them into the shared histogram.
    pub fn observe_batch(&self, took: Duration, requests: u64, responses: u64) {
        let seconds = took.as_secs_f64();
        for (local, n) in [(&self.request, requests), (&self.response, responses)] {
            for _ in 0..n {
                local.observe(seconds);
            }
            local.flush();
        }
    }
}

/// How long the state counts of one scrape serve the next ones. Prometheus scrapes every
/// 15 s or more; this bounds the cost (one index scan) when several scrapers or a
/// dashboard poll at once.
const STATE_COUNTS_MAX_AGE: Duration = Duration::from_secs(2);

/// The registry's numbers by state (read from the store, cached briefly) and its
/// verification counters (atomics, read at each scrape).
struct RegistryCollector {
    source: Arc<dyn RegistryReadings>,
    cached: Mutex<Option<(Instant, StateCounts)>>,
    numbers: IntGaugeVec,
    attempts: IntCounterVec,
    outcomes: IntCounterVec,
    descs: Vec<Desc>,
}

impl RegistryCollector {
    fn new(source: Arc<dyn RegistryReadings>) -> anyhow::Result<Self> {
        let numbers = IntGaugeVec::new(
            Opts::new(
                "fastpath_registry_numbers",
                "Numbers in the registry, by state (counted at most every 2 s).",
            ),
            &["state"],
        )?;
        let attempts = IntCounterVec::new(
            Opts::new(
                "fastpath_verification_attempts_total",
                "Verifications started (a code sent, a call placed, a missed call awaited), by method.",
            ),
            &["method"],
        )?;
        let outcomes = IntCounterVec::new(
            Opts::new(
                "fastpath_verification_outcomes_total",
                "Verification events by method and outcome: starts refused, deliveries failed, codes checked, missed calls seen.",
            ),
            &["method", "outcome"],
        )?;
        let descs = [numbers.desc(), attempts.desc(), outcomes.desc()]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        Ok(Self {
            source,
            cached: Mutex::new(None),
            numbers,
            attempts,
            outcomes,
            descs,
        })
    }

    /// The counts, from the cache while it is fresh. Concurrent scrapes wait for one read.
    fn state_counts(&self) -> Result<StateCounts, String> {
        let mut cached = self
            .cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((at, counts)) = *cached
            && at.elapsed() < STATE_COUNTS_MAX_AGE
        {
            return Ok(counts);
        }
        let counts = self.source.state_counts()?;
        *cached = Some((Instant::now(), counts));
        Ok(counts)
    }
}

impl Collector for RegistryCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let verifications = self.source.verifications();
        for (method, n) in verifications.started_by_method() {
            let counter = self.attempts.with_label_values(&[method]);
            counter.reset();
            counter.inc_by(n);
        }
        for (method, outcome, n) in verifications.outcomes_by_method() {
            let counter = self.outcomes.with_label_values(&[method, outcome]);
            counter.reset();
            counter.inc_by(n);
        }
        let mut families = [self.attempts.collect(), self.outcomes.collect()].concat();
        match self.state_counts() {
            Ok(counts) => {
                for (state, n) in counts.iter() {
                    self.numbers
                        .with_label_values(&[state.as_str()])
                        .set(i64::try_from(n).unwrap_or(i64::MAX));
                }
                families.extend(self.numbers.collect());
            }
            // The gauge is absent rather than wrong; the counters still show.
            Err(error) => warn!(%error, "counting the registry's numbers"),
        }
        families
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(text: &str, series: &str) -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn workers_buckets_merge_into_one_histogram_by_kind() {
        let latency = ProxyLatency::default();
        let registry = Registry::new();
        registry
            .register(Box::new(latency.histograms.clone()))
            .unwrap();
        let (a, b) = (latency.local(), latency.local());
        a.observe_batch(Duration::from_micros(20), 3, 1);
        b.observe_batch(Duration::from_millis(2), 2, 0);
        b.observe_batch(Duration::from_micros(20), 0, 0);
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        let name = "fastpath_proxy_handle_seconds";
        for (series, want) in [
            (format!("{name}_count{{kind=\"request\"}}"), 5),
            (format!("{name}_count{{kind=\"response\"}}"), 1),
            (
                format!("{name}_bucket{{kind=\"request\",le=\"0.000025\"}}"),
                3,
            ),
            (
                format!("{name}_bucket{{kind=\"request\",le=\"0.0025\"}}"),
                5,
            ),
            (
                format!("{name}_bucket{{kind=\"response\",le=\"0.000025\"}}"),
                1,
            ),
        ] {
            assert_eq!(count(&text, &series), Some(want), "{series} in\n{text}");
        }
    }

    #[test]
    fn a_tally_splits_sent_datagrams_by_kind() {
        use crate::proxy::{ProxyCounter::*, Tally};
        let mut tally = Tally::default();
        for c in [
            ForwardedPeer,
            ForwardedTrunk,
            FallbackPeerDown,
            Replied4xx,
            Replied5xx,
            ForwardedRoute,
            ResponsesForwarded,
            Dropped,
            SendErrors,
        ] {
            tally.bump(c);
        }
        // A fallback is also counted as its trunk forward; drops and send errors sent
        // nothing (a send error is a datagram already counted by its kind).
        assert_eq!(tally.sent_by_kind(), (5, 1));
    }
}
