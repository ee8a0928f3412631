//! The proxy as the daemon runs it: route table, trunks, health checks, worker threads.

use std::{sync::Arc, time::Duration};

use tracing::info;

use super::{
    Proxy, ProxyCounters,
    health::{self, PeerHealth, StateWriter},
    settings::ProxyConfig,
    tcp::Streams,
    trunks::Trunks,
    udp::Workers,
};
use crate::{config::Config, routing::RouteTable};

/// How often trunks with an unanswered INVITE are checked.
const TRUNK_SWEEP: Duration = Duration::from_millis(100);

pub struct Running {
    pub counters: Arc<ProxyCounters>,
    pub table: Arc<RouteTable>,
    /// The standard route (a reload changes it; `fastpath status` shows it).
    pub trunks: Arc<Trunks>,
    workers: Workers,
    streams: Option<Arc<Streams>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub fn stop(self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Some(streams) = &self.streams {
            streams.stop();
        }
        self.workers.stop();
    }
}

/// The proxy's parts, wired together as the daemon runs them; tests and benchmarks build
/// the same without sockets or background tasks.
pub struct Parts {
    pub counters: Arc<ProxyCounters>,
    pub trunks: Arc<Trunks>,
    pub health: Arc<PeerHealth>,
    pub proxy: Arc<Proxy>,
}

impl Parts {
    /// `writer` mirrors peer states into the fast path's `PEERS` map.
    pub fn new(
        settings: &ProxyConfig,
        table: Arc<RouteTable>,
        writer: Option<StateWriter>,
    ) -> Self {
        let counters = Arc::new(ProxyCounters::default());
        let trunks = Arc::new(Trunks::new(settings, Arc::clone(&counters)));
        let health = Arc::new(PeerHealth::new(
            Arc::clone(&table),
            settings.health.misses,
            Arc::clone(&counters),
            writer,
        ));
        let proxy = Arc::new(
            Proxy::new(
                settings.listen.clone(),
                table,
                Arc::clone(&trunks),
                Arc::clone(&health),
            )
            .with_tcp(settings.tcp.enabled),
        );
        Self {
            counters,
            trunks,
            health,
            proxy,
        }
    }
}

/// Starts the proxy if the config gives it addresses (must run inside a tokio runtime),
/// reading `table`; `writer` mirrors peer states into the fast path's `PEERS` map.
pub fn start(
    config: &Config,
    table: Arc<RouteTable>,
    writer: Option<StateWriter>,
) -> anyhow::Result<Option<Running>> {
    let settings = &config.proxy;
    if settings.listen.is_empty() {
        info!("no [proxy] listen addresses: the userspace proxy is off");
        return Ok(None);
    }
    let Parts {
        counters,
        trunks,
        health,
        proxy,
    } = Parts::new(settings, Arc::clone(&table), writer);
    let streams = settings.tcp.enabled.then(|| {
        Streams::new(
            Arc::clone(&proxy),
            Arc::clone(&counters),
            settings.tcp.clone(),
        )
    });
    let workers = Workers::start_with_tcp(
        proxy,
        Arc::clone(&counters),
        settings.workers,
        streams.clone(),
    )?;
    if let Some(streams) = &streams {
        streams.listen(workers.sockets()?)?;
    }
    let mut tasks = Vec::new();
    let sweeping = Arc::clone(&trunks);
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(TRUNK_SWEEP);
        loop {
            tick.tick().await;
            sweeping.sweep(sweeping.now());
        }
    }));
    // Peers can arrive later (the registry's), so health runs even with none configured.
    if settings.health.enabled {
        tasks.push(tokio::spawn(health::run(health, settings.health.interval)));
    }
    info!(
        listen = ?settings.listen,
        workers = settings.workers,
        tcp = settings.tcp.enabled,
        trunks = settings.trunks.len(),
        "proxy listening"
    );
    Ok(Some(Running {
        counters,
        table,
        trunks,
        workers,
        streams,
        tasks,
    }))
}
